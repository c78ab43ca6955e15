// flipq bit-serial Dense: one folded MVAU (flipq_bitserial_pe.h) over the input vector;
// io_parallel (arrays) and io_stream (hls::stream of nnet::array beats).
#ifndef FLIPQ_BITSERIAL_DENSE_H_
#define FLIPQ_BITSERIAL_DENSE_H_

#include "flipq_bitserial_pe.h"
#include "hls_stream.h"

namespace flipq {

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                     const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth], const uint64_t sched[CONFIG_T::n_entries],
                     const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                     const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
                     const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_rows], unsigned planes) {
    array_rows<CONFIG_T, data_T> src(data);
    array_sink<CONFIG_T, res_T> sink(res);
    mvau<CONFIG_T>(src, sink, rom, sched, blk, bias, thresholds, descending, lowest_plane<CONFIG_T>(planes));
}

template <class data_T, class res_T, class CONFIG_T>
void bitserial_dense(hls::stream<data_T> &data, hls::stream<res_T> &res,
                     const uint64_t rom[CONFIG_T::pe][CONFIG_T::rom_depth], const uint64_t sched[CONFIG_T::n_entries],
                     const unsigned blk[CONFIG_T::n_blocks][CONFIG_T::n_planes + 1],
                     const typename CONFIG_T::accum_t bias[CONFIG_T::n_out],
                     const typename CONFIG_T::thr_t thresholds[CONFIG_T::thr_rows][CONFIG_T::thr_cols],
                     const bool descending[CONFIG_T::thr_rows], unsigned planes) {
    // a row never spans two beats, and one beat carries all N results
    static_assert(data_T::size % CONFIG_T::simd == 0 && CONFIG_T::n_in % data_T::size == 0,
                  "flipq: input beats must hold whole SIMD rows");
    static_assert(res_T::size == CONFIG_T::n_out, "flipq: one output beat per vector");
    beat_rows<CONFIG_T, data_T> src(data);
    beat_sink<CONFIG_T, res_T> sink(res);
    mvau<CONFIG_T>(src, sink, rom, sched, blk, bias, thresholds, descending, lowest_plane<CONFIG_T>(planes));
}

} // namespace flipq

#endif
