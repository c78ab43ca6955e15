#include <cstdio>
#include <cstdlib>
#include "flipq_bitserial_pe.h"

// Two layers through flipq::bitserial_matvec: narrow activations (the popcount C-sim) and
// activations wider than 64 bits (the lane loop); results printed one per line.
template <class ACT, class PSUM, unsigned K, unsigned G> struct cfg : flipq::bitserial_config {
    static const unsigned n_in = K, n_out = 3, group_size = G, n_groups = (K + G - 1) / G;
    static const unsigned n_words = (G + 63) / 64, n_planes = 3, sign_plane = 2, n_pe = 1;
    typedef ACT act_raw_t;
    typedef PSUM psum_t;
    typedef ap_int<96> accum_t;
};

template <class C> void run(unsigned seed) {
    srand(seed);
    typename C::act_raw_t act[C::n_in];
    for (unsigned k = 0; k < C::n_in; k++) act[k] = (long long)(rand() % 61) - 30;
    static const unsigned words = C::n_out * C::n_groups * C::n_planes * C::n_words;
    uint64_t planes[words];
    for (unsigned i = 0; i < words; i++) planes[i] = ((uint64_t)rand() << 32) ^ (uint64_t)rand();
    uint8_t mask[C::n_out * C::n_groups];
    for (unsigned i = 0; i < C::n_out * C::n_groups; i++) mask[i] = 7;
    typename C::accum_t bias[C::n_out] = {0, 0, 0}, acc[C::n_out];
    for (unsigned lowest = 0; lowest < 3; lowest++) {
        flipq::bitserial_matvec<C>(act, acc, planes, mask, bias, lowest);
        for (unsigned n = 0; n < C::n_out; n++) printf("%lld\n", (long long)acc[n].to_int64());
    }
}

int main() {
    run<cfg<ap_int<7>, ap_int<16>, 150, 70> >(1);
    run<cfg<ap_int<70>, ap_int<80>, 150, 70> >(2);
    run<cfg<ap_uint<6>, ap_int<5>, 100, 100> >(3); // psum_t too narrow: both wrap alike
    return 0;
}
