"""``Accelerator``: one class over four backends -- the board (``pynq``), the hls4ml C
simulation (``csim``), the RTL twin simulated by Verilator (``rtl``) and the numpy emulator
(``emulator``). Backends differ only in how
packed integers reach the datapath and come back; validation, input quantization, output
scaling, chunking, timing, verification and serialization of callers live here.

>>> acc = Accelerator.load("build/demo", backend="emulator")   # doctest: +SKIP
>>> y = acc.predict(x)            # real values in the model's own layout (any numeric dtype)
>>> y = acc.predict(q, quantized=True)   # integers already on the input quantizer's grid
>>> acc.set_planes(2)             # accumulate only the 2 most significant weight planes
>>> acc.verify(x)["equal"]        # row-by-row against the emulator

Runs on the board's Python 3.10 with numpy (and pynq for the board backend) only; nothing
here imports a build stage. On x86, the board backend runs against the simulated device of
``flipq.overlays.pynq_sim``, which the caller attaches first (``flipq run`` does it under
``FLIPQ_PYNQ_SIM=1``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from flipq.host.emulator import Emulator, map_chunks
from flipq.host.intmodel import IntModel

BACKENDS = ("emulator", "csim", "rtl", "pynq")
SIM_ENV = "FLIPQ_PYNQ_SIM"
SIMULATED_BITSTREAM = b"FLIPQ-SIMULATED-BITSTREAM\n"


class AcceleratorInputError(ValueError):
    """Input of the wrong shape, dtype or range; the message says what was expected."""


class EmulatorBackend:
    """The datapath as numpy integer arithmetic."""

    name = "emulator"
    measured = False

    def __init__(self, intmodel: IntModel):
        self.emulator = Emulator(intmodel)
        self.last_timings: dict[str, float] = {}

    def run(self, q_in: np.ndarray, planes: int | None) -> np.ndarray:
        t0 = time.perf_counter()
        self.emulator.set_planes(planes)
        out = self.emulator.run(q_in)
        self.last_timings = {"pack": 0.0, "transfer": 0.0, "compute": time.perf_counter() - t0,
                             "unpack": 0.0}
        return out

    def close(self) -> None:
        pass


def find_intmodel(folder: Path) -> Path:
    """The folder holding ``intmodel.json``: ``folder`` itself or its ``hls/``."""
    for candidate in (folder, folder / "hls"):
        if (candidate / "intmodel.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no integer model (intmodel.json) in {folder} or {folder / 'hls'}: pass a build folder, "
        "its hls/ folder or an overlay folder")


def find_csim_library(folder: Path) -> tuple[Path, dict]:
    """The bit-serial C-sim library and its metadata, from ``csim.json`` (written by `flipq hls`)."""
    from flipq.host.csim import check_meta
    from flipq.host.files import confined

    for base in (folder, folder / "hls"):
        path = base / "csim.json"
        if path.is_file():
            try:
                entry = json.loads(path.read_text())
            except ValueError as e:
                raise ValueError(f"{path}: corrupt C-sim description ({e})") from e
            if not isinstance(entry, dict) or "library" not in entry or "meta" not in entry:
                raise ValueError(f"{path}: corrupt C-sim description (expected an object with 'library' and "
                                 "'meta'); rerun `flipq hls`")
            # a received folder names its library: only one inside the folder, symlinks followed
            lib = confined(base, entry["library"], str(path), "library")
            meta = check_meta(entry["meta"], str(path))
            if lib.is_file():
                return lib, meta
            raise FileNotFoundError(f"C-sim library named in {path} not found: {lib}")
    raise FileNotFoundError(f"no bit-serial C-sim build (csim.json) in {folder} or {folder / 'hls'}: "
                            "run `flipq hls` first")


def _check_csim_meta(meta: dict, intmodel: IntModel, source: str) -> None:
    """csim.json's shapes and ``max_planes`` against the integer model it was built for: a
    lowered ``max_planes`` would make "all planes" silently run fewer."""
    have = {"input_shape": tuple(meta["input_shape"]), "output_shape": tuple(meta["output_shape"])}
    want = {"input_shape": tuple(intmodel.input_shape), "output_shape": tuple(intmodel.output_shape())}
    for key in have:
        if have[key] != want[key]:
            raise ValueError(f"{source}: field 'meta.{key}' = {list(have[key])} disagrees with the "
                             f"integer model ({list(want[key])}); rerun `flipq hls`")
    if meta["max_planes"] < intmodel.max_planes():
        raise ValueError(f"{source}: field 'meta.max_planes' = {meta['max_planes']} is below the integer model's "
                         f"{intmodel.max_planes()} weight planes; rerun `flipq hls`")


def is_simulated_bitstream(path: Path) -> bool:
    """True for the stand-in ``flipq.bit`` that ``flipq overlay build --simulate`` writes."""
    with open(path, "rb") as f:
        return f.read(len(SIMULATED_BITSTREAM)) == SIMULATED_BITSTREAM


class Accelerator:
    """Run an integer model on a backend; see the module docstring.

    One caller at a time: the board has one DMA pair, so concurrent ``predict``,
    ``verify``, ``benchmark`` and ``set_planes`` calls from several threads are serialized.
    """

    def __init__(self, intmodel: IntModel, backend: Any, folder: Path | None = None):
        self.model = intmodel
        self.backend = backend
        self.folder = folder
        self.planes: int | None = None
        self._reference = Emulator(intmodel)
        self._lock = threading.RLock()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", **options) -> "Accelerator":
        """Open a build, hls or overlay folder on ``backend``.

        ``auto`` picks the board when ``flipq.bit`` and ``accel.json`` are present and this
        is a PYNQ board (or ``FLIPQ_PYNQ_SIM=1``), else the C-sim library when built, else the
        emulator. Every backend checks that what it runs was built for this integer model.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"accelerator folder not found: {folder}")
        if backend not in BACKENDS + ("auto",):
            raise ValueError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)} or auto)")
        intmodel = IntModel.load(find_intmodel(folder))
        if backend == "auto":
            backend = cls.auto_backend(folder)
        if backend == "emulator":
            impl = EmulatorBackend(intmodel)
        elif backend == "csim":
            from flipq.host.csim import CsimBackend

            lib, meta = find_csim_library(folder)
            built_for = meta.get("model_hash")
            if built_for != intmodel.digest():
                raise ValueError(f"{lib}: the C-sim library was built for model {str(built_for)[:16]}..., the "
                                 f"integer model beside it is {intmodel.digest()[:16]}...; rerun `flipq hls`")
            # all before the library loads: its constructors run then
            _check_csim_meta(meta, intmodel, f"csim.json in {folder}")
            impl = CsimBackend(lib, meta, **options)
        elif backend == "rtl":
            from flipq.host.rtl import RtlBackend, find_rtl_design

            impl = RtlBackend(find_rtl_design(folder), **options)
            if impl.model_hash != intmodel.digest():
                raise ValueError(f"{impl.folder}: the RTL twin was generated for model {impl.model_hash[:16]}..., the "
                                 f"integer model beside it is {intmodel.digest()[:16]}...; rerun `flipq hls --rtl`")
            if impl.max_planes != intmodel.max_planes():
                raise ValueError(f"{impl.folder}: rtl.json says max_planes {impl.max_planes}, the integer model "
                                 f"{intmodel.max_planes()}")
        else:
            from flipq.host.accelmeta import AccelMeta
            from flipq.host.pynq_backend import PynqBackend

            meta_path = folder / "accel.json"
            if not meta_path.is_file():
                raise FileNotFoundError(f"accel.json not found in overlay folder {folder}")
            meta = AccelMeta.load(meta_path)
            meta.check_against(intmodel, str(meta_path))
            bit = folder / "flipq.bit"
            if os.environ.get(SIM_ENV) != "1" and bit.is_file() and is_simulated_bitstream(bit):
                raise ValueError(f"{bit} is the stand-in written by `flipq overlay build --simulate`, "
                                 "not a bitstream: build the overlay with Vivado for a board, or set "
                                 f"{SIM_ENV}=1 to simulate")
            impl = PynqBackend(folder, meta, **options)
        return cls(intmodel, impl, folder)

    @staticmethod
    def auto_backend(folder: Path) -> str:
        if (folder / "flipq.bit").is_file() and (folder / "accel.json").is_file():
            if os.environ.get(SIM_ENV) == "1" or Path("/home/xilinx").is_dir():
                return "pynq"
        try:
            find_csim_library(folder)
            return "csim"
        except FileNotFoundError:
            return "emulator"

    # -- inputs -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample in the user's layout (NCHW models: (C, H, W); 1-D models: (C, L))."""
        return self.model.user_input_shape()

    @property
    def chunk_rows(self) -> int:
        """Rows handled at once: the emulator's bound on working memory."""
        return self._reference.chunk_rows

    def _check_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape == self.input_shape:
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise AcceleratorInputError(
                f"input shape {tuple(x.shape)} does not match the model: expected (batch, "
                f"{', '.join(map(str, self.input_shape))}) or one sample {self.input_shape}")
        if x.shape[0] == 0:
            raise AcceleratorInputError("empty batch")
        return x

    def quantize(self, x: np.ndarray, quantized: bool = False) -> np.ndarray:
        """Validate ``x`` and return integer NHWC inputs.

        By default ``x`` holds real values (any float or integer dtype: raw pixel values 0..255
        are values too), quantized exactly as the model's input quantizer does. With
        ``quantized=True`` it holds integers already on the quantizer's grid, range-checked.
        """
        x = self._check_batch(x)
        spec = self.model.input_quant
        if quantized:
            if not np.issubdtype(x.dtype, np.integer):
                raise AcceleratorInputError(
                    f"quantized input must hold integers on the input quantizer's grid, got dtype {x.dtype}; "
                    "drop quantized=True (--quantized) to quantize real values")
            lo, hi = int(x.min()), int(x.max())
            if lo < spec.qmin or hi > spec.qmax:
                bad = lo if lo < spec.qmin else hi
                raise AcceleratorInputError(
                    f"quantized input value {bad} outside the input quantizer's range "
                    f"{spec.qmin}..{spec.qmax} ({spec.bits}-bit {'signed' if spec.signed else 'unsigned'}); "
                    "without quantized=True (--quantized) inputs are real values and get quantized")
            q = x.astype(np.int64)
            return self.model.to_channels_last(q)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) \
                or x.dtype == np.bool_:
            raise AcceleratorInputError(f"input dtype {x.dtype} is not numeric (floats or integers)")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise AcceleratorInputError("input holds NaN or infinity")
        return self._reference.quantize_input(x)

    # -- running ----------------------------------------------------------------------------
    def set_planes(self, planes: int | None) -> None:
        """Accumulate only the ``planes`` most significant weight planes (1 .. the widest
        layer's planes; None: all)."""
        most = self.model.max_planes()
        if planes is not None and (isinstance(planes, bool) or not isinstance(planes, (int, np.integer))
                                   or not 1 <= planes <= most):
            raise ValueError(f"planes must be an int in 1..{most} (the widest layer stores {most} weight "
                             f"planes) or None for all, got {planes!r}")
        with self._lock:
            self._reference.set_planes(planes)
            self.planes = self._reference.planes

    def _chunks(self, x: np.ndarray, quantized: bool):
        for start in range(0, len(x), self.chunk_rows):
            yield start, self.quantize(x[start:start + self.chunk_rows], quantized)

    def predict_int(self, x: np.ndarray, quantized: bool = False) -> np.ndarray:
        """Integer output accumulators for ``x``, computed chunk by chunk."""
        x = self._check_batch(x)
        shape = tuple(self.model.output_shape())
        with self._lock:
            return map_chunks(lambda part: self.backend.run(self.quantize(part, quantized), self.planes)
                              .reshape((len(part),) + shape), x, self.chunk_rows, np.int64)

    def predict(self, x: np.ndarray, quantized: bool = False) -> np.ndarray:
        """Real-valued outputs (:meth:`IntModel.to_real`), one row per sample."""
        return self.model.to_real(self.predict_int(x, quantized))

    def verify(self, x: np.ndarray, quantized: bool = False) -> dict:
        """Compare this backend with the emulator row by row (same ``planes``)."""
        x = self._check_batch(x)
        with self._lock:
            equal_rows = np.zeros(len(x), dtype=bool)
            for start, q in self._chunks(x, quantized):
                got = self.backend.run(q, self.planes).reshape(len(q), -1)
                want = self._reference.run(q).reshape(len(q), -1)
                equal_rows[start:start + len(q)] = np.all(got == want, axis=1)
        bad = np.flatnonzero(~equal_rows)
        return {"backend": self.backend.name, "equal": int(equal_rows.sum()), "total": int(len(x)),
                "planes": self.planes, "first_mismatch": None if bad.size == 0 else int(bad[0])}

    def benchmark(self, x: np.ndarray, repeats: int = 5, latency_samples: int = 50,
                  quantized: bool = False) -> dict:
        """Per-stage times, batch-1 latency p50/p99 and batch throughput.

        Labelled ``measured`` only on a real board; everything else is ``emulated``.
        """
        with self._lock:
            q = self.quantize(self._check_batch(x)[: self.chunk_rows], quantized)
            self.backend.run(q[:1], self.planes)  # warm caches / first DMA
            stages = {"pack": 0.0, "transfer": 0.0, "compute": 0.0, "unpack": 0.0}
            t0 = time.perf_counter()
            for _ in range(repeats):
                self.backend.run(q, self.planes)
                for k in stages:
                    stages[k] += self.backend.last_timings.get(k, 0.0)
            batch_s = (time.perf_counter() - t0) / repeats
            lat = []
            for i in range(min(latency_samples, len(q)) or 1):
                t1 = time.perf_counter()
                self.backend.run(q[i % len(q): i % len(q) + 1], self.planes)
                lat.append(time.perf_counter() - t1)
            # the RTL twin's own clock: cycles simulated, not host seconds
            rtl = self.backend.cycles(q[:8], self.planes) if hasattr(self.backend, "cycles") else None
        fclk = getattr(self.backend, "fclk_mhz", None)
        return {
            "rtl": rtl,
            "backend": self.backend.name,
            "label": "measured on board" if getattr(self.backend, "measured", False) else "emulated",
            "batch": int(len(q)),
            "planes": self.planes,
            "stage_seconds_per_batch": {k: v / repeats for k, v in stages.items()},
            "latency_s": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
            "throughput_per_s": float(len(q) / batch_s),
            "fclk_mhz": fclk,
        }

    def close(self) -> None:
        with self._lock:
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
