"""The RTL backend: the accelerator's Verilog, simulated cycle by cycle by Verilator.

Needs numpy and the standard library only (ctypes): the library was built by
``flipq.hls.rtltwin.build_rtl_library`` from the design described by ``rtl.json`` and exports

    long long flipq_rtl_run(const uint64_t *in, long long n_in, uint64_t *out, long long n_out,
                            int planes, uint32_t seed, int gap_pct, int stall_pct,
                            long long max_cycles, long long *in_cycle, long long *out_cycle)

which pushes packed DMA words (``flipq.host.packing``, as the board's DMA moves them) through a
fresh instance of the design and returns the cycles it ran. Inputs may pause (``gap_pct``) and the
output side may refuse words (``stall_pct``): back-pressure through every stage. Cycle figures
are labelled ``RTL-simulated``.

>>> rtl = RtlBackend(Path("build/demo/hls/rtl"), stall_pct=20, gap_pct=20)   # doctest: +SKIP
>>> out = rtl.run(q, planes=3); rtl.last_cycles["interval"]                   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path

import numpy as np

from flipq.host.files import confined
from flipq.host.packing import PackingSpec, pack, unpack

ABI_VERSION = 2  # 2: the harness's max_cycles bounds cycles with no word moving
RTL_FORMAT = 1
LABEL = "RTL-simulated (Verilator, cycle by cycle)"
# Cycles in a row with no word moving in or out before a run counts as stalled: far above any
# real design's longest quiet spell (a slow layer's work on one beat with the FIFOs before it
# full, or the drain after the last input word: a sample's latency), so only a deadlock or a
# design that drops words reaches it -- and it does in seconds, whatever the run's length.
MAX_IDLE_CYCLES = 20_000_000


class RtlError(RuntimeError):
    """An RTL simulation library that is missing, mismatched or stalled; names the folder."""


def find_rtl_design(folder: Path) -> Path:
    """The folder holding ``rtl.json``: ``folder``, ``folder/rtl`` or ``folder/hls/rtl``."""
    folder = Path(folder)
    for candidate in (folder, folder / "rtl", folder / "hls" / "rtl"):
        if (candidate / "rtl.json").is_file():
            return candidate
    raise FileNotFoundError(f"no RTL twin (rtl.json) in {folder}, {folder / 'rtl'} or {folder / 'hls' / 'rtl'}: "
                            "run `flipq hls --rtl` first")


class RtlBackend:
    name = "rtl"
    measured = False  # simulated cycles, host seconds

    def __init__(self, folder: Path, meta: dict | None = None, *, stall_pct: int = 0, gap_pct: int = 0,
                 seed: int = 1, fclk_mhz: float = 100.0, idle_cycles: int = MAX_IDLE_CYCLES):
        self.folder = Path(folder)
        self.idle_cycles = int(idle_cycles)  # quiet cycles before a run counts as stalled
        path = self.folder / "rtl.json"
        try:
            self.meta = meta if meta is not None else json.loads(path.read_text())
            if self.meta.get("format") != RTL_FORMAT:
                raise RtlError(f"{path}: format {self.meta.get('format')!r}, this host reads {RTL_FORMAT}; "
                               "rerun `flipq hls --rtl`")
            word = int(self.meta["word_bits"])
            i, o = self.meta["input"], self.meta["output"]
            self.in_pack = PackingSpec(int(i["bits"]), bool(i["signed"]), word)
            self.out_pack = PackingSpec(int(o["bits"]), bool(o["signed"]), word)
            self.n_in, self.n_out = int(i["n"]), int(o["n"])
            self.max_planes = int(self.meta["max_planes"])
            self.model_hash = str(self.meta["model_hash"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RtlError(f"{path}: unreadable RTL design description ({e})") from e
        for key, value in (("stall_pct", stall_pct), ("gap_pct", gap_pct)):
            if not 0 <= int(value) < 100:
                raise ValueError(f"{key} must be in 0..99, got {value}")
        self.stall_pct, self.gap_pct, self.seed = int(stall_pct), int(gap_pct), int(seed) & 0xFFFFFFFF
        self.fclk_mhz = float(fclk_mhz)
        if "library" not in self.meta:
            raise RtlError(f"{path}: no simulation library recorded (the design was generated, not built); "
                           "run `flipq hls --rtl`")
        try:  # a received folder names only its own library (symlinks followed)
            self.lib_path = confined(self.folder, self.meta["library"], str(self.folder / "rtl.json"), "library")
        except ValueError as e:
            raise RtlError(str(e)) from None
        here = str(self.folder.resolve()) + "/"
        if self.meta.get("rom_dir") != here:
            raise RtlError(f"{path}: the RTL library was built in {self.meta.get('rom_dir')} and reads its ROM "
                           f"files from there; this folder is {here}: rerun `flipq hls --rtl`")
        if not self.lib_path.is_file():
            raise RtlError(f"RTL simulation library not found: {self.lib_path} (run `flipq hls --rtl`)")
        self._lib = None
        self.last_timings: dict = {}
        self.last_cycles: dict = {}

    def _load(self):
        # loaded on first use, after every check above: its constructors run only then
        if self._lib is not None:
            return self._lib
        try:
            lib = ctypes.CDLL(str(self.lib_path))
        except OSError as e:
            raise RtlError(f"{self.lib_path}: cannot load the RTL simulation library ({e})") from e
        for fn in ("flipq_rtl_abi_version", "flipq_rtl_word_bits"):
            if not hasattr(lib, fn):
                raise RtlError(f"{self.lib_path}: not a flipq RTL simulation library (no {fn})")
            getattr(lib, fn).restype = ctypes.c_int
            getattr(lib, fn).argtypes = []
        if lib.flipq_rtl_abi_version() != ABI_VERSION:
            raise RtlError(f"{self.lib_path}: C ABI version {lib.flipq_rtl_abi_version()}, this host speaks "
                           f"{ABI_VERSION}")
        if lib.flipq_rtl_word_bits() != self.in_pack.word_bits:
            raise RtlError(f"{self.lib_path}: built for {lib.flipq_rtl_word_bits()}-bit words, rtl.json says "
                           f"{self.in_pack.word_bits}")
        lib.flipq_rtl_run.restype = ctypes.c_longlong
        lib.flipq_rtl_run.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong,
                                      ctypes.c_int, ctypes.c_uint32, ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                                      ctypes.c_void_p, ctypes.c_void_p]
        self._lib = lib
        return lib

    def words_per_sample(self) -> tuple[int, int]:
        return -(-self.n_in // self.in_pack.per_word), -(-self.n_out // self.out_pack.per_word)

    def run(self, q_in: np.ndarray, planes: int | None) -> np.ndarray:
        """Integer NHWC inputs -> integer outputs ``(n, n_out)``, through the simulated RTL."""
        lib = self._load()
        planes = self.max_planes if planes is None else int(planes)
        if not 1 <= planes <= self.max_planes:
            raise ValueError(f"planes must be in 1..{self.max_planes}, got {planes}")
        t0 = time.perf_counter()
        q = np.asarray(q_in, dtype=np.int64).reshape(len(q_in), -1)
        if q.shape[1] != self.n_in:
            raise ValueError(f"RTL input of {q.shape[1]} values a sample, the design takes {self.n_in}")
        n = len(q)
        words_in = np.ascontiguousarray(pack(q, self.in_pack).astype(np.uint64)).reshape(-1)
        w_in, w_out = self.words_per_sample()
        words_out = np.zeros(n * w_out, dtype=np.uint64)
        in_cycle = np.zeros(max(len(words_in), 1), dtype=np.int64)
        out_cycle = np.zeros(max(len(words_out), 1), dtype=np.int64)
        t1 = time.perf_counter()
        cycles = lib.flipq_rtl_run(words_in.ctypes.data, len(words_in), words_out.ctypes.data, len(words_out),
                                   planes, self.seed, self.gap_pct, self.stall_pct,
                                   self.idle_cycles, in_cycle.ctypes.data, out_cycle.ctypes.data)
        t2 = time.perf_counter()
        if cycles == -1:
            raise RtlError(f"{self.lib_path}: the design stopped moving words (deadlock or dropped data): "
                           f"{self.idle_cycles:,} cycles with no word in or out, {n} samples at planes={planes}")
        if cycles < 0:
            raise RtlError(f"{self.lib_path}: flipq_rtl_run refused the call ({cycles})")
        spec_words = words_out.astype(self.out_pack.word_dtype).reshape(n, w_out)
        out = unpack(spec_words, self.n_out, self.out_pack)
        self.last_cycles = _cycle_figures(in_cycle[:n * w_in].reshape(n, w_in), out_cycle[:n * w_out].reshape(n, w_out),
                                          int(cycles), self.fclk_mhz)
        self.last_timings = {"pack": t1 - t0, "transfer": 0.0, "compute": t2 - t1,
                             "unpack": time.perf_counter() - t2}
        return out

    def cycles(self, q_in: np.ndarray, planes: int | None) -> dict:
        """RTL-simulated timing of ``q_in`` at ``planes``: latency of the first sample and the
        steady-state interval (median cycles between consecutive samples' last output words;
        give a few samples for it), with no gaps or stalls whatever this backend's setting."""
        saved = self.stall_pct, self.gap_pct
        self.stall_pct = self.gap_pct = 0
        try:
            self.run(q_in, planes)
        finally:
            self.stall_pct, self.gap_pct = saved
        return dict(self.last_cycles)

    def close(self) -> None:
        self._lib = None  # Verilated models hold no state between calls; the handle goes with it


def _cycle_figures(in_cycle: np.ndarray, out_cycle: np.ndarray, total: int, fclk_mhz: float) -> dict:
    ends = out_cycle[:, -1]
    first_in = in_cycle[:, 0]
    latency = int(ends[0] - first_in[0] + 1)
    interval = int(np.median(np.diff(ends))) if len(ends) > 1 else latency
    return {"label": LABEL, "samples": int(len(ends)), "total_cycles": total, "latency_cycles": latency,
            "interval_cycles": interval, "fclk_mhz": fclk_mhz,
            "fps": fclk_mhz * 1e6 / interval if interval > 0 else None}
