// flipq bit-serial Conv2D (channels-last): every output pixel is one bit-serial
// matrix-vector product of its (kh, kw, cin) patch; io_parallel and io_stream.
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
};

// Patch in (kh, kw, cin) order, the order of the HWIO weight rows; padding reads zero.
template <class CONFIG_T>
void conv2d_patch(const typename CONFIG_T::act_raw_t frame[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                  typename CONFIG_T::act_raw_t patch[CONFIG_T::n_in], unsigned oy, unsigned ox) {
    for (unsigned fy = 0; fy < CONFIG_T::filt_height; fy++) {
        for (unsigned fx = 0; fx < CONFIG_T::filt_width; fx++) {
            const int iy = int(oy * CONFIG_T::stride_height + fy) - int(CONFIG_T::pad_top);
            const int ix = int(ox * CONFIG_T::stride_width + fx) - int(CONFIG_T::pad_left);
            const bool inside = iy >= 0 && iy < int(CONFIG_T::in_height) && ix >= 0 && ix < int(CONFIG_T::in_width);
            for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
                const unsigned k = (fy * CONFIG_T::filt_width + fx) * CONFIG_T::n_chan + c;
                patch[k] = inside ? frame[(iy * CONFIG_T::in_width + ix) * CONFIG_T::n_chan + c]
                                  : typename CONFIG_T::act_raw_t(0);
            }
        }
    }
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(const data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                      res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_out], const uint64_t *planes_data,
                      const uint8_t *mask_data, const typename CONFIG_T::accum_t *bias,
                      const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_rows], unsigned planes) {
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
    static const unsigned n_pixels_in = CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan;
    typename CONFIG_T::act_raw_t frame[n_pixels_in];
    typename CONFIG_T::act_raw_t patch[CONFIG_T::n_in];
    typename CONFIG_T::accum_t acc[CONFIG_T::n_out];
    const unsigned lowest = lowest_plane<CONFIG_T>(planes);
    for (unsigned i = 0; i < n_pixels_in; i++)
        frame[i] = raw_bits<typename CONFIG_T::act_raw_t>(data[i]);
PixelLoop:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            conv2d_patch<CONFIG_T>(frame, patch, oy, ox);
            bitserial_matvec<CONFIG_T>(patch, acc, planes_data, mask_data, bias, lowest);
            for (unsigned n = 0; n < CONFIG_T::n_out; n++)
                res[(oy * CONFIG_T::out_width + ox) * CONFIG_T::n_out + n] =
                    layer_output<res_T, CONFIG_T>(acc[n], n, thresholds, descending);
        }
    }
}

// Streaming: pixels arrive in raster order, one nnet::array of n_chan per beat. The frame is
// buffered whole (simple, and small for the nets flipq targets; see docs/cost_model.md).
template <class data_T, class res_T, class CONFIG_T>
void bitserial_conv2d(hls::stream<data_T> &data, hls::stream<res_T> &res, const uint64_t *planes_data,
                      const uint8_t *mask_data, const typename CONFIG_T::accum_t *bias,
                      const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                      const bool descending[CONFIG_T::thr_rows], unsigned planes) {
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
    static const unsigned n_pixels_in = CONFIG_T::in_height * CONFIG_T::in_width;
    typename CONFIG_T::act_raw_t frame[n_pixels_in * CONFIG_T::n_chan];
    typename CONFIG_T::act_raw_t patch[CONFIG_T::n_in];
    typename CONFIG_T::accum_t acc[CONFIG_T::n_out];
    const unsigned lowest = lowest_plane<CONFIG_T>(planes);
ReadFrame:
    for (unsigned i = 0; i < n_pixels_in; i++) {
        const data_T beat = data.read();
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++)
            frame[i * CONFIG_T::n_chan + c] = raw_bits<typename CONFIG_T::act_raw_t>(beat[c]);
    }
PixelLoop:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            conv2d_patch<CONFIG_T>(frame, patch, oy, ox);
            bitserial_matvec<CONFIG_T>(patch, acc, planes_data, mask_data, bias, lowest);
            res_T beat;
            for (unsigned n = 0; n < CONFIG_T::n_out; n++)
                beat[n] = layer_output<typename res_T::value_type, CONFIG_T>(acc[n], n, thresholds, descending);
            res.write(beat);
        }
    }
}

} // namespace flipq

#endif
