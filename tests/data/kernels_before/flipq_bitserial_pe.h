// flipq bit-serial processing element: weights as two's-complement bit-planes, one plane
// per step, activations bit-parallel. The executable definition of the arithmetic is
// flipq.host.emulator; docs/datapath.md states it in words and docs/cost_model.md the timing.
#ifndef FLIPQ_BITSERIAL_PE_H_
#define FLIPQ_BITSERIAL_PE_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#include <stdint.h>

namespace flipq {

// One folded layer (docs/cost_model.md): PE output columns and SIMD fan-in rows a step, one
// weight plane a step. rom[pe][addr] holds SIMD-bit plane words of the column PE pe computes in
// each column block, in schedule order; sched[e] one schedule entry (row0 | rows << 16 |
// plane << 32 | addr << 36); blk[b][0] the first entry of column block b and blk[b][1 + l] how
// many of its entries have plane >= l (entries are sorted by plane, sign plane first).
struct bitserial_config {
    static const unsigned layer_id = 0;   // position in the hardware plan (C-sim cycle counters)
    static const unsigned n_in = 1;       // K, the fan-in (kh * kw * cin for a conv)
    static const unsigned n_out = 1;      // N, output columns
    static const unsigned n_pix = 1;      // activation vectors (output pixels) per sample
    static const unsigned simd = 1;       // fan-in rows a step
    static const unsigned pe = 1;         // output columns a step
    static const unsigned n_rows = 1;     // R = K / SIMD, activation rows per vector
    static const unsigned n_blocks = 1;   // N / PE column blocks
    static const unsigned n_entries = 1;  // schedule entries (at least 1)
    static const unsigned rom_depth = 1;  // words per PE ROM (at least 1)
    static const unsigned max_iterations = 1; // the MVAU loop's trip count at full precision
    static const unsigned mvau_depth = 1; // its pipeline depth
    static const unsigned n_planes = 2;   // B, the layer's stored weight bits
    static const unsigned sign_plane = 1; // the plane with weight -2**sign_plane (B - 1)
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

#ifndef __SYNTHESIS__
// C simulation only: cycles each layer's pipelined loops ran (iterations plus pipeline depth),
// per layer_id and process (0 the MVAU, 1 the sliding-window generator). flipq_bridge.cpp reads
// them; flipq.hls.fold computes the same numbers from the plan, and the tests compare the two.
static const unsigned max_counted_layers = 256;
inline unsigned long long *cycle_counters() {
    static unsigned long long counters[max_counted_layers * 2];
    return counters;
}
inline void count_cycles(unsigned layer, unsigned process, unsigned long long cycles) {
    if (layer < max_counted_layers)
        cycle_counters()[layer * 2 + process] += cycles;
}
#define FLIPQ_COUNT_CYCLES(layer, process, cycles) flipq::count_cycles(layer, process, cycles)
#else
#define FLIPQ_COUNT_CYCLES(layer, process, cycles)
#endif

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

// One row of activations: the SIMD lanes a step reads.
template <class CONFIG_T> struct act_row {
    typename CONFIG_T::act_raw_t lane[CONFIG_T::simd];
};

#ifndef __SYNTHESIS__
template <class T> struct raw_traits;
template <int W> struct raw_traits<ap_int<W> > {
    static const int width = W;
    static const bool is_signed = true;
};
template <int W> struct raw_traits<ap_uint<W> > {
    static const int width = W;
    static const bool is_signed = false;
};
#endif

// The activation buffer of one layer: two halves (ping-pong: one vector is read in while the
// other is computed on), R rows of SIMD lanes, one memory bank per lane. In C simulation it
// also keeps each row as bit slices (csim_slices), so a step's sum is one AND and popcount per
// activation bit instead of SIMD ap_int adds (a CIFAR-sized net spends nearly all its C-sim
// time there). Define FLIPQ_CSIM_LANES to simulate the lane loop itself (tests compare both).
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
template <class CONFIG_T> struct csim_slices {
    typedef raw_traits<typename CONFIG_T::act_raw_t> traits;
    static const unsigned width = traits::width;
    static const bool used = width <= 64 && raw_traits<typename CONFIG_T::psum_t>::width <= 64;
    uint64_t bits[2][CONFIG_T::n_rows][used ? width : 1]; // bit i of [j]: bit j of lane i

    // accumulate in int64 where the register fits: the plan sizes accum_t for every partial sum,
    // so nothing wraps and the two agree (the FLIPQ_CSIM_LANES build checks it)
    static const bool fast = used && raw_traits<typename CONFIG_T::accum_t>::width <= 62;

    void write(unsigned half, unsigned row, const act_row<CONFIG_T> &r) {
        if (!used)
            return;
        uint64_t b[used ? width : 1] = {0};
        for (unsigned i = 0; i < CONFIG_T::simd; i++) {
            const uint64_t u = (uint64_t)r.lane[i].to_int64(); // two's-complement bits
            for (unsigned j = 0; j < width; j++)
                b[j] |= ((u >> j) & 1) << i;
        }
        for (unsigned j = 0; j < width; j++)
            bits[half][row][j] = b[j];
    }

    // the same sum as psum(), as an int64 (sign-extended from psum_t's width)
    int64_t psum64(unsigned half, unsigned row, uint64_t w) const {
        static const unsigned pw = raw_traits<typename CONFIG_T::psum_t>::width;
        uint64_t total = 0;
        for (unsigned j = 0; j < width; j++) {
            const uint64_t count = (uint64_t)__builtin_popcountll(w & bits[half][row][j]) << j;
            total += (traits::is_signed && j == width - 1) ? 0 - count : count;
        }
        return pw >= 64 ? (int64_t)total : (int64_t)(total << (64 - pw)) >> (64 - pw);
    }

    typename CONFIG_T::psum_t psum(unsigned half, unsigned row, uint64_t w) const {
        uint64_t total = 0; // modulo 2^64, then into psum_t: the adder tree's wrap, exactly
        for (unsigned j = 0; j < width; j++) {
            const uint64_t count = (uint64_t)__builtin_popcountll(w & bits[half][row][j]) << j;
            total += (traits::is_signed && j == width - 1) ? 0 - count : count;
        }
        typename CONFIG_T::psum_t sum = ap_uint<64>(total);
        return sum;
    }
};
#endif

// One plane word (bit i: the weight bit of lane i) against one row: the sum of the lanes whose
// weight bit is set. In hardware, SIMD AND gates and an adder tree.
template <class CONFIG_T>
typename CONFIG_T::psum_t lane_psum(const typename CONFIG_T::act_raw_t lanes[CONFIG_T::simd], uint64_t bits) {
#pragma HLS INLINE
    typename CONFIG_T::psum_t sum = 0;
LaneLoop:
    for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
        if ((bits >> i) & 1)
            sum += lanes[i];
    }
    return sum;
}

// The folded matrix-vector unit: n_pix activation vectors against all N columns, PE columns and
// SIMD rows a step, one weight plane a step, in ONE pipelined loop (II=1). Slot j reads vector j
// (R rows from src, one a cycle) into one half of the buffer while computing vector j - 1 from
// the other; a slot lasts the longer of the two. The compute side walks each column block's
// schedule: only its entries with plane >= lowest (a prefix), each entry its group's rows. A
// block ends by writing its PE results (bias + sum, through layer_output); the last block of a
// vector hands the vector's N results to sink. Planes dropped at run time and (group, plane)
// pairs that are zero in the whole block are not iterations at all.
template <class CONFIG_T, class src_T, class sink_T>
void mvau(src_T &src, sink_T &sink, const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
          const uint64_t sched[CONFIG_T::n_entries], const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
          const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
          const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
          const bool descending[CONFIG_T::thr_rows], unsigned lowest) {
#pragma HLS INLINE off
#pragma HLS ARRAY_PARTITION variable = rom complete dim = 1
#pragma HLS ARRAY_PARTITION variable = blk complete dim = 2
#pragma HLS ARRAY_PARTITION variable = bias cyclic factor = CONFIG_T::pe dim = 1
#pragma HLS ARRAY_PARTITION variable = thresholds cyclic factor = CONFIG_T::pe dim = 1
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
#pragma HLS ARRAY_PARTITION variable = descending cyclic factor = CONFIG_T::pe dim = 1
    typedef typename CONFIG_T::accum_t accum_t;
    typedef typename sink_T::elem_t elem_t;
    static typename CONFIG_T::act_raw_t buf[2][CONFIG_T::n_rows][CONFIG_T::simd];
#pragma HLS ARRAY_PARTITION variable = buf complete dim = 3
#pragma HLS DEPENDENCE variable = buf inter false
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
    static csim_slices<CONFIG_T> slices;
    int64_t acc64[CONFIG_T::pe];
#endif
    accum_t acc[CONFIG_T::pe];
#pragma HLS ARRAY_PARTITION variable = acc complete
    elem_t out[CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable = out complete
    unsigned slot = 0, row_in = 0;           // reading: vector `slot`, its row `row_in`
    unsigned block = 0, entry = 0, step = 0; // computing vector slot - 1: block, entry, row
    bool computed = true;                    // slot 0 computes nothing
    unsigned long long iterations = 0;
MvauLoop:
    for (unsigned it = 0; it < CONFIG_T::max_iterations; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::max_iterations
        iterations++;
        if (slot < CONFIG_T::n_pix && row_in < CONFIG_T::n_rows) {
            act_row<CONFIG_T> r;
            src.read_row(r);
            for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
                buf[slot & 1][row_in][i] = r.lane[i];
            }
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
            slices.write(slot & 1, row_in, r);
#endif
            row_in++;
        }
        if (!computed) {
            const unsigned len = blk[block][1 + lowest];
            const unsigned at = blk[block][0] + entry;
            const uint64_t e = at < CONFIG_T::n_entries ? sched[at] : 0; // a block with no entries
            const unsigned row0 = e & 0xffff, rows = (e >> 16) & 0xffff, plane = (e >> 32) & 0xf;
            const unsigned addr = (unsigned)(e >> 36) + step;
            const bool first = entry == 0 && step == 0;
            const bool last = len == 0 || (entry + 1 == len && step + 1 == rows);
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
            if (csim_slices<CONFIG_T>::fast) {
                for (unsigned p = 0; p < CONFIG_T::pe; p++) {
                    const unsigned n = block * CONFIG_T::pe + p;
                    int64_t a = first ? bias[n].to_int64() : acc64[p];
                    if (len > 0) {
                        const int64_t shifted = slices.psum64((slot - 1) & 1, row0 + step, rom[p][addr]) * (int64_t(1) << plane);
                        a = plane == CONFIG_T::sign_plane ? a - shifted : a + shifted;
                    }
                    acc64[p] = a;
                    if (last)
                        out[n] = layer_output<elem_t, CONFIG_T>(accum_t(a), n, thresholds, descending);
                }
            } else
#endif
        PeLoop:
            for (unsigned p = 0; p < CONFIG_T::pe; p++) {
#pragma HLS UNROLL
                const unsigned n = block * CONFIG_T::pe + p;
                accum_t a = first ? bias[n] : acc[p];
                if (len > 0) {
                    const unsigned half = (slot - 1) & 1;
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
                    const typename CONFIG_T::psum_t psum = slices.used
                        ? slices.psum(half, row0 + step, rom[p][addr])
                        : lane_psum<CONFIG_T>(buf[half][row0 + step], rom[p][addr]);
#else
                    const typename CONFIG_T::psum_t psum = lane_psum<CONFIG_T>(buf[half][row0 + step], rom[p][addr]);
#endif
                    const accum_t shifted = accum_t(psum) << plane;
                    a = plane == CONFIG_T::sign_plane ? accum_t(a - shifted) : accum_t(a + shifted);
                }
                acc[p] = a;
                if (last)
                    out[n] = layer_output<elem_t, CONFIG_T>(a, n, thresholds, descending);
            }
            if (last) {
                entry = step = 0;
                if (block + 1 == CONFIG_T::n_blocks) {
                    sink.write(out);
                    block = 0;
                    computed = true;
                } else {
                    block++;
                }
            } else if (step + 1 == rows) {
                step = 0;
                entry++;
            } else {
                step++;
            }
        }
        if (computed && (slot >= CONFIG_T::n_pix || row_in >= CONFIG_T::n_rows)) {
            if (slot == CONFIG_T::n_pix)
                break;
            slot++;
            row_in = 0;
            computed = false;
        }
    }
    FLIPQ_COUNT_CYCLES(CONFIG_T::layer_id, 0, iterations + CONFIG_T::mvau_depth);
}

// Sources of activation rows for the MVAU, and sinks for its results.
template <class CONFIG_T, class data_T> struct array_rows { // io_parallel: the vector in an array
    const data_T *data;
    unsigned next;
    explicit array_rows(const data_T *d) : data(d), next(0) {}
    void read_row(act_row<CONFIG_T> &r) {
        for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
            r.lane[i] = raw_bits<typename CONFIG_T::act_raw_t>(data[next + i]);
        }
        next += CONFIG_T::simd;
    }
};

