// flipq bit-serial Conv2D (channels-last): a sliding-window generator (a line buffer of input
// rows) streams each output pixel's (kh, kw, cin) window, SIMD lanes a word, into the folded MVAU
// (flipq_bitserial_pe.h); the processes form a dataflow region. io_parallel and io_stream.
#ifndef FLIPQ_BITSERIAL_CONV2D_H_
#define FLIPQ_BITSERIAL_CONV2D_H_

#include "flipq_bitserial_pe.h"
#include "hls_stream.h"

namespace flipq {

struct bitserial_conv2d_config : bitserial_config {
    static const unsigned in_height = 1, in_width = 1, n_chan = 1;
    static const unsigned filt_height = 1, filt_width = 1;
    static const unsigned stride_height = 1, stride_width = 1;
    static const unsigned pad_top = 0, pad_left = 0;
    static const unsigned out_height = 1, out_width = 1;
    static const unsigned swg_iterations = 1; // the generator loop's trip count (fold.swg_cycles, depth 0)
    static const unsigned swg_depth = 2;
};

// io_parallel: the frame in an array, one pixel (cin values) a cycle, from the front of a
// register that shifts down a pixel a cycle (C simulation reads by index, see rows_from_array).
template <class CONFIG_T, class data_T>
void pixels_from_array(const data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                       hls::stream<vec<data_T, CONFIG_T::n_chan> > &pixels) {
#pragma HLS INLINE off
    static const unsigned cin = CONFIG_T::n_chan, n = CONFIG_T::in_height * CONFIG_T::in_width * cin;
    data_T reg[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable = reg complete
Load:
    for (unsigned k = 0; k < n; k++) {
#pragma HLS UNROLL
        reg[k] = data[k];
    }
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
    unsigned at = 0;
#endif
PixelLoop:
    for (unsigned i = 0; i < CONFIG_T::in_height * CONFIG_T::in_width; i++) {
#pragma HLS PIPELINE II = 1
        vec<data_T, CONFIG_T::n_chan> px;
#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)
        if (true) {
            for (unsigned c = 0; c < cin; c++)
                px[c] = reg[at + c];
            at += cin;
        } else
#endif
        {
            for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                px[c] = reg[c];
            }
            for (unsigned k = 0; k + cin < n; k++) {
#pragma HLS UNROLL
                reg[k] = reg[k + cin];
            }
        }
        pixels.write(px);
    }
}

// The sliding-window generator, in ONE pipelined loop (II=1) that reads and emits at once (as
// FINN's does): while it emits output row oy's out_width windows (R words each, in (kh, kw, cin)
// order, one a cycle; padding reads zero) it reads, one pixel a cycle, the input rows output row
// oy + 1 newly needs (after the last output row: the rest of the frame). A segment lasts the
// longer of the two; before the first, the rows output row 0 needs are read. The line buffer
// holds kh + stride_height rows, so the rows being read never overwrite the rows being emitted;
// rows no window reads are read and dropped.
//
// A word is m kernel positions x cw channels: part of one position's channels (SIMD divides
// cin: m = 1, q = cin / SIMD words a position) or m whole positions (SIMD = m * cin, m dividing
// kw: a first layer's 3 channels). The buffer keeps m copies, copy j shifted by j pixels (copy
// j at address a holds pixel a - pad_left + j), and one bank per copy and channel, so lane
// (j, c) always reads bank (j, c) at the address all lanes share: no lane selects among banks,
// and each bank sees one read and one write a cycle. Within a position, a register hands out
// cw channels and shifts down by cw. Every index is a counter: no division or modulo.
template <class CONFIG_T, class px_T>
void sliding_windows(hls::stream<px_T> &pixels, hls::stream<act_row<CONFIG_T> > &words) {
#pragma HLS INLINE off
    typedef typename CONFIG_T::act_raw_t act_t;
    static const unsigned kh = CONFIG_T::filt_height, kw = CONFIG_T::filt_width, cin = CONFIG_T::n_chan;
    static const unsigned in_h = CONFIG_T::in_height, in_w = CONFIG_T::in_width;
    static const unsigned sy = CONFIG_T::stride_height, sx = CONFIG_T::stride_width;
    static const unsigned pt = CONFIG_T::pad_top, pl = CONFIG_T::pad_left;
    static const unsigned oh = CONFIG_T::out_height, ow = CONFIG_T::out_width, simd = CONFIG_T::simd;
    static const unsigned m = simd > cin ? simd / cin : 1; // kernel positions a word
    static const unsigned cw = simd > cin ? cin : simd;   // channels of each position a word
    static const unsigned q = cin / cw;                   // words a position
    static const unsigned lb = kh + sy;                   // line buffer rows
    static const unsigned span = (ow - 1) * sx + kw;      // addresses a window row reaches
    static const unsigned width = span > in_w + pl ? span : in_w + pl;
    static const unsigned depth = lb * width;
    static const unsigned top = (lb - pt % lb) % lb; // buffer row of input row -pad_top
    static const int want0 = int(kh) - int(pt);      // rows output row 0 needs, before clamping
    static const int want_last = int((oh - 1) * sy + kh) - int(pt);
    static const unsigned kept = want_last < int(in_h) ? unsigned(want_last) : in_h; // rows any window reads
    static_assert(m * cw == simd && q * cw == cin && kw % m == 0, "flipq: SIMD must divide cin or kw * cin");
    static_assert(px_T::size == cin, "flipq: one input beat per pixel");
    static act_t line[m][depth][cin];
#pragma HLS ARRAY_PARTITION variable = line complete dim = 1
#pragma HLS ARRAY_PARTITION variable = line complete dim = 3
#pragma HLS DEPENDENCE variable = line inter false
#pragma HLS DEPENDENCE variable = line intra false
    act_t reg[m][cin];
#pragma HLS ARRAY_PARTITION variable = reg complete dim = 0

    // reading: pixel (ry, rx), its row at waddr; rows up to `limit` this segment
    unsigned ry = 0, rx = 0, waddr = 0;
    int want = want0; // rows output row `nxt` needs, before clamping
    unsigned nxt = 0; // the output row whose needs `limit` covers (oh: the rest of the frame)
    unsigned limit = want0 <= 0 ? 0u : (want0 > int(in_h) ? in_h : unsigned(want0));
    // emitting: output row starting at input row ybase (buffer address rbase), window ox at
    // column address xbase; kernel row fy (input row y, buffer address rrow), position fx, word sub
    bool emitting = false;
    int ybase = -int(pt), y = 0, ynext = -int(pt);
    unsigned rbase = 0, rrow = 0, rnext = top * width;
    unsigned ox = 0, xbase = 0, fy = 0, fx = 0, sub = 0;
#ifndef __SYNTHESIS__
    unsigned long long busy = 0; // iterations that read, emitted or started a segment
#endif
WindowLoop:
    for (unsigned it = 0; it < CONFIG_T::swg_iterations; it++) {
#pragma HLS PIPELINE II = 1
#ifndef __SYNTHESIS__
        bool did = ry < limit || emitting;
#endif
        if (ry < limit) {
            const px_T px = pixels.read();
            if (ry < kept) {
            StoreCopies:
                for (unsigned c0 = 0; c0 < m; c0++) {
#pragma HLS UNROLL
                    if (rx + pl >= c0) {
                    StoreChannels:
                        for (unsigned c = 0; c < cin; c++) {
#pragma HLS UNROLL
                            line[c0][waddr + rx + pl - c0][c] = raw_bits<act_t>(px[c]);
                        }
                    }
                }
            }
            if (rx + 1 == in_w) {
                rx = 0;
                ry++;
                waddr = waddr + width == depth ? 0 : waddr + width;
            } else {
                rx++;
            }
        }
        if (emitting) {
            const unsigned a = xbase + fx;
            const bool row_inside = y >= 0 && y < int(in_h);
            act_row<CONFIG_T> w;
        Positions:
            for (unsigned c0 = 0; c0 < m; c0++) {
#pragma HLS UNROLL
                const bool inside = row_inside && a + c0 >= pl && a + c0 < pl + in_w;
                act_t cur[cin];
#pragma HLS ARRAY_PARTITION variable = cur complete
            ReadBanks:
                for (unsigned c = 0; c < cin; c++) {
#pragma HLS UNROLL
                    const act_t v = inside ? line[c0][rrow + a][c] : act_t(0);
                    cur[c] = sub == 0 ? v : reg[c0][c];
                }
            Lanes:
                for (unsigned c = 0; c < cw; c++) {
#pragma HLS UNROLL
                    w.lane[c0 * cw + c] = cur[c];
                }
            ShiftChannels:
                for (unsigned c = 0; c + cw < cin; c++) {
#pragma HLS UNROLL
                    reg[c0][c] = cur[c + cw];
                }
            }
            words.write(w);
            if (sub + 1 < q) {
                sub++;
            } else {
                sub = 0;
                if (fx + m < kw) {
                    fx += m;
                } else {
                    fx = 0;
                    if (fy + 1 < kh) {
                        fy++;
                        y++;
                        rrow = rrow + width == depth ? 0 : rrow + width;
                    } else {
                        fy = 0;
                        y = ybase;
                        rrow = rbase;
                        if (ox + 1 < ow) {
                            ox++;
                            xbase += sx;
                        } else {
                            ox = 0;
                            xbase = 0;
                            emitting = false;
                        }
                    }
                }
            }
        }
        if (!emitting && ry >= limit && nxt < oh) { // the segment is done: emit output row nxt
#ifndef __SYNTHESIS__
            did = true;
#endif
            emitting = true;
            ybase = ynext;
            y = ynext;
            rbase = rnext;
            rrow = rnext;
            ynext += int(sy);
            rnext = rnext + sy * width >= depth ? rnext + sy * width - depth : rnext + sy * width;
            nxt++;
            want += int(sy);
            limit = nxt == oh ? in_h : (want <= 0 ? 0u : (want > int(in_h) ? in_h : unsigned(want)));
        }
#ifndef __SYNTHESIS__
        busy += did;
#endif
    }
    // C simulation counts the iterations that did something: the trip count (fold.swg_cycles)
    // must be exactly those, and a short one leaves the MVAU without words (outputs differ)
    FLIPQ_COUNT_CYCLES(CONFIG_T::layer_id, 1, busy + CONFIG_T::swg_depth);
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(const data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                      res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_out],
                      const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
                      const typename CONFIG_T::step_word_t steps[CONFIG_T::rom_depth],
                      const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                      const typename CONFIG_T::accum_t bias[CONFIG_T::n_blocks][CONFIG_T::pe],
                      const typename CONFIG_T::thr_word_t thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe], unsigned planes) {
#pragma HLS DATAFLOW
    hls::stream<vec<data_T, CONFIG_T::n_chan> > pixels;
#pragma HLS STREAM variable = pixels depth = 2
    hls::stream<act_row<CONFIG_T> > windows;
#pragma HLS STREAM variable = windows depth = 2
    hls::stream<vec<res_T, CONFIG_T::n_out> > vecs;
#pragma HLS STREAM variable = vecs depth = 2
    pixels_from_array<CONFIG_T>(data, pixels);
    sliding_windows<CONFIG_T>(pixels, windows);
    mvau<CONFIG_T>(windows, vecs, rom, steps, blk, bias, thresholds, descending, planes);
    vecs_to_array<CONFIG_T>(vecs, res);
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(hls::stream<data_T> &data, hls::stream<res_T> &res,
                      const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
                      const typename CONFIG_T::step_word_t steps[CONFIG_T::rom_depth],
                      const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                      const typename CONFIG_T::accum_t bias[CONFIG_T::n_blocks][CONFIG_T::pe],
                      const typename CONFIG_T::thr_word_t thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe], unsigned planes) {
#pragma HLS DATAFLOW
    hls::stream<act_row<CONFIG_T> > windows;
#pragma HLS STREAM variable = windows depth = 2
    sliding_windows<CONFIG_T>(data, windows);
    mvau<CONFIG_T>(windows, res, rom, steps, blk, bias, thresholds, descending, planes);
}

} // namespace flipq

#endif
