#include <cstdio>
#include <cstdlib>
#include "flipq_bitserial_pe.h"

// Three layers through flipq::mvau (one vector, PE 1, two groups or one): narrow activations (the
// popcount C-sim), activations wider than 64 bits (the lane loop), and a partial sum too narrow
// for its sums (both wrap alike); results printed one per line, for lowest planes 0, 1, 2.
template <class ACT, class PSUM, unsigned K, unsigned G, unsigned SIMD> struct cfg : flipq::bitserial_config {
    static const unsigned n_in = K, n_out = 3, simd = SIMD, pe = 1, n_rows = K / SIMD, n_blocks = 3;
    static const unsigned groups = K / G, rows = G / SIMD, n_entries = 3 * 3 * groups;
    static const unsigned rom_depth = 3 * groups * rows * 3, max_iterations = n_rows + rom_depth, mvau_depth = 4;
    static const unsigned n_planes = 3, sign_plane = 2;
    typedef ACT act_raw_t;
    typedef PSUM psum_t;
    typedef ap_int<96> accum_t;
};

template <class C> void run(unsigned seed) {
    srand(seed);
    typename C::act_raw_t act[C::n_in];
    for (unsigned k = 0; k < C::n_in; k++) act[k] = (long long)(rand() % 61) - 30;
    static uint64_t rom[1][C::rom_depth];
    static uint64_t sched[C::n_entries];
    static unsigned blk[C::n_blocks][C::n_planes + 1];
    const uint64_t lanes = C::simd == 64 ? ~0ULL : (1ULL << C::simd) - 1;
    for (unsigned i = 0; i < C::rom_depth; i++) rom[0][i] = (((uint64_t)rand() << 32) ^ (uint64_t)rand()) & lanes;
    unsigned e = 0, addr = 0;
    for (unsigned b = 0; b < C::n_blocks; b++) {
        blk[b][0] = e;
        for (unsigned l = 0; l < 3; l++) blk[b][1 + l] = (3 - l) * C::groups;
        for (int p = 2; p >= 0; p--)
            for (unsigned g = 0; g < C::groups; g++, e++, addr += C::rows)
                sched[e] = (uint64_t)(g * C::rows) | (uint64_t)C::rows << 16 | (uint64_t)p << 32 | (uint64_t)addr << 36;
    }
    typename C::accum_t bias[C::n_out] = {0, 0, 0}, acc[C::n_out];
    ap_int<2> thr[1][1] = {{0}};
    bool desc[1] = {false};
    for (unsigned lowest = 0; lowest < 3; lowest++) {
        flipq::array_rows<C, typename C::act_raw_t> src(act);
        flipq::array_sink<C, typename C::accum_t> sink(acc);
        flipq::mvau<C>(src, sink, rom, sched, blk, bias, thr, desc, lowest);
        for (unsigned n = 0; n < C::n_out; n++) printf("%lld\n", (long long)acc[n].to_int64());
    }
}

int main() {
    run<cfg<ap_int<7>, ap_int<16>, 140, 70, 35> >(1);
    run<cfg<ap_int<70>, ap_int<80>, 140, 70, 35> >(2);
    run<cfg<ap_uint<6>, ap_int<5>, 100, 100, 50> >(3); // psum_t too narrow: both wrap alike
    return 0;
}
