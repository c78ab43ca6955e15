// flipq RTL twin harness: drives the Verilated flipq_accel cycle by cycle through its two DMA word
// streams, as the board's AXI DMA would, and records the cycle every word moved. Built by
// flipq.hls.rtltwin.build_rtl_library into a shared library; flipq.host.rtl calls it with ctypes.
//
// Random gaps on the input (a DMA that pauses) and random stalls on the output (a DMA whose
// receive side is not ready) exercise back-pressure through every FIFO and stage; the AXI-Stream
// rule holds: once valid is raised, it stays with the same word until the word moves.
#include "Vflipq_accel.h"
#include "verilated.h"
#include <stdint.h>

#ifndef FLIPQ_WORD
#error "FLIPQ_WORD (the DMA word width) must be defined"
#endif

namespace {
const int kAbiVersion = 2;  // 2: max_cycles bounds the cycles in which no word moves
const int kResetCycles = 4;

// xorshift32: a reproducible stream of gap/stall decisions from the caller's seed
struct Xorshift {
    uint32_t s;
    explicit Xorshift(uint32_t seed) : s(seed ? seed : 0x9e3779b9u) {}
    uint32_t next() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        return s;
    }
    bool chance(int pct) { return pct > 0 && int(next() % 100u) < pct; }
};

void tick(Vflipq_accel &top) {
    top.clk = 1;
    top.eval();
    top.clk = 0;
    top.eval();
}
} // namespace

extern "C" int flipq_rtl_abi_version() { return kAbiVersion; }
extern "C" int flipq_rtl_word_bits() { return FLIPQ_WORD; }

// Push n_in words through a fresh instance of the design at run-time `planes` and collect n_out
// words. in_cycle[i] / out_cycle[j] (may be null) receive the cycle each word moved. Returns the
// cycles run, or -1 when max_cycles cycles in a row passed with no word moving in or out before the
// last output word (a deadlock or a design that drops data: found in that many cycles, however
// many samples the run holds), -2 for bad arguments.
extern "C" long long flipq_rtl_run(const uint64_t *in, long long n_in, uint64_t *out, long long n_out, int planes,
                                   uint32_t seed, int gap_pct, int stall_pct, long long max_cycles,
                                   long long *in_cycle, long long *out_cycle) {
    if (n_in < 0 || n_out < 0 || planes < 0 || planes > 15 || (n_in > 0 && !in) || (n_out > 0 && !out))
        return -2;
    VerilatedContext ctx;
    ctx.fatalOnError(false);
    Vflipq_accel top(&ctx, "flipq_accel");
    top.planes = planes;
    top.s_valid = 0;
    top.s_data = 0;
    top.m_ready = 0;
    top.clk = 0;
    top.rst = 1;
    top.eval();
    for (int i = 0; i < kResetCycles; i++)
        tick(top);
    top.rst = 0;
    top.eval();
    Xorshift rnd(seed);
    long long ni = 0, no = 0, cycle = 0, idle = 0;
    bool offered = false;
    while (no < n_out) {
        if (idle >= max_cycles) {
            top.final();
            return -1;
        }
        if (!offered && ni < n_in)
            offered = !rnd.chance(gap_pct);
        top.s_valid = offered ? 1 : 0;
        top.s_data = offered ? in[ni] : 0;
        top.m_ready = rnd.chance(stall_pct) ? 0 : 1;
        top.eval(); // settle the combinational paths from the new inputs before sampling
        const bool in_moves = top.s_valid && top.s_ready;
        const bool out_moves = top.m_valid && top.m_ready;
        const uint64_t word = (uint64_t)top.m_data;
        tick(top);
        idle = (in_moves || out_moves) ? 0 : idle + 1;
        if (in_moves) {
            if (in_cycle)
                in_cycle[ni] = cycle;
            ni++;
            offered = false;
        }
        if (out_moves) {
            out[no] = word;
            if (out_cycle)
                out_cycle[no] = cycle;
            no++;
        }
        cycle++;
    }
    top.final();
    return cycle;
}
