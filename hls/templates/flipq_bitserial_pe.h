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

// How a layer's constant tables (weight plane words, the step table, thresholds) are stored.
// Synthesis: the ap_[u]int<W> the datapath reads, so a SIMD-bit plane word is a SIMD-bit ROM
// column. C simulation: the C integer that holds the same value where W <= 64, because g++ runs
// one ap_int constructor per initializer entry (a 100,352-entry table: 62 s and 3.4 GB to
// compile, against 0.9 s and 0.19 GB as uint64_t; docs/compile_scale.md). Read back as
// ap_[u]int<W> (the kernels convert on every read), both give the same bits.
#ifdef __SYNTHESIS__
static const bool tables_as_c_integers = false;
#else
static const bool tables_as_c_integers = true;
#endif
template <int W, bool S, bool C = (tables_as_c_integers && W <= 64)> struct table_word {
    typedef ap_uint<W> type;
};
template <int W> struct table_word<W, true, false> {
    typedef ap_int<W> type;
};
template <int W> struct table_word<W, false, true> {
    typedef uint64_t type;
};
template <int W> struct table_word<W, true, true> {
    typedef int64_t type;
};
template <int W> inline uint64_t word_bits(const ap_uint<W> &w) { return w.to_uint64(); }
inline uint64_t word_bits(uint64_t w) { return w; }

// One folded layer (docs/cost_model.md): PE output columns and SIMD fan-in rows a step, one
// weight plane a step. rom[pe][j] is the SIMD-bit plane word of the column PE pe computes at step
// j: steps are numbered through all column blocks' schedules at full precision (fold.py gives
// the ROM words exactly these addresses), so step j's weight address is j itself. steps[j] holds
// the step's activation row and plane (row | plane << row_bits); blk[b][0] is column block b's
// first step and blk[b][1 + l] how many of its steps have plane >= l (its schedule is sorted by
// plane, sign plane first, so those are a prefix). Bias, thresholds and descending flags are
// [NB][PE] banks: PE reads column b * PE + p from bank p at address b.
struct bitserial_config {
    static const unsigned layer_id = 0;   // position in the hardware plan (C-sim cycle counters)
    static const unsigned n_in = 1;       // K, the fan-in (kh * kw * cin for a conv)
    static const unsigned n_out = 1;      // N, output columns
    static const unsigned n_pix = 1;      // activation vectors (output pixels) per sample
    static const unsigned simd = 1;       // fan-in rows a step
    static const unsigned pe = 1;         // output columns a step
    static const unsigned n_rows = 1;     // R = K / SIMD, activation rows per vector
    static const unsigned n_blocks = 1;   // N / PE column blocks
    static const unsigned rom_depth = 1;  // steps at full precision = words per PE ROM (at least 1)
    static const unsigned row_bits = 1;   // bits of a step's activation row in steps[]
    typedef ap_uint<5> step_t;            // row | plane << row_bits
    // the tables' storage (table_word): override with the layer's simd, step and threshold widths
    typedef table_word<1, false>::type rom_word_t;
    typedef table_word<5, false>::type step_word_t;
    static const unsigned max_iterations = 1; // the MVAU loop's trip count at full precision
    static const unsigned mvau_depth = 1; // its pipeline depth
    static const unsigned n_planes = 2;   // B, the layer's stored weight bits
    static const unsigned sign_plane = 1; // the plane with weight -2**sign_plane (B - 1)
    static const bool full_planes = false; // the run-time planes do not apply (average pools)
    // A vector-vector unit (a depthwise conv): PE p reads only lane p (its own channel) and its
    // ROM word is that lane's one weight bit; SIMD = PE (flipq.hls.hwplan.check_depthwise_folding).
    static const bool depthwise = false;
    // A quantizer hls4ml merged into this layer's result (see layer_output); off by default.
    static const bool requant = false;
    static const int rq_shift = 0; // accumulator raw grid -> quantizer grid: >0 right, <0 left
    static const int rq_min = 0;   // the quantizer's integer range (narrow-aware)
    static const int rq_max = 0;
    typedef ap_int<2> rq_t;        // holds the accumulator after a left shift
    // A threshold step instead (the integer model's `threshold` layer; rq_min is its bottom):
    // n_thr thresholds per column on the accumulator's raw grid, in a [thr_blocks][thr_pe]
    // [thr_cols] ROM ([NB][PE][n_thr]; 1 x 1 x 1 and never read when off). thr_t also holds -acc.
    static const bool threshold = false;
    static const unsigned n_thr = 0;
    static const unsigned thr_blocks = 1;
    static const unsigned thr_pe = 1;
    static const unsigned thr_cols = 1;
    typedef ap_int<2> thr_t;
    typedef table_word<2, true>::type thr_word_t;
};

