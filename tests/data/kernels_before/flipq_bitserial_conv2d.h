// flipq bit-serial Conv2D (channels-last): a sliding-window generator (a line buffer of kh input
// rows) streams each output pixel's (kh, kw, cin) window, SIMD channels a word, into the folded
// MVAU (flipq_bitserial_pe.h); the two run as a dataflow pipeline. io_parallel and io_stream.
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
    static const unsigned swg_depth = 2;
};

template <class CONFIG_T, class data_T> struct array_pixels { // io_parallel: the frame in an array
    const data_T *data;
    explicit array_pixels(const data_T *d) : data(d) {}
    void read_pixel(typename CONFIG_T::act_raw_t px[CONFIG_T::n_chan]) {
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            px[c] = raw_bits<typename CONFIG_T::act_raw_t>(data[c]);
        }
        data += CONFIG_T::n_chan;
    }
};

template <class CONFIG_T, class data_T> struct beat_pixels { // io_stream: one beat per pixel
    hls::stream<data_T> &data;
    explicit beat_pixels(hls::stream<data_T> &d) : data(d) {}
    void read_pixel(typename CONFIG_T::act_raw_t px[CONFIG_T::n_chan]) {
        const data_T beat = data.read();
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            px[c] = raw_bits<typename CONFIG_T::act_raw_t>(beat[c]);
        }
    }
};

// The sliding-window generator: per output row, read the input rows its windows newly need
// (one pixel a cycle into a kh-row circular line buffer, one bank per channel and, cyclically,
// per kernel column), then emit its out_width windows, R words each in (kh, kw, cin) order, one
// word a cycle; padding reads zero. A word holds SIMD consecutive elements of one kernel row:
// part of one position's channels (SIMD divides cin) or whole positions (SIMD a multiple of cin
// dividing kw * cin, e.g. a first layer's 3 channels). Rows no window reads are drained at the
// end. Each loop is pipelined at II=1 and counted.
template <class CONFIG_T, class pix_src_T>
void sliding_windows(pix_src_T &src, hls::stream<act_row<CONFIG_T> > &words) {
#pragma HLS INLINE off
    typedef typename CONFIG_T::act_raw_t act_t;
    static const unsigned kh = CONFIG_T::filt_height, kw = CONFIG_T::filt_width, in_w = CONFIG_T::in_width;
    static const unsigned cin = CONFIG_T::n_chan, row_words = kw * cin / CONFIG_T::simd;
    static act_t line[kh * in_w][cin];
#pragma HLS ARRAY_PARTITION variable = line complete dim = 2
#pragma HLS ARRAY_PARTITION variable = line cyclic factor = kw dim = 1
    unsigned next_row = 0;
RowLoop:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        const int want = int(oy * CONFIG_T::stride_height) - int(CONFIG_T::pad_top) + int(kh);
        const unsigned need = want < 0 ? 0u : (want > int(CONFIG_T::in_height) ? CONFIG_T::in_height : unsigned(want));
        const unsigned n_new = need > next_row ? need - next_row : 0;
        unsigned line_row = next_row % kh, ix = 0;
    ReadRows:
        for (unsigned i = 0; i < n_new * in_w; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 0 max = kh * in_w
            src.read_pixel(line[line_row * in_w + ix]);
            if (++ix == in_w) {
                ix = 0;
                line_row = line_row + 1 == kh ? 0 : line_row + 1;
            }
        }
        FLIPQ_COUNT_CYCLES(CONFIG_T::layer_id, 1, n_new * in_w + CONFIG_T::swg_depth);
        next_row += n_new;
        unsigned ox = 0, fy = 0, chunk = 0;
    Emit:
        for (unsigned i = 0; i < CONFIG_T::out_width * CONFIG_T::n_rows; i++) {
#pragma HLS PIPELINE II = 1
            const int y = int(oy * CONFIG_T::stride_height + fy) - int(CONFIG_T::pad_top);
            act_row<CONFIG_T> w;
            for (unsigned l = 0; l < CONFIG_T::simd; l++) {
#pragma HLS UNROLL
                const unsigned e = chunk * CONFIG_T::simd + l; // element of the kernel row
                const unsigned fx = e / cin, c = e % cin;
                const int x = int(ox * CONFIG_T::stride_width + fx) - int(CONFIG_T::pad_left);
                const bool inside = y >= 0 && y < int(CONFIG_T::in_height) && x >= 0 && x < int(in_w);
                w.lane[l] = inside ? line[(unsigned(y) % kh) * in_w + unsigned(x)][c] : act_t(0);
            }
            words.write(w);
            if (++chunk == row_words) {
                chunk = 0;
                if (++fy == kh) {
                    fy = 0;
                    ox++;
                }
            }
        }
        FLIPQ_COUNT_CYCLES(CONFIG_T::layer_id, 1, CONFIG_T::out_width * CONFIG_T::n_rows + CONFIG_T::swg_depth);
    }
    const unsigned rest = (CONFIG_T::in_height - next_row) * in_w;
    act_t skip[cin];
Drain:
    for (unsigned i = 0; i < rest; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 0 max = CONFIG_T::in_height * in_w
        src.read_pixel(skip);
    }
    FLIPQ_COUNT_CYCLES(CONFIG_T::layer_id, 1, rest + CONFIG_T::swg_depth);
}

// The layer: the generator and the MVAU, two processes of one dataflow region joined by the
// window stream; `pixels` and `sink` adapt the io type's input and output.
template <class CONFIG_T, class pix_src_T, class sink_T>
void conv2d_dataflow(pix_src_T &pixels, sink_T &sink, const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
                     const uint64_t sched[CONFIG_T::n_entries],
                     const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                     const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
                     const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_rows], unsigned planes) {
#pragma HLS DATAFLOW
    hls::stream<act_row<CONFIG_T> > windows("flipq_windows");
#pragma HLS STREAM variable = windows depth = 2
    sliding_windows<CONFIG_T>(pixels, windows);
    stream_rows<CONFIG_T> src(windows);
    mvau<CONFIG_T>(src, sink, rom, sched, blk, bias, thresholds, descending, lowest_plane<CONFIG_T>(planes));
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(const data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                      res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_out],
                      const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth], const uint64_t sched[CONFIG_T::n_entries],
                      const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                      const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
                      const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_rows], unsigned planes) {
    array_pixels<CONFIG_T, data_T> pixels(data);
    array_sink<CONFIG_T, res_T> sink(res);
    conv2d_dataflow<CONFIG_T>(pixels, sink, rom, sched, blk, bias, thresholds, descending, planes);
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(hls::stream<data_T> &data, hls::stream<res_T> &res,
                      const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth], const uint64_t sched[CONFIG_T::n_entries],
                      const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                      const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
                      const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_rows], unsigned planes) {
    static_assert(data_T::size == CONFIG_T::n_chan, "flipq: one input beat per pixel");
    static_assert(res_T::size == CONFIG_T::n_out, "flipq: one output beat per pixel");
    beat_pixels<CONFIG_T, data_T> pixels(data);
    beat_sink<CONFIG_T, res_T> sink(res);
    conv2d_dataflow<CONFIG_T>(pixels, sink, rom, sched, blk, bias, thresholds, descending, planes);
}

} // namespace flipq

#endif
