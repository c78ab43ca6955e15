// flipq bit-serial processing element: weights as two's-complement bit-planes, one plane
// per step, activations bit-parallel. The executable definition of the arithmetic is
// flipq.host.emulator; docs/datapath.md states it in words and docs/cost_model.md the timing.
#ifndef FLIPQ_BITSERIAL_PE_H_
#define FLIPQ_BITSERIAL_PE_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include <stdint.h>

namespace flipq {

// Plane storage, per layer: planes[((n * n_groups + g) * n_planes + p) * n_words + w] holds
// bit i of plane p for fan-in index g * group_size + 64 * w + i of output column n;
// mask[n * n_groups + g] has bit p set where that plane is not all zero in the group.
struct bitserial_config {
    static const unsigned n_in = 1;       // K, the fan-in (kh * kw * cin for a conv)
    static const unsigned n_out = 1;      // N, output columns
    static const unsigned group_size = 1; // consecutive fan-in rows per weight group
    static const unsigned n_groups = 1;
    static const unsigned n_words = 1;    // 64-bit words per group and plane
    static const unsigned n_planes = 2;   // B, the layer's stored weight bits
    static const unsigned sign_plane = 1; // the plane with weight -2**sign_plane (B - 1)
    static const unsigned n_pe = 1;       // output columns computed side by side
    static const bool full_planes = false; // the run-time planes do not apply (average pools)
    // A quantizer hls4ml merged into this layer's result (see layer_output); off by default.
    static const bool requant = false;
    static const int rq_shift = 0; // accumulator raw grid -> quantizer grid: >0 right, <0 left
    static const int rq_min = 0;   // the quantizer's integer range (narrow-aware)
    static const int rq_max = 0;
    typedef ap_int<2> rq_t;        // holds the accumulator after a left shift
    // A threshold step instead (the integer model's `threshold` layer; rq_min is its bottom):
    // n_thr thresholds per column on the accumulator's raw grid, in a thr_rows x thr_cols ROM
    // (1 x 1 and never read when off). thr_t also holds -acc.
    static const bool threshold = false;
    static const unsigned n_thr = 0;
    static const unsigned thr_rows = 1;
    static const unsigned thr_cols = 1;
    typedef ap_int<2> thr_t;
};

// First plane to accumulate for the run-time precision: planes B-1 .. B-k (docs/datapath.md).
// An average pool lowered to a conv of ones (full_planes) keeps every plane.
template <class CONFIG_T> inline unsigned lowest_plane(unsigned planes) {
    return CONFIG_T::full_planes || planes >= CONFIG_T::n_planes ? 0 : CONFIG_T::n_planes - planes;
}

// The raw two's-complement bits of a fixed-point value: its integer on the value's own grid.
template <class raw_T, class fixed_T> inline raw_T raw_bits(const fixed_T &x) {
    raw_T r = x.range(fixed_T::width - 1, 0);
    return r;
}

template <class res_T, class acc_T> inline res_T from_raw_bits(const acc_T &acc) {
    res_T y;
    y.range(res_T::width - 1, 0) = acc;
    return y;
}

// FINN's MultiThreshold on the accumulator, as flipq.host.emulator.apply_thresholds defines
// it: rq_min plus the number of the column's thresholds that s * acc reaches (s = -1 for a
// descending channel). The n_thr comparisons run side by side (the caller partitions the
// column's thresholds) and their one-bit results are summed.
template <class CONFIG_T>
inline typename CONFIG_T::rq_t threshold_count(const typename CONFIG_T::accum_t &acc,
                                               const typename CONFIG_T::thr_t column[CONFIG_T::thr_cols],
                                               bool descending) {
    typedef typename CONFIG_T::thr_t thr_t;
    const thr_t v = descending ? thr_t(-thr_t(acc)) : thr_t(acc);
    typename CONFIG_T::rq_t q = CONFIG_T::rq_min;
ThresholdLoop:
    for (unsigned k = 0; k < CONFIG_T::n_thr; k++) {
#pragma HLS UNROLL
        if (v >= column[k])
            q++;
    }
    return q;
}

// What the layer writes. hls4ml folds a Quant that directly follows a Dense/Conv into that
// layer's result type (its MergeLinearActivation pass) and relies on the layer casting its
// accumulator to it; a bit-serial layer writes raw accumulator bits, so without this step a
// quantizer with no ReLU before it (a signed QuantIdentity between layers) simply vanished.
// Done in integers, as flipq.host.emulator.requantize defines it: round half to even onto
// the quantizer's grid, then saturate to its range (narrow-aware, which AP_SAT is not).
// A threshold step (threshold_count) replaces the requantization where the integer model has
// one; it needs to know which column n it serves.
template <class res_T, class CONFIG_T>
inline res_T layer_output(const typename CONFIG_T::accum_t &acc, unsigned n,
                          const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                          const bool descending[CONFIG_T::thr_rows]) {
    if (CONFIG_T::threshold)
        return from_raw_bits<res_T>(threshold_count<CONFIG_T>(acc, thresholds[n], descending[n]));
    if (!CONFIG_T::requant)
        return from_raw_bits<res_T>(acc);
    typedef typename CONFIG_T::rq_t rq_t;
    static const unsigned right = CONFIG_T::rq_shift > 0 ? CONFIG_T::rq_shift : 0;
    static const unsigned left = CONFIG_T::rq_shift < 0 ? -CONFIG_T::rq_shift : 0;
    rq_t q = acc;
    if (right > 0) {
        const rq_t floor = q >> right;
        const rq_t rem = q - (floor << right);
        const rq_t half = rq_t(1) << (right > 0 ? right - 1 : 0);
        q = floor;
        if (rem > half || (rem == half && (floor & 1) != 0))
            q = floor + 1;
    } else {
        q = q << left;
    }
    if (q < CONFIG_T::rq_min)
        q = CONFIG_T::rq_min;
    if (q > CONFIG_T::rq_max)
        q = CONFIG_T::rq_max;
    return from_raw_bits<res_T>(q);
}

// One plane of one group against the activations: the sum of the activations whose weight
// bit is set. In hardware, one step: `lanes` activations through an adder tree.
template <class CONFIG_T>
typename CONFIG_T::psum_t plane_psum(const typename CONFIG_T::act_raw_t act[CONFIG_T::n_in],
                                     const uint64_t *plane_words, unsigned g) {
#pragma HLS INLINE
    typename CONFIG_T::psum_t psum = 0;
WordLoop:
    for (unsigned w = 0; w < CONFIG_T::n_words; w++) {
        const uint64_t bits = plane_words[w];
    LaneLoop:
        for (unsigned i = 0; i < 64; i++) {
#pragma HLS UNROLL
            const unsigned k = g * CONFIG_T::group_size + 64 * w + i;
            if (k < CONFIG_T::n_in && ((bits >> i) & 1))
                psum += act[k];
        }
    }
    return psum;
}

#ifndef __SYNTHESIS__
// C simulation only: the same sums by popcount. A C-sim of a CIFAR-sized net spends nearly all
// its time in the lane loop above (one ap_int add per weight bit and activation); slicing the
// activations into bit-planes once per matrix-vector product turns 64 lanes into one AND and
// one popcount per activation bit. The function is the same: sum_k w_k * a_k, with
// a_k = sum_j a_kj 2^j (the top bit negative when signed), wrapped into psum_t as the adds
// wrap. Define FLIPQ_CSIM_LANES to simulate the lane loop itself (tests compare the two).
template <class T> struct raw_traits;
template <int W> struct raw_traits<ap_int<W> > {
    static const int width = W;
    static const bool is_signed = true;
};
template <int W> struct raw_traits<ap_uint<W> > {
    static const int width = W;
    static const bool is_signed = false;
};

template <class CONFIG_T> struct act_slices {
    typedef raw_traits<typename CONFIG_T::act_raw_t> traits;
    static const unsigned width = traits::width;
    // covers every (group, word) window, one word past the last: zero beyond n_in
    static const unsigned n_flat = (CONFIG_T::n_groups * CONFIG_T::group_size + 64 * CONFIG_T::n_words) / 64 + 2;
    uint64_t plane[width][n_flat]; // bit k % 64 of word k / 64 of plane j: bit j of act[k]

    explicit act_slices(const typename CONFIG_T::act_raw_t act[CONFIG_T::n_in]) {
        for (unsigned j = 0; j < width; j++)
            for (unsigned f = 0; f < n_flat; f++)
                plane[j][f] = 0;
        for (unsigned k = 0; k < CONFIG_T::n_in; k++) {
            const uint64_t u = (uint64_t)act[k].to_int64(); // two's-complement bits
            for (unsigned j = 0; j < width; j++)
                plane[j][k / 64] |= ((u >> j) & 1) << (k % 64);
        }
    }

    // bits first .. first + 63 of plane j: the lanes of one (group, word) step
    uint64_t window(unsigned j, unsigned first) const {
        const unsigned f = first / 64, r = first % 64;
        return r == 0 ? plane[j][f] : (plane[j][f] >> r) | (plane[j][f + 1] << (64 - r));
    }
};

template <class CONFIG_T>
typename CONFIG_T::psum_t plane_psum(const act_slices<CONFIG_T> *act, const uint64_t *plane_words, unsigned g) {
    typedef act_slices<CONFIG_T> slices_t;
    uint64_t sum = 0; // modulo 2^64, then into psum_t: the lane loop's wrap-around, exactly
    for (unsigned w = 0; w < CONFIG_T::n_words; w++) {
        const uint64_t bits = plane_words[w];
        const unsigned first = g * CONFIG_T::group_size + 64 * w;
        for (unsigned j = 0; j < slices_t::width; j++) {
            const uint64_t count = (uint64_t)__builtin_popcountll(bits & act->window(j, first)) << j;
            sum += (slices_t::traits::is_signed && j == slices_t::width - 1) ? 0 - count : count;
        }
    }
    typename CONFIG_T::psum_t psum = ap_uint<64>(sum); // the low psum_t::width bits
    return psum;
}

// What the C-sim's column loop reads (``get()``): the slices, or the activations themselves (the
// lane loop) where an activation or a partial sum is wider than the 64-bit words the popcount
// adds in.
template <class CONFIG_T, bool fits = raw_traits<typename CONFIG_T::act_raw_t>::width <= 64 &&
                                      raw_traits<typename CONFIG_T::psum_t>::width <= 64>
struct csim_source {
    const act_slices<CONFIG_T> slices;
    explicit csim_source(const typename CONFIG_T::act_raw_t act[CONFIG_T::n_in]) : slices(act) {}
    const act_slices<CONFIG_T> *get() const { return &slices; }
};
template <class CONFIG_T> struct csim_source<CONFIG_T, false> {
    const typename CONFIG_T::act_raw_t *act;
    explicit csim_source(const typename CONFIG_T::act_raw_t act_[CONFIG_T::n_in]) : act(act_) {}
    const typename CONFIG_T::act_raw_t *get() const { return act; }
};
#endif

// One output column: for every group, every stored plane the mask keeps and `planes`
// allows, add the activations whose weight bit is set and shift the sum into place; the
// sign plane is subtracted. Planes that are all zero in a group cost no step. `act` points to
// the activations (hardware) or, in C simulation, to their bit slices.
template <class CONFIG_T, class act_T>
typename CONFIG_T::accum_t bitserial_column(act_T act, const uint64_t *col_planes, const uint8_t *col_mask,
                                            typename CONFIG_T::accum_t bias, unsigned lowest) {
    typedef typename CONFIG_T::accum_t accum_t;
    typedef typename CONFIG_T::psum_t psum_t;
    accum_t acc = bias;
GroupLoop:
    for (unsigned g = 0; g < CONFIG_T::n_groups; g++) {
        const uint8_t mask = col_mask[g];
    PlaneLoop:
        for (int p = CONFIG_T::n_planes - 1; p >= 0; p--) {
#pragma HLS PIPELINE II = 1
            if ((unsigned)p < lowest || !((mask >> p) & 1))
                continue;
            const uint64_t *plane_words = col_planes + (g * CONFIG_T::n_planes + p) * CONFIG_T::n_words;
            const psum_t psum = plane_psum<CONFIG_T>(act, plane_words, g);
            const accum_t shifted = accum_t(psum) << p;
            if ((unsigned)p == CONFIG_T::sign_plane)
                acc -= shifted;
            else
                acc += shifted;
        }
    }
    return acc;
}

// A K-vector of activations against all N columns, CONFIG_T::n_pe columns at a time.
template <class CONFIG_T>
void bitserial_matvec(const typename CONFIG_T::act_raw_t act[CONFIG_T::n_in],
                      typename CONFIG_T::accum_t acc[CONFIG_T::n_out], const uint64_t *planes_data,
                      const uint8_t *mask_data, const typename CONFIG_T::accum_t *bias, unsigned lowest) {
    static const unsigned column_words = CONFIG_T::n_groups * CONFIG_T::n_planes * CONFIG_T::n_words;
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
    const csim_source<CONFIG_T> sliced(act);
    const auto source = sliced.get();
#else
    const typename CONFIG_T::act_raw_t *source = act;
#endif
ColumnLoop:
    for (unsigned n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL factor = CONFIG_T::n_pe
        acc[n] = bitserial_column<CONFIG_T>(source, planes_data + n * column_words, mask_data + n * CONFIG_T::n_groups,
                                            bias[n], lowest);
    }
}

} // namespace flipq

#endif
