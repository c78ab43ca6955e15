// ${layer}: ${n_planes}-bit weights as bit-planes, groups of ${group_size}, folded ${pe} PE x ${simd} SIMD
static const uint64_t fq_rom${index}[${pe}][${rom_depth}] = {${rom}};
static const uint64_t fq_sched${index}[${n_entries}] = {${sched}};
static const unsigned fq_blk${index}[${n_blocks}][${n_planes} + 1] = {${blk}};
static const ${accum_t} fq_bias${index}[${n_out}] = {${bias}};
static const ${thr_t} fq_thr${index}[${thr_rows}][${thr_cols}] = {${thresholds}};
static const bool fq_desc${index}[${thr_rows}] = {${descending}};
struct config${index} : ${base} {
    static const unsigned layer_id = ${layer_id};
    static const unsigned n_in = ${n_in};
    static const unsigned n_out = ${n_out};
    static const unsigned n_pix = ${n_pix};
    static const unsigned simd = ${simd};
    static const unsigned pe = ${pe};
    static const unsigned n_rows = ${n_rows};
    static const unsigned n_blocks = ${n_blocks};
    static const unsigned n_entries = ${n_entries};
    static const unsigned rom_depth = ${rom_depth};
    static const unsigned max_iterations = ${max_iterations};
    static const unsigned mvau_depth = ${mvau_depth};
    static const unsigned n_planes = ${n_planes};
    static const unsigned sign_plane = ${sign_plane};
    static const bool full_planes = ${full_planes};
${geometry}
    typedef ${act_raw_t} act_raw_t;
    typedef ${psum_t} psum_t;
    typedef ${accum_t} accum_t;
    typedef ${thr_t} thr_t;
${requant}};