// A fixed-size vector with hls4ml's nnet::array interface (value_type, size, operator[]): the
// element of the streams between a layer's processes.
template <class T, unsigned N> struct vec {
    typedef T value_type;
    static const unsigned size = N;
    T data[N];
    T &operator[](unsigned i) { return data[i]; }
    const T &operator[](unsigned i) const { return data[i]; }
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

// The number of set flags among hit[LO .. LO + N): a balanced adder tree (two halves, summed),
// so the count is log2(N) adders deep rather than a chain of N increments.
template <unsigned LO, unsigned N> struct count_tree {
    static const unsigned half = N / 2;
    template <class T, unsigned M> static T sum(const bool (&hit)[M]) {
#pragma HLS INLINE
        return T(count_tree<LO, half>::template sum<T>(hit) + count_tree<LO + half, N - half>::template sum<T>(hit));
    }
};
template <unsigned LO> struct count_tree<LO, 1> {
    template <class T, unsigned M> static T sum(const bool (&hit)[M]) {
#pragma HLS INLINE
        return hit[LO] ? T(1) : T(0);
    }
};
template <unsigned LO> struct count_tree<LO, 0> {
    template <class T, unsigned M> static T sum(const bool (&)[M]) {
#pragma HLS INLINE
        return T(0);
    }
};

// FINN's MultiThreshold on the accumulator, as flipq.host.emulator.apply_thresholds defines
// it: rq_min plus the number of the column's thresholds that s * acc reaches (s = -1 for a
// descending channel). The n_thr comparisons run side by side (the caller partitions the
// column's thresholds) and count_tree sums their one-bit results.
template <class CONFIG_T>
inline typename CONFIG_T::rq_t threshold_count(const typename CONFIG_T::accum_t &acc,
                                               const typename CONFIG_T::thr_word_t column[CONFIG_T::thr_cols],
                                               bool descending) {
#pragma HLS INLINE
    typedef typename CONFIG_T::thr_t thr_t;
    typedef typename CONFIG_T::rq_t rq_t;
    const thr_t v = descending ? thr_t(-thr_t(acc)) : thr_t(acc);
    bool hit[CONFIG_T::thr_cols];
#pragma HLS ARRAY_PARTITION variable = hit complete
ThresholdLoop:
    for (unsigned k = 0; k < CONFIG_T::thr_cols; k++) {
#pragma HLS UNROLL
        hit[k] = k < CONFIG_T::n_thr && v >= thr_t(column[k]);
    }
    return rq_t(rq_t(CONFIG_T::rq_min) + count_tree<0, CONFIG_T::n_thr>::template sum<rq_t>(hit));
}

// What the layer writes. hls4ml folds a Quant that directly follows a Dense/Conv into that
// layer's result type (its MergeLinearActivation pass) and relies on the layer casting its
// accumulator to it; a bit-serial layer writes raw accumulator bits, so without this step a
// quantizer with no ReLU before it (a signed QuantIdentity between layers) simply vanished.
// Done in integers, as flipq.host.emulator.requantize defines it: round half to even onto
// the quantizer's grid, then saturate to its range (narrow-aware, which AP_SAT is not).
// A threshold step (threshold_count) replaces the requantization where the integer model has
// one; the caller hands it the column's thresholds and direction.
template <class res_T, class CONFIG_T>
inline res_T layer_output(const typename CONFIG_T::accum_t &acc,
                          const typename CONFIG_T::thr_word_t column[CONFIG_T::thr_cols], bool descending) {
#pragma HLS INLINE
    if (CONFIG_T::threshold)
        return from_raw_bits<res_T>(threshold_count<CONFIG_T>(acc, column, descending));
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
typename CONFIG_T::psum_t lane_psum(const typename CONFIG_T::act_raw_t lanes[CONFIG_T::simd],
                                    const ap_uint<CONFIG_T::simd> &bits) {
#pragma HLS INLINE
    typename CONFIG_T::psum_t sum = 0;
LaneLoop:
    for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
        if (bits[i])
            sum += lanes[i];
    }
    return sum;
}

// The folded matrix-vector unit: n_pix activation vectors against all N columns, PE columns and
// SIMD rows a step, one weight plane a step, in ONE pipelined loop (II=1). Slot v reads vector v
// (R rows from `rows`, one a cycle) into one half of the buffer while computing vector v - 1 from
// the other; a slot lasts the longer of the two. The compute side runs each column block's first
// blk[b][1 + lowest] steps (planes dropped at run time and (group, plane) pairs zero in the whole
// block are not iterations at all; a block with none takes one step: it still writes its bias).
// A block ends by putting its PE accumulators through layer_output; the vector's last block
// writes the vector's N results to `vecs`.
//
// The loop-carried state is counters only: the step j (the ROM address), the step within the
// block, the block, the slot. The one table the control reads, blk, is read at a counter
// address (`ahead`, the next block) into registers one block before they are needed, so the
// next state and the exit are counter arithmetic and compares against registers; the step
// table is read at address j and feeds only the datapath (the buffer row and the shift).
template <class CONFIG_T, class vec_T>
void mvau(hls::stream<act_row<CONFIG_T> > &rows, hls::stream<vec_T> &vecs,
          const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
          const typename CONFIG_T::step_word_t steps[CONFIG_T::rom_depth],
          const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
          const typename CONFIG_T::accum_t bias[CONFIG_T::n_blocks][CONFIG_T::pe],
          const typename CONFIG_T::thr_word_t thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols],
          const bool descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe], unsigned planes) {
#pragma HLS INLINE off
#pragma HLS ARRAY_PARTITION variable = rom complete dim = 1
#pragma HLS ARRAY_PARTITION variable = blk complete dim = 2
#pragma HLS ARRAY_PARTITION variable = bias complete dim = 2
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 3
#pragma HLS ARRAY_PARTITION variable = descending complete dim = 2
    typedef typename CONFIG_T::accum_t accum_t;
    typedef typename vec_T::value_type elem_t;
    typedef typename CONFIG_T::step_t step_t;
    static_assert(vec_T::size == CONFIG_T::n_out, "flipq: one output beat per vector");
    static const unsigned nb = CONFIG_T::n_blocks, pe = CONFIG_T::pe, n_out = CONFIG_T::n_out;
    // a layer without a threshold step passes 1 x 1 placeholders: index them at 0
    static const unsigned thr_b = CONFIG_T::threshold ? 1 : 0, thr_p = CONFIG_T::threshold ? 1 : 0;
    static typename CONFIG_T::act_raw_t buf[2][CONFIG_T::n_rows][CONFIG_T::simd];
#pragma HLS ARRAY_PARTITION variable = buf complete dim = 3
#pragma HLS DEPENDENCE variable = buf inter false
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
    static csim_slices<CONFIG_T> slices;
    int64_t acc64[CONFIG_T::pe];
#endif
    accum_t acc[CONFIG_T::pe];
#pragma HLS ARRAY_PARTITION variable = acc complete
    // the vector's results, shifted in PE at a time: block b's land at b * PE .. once all are in
    elem_t out[CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable = out complete
    const unsigned lowest = lowest_plane<CONFIG_T>(planes);
    unsigned slot = 0, row_in = 0; // reading: vector `slot`, its row `row_in`
    unsigned block = 0, k = 0;     // computing vector slot - 1: block, step within the block
    unsigned j = blk[0][0], len = blk[0][1 + lowest]; // this block's first step (ROM address), steps
    unsigned ahead = nb > 1 ? 1 : 0;                  // the next block (wraps to 0 for the next vector)
    unsigned next_j = blk[ahead][0], next_len = blk[ahead][1 + lowest];
    bool computed = true; // slot 0 computes nothing
    unsigned long long iterations = 0;
MvauLoop:
    for (unsigned it = 0; it < CONFIG_T::max_iterations; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::max_iterations
        iterations++;
        if (slot < CONFIG_T::n_pix && row_in < CONFIG_T::n_rows) {
            const act_row<CONFIG_T> r = rows.read();
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
            const bool first = k == 0;
            const bool last = k + 1 >= len; // len 0: the block's one step, bias only
            const bool any = len != 0;
            const step_t s = step_t(steps[j]);
            const unsigned row = s.range(CONFIG_T::row_bits - 1, 0);
            const unsigned plane = s >> CONFIG_T::row_bits;
            const unsigned half = (slot - 1) & 1;
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
            if (csim_slices<CONFIG_T>::fast) {
                for (unsigned p = 0; p < CONFIG_T::pe; p++) {
                    int64_t a = first ? bias[block][p].to_int64() : acc64[p];
                    if (any) {
                        const uint64_t w = CONFIG_T::depthwise ? (word_bits(rom[p][j]) & 1) << p : word_bits(rom[p][j]);
                        const int64_t shifted = slices.psum64(half, row, w) * (int64_t(1) << plane);
                        a = plane == CONFIG_T::sign_plane ? a - shifted : a + shifted;
                    }
                    acc64[p] = a;
                    if (last)
                        out[block * pe + p] = layer_output<elem_t, CONFIG_T>(
                            accum_t(a), thresholds[block * thr_b][p * thr_p], descending[block * thr_b][p * thr_p]);
                }
            } else
#endif
            {
                elem_t res[CONFIG_T::pe];
#pragma HLS ARRAY_PARTITION variable = res complete
            PeLoop:
                for (unsigned p = 0; p < CONFIG_T::pe; p++) {
#pragma HLS UNROLL
                    accum_t a = first ? bias[block][p] : acc[p];
                    if (any) {
                        typename CONFIG_T::psum_t psum;
                        if (CONFIG_T::depthwise) {
                            // one lane, a static index into the partitioned buffer: an AND, no tree
                            psum = ap_uint<1>(rom[p][j]) ? typename CONFIG_T::psum_t(buf[half][row][p]) : typename CONFIG_T::psum_t(0);
                        } else {
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
                            psum = slices.used ? slices.psum(half, row, word_bits(rom[p][j]))
                                               : lane_psum<CONFIG_T>(buf[half][row], ap_uint<CONFIG_T::simd>(rom[p][j]));
#else
                            psum = lane_psum<CONFIG_T>(buf[half][row], ap_uint<CONFIG_T::simd>(rom[p][j]));
#endif
                        }
                        const accum_t shifted = accum_t(psum) << plane;
                        a = plane == CONFIG_T::sign_plane ? accum_t(a - shifted) : accum_t(a + shifted);
                    }
                    acc[p] = a;
                    res[p] = layer_output<elem_t, CONFIG_T>(a, thresholds[block * thr_b][p * thr_p],
                                                            descending[block * thr_b][p * thr_p]);
                }
                if (last) {
                ShiftOut:
                    for (unsigned n = 0; n + pe < n_out; n++) {
#pragma HLS UNROLL
                        out[n] = out[n + pe];
                    }
                InsertOut:
                    for (unsigned p = 0; p < CONFIG_T::pe; p++) {
#pragma HLS UNROLL
                        out[n_out - pe + p] = res[p];
                    }
                }
            }
            if (last) {
                k = 0;
                j = next_j;
                len = next_len;
                ahead = ahead + 1 == nb ? 0 : ahead + 1;
                next_j = blk[ahead][0];
                next_len = blk[ahead][1 + lowest];
                if (block + 1 == nb) {
                    vec_T v;
                WriteOut:
                    for (unsigned n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
                        v[n] = out[n];
                    }
                    vecs.write(v);
                    block = 0;
                    computed = true;
                } else {
                    block++;
                }
            } else {
                k++;
                j++;
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

// Width converters in front of the MVAU and behind it. A lane always comes from a fixed position
// of a register: the converter hands out lanes 0 .. SIMD-1 and shifts the register down by SIMD,
// so no lane selects among the input's elements by a run-time index. (In C simulation the same
// elements are read by index: shifting a whole vector a step costs C-sim time, not hardware.)

// io_parallel: the input vector, R rows of SIMD lanes.
template <class CONFIG_T, class data_T>
void rows_from_array(const data_T data[CONFIG_T::n_in], hls::stream<act_row<CONFIG_T> > &rows) {
#pragma HLS INLINE off
    static_assert(CONFIG_T::n_pix == 1, "flipq: an io_parallel dense layer reads one vector");
    typedef typename CONFIG_T::act_raw_t act_t;
    static const unsigned simd = CONFIG_T::simd, n_in = CONFIG_T::n_in;
    act_t reg[CONFIG_T::n_in];
#pragma HLS ARRAY_PARTITION variable = reg complete
Load:
    for (unsigned k = 0; k < CONFIG_T::n_in; k++) {
#pragma HLS UNROLL
        reg[k] = raw_bits<act_t>(data[k]);
    }
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
    unsigned at = 0;
#endif
RowLoop:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = 1
        act_row<CONFIG_T> w;
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
        if (true) {
            for (unsigned i = 0; i < simd; i++)
                w.lane[i] = reg[at + i];
            at += simd;
        } else
#endif
        {
            for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
                w.lane[i] = reg[i];
            }
            for (unsigned k = 0; k + simd < n_in; k++) {
#pragma HLS UNROLL
                reg[k] = reg[k + simd];
            }
        }
        rows.write(w);
    }
}

// io_stream: hls4ml's beats, each a whole number of SIMD rows; a row never spans two beats.
template <class CONFIG_T, class data_T>
void rows_from_beats(hls::stream<data_T> &data, hls::stream<act_row<CONFIG_T> > &rows) {
#pragma HLS INLINE off
    static_assert(data_T::size % CONFIG_T::simd == 0 && CONFIG_T::n_in % data_T::size == 0,
                  "flipq: input beats must hold whole SIMD rows");
    typedef typename CONFIG_T::act_raw_t act_t;
    static const unsigned simd = CONFIG_T::simd, size = data_T::size, per_beat = size / simd;
    act_t reg[data_T::size];
#pragma HLS ARRAY_PARTITION variable = reg complete
    unsigned chunk = 0;
RowLoop:
    for (unsigned r = 0; r < CONFIG_T::n_pix * CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = 1
        act_t cur[data_T::size];
#pragma HLS ARRAY_PARTITION variable = cur complete
        if (chunk == 0) {
            const data_T beat = data.read();
            for (unsigned k = 0; k < size; k++) {
#pragma HLS UNROLL
                cur[k] = raw_bits<act_t>(beat[k]);
            }
        } else {
            for (unsigned k = 0; k < size; k++) {
#pragma HLS UNROLL
                cur[k] = reg[k];
            }
        }
        act_row<CONFIG_T> w;
        for (unsigned i = 0; i < CONFIG_T::simd; i++) {
#pragma HLS UNROLL
            w.lane[i] = cur[i];
        }
        for (unsigned k = 0; k + simd < size; k++) {
#pragma HLS UNROLL
            reg[k] = cur[k + simd];
        }
        chunk = chunk + 1 == per_beat ? 0 : chunk + 1;
        rows.write(w);
    }
}

// io_parallel: the MVAU's vectors into the result array, vector v at res[v * N].
template <class CONFIG_T, class res_T>
void vecs_to_array(hls::stream<vec<res_T, CONFIG_T::n_out> > &vecs, res_T res[CONFIG_T::n_pix * CONFIG_T::n_out]) {
#pragma HLS INLINE off
    unsigned at = 0; // v * N, counted
VecLoop:
    for (unsigned v = 0; v < CONFIG_T::n_pix; v++) {
#pragma HLS PIPELINE II = 1
        const vec<res_T, CONFIG_T::n_out> o = vecs.read();
        for (unsigned n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
            res[at + n] = o[n];
        }
        at += CONFIG_T::n_out;
    }
}

} // namespace flipq

#endif
