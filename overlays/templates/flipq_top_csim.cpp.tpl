// C-sim harness: the board wrapper flipq_top() behind a C ABI, for ctypes
// (flipq.overlays.wrapper.simulate_wrapper). Generated for @project@; not part of the HLS sources.
//
//   int flipq_top_run(const uint32_t *in_words, int n_in_words, uint32_t *out_words,
//                     int n_out_words, int planes, int n_samples, int *last_index)
//     feeds in_words to in_r (TLAST on the last one, as the MM2S channel does), runs flipq_top
//     once, drains out_r into out_words; *last_index = index of the first beat with TLAST (-1: none).
//     returns the number of words flipq_top wrote, or
//       -1 more words than n_out_words, -2 n_samples < 0,
//       -3 n_in_words != n_samples * words per sample, -4 flipq_top left input words unread
#include <stdint.h>

#include "flipq_top.h"

extern "C" {

int flipq_top_abi_version(void) { return 1; }
int flipq_top_in_words(void) { return FLIPQ_IN_WORDS; }
int flipq_top_out_words(void) { return FLIPQ_OUT_WORDS; }

int flipq_top_run(const uint32_t *in_words, int n_in_words, uint32_t *out_words, int n_out_words,
                  int planes, int n_samples, int *last_index) {
    *last_index = -1;
    if (n_samples < 0)
        return -2;
    if ((int64_t)n_in_words != (int64_t)n_samples * FLIPQ_IN_WORDS)
        return -3;
    hls::stream<word_t> in_r("in_r"), out_r("out_r");
    for (int i = 0; i < n_in_words; i++) {
        word_t beat;
        beat.data = in_words[i];
        beat.keep = -1;
        beat.strb = -1;
        beat.last = i == n_in_words - 1;
        in_r.write(beat);
    }
    flipq_top(in_r, out_r, ap_uint<32>((uint32_t)planes), ap_uint<32>((uint32_t)n_samples));
    int n = 0;
    while (!out_r.empty()) {
        word_t beat = out_r.read();
        if (n < n_out_words)
            out_words[n] = (uint32_t)beat.data.to_uint();
        if (beat.last && *last_index < 0)
            *last_index = n;
        n++;
    }
    if (!in_r.empty())
        return -4;
    return n > n_out_words ? -1 : n;
}

} // extern "C"
