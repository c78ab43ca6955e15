"""One ``flipq_mvau`` instance from the hardware plan: its ROM hex files and Verilog parameters
(docs/rtl.md, "flipq_mvau"; numpy only).

>>> params = mvau_instance(plan.layer("fc1"), Path("build/rtl"), "L3", requant=rq)   # doctest: +SKIP
>>> params["W_FILE"], params["T0"]                                                   # doctest: +SKIP
('L3_w.hex', 42)

The schedule of :mod:`flipq.hls.fold` is already the RTL's: a block's entries have consecutive
ROM addresses in the order they run (plane from the sign plane down), so the full-precision step
``j`` is ROM word ``j`` and the steps a block keeps at any ``lowest`` are a prefix of its steps;
the block table needs only a block's first step and its step count per ``lowest``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from flipq.hls.hwplan import LayerHw, bits_for

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class RtlMvauError(ValueError):
    """A layer or setting the MVAU cannot be built for; names the layer and the value."""


def _clog2(n: int) -> int:
    return max(int(n) - 1, 0).bit_length()


def _fits(value: int, width: int) -> bool:
    return -(1 << (width - 1)) <= value < (1 << (width - 1))


def _write_hex(path: Path, words, width: int) -> None:
    """One word a line, ``ceil(width / 4)`` hex digits (what ``$readmemh`` reads into a
    ``width``-bit memory word)."""
    digits = max(1, -(-width // 4))
    path.write_text("".join(f"{int(w):0{digits}x}\n" for w in words))


def _pack(fields, width: int) -> int:
    """Fields (signed or not) packed low first, each two's complement in ``width`` bits."""
    mask, word = (1 << width) - 1, 0
    for i, value in enumerate(fields):
        word |= (int(value) & mask) << (i * width)
    return word


def step_table(hw: LayerHw) -> tuple[np.ndarray, np.ndarray]:
    """(rows, planes) of every full-precision step, in ROM order (one a ROM word)."""
    f = hw.fold
    reps = f.n_entry_rows
    offs = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    return np.repeat(f.row0, reps) + offs, np.repeat(f.plane, reps)


def block_steps(hw: LayerHw) -> tuple[np.ndarray, np.ndarray]:
    """(first step (NB,), step count (NB, B) per ``lowest``) of every column block."""
    f = hw.fold
    cum = np.concatenate([[0], np.cumsum(f.n_entry_rows)]).astype(np.int64)
    first = cum[f.blk_start]
    counts = cum[f.blk_start[:, None] + f.blk_len] - first[:, None]
    return first, counts


