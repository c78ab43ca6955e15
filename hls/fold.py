"""The folded bit-serial layer (FINN's MVAU shape, one weight plane per step): its weight ROMs,
its active-plane schedule and the cycles its loops run (numpy only).

A layer computes ``PE`` output columns side by side, ``SIMD`` fan-in rows a step. Its ``N``
columns form ``NB = N / PE`` column blocks, its fan-in ``K`` rows of ``SIMD`` (``R = K / SIMD``),
``G / SIMD`` of them per weight group. Per column block the schedule lists the (group, plane)
pairs that are not all zero in *some* column of the block, sorted by plane from the sign plane
down; each entry runs its group's rows, one row a cycle. Dropping planes at run time
(``planes = k`` keeps planes ``B-k .. B-1``) keeps a prefix of every block's list, so skipped
planes are absent from the iteration space (``blk_len[b][lowest]``), never skipped inside it.

Per PE a ROM holds, in schedule order, the ``SIMD``-bit plane words of the column it computes in
each block: ``rom[pe][addr_e + s]`` is row ``row0_e + s`` of plane ``p_e`` of column
``b * PE + pe``. ``PE`` ROMs of ``SIMD``-bit words deliver ``PE x SIMD`` weight bits a cycle.

>>> sched = fold_layer(w_kn, bits=2, group_size=0, simd=8, pe=2)      # doctest: +SKIP
>>> mvau_cycles(sched, n_pix=1, lowest=0)                              # doctest: +SKIP

Cycle counts here are what the generated C++ counts in simulation (``flipq_bitserial_pe.h``):
the tests build random models and compare the two at every ``planes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_SIMD = 64  # ROM words are ap_uint<SIMD>; the C-sim's popcount reads them as 64-bit words
SWG_DEPTH = 2  # the sliding-window generator's pipeline (one loop that reads and emits)


class FoldingError(ValueError):
    """A SIMD/PE value the layer cannot take; names the layer and the values it can."""


def divisors(n: int, cap: int | None = None) -> list[int]:
    return [d for d in range(1, (cap or n) + 1) if n % d == 0 and d <= n]


def simd_options(fan_in: int, group_size: int, cin: int | None = None, kernel_width: int | None = None) -> list[int]:
    """SIMD values a layer can take, up to 64: they divide its group size and fan-in (a step
    never spans two groups) and fit its input: a dense layer's SIMD divides its input beat
    (``cin``: a step reads one beat); a conv's divides its input channels (a step reads part of
    one kernel position) or is a multiple of them dividing a kernel row (``kernel_width * cin``:
    a step reads whole positions of one kernel row, e.g. a first layer's 3 channels)."""
    g = math.gcd(group_size, fan_in)
    out = []
    for d in divisors(g, min(g, MAX_SIMD)):
        if cin is None or cin % d == 0:
            out.append(d)
        elif kernel_width is not None and d % cin == 0 and (kernel_width * cin) % d == 0:
            out.append(d)
    return out


def pe_options(n_out: int) -> list[int]:
    """PE values a layer can take: divisors of its output columns (every block full)."""
    return divisors(n_out)


def check_folding(name: str, simd: int, pe: int, fan_in: int, n_out: int, group_size: int,
                  cin: int | None = None, kernel_width: int | None = None) -> None:
    s_ok, p_ok = simd_options(fan_in, group_size, cin, kernel_width), pe_options(n_out)
    for key, value, ok in (("simd", simd, s_ok), ("pe", pe, p_ok)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in ok:
            why = ("divide its group size, fan-in" + (f" and input channels/beat ({cin})" if cin is not None else "")
                   if key == "simd" else "divide its output columns")
            raise FoldingError(f"layer '{name}': {key}={value!r} must {why} ({key} options: "
                               f"{', '.join(map(str, ok))})")


@dataclass(frozen=True, eq=False)
class FoldedLayer:
    """The schedule and ROMs of one folded layer (see the module docstring)."""

    bits: int
    simd: int
    pe: int
    n_rows: int  # R = K / SIMD
    rows_per_group: int  # G / SIMD
    row0: np.ndarray = field(repr=False)  # (E,) first row of each entry's group
    n_entry_rows: np.ndarray = field(repr=False)  # (E,) rows of the entry's group
    plane: np.ndarray = field(repr=False)  # (E,)
    addr: np.ndarray = field(repr=False)  # (E,) ROM address of the entry's first row
    blk_start: np.ndarray = field(repr=False)  # (NB,) first entry of each column block
    blk_len: np.ndarray = field(repr=False)  # (NB, B): entries with plane >= lowest
    rom: np.ndarray = field(repr=False)  # (PE, depth) uint64, SIMD bits each; (PE, 0) when not built
    rom_depth: int = 0  # words per PE ROM (every scheduled row at full precision)

    @property
    def n_blocks(self) -> int:
        return int(self.blk_start.shape[0])

    @property
    def n_entries(self) -> int:
        return int(self.plane.shape[0])

    def block_steps(self, lowest: int) -> np.ndarray:
        """(NB,) steps of each column block at run-time precision ``lowest`` (the lowest plane
        kept): its kept entries' rows, and one step for a block with none (it still writes)."""
        ends = self.blk_start + self.blk_len[:, lowest]
        cum = np.concatenate([[0], np.cumsum(self.n_entry_rows)])
        rows = cum[ends] - cum[self.blk_start]
        return np.maximum(rows, 1)

    def steps(self, lowest: int) -> int:
        """T: compute steps for one activation vector."""
        return int(self.block_steps(lowest).sum())


def plane_bits(w_kn: np.ndarray, bits: int) -> np.ndarray:
    """(B, K, N) 0/1: the two's-complement bit-planes of a (K, N) integer weight matrix."""
    u = np.asarray(w_kn, dtype=np.int64) & ((1 << bits) - 1)
    return np.stack([(u >> p) & 1 for p in range(bits)]).astype(np.uint64)


def fold_layer(mask: np.ndarray, bits: int, fan_in: int, group_size: int, simd: int, pe: int,
               w_kn: np.ndarray | None = None) -> FoldedLayer:
    """Schedule of a layer from its plane masks (``(N, n_groups)``, :mod:`flipq.hls.planes`), and
    its per-PE ROMs from the (K, N) integer weights when given (else an empty ROM: enough for
    cycles and memory shapes). SIMD and PE are already checked."""
    k = fan_in
    n = mask.shape[0]
    g = k if group_size <= 0 or group_size > k else group_size
    if g < simd:  # groups narrower than a step (a depthwise layer's per-weight masks): a step's OR
        if simd % g or k % simd:
            raise FoldingError(f"groups of {g} rows do not tile steps of SIMD={simd} over a fan-in of {k}")
        m0 = np.asarray(mask, dtype=np.uint8).reshape(n, k // simd, simd // g)
        mask, g = np.bitwise_or.reduce(m0, axis=2), simd
    n_rows, sf, nb = k // simd, g // simd, n // pe
    n_groups = -(-k // g)
    m = np.asarray(mask, dtype=np.uint8).T  # groups, N
    block_nz = np.stack([((m >> p) & 1).reshape(n_groups, nb, pe).any(axis=2) for p in range(bits)])
    words = None
    if w_kn is not None:
        planes = plane_bits(w_kn, bits)  # B, K, N
        shifts = np.arange(simd, dtype=np.uint64)
        # (B, R, N) words of SIMD bits: bit i of row r is fan-in index r*SIMD + i
        words = (planes.reshape(bits, n_rows, simd, n) << shifts[None, None, :, None]).sum(axis=2, dtype=np.uint64)
    row0, nrows, plane, addr, starts, lens, rom_cols = [], [], [], [], [], [], []
    address = 0
    for b in range(nb):
        starts.append(len(plane))
        lens.append([0] * bits)
        for p in range(bits - 1, -1, -1):
            for grp in np.flatnonzero(block_nz[p, :, b]):
                first, count = int(grp) * sf, min(g, k - int(grp) * g) // simd
                row0.append(first), nrows.append(count), plane.append(p), addr.append(address)
                address += count
                if words is not None:
                    rom_cols.append(words[p, first:first + count, b * pe:(b + 1) * pe])  # rows x PE
                for lowest in range(p + 1):
                    lens[-1][lowest] += 1
    rom = np.concatenate(rom_cols, axis=0).T.copy() if rom_cols else np.zeros((pe, 0), dtype=np.uint64)
    as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return FoldedLayer(bits=bits, simd=simd, pe=pe, n_rows=n_rows, rows_per_group=sf, row0=as_int(row0),
                       n_entry_rows=as_int(nrows), plane=as_int(plane), addr=as_int(addr),
                       blk_start=as_int(starts), blk_len=as_int(lens).reshape(nb, bits),
                       rom=rom.astype(np.uint64), rom_depth=address)


def lowest_plane(bits: int, planes: int | None, full_planes: bool = False) -> int:
    """The lowest plane accumulated at run-time ``planes`` (0: all), as the kernels compute it."""
    if full_planes or planes is None or planes >= bits:
        return 0
    return bits - int(planes)


def mvau_cycles(fold: FoldedLayer, n_pix: int, lowest: int, depth: int) -> int:
    """Cycles of the MVAU loop for one sample: pixel slot ``j`` reads vector ``j`` (``R`` rows)
    while computing vector ``j - 1`` (``T`` steps), so it lasts the longer of the two; one
    flattened pipeline, entered once (``depth`` to drain)."""
    t, r = fold.steps(lowest), fold.n_rows
    return r + (n_pix - 1) * max(t, r) + t + depth


@dataclass(frozen=True)
class ConvGeometry:
    in_h: int
    in_w: int
    cin: int
    kh: int
    kw: int
    sy: int
    sx: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    pad_bottom: int = 0
    pad_right: int = 0

    def streamed(self, io_type: str) -> "ConvGeometry":
        """The window geometry the generator sees: with io_stream, hls4ml streams the frame
        through a ZeroPadding2D layer of its own first, so the generator reads the padded
        frame with no padding left to add."""
        if io_type != "io_stream" or not (self.pad_top or self.pad_left or self.pad_bottom or self.pad_right):
            return self
        return ConvGeometry(in_h=self.in_h + self.pad_top + self.pad_bottom,
                            in_w=self.in_w + self.pad_left + self.pad_right, cin=self.cin, kh=self.kh, kw=self.kw,
                            sy=self.sy, sx=self.sx, pad_top=0, pad_left=0, out_h=self.out_h, out_w=self.out_w)


def swg_rows_needed(geo: ConvGeometry, oy: int) -> int:
    """Input rows the generator has read before it emits output row ``oy`` (``out_h``: all)."""
    if oy >= geo.out_h:
        return geo.in_h
    return min(max(oy * geo.sy - geo.pad_top + geo.kh, 0), geo.in_h)


def swg_cycles(geo: ConvGeometry, n_rows: int, depth: int = SWG_DEPTH) -> int:
    """Cycles of the sliding-window generator for one sample: ONE pipelined loop that reads and
    emits at once. First it reads the rows output row 0 needs (one pixel a cycle); then, per
    output row, it emits that row's ``out_w`` windows (``R`` words each, one a cycle) while reading
    the rows the next output row newly needs (after the last: the rest of the frame), so a
    segment lasts the longer of the two. Entered once: one pipeline depth."""
    cycles = max(swg_rows_needed(geo, 0) * geo.in_w, 1)
    for oy in range(geo.out_h):
        new = swg_rows_needed(geo, oy + 1) - swg_rows_needed(geo, oy)
        cycles += max(geo.out_w * n_rows, new * geo.in_w)
    return cycles + depth


def step_row_bits(fold: FoldedLayer) -> int:
    """Bits of a step's activation row in :func:`step_table`."""
    return max(int(fold.n_rows - 1).bit_length(), 1)


def step_table(fold: FoldedLayer) -> np.ndarray:
    """(max(depth, 1),) int64: step ``j``'s activation row and plane, ``row | plane << row_bits``.
    Steps are every scheduled row at full precision, in schedule order: step ``j``'s weight word
    is ROM address ``j`` (``fold_layer`` gives addresses cumulatively in that order)."""
    rows = np.zeros(max(fold.rom_depth, 1), dtype=np.int64)
    planes = np.zeros_like(rows)
    for r0, n, pl, ad in zip(fold.row0, fold.n_entry_rows, fold.plane, fold.addr):
        rows[ad:ad + n] = np.arange(r0, r0 + n)
        planes[ad:ad + n] = pl
    return rows | planes << step_row_bits(fold)


def block_step_table(fold: FoldedLayer) -> np.ndarray:
    """(NB, B + 1) int64: each column block's first step (its first ROM address; kept inside the
    ROM for a block with no steps), then its step count at each lowest plane (0 where it keeps
    no entry: the kernel still spends one step writing the block)."""
    cum = np.concatenate([[0], np.cumsum(fold.n_entry_rows)]).astype(np.int64)
    out = np.zeros((fold.n_blocks, fold.bits + 1), dtype=np.int64)
    for b in range(fold.n_blocks):
        s = int(fold.blk_start[b])
        out[b, 0] = min(int(cum[s]), max(fold.rom_depth - 1, 0))
        out[b, 1:] = cum[s + fold.blk_len[b]] - cum[s]
    return out


def schedule_words(fold: FoldedLayer) -> np.ndarray:
    """(max(E, 1),) uint64: each schedule entry as the kernel decodes it,
    ``row0 | rows << 16 | plane << 32 | addr << 36``."""
    if fold.n_entries and (fold.row0.max() >= 1 << 16 or fold.n_entry_rows.max() >= 1 << 16
                           or fold.rom_depth >= 1 << 28):
        raise FoldingError(f"a schedule of {fold.n_rows} rows and {fold.rom_depth} ROM words does not fit "
                           "the kernel's entry fields (16-bit rows, 28-bit addresses)")
    words = (fold.row0.astype(np.uint64) | fold.n_entry_rows.astype(np.uint64) << np.uint64(16)
             | fold.plane.astype(np.uint64) << np.uint64(32) | fold.addr.astype(np.uint64) << np.uint64(36))
    return words if words.size else np.zeros(1, dtype=np.uint64)


def block_table(fold: FoldedLayer) -> np.ndarray:
    """(NB, B + 1): each column block's first entry, then its entry count per lowest plane."""
    return np.concatenate([fold.blk_start[:, None], fold.blk_len], axis=1).astype(np.int64)


def max_iterations(fold: FoldedLayer, n_pix: int) -> int:
    """The MVAU loop's trip count at full precision (its bound; fewer planes run fewer)."""
    return mvau_cycles(fold, n_pix, 0, depth=0)


def pe_at_most(n_out: int, pe: int) -> int:
    """The largest PE a layer of ``n_out`` columns can take that is at most ``pe``."""
    return max(d for d in pe_options(n_out) if d <= max(int(pe), 1))
