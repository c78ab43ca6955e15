// ${layer}: ${n_planes}-bit weights as bit-planes, groups of ${group_size}, folded ${pe} PE x ${simd} SIMD
static const flipq::table_word<${rom_bits}, false>::type fq_rom${index}[${pe}][${rom_depth}] = {${rom}};
static const flipq::table_word<${step_bits}, false>::type fq_steps${index}[${rom_depth}] = {${steps}};
static const unsigned fq_blk${index}[${n_blocks}][${n_planes} + 1] = {${blk}};
static const ${accum_t} fq_bias${index}[${n_blocks}][${pe}] = {${bias}};
static const flipq::table_word<${thr_width}, true>::type fq_thr${index}[${thr_blocks}][${thr_pe}][${thr_cols}] = {${thresholds}};
static const bool fq_desc${index}[${thr_blocks}][${thr_pe}] = {${descending}};
struct config${index} : ${base} {
    static const unsigned layer_id = ${layer_id};
    static const unsigned n_in = ${n_in};
    static const unsigned n_out = ${n_out};
    static const unsigned n_pix = ${n_pix};
    static const unsigned simd = ${simd};
    static const unsigned pe = ${pe};
    static const unsigned n_rows = ${n_rows};
    static const unsigned n_blocks = ${n_blocks};
    static const unsigned rom_depth = ${rom_depth};
    static const unsigned row_bits = ${row_bits};
    typedef ap_uint<${step_bits}> step_t;
    typedef flipq::table_word<${rom_bits}, false>::type rom_word_t;
    typedef flipq::table_word<${step_bits}, false>::type step_word_t;
    static const unsigned max_iterations = ${max_iterations};
    static const unsigned mvau_depth = ${mvau_depth};
    static const unsigned n_planes = ${n_planes};
    static const unsigned sign_plane = ${sign_plane};
    static const bool full_planes = ${full_planes};
    static const bool depthwise = ${depthwise};
${geometry}
    typedef ${act_raw_t} act_raw_t;
    typedef ${psum_t} psum_t;
    typedef ${accum_t} accum_t;
    typedef ${thr_t} thr_t;
    typedef flipq::table_word<${thr_width}, true>::type thr_word_t;
${requant}};