def mvau_instance(hw: LayerHw, out_dir: Path, prefix: str, *, requant: dict | None = None,
                  out_bits: int | None = None) -> dict:
    """Write ``<prefix>_{w,s,blk,bias}.hex`` (and ``_thr``/``_desc`` for thresholds) into
    ``out_dir``; return the instance's Verilog parameters (name -> int or file name).

    The mode follows the plan: ``hw.thresholds`` set -> 2 (thresholds, ``RQ_MIN`` = the output
    quantizer's ``qmin``); else ``requant`` given -> 1 (``{"relu", "shift" (> 0 right),
    "qmin", "qmax"}``); else 0, the raw accumulator in ``out_bits`` (default: the width of the
    layer's accumulator range). File names carry no folder: the design reads them from its
    working directory.
    """
    name = hw.name
    if not isinstance(prefix, str) or not _NAME.match(prefix):
        raise RtlMvauError(f"layer '{name}': file prefix {prefix!r} is not a plain identifier "
                           "([A-Za-z_][A-Za-z0-9_]*)")
    f = hw.fold
    if f is None or f.rom.shape[1] != f.rom_depth:
        raise RtlMvauError(f"layer '{name}': its fold has no weight ROMs (plan it with the weights, w_kn)")
    simd, pe, bits = int(f.simd), int(f.pe), int(hw.weight_bits)
    n_rows, nb = int(f.n_rows), int(f.n_blocks)
    if not 2 <= bits <= 15:
        raise RtlMvauError(f"layer '{name}': weight_bits={bits} outside 2..15 (the planes port has 4 bits)")
    if hw.thresholds is not None and requant is not None:
        raise RtlMvauError(f"layer '{name}': given a requantization although its plan carries thresholds")

    t_full = int(f.rom_depth)
    t0 = max(t_full, 1)  # an all-zero layer still has a one-word ROM (never added)
    rw, pw = max(1, _clog2(n_rows)), max(1, _clog2(bits))
    bw = _clog2(t0 + 1)
    # the input elements as the stream carries them (the plan's register for the layer's input),
    # which may be wider than its values need: the lanes wrap into PSUM_W bits, where the step's
    # exact sum fits
    acc_w, psum_w = int(hw.acc_bits), int(hw.psum_bits)
    aw, a_signed = int(hw.inp.bits), int(bool(hw.inp.signed))
    if (hw.inp.lo < 0 and not a_signed) or bits_for(min(hw.inp.lo, -1) if a_signed else hw.inp.lo,
                                                      hw.inp.hi) > aw:
        raise RtlMvauError(f"layer '{name}': input values {hw.inp.lo}..{hw.inp.hi} do not fit its "
                           f"{aw}-bit {'signed' if a_signed else 'unsigned'} stream")
    if acc_w < psum_w:
        raise RtlMvauError(f"layer '{name}': accumulator {acc_w} bits narrower than a step's sum ({psum_w})")

    # the RTL relies on these two properties of the fold; check rather than assume
    rows, plns = step_table(hw)
    cum = np.concatenate([[0], np.cumsum(f.n_entry_rows)])
    if f.n_entries and not np.array_equal(cum[:-1], f.addr):
        raise RtlMvauError(f"layer '{name}': ROM addresses are not cumulative in schedule order")
    first, counts = block_steps(hw)
    for low in range(bits):
        if not np.array_equal(np.maximum(counts[:, low], 1), f.block_steps(low)):
            raise RtlMvauError(f"layer '{name}': block step counts at lowest={low} disagree with the fold")

    files = {"W_FILE": f"{prefix}_w.hex", "S_FILE": f"{prefix}_s.hex", "BLK_FILE": f"{prefix}_blk.hex",
             "BIAS_FILE": f"{prefix}_bias.hex", "THR_FILE": "", "DESC_FILE": ""}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rom = f.rom.astype(np.uint64)
    w_words = [sum(int(rom[p, j]) << (p * simd) for p in range(pe)) for j in range(t_full)] or [0]
    _write_hex(out_dir / files["W_FILE"], w_words, pe * simd)
    s_words = [(int(pl) << rw) | int(r) for r, pl in zip(rows, plns)] or [0]
    _write_hex(out_dir / files["S_FILE"], s_words, pw + rw)
    blk_words = [int(first[b]) | _pack(counts[b], bw) << bw for b in range(nb)]
    _write_hex(out_dir / files["BLK_FILE"], blk_words, bw + bits * bw)

    bias = np.zeros(hw.n_out, dtype=np.int64) if hw.bias is None else np.asarray(hw.bias, dtype=np.int64).reshape(-1)
    if bias.shape != (hw.n_out,):
        raise RtlMvauError(f"layer '{name}': bias of shape {bias.shape}, expected ({hw.n_out},)")
    bad = [int(v) for v in bias if not _fits(int(v), acc_w)]
    if bad:
        raise RtlMvauError(f"layer '{name}': bias {bad[0]} does not fit the {acc_w}-bit accumulator")
    _write_hex(out_dir / files["BIAS_FILE"], [_pack(bias[b * pe:(b + 1) * pe], acc_w) for b in range(nb)],
               pe * acc_w)

    mode, relu, shift, qmin, qmax, nthr, thr_w = 0, 0, 0, 0, 0, 1, acc_w + 1
    if hw.thresholds is not None:
        mode = 2
        from flipq.host.intmodel import QuantSpec

        spec = QuantSpec.from_dict(hw.out_quant)
        qmin, qmax = int(spec.qmin), int(spec.qmax)
        thr = np.asarray(hw.thresholds, dtype=np.int64)
        if thr.shape[0] != hw.n_out:
            raise RtlMvauError(f"layer '{name}': thresholds of shape {thr.shape}, expected {hw.n_out} rows")
        if thr.shape[1] == 0:  # one never-met threshold: |acc| < 2**(acc_w-1) always
            thr = np.full((hw.n_out, 1), 1 << (acc_w - 1), dtype=np.int64)
        nthr = int(thr.shape[1])
        off = [int(v) for v in thr.ravel() if not _fits(int(v), thr_w)]
        if off:
            raise RtlMvauError(f"layer '{name}': threshold {off[0]} does not fit {thr_w} bits (not clipped?)")
        signs = np.ones(hw.n_out, dtype=np.int64) if hw.thr_signs is None else np.asarray(hw.thr_signs)
        files["THR_FILE"], files["DESC_FILE"] = f"{prefix}_thr.hex", f"{prefix}_desc.hex"
        _write_hex(out_dir / files["THR_FILE"], [_pack(thr[b * pe:(b + 1) * pe].ravel(), thr_w) for b in range(nb)],
                   pe * nthr * thr_w)
        _write_hex(out_dir / files["DESC_FILE"], [_pack(signs[b * pe:(b + 1) * pe] < 0, 1) for b in range(nb)], pe)
        out_w = bits_for(qmin, qmax)
    elif requant is not None:
        mode = 1
        missing = {"relu", "shift", "qmin", "qmax"} - set(requant)
        if missing:
            raise RtlMvauError(f"layer '{name}': requant lacks {sorted(missing)}")
        relu, shift = int(bool(requant["relu"])), int(requant["shift"])
        qmin, qmax = int(requant["qmin"]), int(requant["qmax"])
        if qmin > qmax:
            raise RtlMvauError(f"layer '{name}': requant qmin={qmin} > qmax={qmax}")
        if abs(shift) > 64:
            raise RtlMvauError(f"layer '{name}': requant shift={shift} outside -64..64")
        out_w = bits_for(qmin, qmax)
    else:
        out_w = bits_for(min(int(hw.out_lo), -1), int(hw.out_hi))
    if out_bits is not None:
        if mode and out_bits < out_w:
            raise RtlMvauError(f"layer '{name}': out_bits={out_bits} cannot hold {qmin}..{qmax} ({out_w} bits)")
        if not 1 <= out_bits <= 64:
            raise RtlMvauError(f"layer '{name}': out_bits={out_bits} outside 1..64")
        out_w = int(out_bits)
    if mode and not (_fits(qmin, 32) and _fits(qmax, 32)):
        raise RtlMvauError(f"layer '{name}': output range {qmin}..{qmax} exceeds 32-bit parameters")

    return {"SIMD": simd, "PE": pe, "R": n_rows, "NB": nb, "B": bits, "T0": t0, "AW": aw, "A_SIGNED": a_signed,
            "PSUM_W": psum_w, "ACC_W": acc_w, "OUT_W": out_w, "FULL_PLANES": int(bool(hw.full_planes)),
            "DW": int(bool(getattr(hw, "depthwise", False))), "MODE": mode, "RQ_RELU": relu, "RQ_SHIFT": shift, "RQ_MIN": qmin, "RQ_MAX": qmax,
            "NTHR": nthr, "THR_W": thr_w, **files}