template <class CONFIG_T, class data_T> struct beat_rows { // io_stream: hls4ml beats of SIMD-multiples
    hls::stream<data_T> &data;
    data_T beat;
    unsigned pos;
    explicit beat_rows(hls::stream<data_T> &d) : data(d), pos(0) {}
    void read_row(act_row<CONFIG_T> &r) {
        if (pos == 0)
            beat = data.read();
        for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
            r.lane[i] = raw_bits<typename CONFIG_T::act_raw_t>(beat[pos + i]);
        }
        pos = pos + CONFIG_T::simd == data_T::size ? 0 : pos + CONFIG_T::simd;
    }
};

template <class CONFIG_T> struct stream_rows { // a conv's windows from its sliding-window generator
    hls::stream<act_row<CONFIG_T> > &data;
    explicit stream_rows(hls::stream<act_row<CONFIG_T> > &d) : data(d) {}
    void read_row(act_row<CONFIG_T> &r) { r = data.read(); }
};

template <class CONFIG_T, class res_T> struct array_sink { // io_parallel: vector v at res[v * N]
    typedef res_T elem_t;
    res_T *res;
    explicit array_sink(res_T *r) : res(r) {}
    void write(const elem_t out[CONFIG_T::n_out]) {
        for (unsigned n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
            res[n] = out[n];
        }
        res += CONFIG_T::n_out;
    }
};

template <class CONFIG_T, class res_T> struct beat_sink { // io_stream: one beat of N per vector
    typedef typename res_T::value_type elem_t;
    hls::stream<res_T> &res;
    explicit beat_sink(hls::stream<res_T> &r) : res(r) {}
    void write(const elem_t out[CONFIG_T::n_out]) {
        res_T beat;
        for (unsigned n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
            beat[n] = out[n];
        }
        res.write(beat);
    }
};

} // namespace flipq

#endif
