// ${layer}: ${n_planes}-bit weights as bit-planes, ${n_groups} group(s) of ${group_size}, ${n_pe} PE(s)
static const uint64_t fq_planes${index}[${n_words_total}] = {${words}};
static const uint8_t fq_mask${index}[${n_mask}] = {${mask}};
static const ${accum_t} fq_bias${index}[${n_out}] = {${bias}};
static const ${thr_t} fq_thr${index}[${thr_rows}][${thr_cols}] = {${thresholds}};
static const bool fq_desc${index}[${thr_rows}] = {${descending}};
struct config${index} : ${base} {
    static const unsigned n_in = ${n_in};
    static const unsigned n_out = ${n_out};
    static const unsigned group_size = ${group_size};
    static const unsigned n_groups = ${n_groups};
    static const unsigned n_words = ${n_words};
    static const unsigned n_planes = ${n_planes};
    static const unsigned sign_plane = ${sign_plane};
    static const unsigned n_pe = ${n_pe};
    static const bool full_planes = ${full_planes};
${geometry}
    typedef ${act_raw_t} act_raw_t;
    typedef ${psum_t} psum_t;
    typedef ${accum_t} accum_t;
    typedef ${thr_t} thr_t;
${requant}};
