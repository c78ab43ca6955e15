// flipq bit-serial Dense: io_parallel (arrays) and io_stream (hls::stream of nnet::array).
#ifndef FLIPQ_BITSERIAL_DENSE_H_
#define FLIPQ_BITSERIAL_DENSE_H_

#include "flipq_bitserial_pe.h"
#include "hls_stream.h"

namespace flipq {

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out], const uint64_t *planes_data,
                     const uint8_t *mask_data, const typename CONFIG_T::accum_t *bias,
                     const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_rows], unsigned planes) {
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
    typename CONFIG_T::act_raw_t act[CONFIG_T::n_in];
    typename CONFIG_T::accum_t acc[CONFIG_T::n_out];
    for (unsigned k = 0; k < CONFIG_T::n_in; k++)
        act[k] = raw_bits<typename CONFIG_T::act_raw_t>(data[k]);
    bitserial_matvec<CONFIG_T>(act, acc, planes_data, mask_data, bias, lowest_plane<CONFIG_T>(planes));
    for (unsigned n = 0; n < CONFIG_T::n_out; n++)
        res[n] = layer_output<res_T, CONFIG_T>(acc[n], n, thresholds, descending);
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(hls::stream<data_T> &data, hls::stream<res_T> &res, const uint64_t *planes_data,
                     const uint8_t *mask_data, const typename CONFIG_T::accum_t *bias,
                     const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_rows], unsigned planes) {
#pragma HLS ARRAY_PARTITION variable = thresholds complete dim = 2
    typename CONFIG_T::act_raw_t act[CONFIG_T::n_in];
    typename CONFIG_T::accum_t acc[CONFIG_T::n_out];
ReadInput:
    for (unsigned b = 0; b < CONFIG_T::n_in / data_T::size; b++) {
        const data_T beat = data.read();
        for (unsigned j = 0; j < data_T::size; j++)
            act[b * data_T::size + j] = raw_bits<typename CONFIG_T::act_raw_t>(beat[j]);
    }
    bitserial_matvec<CONFIG_T>(act, acc, planes_data, mask_data, bias, lowest_plane<CONFIG_T>(planes));
WriteOutput:
    for (unsigned b = 0; b < CONFIG_T::n_out / res_T::size; b++) {
        res_T beat;
        for (unsigned j = 0; j < res_T::size; j++)
            beat[j] = layer_output<typename res_T::value_type, CONFIG_T>(
                acc[b * res_T::size + j], b * res_T::size + j, thresholds, descending);
        res.write(beat);
    }
}

} // namespace flipq

#endif
