// flipq bit-serial Dense: a width converter (the input as SIMD-lane rows) and the folded MVAU
// (flipq_bitserial_pe.h) as a dataflow region; io_parallel (arrays) and io_stream (hls::stream
// of nnet::array beats).
#ifndef FLIPQ_BITSERIAL_DENSE_H_
#define FLIPQ_BITSERIAL_DENSE_H_

#include "flipq_bitserial_pe.h"
#include "hls_stream.h"

namespace flipq {

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                     const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
                     const typename CONFIG_T::step_word_t steps[CONFIG_T::rom_depth],
                     const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                     const typename CONFIG_T::accum_t bias[CONFIG_T::n_blocks][CONFIG_T::pe],
                     const typename CONFIG_T::thr_word_t thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe], unsigned planes) {
#pragma HLS DATAFLOW
    hls::stream<act_row<CONFIG_T> > rows;
#pragma HLS STREAM variable = rows depth = 2
    hls::stream<vec<res_T, CONFIG_T::n_out> > vecs;
#pragma HLS STREAM variable = vecs depth = 2
    rows_from_array<CONFIG_T>(data, rows);
    mvau<CONFIG_T>(rows, vecs, rom, steps, blk, bias, thresholds, descending, planes);
    vecs_to_array<CONFIG_T>(vecs, res);
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(hls::stream<data_T> &data, hls::stream<res_T> &res,
                     const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth],
                     const typename CONFIG_T::step_word_t steps[CONFIG_T::rom_depth],
                     const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                     const typename CONFIG_T::accum_t bias[CONFIG_T::n_blocks][CONFIG_T::pe],
                     const typename CONFIG_T::thr_word_t thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe], unsigned planes) {
#pragma HLS DATAFLOW
    hls::stream<act_row<CONFIG_T> > rows;
#pragma HLS STREAM variable = rows depth = 2
    rows_from_beats<CONFIG_T>(data, rows);
    mvau<CONFIG_T>(rows, res, rom, steps, blk, bias, thresholds, descending, planes);
}

} // namespace flipq

#endif
