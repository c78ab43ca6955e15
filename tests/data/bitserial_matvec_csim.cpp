#include <cstdio>
#include <cstdlib>
#include "flipq_bitserial_pe.h"
#include "flipq_bitserial_dense.h"

// Three layers through flipq::bitserial_dense (one vector, PE 1, two groups or one): narrow
// activations (the popcount C-sim), activations wider than 64 bits (the lane loop), and a partial
// sum too narrow for its sums (both wrap alike); results printed one per line, for lowest planes
// 0, 1, 2 (planes 3, 2, 1).
template <class ACT, class PSUM, unsigned K, unsigned G, unsigned SIMD> struct cfg : flipq::bitserial_config {
    static const unsigned n_in = K, n_out = 3, simd = SIMD, pe = 1, n_rows = K / SIMD, n_blocks = 3;
    static const unsigned groups = K / G, rows = G / SIMD;
    static const unsigned rom_depth = 3 * groups * rows * 3, max_iterations = n_rows + rom_depth, mvau_depth = 4;
    static const unsigned row_bits = 8;
    typedef ap_uint<12> step_t;
    typedef typename flipq::table_word<SIMD, false>::type rom_word_t;
    typedef typename flipq::table_word<12, false>::type step_word_t;
    static const unsigned n_planes = 3, sign_plane = 2;
    typedef ACT act_raw_t;
    typedef PSUM psum_t;
    typedef ap_int<96> accum_t;
};

template <class C> void run(unsigned seed) {
    srand(seed);
    typename C::act_raw_t act[C::n_in];
    for (unsigned k = 0; k < C::n_in; k++) act[k] = (long long)(rand() % 61) - 30;
    static typename C::rom_word_t rom[1][C::rom_depth];
    static typename C::step_word_t steps[C::rom_depth];
    static unsigned blk[C::n_blocks][C::n_planes + 1];
    const uint64_t lanes = C::simd == 64 ? ~0ULL : (1ULL << C::simd) - 1;
    for (unsigned i = 0; i < C::rom_depth; i++) rom[0][i] = (((uint64_t)rand() << 32) ^ (uint64_t)rand()) & lanes;
    unsigned j = 0;
    for (unsigned b = 0; b < C::n_blocks; b++) {
        blk[b][0] = j;
        for (unsigned l = 0; l < 3; l++) blk[b][1 + l] = (3 - l) * C::groups * C::rows;
        for (int p = 2; p >= 0; p--)
            for (unsigned g = 0; g < C::groups; g++)
                for (unsigned r = 0; r < C::rows; r++, j++)
                    steps[j] = (g * C::rows + r) | (unsigned)p << C::row_bits;
    }
    typename C::accum_t bias[C::n_blocks][1] = {{0}, {0}, {0}}, acc[C::n_out];
    typename C::thr_word_t thr[1][1][1] = {{{0}}};
    bool desc[1][1] = {{false}};
    for (unsigned planes = 3; planes > 0; planes--) {
        flipq::bitserial_dense<typename C::act_raw_t, typename C::accum_t, C>(act, acc, rom, steps, blk, bias, thr,
                                                                              desc, planes);
        for (unsigned n = 0; n < C::n_out; n++) printf("%lld\n", (long long)acc[n].to_int64());
    }
}

int main() {
    run<cfg<ap_int<7>, ap_int<16>, 140, 70, 35> >(1);
    run<cfg<ap_int<70>, ap_int<80>, 140, 70, 35> >(2);
    run<cfg<ap_uint<6>, ap_int<5>, 100, 100, 50> >(3); // psum_t too narrow: both wrap alike
    return 0;
}
