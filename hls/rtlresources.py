"""Resources of the RTL twin, stage by stage, calibrated on Yosys (numpy only; no Yosys at run time).

What the figures are: *modeled*, predicting what Debian's Yosys 0.23 ``synth_xilinx -family xc7``
(``flipq.hls.yosys``, pre-place, the ``abc -luts`` flow) maps each module of ``hls/rtl/`` to on the
xc7z020: ``lut`` (LUT1..6 and INV plus the LUT6 sites of LUTRAM/SRL cells, as
``flipq.hls.yosys.summarize_cells`` counts ``lut_total``), ``ff``, ``carry4``, ``bram36`` (RAMB36 +
RAMB18 / 2) and ``dsp`` (the RTL twin has no multiplier: always 0).

Two kinds of formula:

- **Memories** follow Yosys' own rule, re-implemented: ``memory_libmap`` prices every way to build
  a memory (the LUTRAM and block RAM shapes of ``lutrams_xc5v.txt`` / ``brams_xc4v.txt`` at every
  base width, the depth split into ``mult_a`` banks with a read mux, 2 per emulated port feature)
  against soft logic (1/64 a ROM bit, 1 a RAM bit, as ``synth_xilinx`` passes them) and takes the
  cheapest (:func:`memory_map`). So BRAM is exact for every (depth, width, ROM or RAM) shape, not
  fitted; ``tests/test_rtlresources.py`` holds the probed shapes as fixtures.
- **Logic** is structural: the features a hardware engineer would name (per MVAU PE the lane AND
  and adder tree over SIMD lanes of ``AW`` bits, the shift-accumulate of ``ACC_W`` bits over ``B``
  plane positions, the output stage, the ROMs built of LUTs, the ping-pong row buffer, the counters;
  the window generator's line buffer, muxes and counters; ...), each with a coefficient fitted on
  the Yosys figures of ``benchmarks/synth.py`` (``docs/synth.md``).

:func:`board_overhead` adds what sits beside the accelerator on the board and is *not* synthesized
here (the AXI DMA, the interconnect, the reset block): AMD's published figures, labelled so.

>>> rp = plan_rtl(intmodel, plan)                    # doctest: +SKIP
>>> design_resources(rp)["total"]["lut"]             # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

LABEL = "modeled (calibrated on Yosys 0.23 synth_xilinx -family xc7, pre-place)"
KEYS = ("lut", "ff", "carry4", "bram36", "dsp")


def _clog2(n: int) -> int:
    return max(int(n) - 1, 0).bit_length()


def _zero() -> dict:
    return {k: 0.0 for k in KEYS}


def _add(a: dict, b: dict, times: float = 1.0) -> dict:
    for k in KEYS:
        a[k] = a.get(k, 0.0) + times * b.get(k, 0.0)
    return a


# =============================================================================================
# Memories: Yosys 0.23 memory_libmap for xc7, re-implemented for the two shapes flipq's RTL has
# =============================================================================================
# A memory is a ROM (no write port, one synchronous read port: initialized from a hex file) or a
# simple dual-port RAM (one write port, one synchronous read port at another address, read-first).
# Ports are never wide (wide_log2 = 0), so the geometry search of memory_libmap's handle_geom()
# reduces to one evaluation per base width. Costs (memory_libmap.cc): a block
# (cost - widthscale) * replicas + widthscale * mult_a * W / unit + 0.5 * read-mux score
# + 0.5 * write-demux score + 2 * emulation score; soft logic W * D * (1/64 a ROM bit, 1 a RAM bit:
# synth_xilinx's -logic-cost-rom / -logic-cost-ram), truncated to an integer, and a candidate
# must be strictly cheaper than it. Ties between candidates go to the first in library order
# (LUTRAMs before block RAMs; RAMB18 "HALF" before RAMB36 "FULL"; true dual port before simple).

# (name, kind, abits, data widths, cost, widthscale, cells a unit, fixed port width index or None)
# Block RAM (brams_xc4v.txt with HAS_SIZE_36): per-port widths; the SDP variants' ports are
# fixed at 36 (HALF) / 72 (FULL) bits. CASCADE (64K x 1, 513) never wins below 32K words and is
# left out. Byte width 9.
_BRAMS = (
    ("TDP_HALF", "bram", 14, (1, 2, 4, 9, 18), 129, 0, {"ramb18": 1}, None),
    ("TDP_FULL", "bram", 15, (1, 2, 4, 9, 18, 36), 257, 0, {"ramb36": 1}, None),
    ("SDP_HALF", "bram", 14, (1, 2, 4, 9, 18, 36), 129, 0, {"ramb18": 1}, 5),
    ("SDP_FULL", "bram", 15, (1, 2, 4, 9, 18, 36, 72), 257, 0, {"ramb36": 1}, 6),
)
# LUTRAM (lutrams_xc5v.txt): one global width an option; ROMs are pruned (prune_rom). The
# single-port kind cannot hold a write and a read at different addresses. Every unit is one
# 4-LUT SLICEM macro (RAM32M / RAM64M, or RAM64X1D / RAM128X1D pairs): 4 LUT sites.
_LUTRAMS = (
    ("DP_5", "lutram", 5, (4,), 8, 8, {"lutram": 4}, None),
    ("DP_6", "lutram", 6, (2,), 8, 8, {"lutram": 4}, None),
    ("DP_7", "lutram", 7, (1,), 8, 8, {"lutram": 4}, None),
    ("QP_5", "lutram", 5, (2,), 7, 7, {"lutram": 4}, None),
    ("QP_6", "lutram", 6, (1,), 7, 7, {"lutram": 4}, None),
    ("SDP_5", "lutram", 5, (6,), 8, 7, {"lutram": 4}, None),
    ("SDP_6", "lutram", 6, (3,), 8, 7, {"lutram": 4}, None),
)
LOGIC_COST_ROM = 1.0 / 64.0
LOGIC_COST_RAM = 1.0
BYTE = 9
EMU_SCORE = 1  # one read port not shared with a write port: memory_libmap's tiebreak point


def _geom(opt, depth: int, width: int, ram: bool):
    """Cheapest geometry of one library option: (cost, units, mult_a) or None."""
    name, kind, abits, dbits, cost, ws, _cells, fixed = opt
    best = None
    byte_idx = max(i for i, d in enumerate(dbits) if d <= BYTE) if kind == "bram" else len(dbits) - 1
    for k, unit in enumerate(dbits):
        # a fixed-width write port narrower than a byte cannot be emulated (the min width check)
        if ram and fixed is not None and k < fixed and k < byte_idx:
            continue
        if kind == "lutram":
            eb = unit  # no byte enables: a unit is the granule
        else:
            eb = 1 if not ram else min(BYTE, unit)
        swz = -(-width // eb) * eb
        mult_a = (depth - 1) // (1 << (abits - k)) + 1
        units = -(-(mult_a * swz) // unit)
        c = (cost - ws) * units + ws * mult_a * width / unit
        c += 0.5 * (mult_a - 1) * width  # read mux over the depth banks
        if ram and mult_a != 1:
            c += 0.5 * mult_a  # write-enable demux
        c += 2 * EMU_SCORE
        if best is None or c < best[0]:
            best = (c, units, mult_a)
    return best


def memory_map(depth: int, width: int, ram: bool = False) -> dict:
    """How Yosys 0.23 ``synth_xilinx -family xc7`` builds a ``depth`` x ``width`` memory with a
    registered read port (``ram``: plus a write port at another address): ``style`` "logic",
    "lutram" or "bram", ``ramb18``/``ramb36`` cells, ``lutram`` LUT sites, ``mult_a`` (depth
    banks) and the candidates' costs."""
    depth, width = int(depth), int(width)
    out = {"style": "none", "ramb18": 0, "ramb36": 0, "lutram": 0, "mult_a": 1, "units": 0, "costs": {}}
    if depth <= 0 or width <= 0:
        return out
    logic = width * depth * (LOGIC_COST_RAM if ram else LOGIC_COST_ROM)
    out["costs"]["logic"] = logic
    # prune_post_geom: per resource kind the cheapest, the first on a tie
    kinds: dict = {}
    for opt in (_LUTRAMS if ram else ()) + _BRAMS:
        g = _geom(opt, depth, width, ram)
        if g is None:
            continue
        out["costs"][opt[0]] = g[0]
        if opt[1] not in kinds or g[0] < kinds[opt[1]][0]:
            kinds[opt[1]] = (g[0], g[1], g[2], opt)
    best, pick = int(logic), None
    for kind in ("lutram", "bram"):
        if kind in kinds and kinds[kind][0] < best:
            best, pick = kinds[kind][0], kinds[kind]
    if pick is None:
        out["style"] = "logic"
        return out
    _c, units, mult_a, opt = pick
    out.update(style=opt[1], option=opt[0], units=units, mult_a=mult_a)
    for cell, n in opt[6].items():
        out[cell] = n * units
    return out


def memory_bram36(depth: int, width: int, ram: bool = False) -> float:
    m = memory_map(depth, width, ram)
    return m["ramb36"] + m["ramb18"] / 2


def rom_lut_per_bit(depth: int) -> float:
    """LUT6 a ROM output bit of ``depth`` random words takes as logic: none for two words, one
    LUT6 a 64 words, the F7/F8 muxes joining four of them free, a LUT more for each 2:1 above 256
    words."""
    if depth <= 2:
        return 0.0  # one address bit: each output bit is a constant, the address bit or its inverse
    n64 = -(-int(depth) // 64)
    return n64 + (-(-n64 // 4) - 1 if n64 > 4 else 0)


def _mem_cost(depth: int, width: int, ram: bool, reg: bool = True) -> dict:
    """What one memory of the RTL adds: BRAM (exact), LUTRAM sites (exact), and for soft logic
    its LUT bits (``rom_bits``: output bits x LUT a bit) or RAM bits (``ram_bits``), plus the
    read register's FFs where the block RAM does not absorb it."""
    if not ram and depth <= 1:
        # a one-word ROM is a constant: Yosys folds it, and its read register, into the logic
        return {"bram36": 0.0, "lutram": 0, "rom_bits": 0.0, "ram_bits": 0.0, "mux_bits": 0.0, "ff": 0.0,
                "style": "const"}
    m = memory_map(depth, width, ram)
    out = {"bram36": m["ramb36"] + m["ramb18"] / 2, "lutram": m["lutram"], "rom_bits": 0.0, "ram_bits": 0.0,
           "mux_bits": 0.0, "ff": 0.0, "style": m["style"]}
    if m["style"] == "logic":
        if ram:
            out["ram_bits"] = depth * width
            out["ff"] = depth * width + (width if reg else 0)
        else:
            out["rom_bits"] = width * rom_lut_per_bit(depth)
            # memory_map moves a ROM's read register onto its (narrower) address
            out["ff"] = min(width, max(1, _clog2(depth))) if reg else 0
    elif m["style"] == "lutram":
        out["ff"] = width if reg else 0  # the emulated synchronous read
        out["mux_bits"] = (m["mult_a"] - 1) * width
    else:
        out["mux_bits"] = (m["mult_a"] - 1) * width
    return out


# =============================================================================================
# Stage parameters
# =============================================================================================
def mvau_params(stage, out_w: int | None = None) -> dict:
    """The ``flipq_mvau`` parameters :func:`flipq.hls.rtlmvau.mvau_instance` would write, without
    writing ROM files (the few that resources depend on)."""
    hw = stage.hw
    if stage.params and "T0" in stage.params:
        p = dict(stage.params)
    else:
        p = _mvau_params_from_plan(stage, out_w)
    # an all-zero bias ROM is constant: Yosys removes it with its read register
    if hw is not None and "BIAS_ZERO" not in p:
        p["BIAS_ZERO"] = int(hw.bias is None or not np.any(np.asarray(hw.bias)))
    if hw is not None and "ROM_W" not in p and hw.fold is not None and hw.fold.rom.shape[1] == hw.fold.rom_depth:
        p["ROM_W"] = rom_widths(hw, p)
    return p


def _varying(words, width: int) -> int:
    """Bit columns of ``width``-bit words that are not the same in every word."""
    words = [int(w) for w in words]
    if len(words) <= 1:
        return 0
    diff = 0
    for w in words[1:]:
        diff |= w ^ words[0]
    return bin(diff & ((1 << width) - 1)).count("1")


def _pack(fields, width: int) -> int:
    mask, word = (1 << width) - 1, 0
    for i, value in enumerate(fields):
        word |= (int(value) & mask) << (i * width)
    return word


def rom_widths(hw, p: dict) -> dict:
    """The varying bit columns of each ROM ``flipq.hls.rtlmvau.mvau_instance`` writes for ``hw``
    (what Yosys keeps of it), computed from the same tables without writing them."""
    from flipq.hls.rtlmvau import block_steps, step_table

    f = hw.fold
    simd, pe, acc = p["SIMD"], p["PE"], p["ACC_W"]
    rw, pw = max(1, _clog2(p["R"])), max(1, _clog2(p["B"]))
    bw = _clog2(p["T0"] + 1)
    out = {}
    rom = np.asarray(f.rom, dtype=np.uint64)  # (PE, T) words of SIMD bits
    if rom.shape[1] > 1:
        var = np.bitwise_or.reduce(rom ^ rom[:, :1], axis=1)
        out["w"] = int(sum(bin(int(v) & ((1 << simd) - 1)).count("1") for v in var))
    else:
        out["w"] = 0
    rows, plns = step_table(hw)
    out["s"] = _varying([(int(pl) << rw) | int(r) for r, pl in zip(rows, plns)], pw + rw)
    first, counts = block_steps(hw)
    out["blk"] = _varying([int(first[b]) | _pack(counts[b], bw) << bw for b in range(p["NB"])], bw + p["B"] * bw)
    bias = np.zeros(hw.n_out, dtype=np.int64) if hw.bias is None else np.asarray(hw.bias, dtype=np.int64).reshape(-1)
    out["bias"] = _varying([_pack(bias[b * pe:(b + 1) * pe], acc) for b in range(p["NB"])], pe * acc)
    if hw.thresholds is not None:
        thr = np.asarray(hw.thresholds, dtype=np.int64)
        thr_w = p.get("THR_W", acc + 1)
        if thr.shape[1] == 0:
            thr = np.full((hw.n_out, 1), 1 << (acc - 1), dtype=np.int64)
        nthr = thr.shape[1]
        out["thr"] = _varying([_pack(thr[b * pe:(b + 1) * pe].ravel(), thr_w) for b in range(p["NB"])],
                              pe * nthr * thr_w)
        signs = np.ones(hw.n_out, dtype=np.int64) if hw.thr_signs is None else np.asarray(hw.thr_signs)
        out["desc"] = _varying([_pack(signs[b * pe:(b + 1) * pe] < 0, 1) for b in range(p["NB"])], pe)
    return out


def _mvau_params_from_plan(stage, out_w):
    hw = stage.hw
    f = hw.fold
    bits = int(hw.weight_bits)
    p = {"SIMD": int(f.simd), "PE": int(f.pe), "R": int(f.n_rows), "NB": int(f.n_blocks), "B": bits,
         "T0": max(int(f.rom_depth), 1), "AW": int(hw.inp.bits), "A_SIGNED": int(bool(hw.inp.signed)),
         "PSUM_W": int(hw.psum_bits), "ACC_W": int(hw.acc_bits), "MODE": 0, "NTHR": 1, "RQ_SHIFT": 0,
         "DW": int(bool(hw.depthwise))}
    p["THR_W"] = p["ACC_W"] + 1
    if hw.thresholds is not None:
        p["MODE"] = 2
        p["NTHR"] = max(1, int(hw.thresholds.shape[1]))
    elif stage.requant is not None:
        p["MODE"] = 1
        p["RQ_SHIFT"] = int(stage.requant["shift"])
    p["OUT_W"] = int(out_w) if out_w is not None else stage.out_width // p["PE"]
    return p


# =============================================================================================
# Coefficients, fitted by benchmarks/synth.py --fit (nonnegative least squares on relative error)
# on the Yosys figures of every stage alone (demo, 20 random layers, and CNV-2W2A as the folding
# chose it for the PYNQ-Z2: 69 stages, SIMD up to 64 and PE up to 32); see docs/synth.md for the
# data. Kept where a group had no data: "ram" (a RAM built of FFs never occurs: 0.3 LUT a bit for
# its write decode and read mux, a LUT6 a 4:1) and the active element-wise stage's "lane" (every
# requantizer was fused into an MVAU; 1 LUT a bit in and out); "fifo", "unpack", "pack" keep their
# fit on the glue stages; the width converter's "scatter" is set on layer wrappers (see
# _features_other). "axi_top" is the mean of Yosys' flipq_axi_top less its layer wrappers
# and glue stages synthesized alone over 14 designs (439..606 LUT, 123..178 FF): the AXI-Lite
# registers, run counters, and what the flattened whole gains or loses across stage boundaries.
# =============================================================================================
COEF = {
    "mvau": {"acc": 2.2872, "const": 0.0, "ctl": 2.7534, "lane": 0.0, "mux": 0.5067, "out_rq": 2.5997, "out_thr": 0.7825,
            "out_thrc": 0.3666, "ram": 0.0, "rom": 1.2061, "rom_t": 0.6705, "shift": 0.7833, "srom": 0.5752, "tree": 1.328},
    "swg": {"const": 0.0, "ctl": 1.9539, "mux": 0.4787, "mux_bits": 0.8411, "out": 1.1554, "ram": 0.0},
    "dwc": {"const": 7.2486, "general": 0.8355, "scatter": 1.0},
    "fifo": {"const": 22.0},
    "unpack": {"cnt": 2.9683, "const": 29.5337, "word": 0.4101},
    "pack": {"cnt": 1.3212, "const": 3.2828, "word": 1.076},
    "eltwise": {"const": 3.0, "lane": 1.0},
    "poolmax": {"const": 31.5885, "lane": 0.8611},
    # fitted by hand on Yosys 0.23 (synth_xilinx, xc7): fork at NO = 2, 3 (5 and 11 LUTs); add
    # on six parameter sets (least squares, within -16 %..+7 %: tests/test_yosys.py)
    "fork": {"const": 0.2, "out2": 1.2},
    "add": {"overlap": 0.896},
    "axi_top": {"carry4": 19.0, "ff": 155.0, "lut": 520.0},
}


def _features_mvau(p: dict) -> tuple[dict, dict]:
    """(LUT features, structural FF/CARRY4/BRAM) of one flipq_mvau."""
    simd, pe, r, nb, b, t0 = p["SIMD"], p["PE"], p["R"], p["NB"], p["B"], p["T0"]
    aw, psum, acc, outw, mode = p["AW"], p["PSUM_W"], p["ACC_W"], p["OUT_W"], p["MODE"]
    nthr, thr_w = p.get("NTHR", 1), p.get("THR_W", acc + 1)
    rw = max(1, _clog2(r))
    pw = max(1, _clog2(b))
    bw = _clog2(t0 + 1)
    nbw = max(1, _clog2(nb))
    dw = bool(p.get("DW", 0))  # a vector-vector unit: one lane a PE, no adder tree
    lv = 0 if dw else _clog2(simd)
    sp = 1 << lv
    tl = max(lv, 1)
    cw = 7 + pw + nbw
    as_ = abs(p.get("RQ_SHIFT", 0))
    xw = acc + as_ + 3
    # Yosys (opt_mem) drops the bit columns a ROM holds constant, so a ROM's width is its varying
    # columns where the contents are known (ROM_W, from the plan), the declared width otherwise
    ew = p.get("ROM_W", {})

    def rom(key, depth, width):
        width = ew.get(key, width)
        return _mem_cost(depth if width else 1, width, False)

    mems = {
        "w": rom("w", t0, pe * simd),
        "s": rom("s", t0, pw + rw),
        "blk": rom("blk", nb, bw + b * bw),
        "bias": rom("bias", 1 if p.get("BIAS_ZERO", 0) else nb, pe * acc),
        "rbuf": _mem_cost(3 * r, simd * aw, True),  # three slots of R rows
    }
    if mode == 2:
        mems["thr"] = rom("thr", nb, pe * nthr * thr_w)
        mems["desc"] = rom("desc", nb, pe)
    # Yosys narrows each adder to the bits its operands can reach (wreduce): level l of the tree
    # sums 2**l lanes of AW bits, so it is min(PSUM_W, AW + l) bits wide; nodes fed only by the
    # zero lanes that pad SIMD to a power of two vanish.
    tree_bits = sum(-(-simd // (1 << l)) * min(psum, aw + l) for l in range(1, lv + 1))
    lanes = 1 if dw else simd
    lane_bits = lanes * min(psum, aw)
    rq_w = (acc - as_ + 2) if p.get("RQ_SHIFT", 0) > 0 else (acc + as_ + 1)
    f = {
        "const": 1.0,
        "tree": pe * tree_bits,                    # registered adder tree, lane ANDs folded in
        "lane": pe * lanes * aw,                   # the lane ANDs themselves
        "acc": pe * acc,                           # add/sub and the bias/acc select
        "shift": pe * acc * pw,                    # << plane: a PW-level barrel shifter
        "out_rq": pe * rq_w if mode == 1 else 0.0,  # rounding, clamp compares, saturating mux
        # comparators against the block's thresholds (count tree beside); against constants
        # (one block: the threshold ROM is one word) they shrink to half a LUT a bit or less
        "out_thr": pe * nthr * thr_w if mode == 2 and nb > 1 else 0.0,
        "out_thrc": pe * nthr * thr_w if mode == 2 and nb == 1 else 0.0,
        "rom": mems["w"]["rom_bits"],              # weight ROM built of LUTs
        "rom_t": sum(m["rom_bits"] for k, m in mems.items() if k in ("bias", "thr", "desc")),  # per block
        # the schedule tables (step and block ROMs): counting patterns that ABC compresses
        "srom": mems["s"]["rom_bits"] + mems["blk"]["rom_bits"],
        "mux": sum(m["mux_bits"] for m in mems.values()),
        "ram": mems["rbuf"]["ram_bits"],
        "ctl": bw + nbw + rw + b * bw / 4,         # step/block counters, the step-count select
    }
    # registers: the tree nodes (a lone lane is registered as is), w2 beside the ROM's own read
    # register, the accumulators, the output stage, the control word beside the pipeline
    # (CW bits a stage, the plane field only from S2 on), counters; each memory's read register
    # is in its own figure (absorbed where it is a block RAM)
    ff = (pe * (tree_bits if lv else lane_bits)
          + pe * lanes
          + pe * acc
          + (pe * rq_w + pe * outw if mode == 1 else pe * nthr + pe * outw if mode == 2 else 2 * pe * outw)
          + (tl + 1) * (cw - 1) + 2
          + bw + nbw + rw + 4 + 2 * rw + 4
          + sum(m["ff"] for m in mems.values()))
    carry = (pe * max(sp - 1, 0) * math.ceil(psum / 4) + pe * math.ceil(acc / 4)
             + (pe * 2 * math.ceil(xw / 4) if mode == 1 else pe * nthr * math.ceil(thr_w / 4) if mode == 2 else 0)
             + 2 * math.ceil(bw / 4) + 2)
    lutram = sum(m["lutram"] for m in mems.values())
    bram = sum(m["bram36"] for m in mems.values())
    return f, {"ff": ff, "carry4": carry, "bram36": bram, "lutram": lutram}


def _features_swg(p: dict) -> tuple[dict, dict]:
    aw, cin, simd = p["AW"], p["CIN"], p["SIMD"]
    kh, kw, sy = p["KH"], p["KW"], p["SY"]
    in_h, in_w, out_h, out_w = p["IN_H"], p["IN_W"], p["OUT_H"], p["OUT_W"]
    pad_t, pad_l, pad_b, pad_r = p["PAD_T"], p["PAD_L"], p["PAD_B"], p["PAD_R"]
    pw = cin * aw
    m = simd // cin if simd >= cin else 1
    cf = 1 if simd >= cin else cin // simd
    padw = in_w + pad_l + pad_r
    qd = -(-padw // m)
    lo_last = (out_h - 1) * sy - pad_t
    rl_last = in_h - min(lo_last, in_h)
    first = max(kh - pad_t, 0)
    nr = max(rl_last + first, kh + sy)
    depth = nr * qd
    ab = max(1, _clog2(depth))
    bank = _mem_cost(depth, pw, True)
    ctl = (ab * 3 + 2 * (_clog2(qd + 2) + 1) + 2 * (_clog2(padw + kw + p["SX"] + m + 2) + 1)
           + 2 * (_clog2(in_h + pad_t + pad_b + kh + sy + 2) + 2)
           + (_clog2(nr + in_h + pad_t + pad_b + kh + sy + 2) + 2)
           + max(1, _clog2(out_w)) + max(1, _clog2(out_h)) + max(1, _clog2(in_w)) + max(1, _clog2(kh)))
    f = {
        "const": 1.0,
        "mux": simd * aw * (m if m > 1 else cf if cf > 1 else 0),  # bank rotation / chunk select
        "out": simd * aw,                                        # zero padding gate
        "ctl": ctl,
        "ram": m * bank["ram_bits"],
        "mux_bits": m * bank["mux_bits"],
    }
    ff = (m * bank["ff"] + simd * aw + ctl + m + 8)
    carry = math.ceil(ctl / 4) * 2
    return f, {"ff": ff, "carry4": carry, "bram36": m * bank["bram36"], "lutram": m * bank["lutram"]}


def _features_other(module: str, p: dict) -> tuple[str, dict, dict]:
    if module == "flipq_dwc":
        ew, i_n, o_n = p["EW"], p["IN_N"], p["OUT_N"]
        if i_n == o_n:
            return "dwc", {}, {"ff": 0, "carry4": 0, "bram36": 0, "lutram": 0}
        if o_n % i_n == 0:
            return "dwc", {"const": 1.0}, {"ff": 2 * o_n * ew + _clog2(o_n // i_n) + 1, "carry4": 0, "bram36": 0,
                                            "lutram": 0}
        if i_n % o_n == 0:
            # a wide beat emitted OUT_N lanes at a time: each output bit picks one of k = IN_N/OUT_N
            # positions (k - 1 two-way choices). Alone, Yosys maps it larger (its input register's
            # load/shift muxes); inside a layer wrapper, what the whole design holds, about one LUT a
            # choice (vgg7-fm's fc6, 64 -> 16 lanes of 8 bits: 386 LUT in the wrapper, 904 alone)
            return "dwc", {"const": 1.0, "scatter": o_n * ew * (i_n // o_n - 1)}, {
                "ff": i_n * ew + _clog2(i_n // o_n + 1), "carry4": 0, "bram36": 0, "lutram": 0}
        cap = i_n + o_n - 1
        return "dwc", {"const": 1.0, "general": cap * ew * max(1, _clog2(cap))}, {
            "ff": cap * ew + _clog2(cap + 1), "carry4": 1, "bram36": 0, "lutram": 0}
    if module == "flipq_fifo":
        w, d = p["W"], p["DEPTH"]
        mem = _mem_cost(d, w, True)
        return "fifo", {"const": 1.0, "ram": mem["ram_bits"]}, {
            "ff": mem["ff"] + 3 * max(1, _clog2(d)) + 2, "carry4": 2, "bram36": mem["bram36"], "lutram": mem["lutram"]}
    if module in ("flipq_unpack", "flipq_pack"):
        # a word register that shifts one beat a beat (a load/shift mux a bit when a word holds
        # more than one beat) and two counters: beat in the word, beat in the sample
        word, ew, lanes, n = p["WORD"], p["EW"], p["LANES"], p["N"]
        bpw = (word // ew) // lanes
        kw, sw = max(1, _clog2(bpw)), max(1, _clog2(n // lanes))
        return module[6:], {"const": 1.0, "word": word if bpw > 1 else 0.0, "cnt": kw + sw}, {
            "ff": word + kw + sw + 2, "carry4": math.ceil(sw / 4), "bram36": 0, "lutram": 0}
    if module == "flipq_eltwise":
        # a pure sign/zero extension (no ReLU, shift or clamp) is wires into the output register
        active = p.get("RELU", 0) or p.get("SHIFT", 0) or p.get("SAT", 0)
        return "eltwise", {"const": 1.0, "lane": p["N"] * (p["IW"] + p["OW"]) if active else 0.0}, {
            "ff": p["N"] * p["OW"] + 1, "carry4": p["N"] * math.ceil(p["IW"] / 4) if p.get("SHIFT", 0) > 0 else 0,
            "bram36": 0, "lutram": 0}
    if module == "flipq_fork":
        # a done flag an output and the AND of what they owe (fitted on Yosys at NO = 2, 3)
        return "fork", {"const": 1.0, "out2": p["NO"] ** 2}, {"ff": p["NO"], "carry4": 0, "bram36": 0, "lutram": 0}
    if module == "flipq_add":
        # a residual add, N lanes of an OW-bit adder: a LUT a bit where both operands are live
        # (an unsigned operand's bits above its width are zero, a signed one's its sign; below an
        # operand's shift only the other one is: wiring). Fitted on Yosys (tests/test_yosys.py).
        sa, sb = p.get("SA", 0), p.get("SB", 0)
        top_a = p["OW"] if p.get("A_SIGNED", 1) else sa + p["AW"]
        top_b = p["OW"] if p.get("B_SIGNED", 1) else sb + p["BW"]
        overlap = max(0, min(top_a, top_b, p["OW"]) - max(sa, sb))
        return "add", {"overlap": p["N"] * overlap}, {
            "ff": p["N"] * p["OW"] + 1, "carry4": p["N"] * math.ceil(p["OW"] / 4), "bram36": 0, "lutram": 0}
    if module == "flipq_concat":
        # joined beats are wiring into the output register (Yosys: a LUT or two); of its bits Yosys
        # keeps each operand's own (a shift's zeros are constant, a sign extension's copies one FF)
        return "eltwise", {"const": 1.0}, {"ff": p["NA"] * p["AW"] + p["NB"] * p["BW"] + 1, "carry4": 0,
                                           "bram36": 0, "lutram": 0}
    if module == "flipq_poolmax":
        return "poolmax", {"const": 1.0, "lane": p["N"] * p["AW"]}, {
            "ff": 2 * p["N"] * p["AW"] + max(1, _clog2(p["KK"])) + 1, "carry4": p["N"] * math.ceil(p["AW"] / 4),
            "bram36": 0, "lutram": 0}
    raise ValueError(f"no resource model for stage module {module!r}")


def stage_features(stage, out_w: int | None = None) -> tuple[str, dict, dict]:
    """(coefficient group, LUT features, structural figures) of one stage."""
    if stage.module == "flipq_mvau":
        f, s = _features_mvau(mvau_params(stage, out_w))
        return "mvau", f, s
    if stage.module == "flipq_swg":
        f, s = _features_swg(stage.params)
        return "swg", f, s
    return _features_other(stage.module, stage.params)


def _mvau_key(stage, out_w):
    """What an MVAU stage's resources depend on, for a cache across foldings of one model: the
    layer and its folding, the output width and stage (its ROM contents follow from those)."""
    hw = stage.hw
    rq = None if stage.requant is None else tuple(sorted(stage.requant.items()))
    return (hw.name, hw.simd, hw.pe, out_w, rq, hw.fold.rom.shape[1] == hw.fold.rom_depth)


def stage_resources(stage, lay=None, cache: dict | None = None, out_w: int | None = None) -> dict:
    """Modeled LUT (LUTRAM sites included), FF, CARRY4, BRAM36, DSP of one stage of an RTL layer
    (``lay``: its :class:`flipq.hls.rtltwin.RtlLayer`, for the MVAU's output width). ``cache``
    (a dict the caller keeps for one model) spares the MVAU's ROM analysis when a folding search
    prices the same layer folding again. ``out_w``: an MVAU's output width outside any layer."""
    if stage.module == "flipq_mvau" and lay is not None:
        out_w = int(lay.out_stream["ew"])
    key = None
    if cache is not None and stage.module == "flipq_mvau" and stage.hw is not None:
        key = _mvau_key(stage, out_w)
        if key in cache:
            return dict(cache[key])
    group, f, s = stage_features(stage, out_w)
    coef = COEF[group]
    lut = sum(coef.get(k, 0.0) * v for k, v in f.items()) + s["lutram"]
    out = {"lut": float(lut), "ff": float(s["ff"]), "carry4": float(s["carry4"]), "bram36": float(s["bram36"]),
           "dsp": 0.0, "lutram": float(s["lutram"])}
    if key is not None:
        cache[key] = dict(out)
    return out


def mac_resources(hw, out_w: int | None = None, requant: dict | None = None) -> dict:
    """One MAC layer alone (:class:`flipq.hls.hwplan.LayerHw`): its MVAU, and a conv's window
    generator, as the RTL twin builds them (no width converter: that depends on the layer before).
    ``out_w`` the output element width (default: the accumulator's, or the threshold count's)."""
    from flipq.hls.rtltwin import Stage, _swg

    if out_w is None:
        out_w = max(hw.n_thresholds.bit_length(), 1) if hw.thresholds is not None else hw.acc_bits
    stages = [Stage("flipq_mvau", {}, hw.inp.bits * hw.simd, hw.pe * out_w, has_planes=True, hw=hw,
                    requant=requant)]
    if hw.geometry is not None:
        stages.insert(0, _swg(hw.inp.bits, hw.geometry, hw.simd))
    tot = _zero()
    tot["lutram"] = 0.0
    for st in stages:
        r = stage_resources(st, out_w=out_w)
        _add(tot, r)
        tot["lutram"] += r["lutram"]
    return tot


def layer_resources(lay, cache: dict | None = None) -> dict:
    """One RTL layer wrapper: the sum of its stages (``stages`` beside, by module)."""
    tot = _zero()
    tot["lutram"] = 0.0
    rows = []
    for st in lay.stages:
        r = stage_resources(st, lay, cache)
        _add(tot, r)
        tot["lutram"] += r["lutram"]
        rows.append({"module": st.module, **r})
    tot["stages"] = rows
    return tot


def top_stages(rp, fifo_depth: int = 8) -> list:
    """The top's glue around the layer wrappers, as ``flipq.hls.rtltwin`` builds ``flipq_accel``:
    unpack, a FIFO between consecutive layers, the output widening, width converter and pack."""
    from flipq.hls.rtltwin import Stage, StreamShape, _dwc, _eltwise, stream_readers

    word = rp.in_pack.word_bits
    out = [Stage("flipq_unpack", {"WORD": word, "EW": rp.in_pack.bits, "N": rp.n_in, "LANES": rp.in_lanes}, word,
                 rp.in_lanes * rp.in_pack.bits)]
    # a FIFO on every stream into a layer but the unpacked input's (unless it is forked), a fork
    # where a stream has several readers (the graph top, flipq.hls.rtltwin._graph_top; a chain
    # has one FIFO between consecutive layers)
    width = {-1: rp.in_lanes * rp.in_pack.bits}
    width.update({lay.index: lay.out_stream["ew"] * lay.out_stream["lanes"] for lay in rp.layers})
    readers = stream_readers(rp.layers)
    for s, rs in readers.items():
        if len(rs) > 1:
            out.append(Stage("flipq_fork", {"W": width[s], "NO": len(rs)}, width[s], len(rs) * width[s]))
        for r in rs:
            if r[0] != "out" and (s >= 0 or len(rs) > 1):
                out.append(Stage("flipq_fifo", {"W": width[s], "DEPTH": fifo_depth}, width[s], width[s]))
    cur = rp.last
    if cur.ew != rp.out_pack.bits:
        out.append(_eltwise(cur, rp.out_pack.bits))
        cur = StreamShape(rp.out_pack.bits, cur.signed, cur.lanes, cur.shape)
    out += _dwc(cur.ew, cur.lanes, rp.out_lanes)
    out.append(Stage("flipq_pack", {"WORD": word, "EW": rp.out_pack.bits, "N": rp.n_out, "LANES": rp.out_lanes},
                     rp.out_lanes * rp.out_pack.bits, word))
    return out


def design_resources(rp, fifo_depth: int = 8, cache: dict | None = None) -> dict:
    """The whole RTL twin on the chip: every layer wrapper, the top's glue (DMA word unpack/pack,
    inter-layer FIFOs, output width conversion) and the board wrapper ``flipq_axi_top`` (AXI-Lite
    registers, run counters). ``total`` is what Yosys would map ``flipq_axi_top`` to; the DMA and
    interconnect beside it are :func:`board_overhead`."""
    layers = {}
    total = _zero()
    for lay in rp.layers:
        r = layer_resources(lay, cache)
        layers[lay.name] = {"module": lay.module, **r}
        _add(total, r)
    glue = _zero()
    for st in top_stages(rp, fifo_depth):
        _add(glue, stage_resources(st))
    _add(total, glue)
    axi = dict(COEF["axi_top"], bram36=0.0, dsp=0.0)
    _add(total, axi)
    return {"layers": layers, "glue": glue, "axi_top": axi, "total": total, "label": LABEL}


# =============================================================================================
# Beside the accelerator on the board: AMD's published figures, not synthesized here
# =============================================================================================
# AXI DMA v7.1, PG021 (AXI DMA LogiCORE IP Product Guide), "Resource Utilization" (figures from
# AMD's resource utilization reports for the 7-series / Zynq-7000): in simple (direct register)
# mode, no Scatter-Gather, MM2S and S2MM both, 32-bit memory map and stream data, max burst 16,
# buffer length register 14..23 bits: about 1,700 LUTs, 2,400 FFs and 2 RAMB36 (18K x 4: the
# channels' data FIFOs), no DSP. These figures are rounded from the order of magnitude PG021 and
# PG059 report for such configurations; they were not re-read from the PDFs when this table was
# written (no access to them here), so check them against PG021 Table "Resource Utilization for
# Zynq-7000" before quoting them as exact.
# AXI Interconnect v2.1, PG059, "Resource Utilization": the AXI-Lite control path from the PS's
# M_AXI_GP0 (1 slave to 2 masters, 32-bit, protocol conversion AXI3 -> AXI4-Lite) about 650 LUT and
# 800 FF; the DMA's two memory-mapped masters into the PS's S_AXI_HP0 through a 2:1 crossbar
# (64-bit, no data FIFOs) about 450 LUT and 500 FF. Processor System Reset (proc_sys_reset, PG164):
# about 20 LUT and 40 FF.
BOARD_OVERHEAD = {
    "axi_dma": {"lut": 1700, "ff": 2400, "carry4": 0, "bram36": 2, "dsp": 0,
                "source": "PG021 AXI DMA v7.1, simple mode, MM2S+S2MM, 32-bit stream, no SG"},
    "axi_interconnect": {"lut": 1100, "ff": 1300, "carry4": 0, "bram36": 0, "dsp": 0,
                         "source": "PG059 AXI Interconnect v2.1: AXI-Lite control path + 2:1 HP crossbar"},
    "proc_sys_reset": {"lut": 20, "ff": 40, "carry4": 0, "bram36": 0, "dsp": 0,
                       "source": "PG164 Processor System Reset v5.0"},
}
BOARD_LABEL = "AMD published (PG021/PG059), not synthesized here"


def board_overhead(board=None) -> dict:
    """The block design around the accelerator on a Zynq board (``board`` is informational: the
    PYNQ boards share this design): per IP and ``total``, labelled :data:`BOARD_LABEL`."""
    parts = {k: dict(v) for k, v in BOARD_OVERHEAD.items()}
    total = _zero()
    for v in parts.values():
        _add(total, v)
    name = getattr(board, "name", board)
    return {"parts": parts, "total": total, "board": name, "label": BOARD_LABEL}
