"""``Accelerator``: one class over three backends -- the board (``pynq``), the hls4ml C
simulation (``csim``) and the numpy emulator (``emulator``). Backends differ only in how
packed integers reach the datapath and come back; validation, input quantization, output
scaling, timing and verification live here.

>>> acc = Accelerator.load("build/demo", backend="emulator")   # doctest: +SKIP
>>> y = acc.predict(x)            # floats in the model's own layout, or quantized ints
>>> acc.set_planes(2)             # accumulate only the 2 most significant weight planes
>>> acc.verify(x)["equal"]        # row-by-row against the emulator

Runs on the board's Python 3.10 with numpy (and pynq for the board backend) only.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from flipq.host.emulator import Emulator
from flipq.host.intmodel import IntModel

BACKENDS = ("emulator", "csim", "pynq")


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


def _find_intmodel(folder: Path) -> Path:
    for candidate in (folder, folder / "hls"):
        if (candidate / "intmodel.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no integer model (intmodel.json) in {folder} or {folder / 'hls'}: pass a build folder, "
        "its hls/ folder or an overlay folder")


def _find_csim_library(folder: Path) -> tuple[Path, dict]:
    """The bit-serial C-sim library and its metadata, from ``csim.json`` (written by `flipq hls`)."""
    for base in (folder, folder / "hls"):
        path = base / "csim.json"
        if path.is_file():
            try:
                entry = json.loads(path.read_text())
                lib, meta = base / entry["library"], entry["meta"]
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}: corrupt C-sim description ({e})") from e
            if lib.is_file():
                return lib, meta
            raise FileNotFoundError(f"C-sim library named in {path} not found: {lib}")
    raise FileNotFoundError(f"no bit-serial C-sim build (csim.json) in {folder} or {folder / 'hls'}: "
                            "run `flipq hls` first")


SIMULATED_BITSTREAM = b"FLIPQ-SIMULATED-BITSTREAM\n"


def _simulate_pl(folder: Path, intmodel: IntModel, meta) -> str:
    """Under ``FLIPQ_PYNQ_SIM=1`` the real pynq DMA code moves the packed words and the
    simulated device's programmable logic computes on them: the board wrapper compiled with
    g++ (``sim/libflipq_top.so`` from ``flipq overlay build --simulate``) when present, else
    the emulator. Returns which."""
    from flipq.host import pynq_sim

    device = pynq_sim.activate()
    lib = folder / "sim" / "libflipq_top.so"
    if lib.is_file():
        from flipq.overlays.wrapper import pl_from_wrapper  # x86 simulation only, never on a board

        device.compute = pl_from_wrapper(lib, meta)
        return "wrapper"
    emulator = Emulator(intmodel)

    def datapath(q: np.ndarray, planes: int | None) -> np.ndarray:
        emulator.set_planes(planes)
        return emulator.run(q)

    device.compute = pynq_sim.compute_from_int(datapath, meta)
    return "emulator"


class Accelerator:
    """Run an integer model on a backend; see the module docstring."""

    def __init__(self, intmodel: IntModel, backend: Any, folder: Path | None = None):
        self.model = intmodel
        self.backend = backend
        self.folder = folder
        self.planes: int | None = None
        self._reference = Emulator(intmodel)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", **options) -> "Accelerator":
        """Open a build, hls or overlay folder on ``backend``.

        ``auto`` picks the board when ``flipq.bit`` and pynq are present (or
        ``FLIPQ_PYNQ_SIM=1``), else the C-sim library when built, else the emulator.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"accelerator folder not found: {folder}")
        if backend not in BACKENDS + ("auto",):
            raise ValueError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)} or auto)")
        intmodel = IntModel.load(_find_intmodel(folder))
        if backend == "auto":
            backend = cls._auto_backend(folder)
        if backend == "emulator":
            impl = EmulatorBackend(intmodel)
        elif backend == "csim":
            from flipq.host.csim import CsimBackend

            lib, meta = _find_csim_library(folder)
            impl = CsimBackend(lib, meta, **options)
        else:
            from flipq.host.accelmeta import AccelMeta
            from flipq.host.pynq_backend import PynqBackend

            meta_path = folder / "accel.json"
            if not meta_path.is_file():
                raise FileNotFoundError(f"accel.json not found in overlay folder {folder}")
            meta = AccelMeta.load(meta_path)
            if meta.model_hash != intmodel.digest():
                raise ValueError(f"{meta_path}: model_hash {meta.model_hash[:16]}... does not match the "
                                 f"integer model beside it ({intmodel.digest()[:16]}...); refusing to run")
            if os.environ.get("FLIPQ_PYNQ_SIM") == "1":
                pl = _simulate_pl(folder, intmodel, meta)
            else:
                bit = folder / "flipq.bit"
                if bit.is_file() and bit.read_bytes()[:len(SIMULATED_BITSTREAM)] == SIMULATED_BITSTREAM:
                    raise ValueError(f"{bit} is the stand-in written by `flipq overlay build --simulate`, "
                                     "not a bitstream: build the overlay with Vivado for a board, or set "
                                     "FLIPQ_PYNQ_SIM=1 to simulate")
                pl = "board"
            impl = PynqBackend(folder, meta, **options)
            impl.programmable_logic = pl
        return cls(intmodel, impl, folder)

    @staticmethod
    def _auto_backend(folder: Path) -> str:
        if (folder / "flipq.bit").is_file() and (folder / "accel.json").is_file():
            if os.environ.get("FLIPQ_PYNQ_SIM") == "1" or Path("/home/xilinx").is_dir():
                return "pynq"
        try:
            _find_csim_library(folder)
            return "csim"
        except FileNotFoundError:
            return "emulator"

    # -- inputs -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample in the user's layout (NCHW models: (C, H, W))."""
        s = self.model.input_shape
        return (s[2], s[0], s[1]) if self.model.input_layout == "NCHW" and len(s) == 3 else tuple(s)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Validate ``x`` and return integer NHWC inputs.

        Floats are quantized exactly as the model's input quantizer does; integer arrays are
        taken as already quantized and range-checked.
        """
        x = np.asarray(x)
        if x.shape == self.input_shape:
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise AcceleratorInputError(
                f"input shape {tuple(x.shape)} does not match the model: expected (batch, "
                f"{', '.join(map(str, self.input_shape))}) or one sample {self.input_shape}")
        if x.shape[0] == 0:
            raise AcceleratorInputError("empty batch")
        spec = self.model.input_quant
        if np.issubdtype(x.dtype, np.integer):
            lo, hi = int(x.min()), int(x.max())
            if lo < spec.qmin or hi > spec.qmax:
                bad = lo if lo < spec.qmin else hi
                raise AcceleratorInputError(
                    f"integer input value {bad} outside the input quantizer's range "
                    f"{spec.qmin}..{spec.qmax} ({spec.bits}-bit {'signed' if spec.signed else 'unsigned'})")
            q = x.astype(np.int64)
            return q.transpose(0, 2, 3, 1) if q.ndim == 4 and self.model.input_layout == "NCHW" else q
        if not np.issubdtype(x.dtype, np.floating):
            raise AcceleratorInputError(f"input dtype {x.dtype} is neither float nor integer")
        if not np.all(np.isfinite(x)):
            raise AcceleratorInputError("input holds NaN or infinity")
        return self._reference.quantize_input(x)

    # -- running ----------------------------------------------------------------------------
    def set_planes(self, planes: int | None) -> None:
        """Accumulate only the ``planes`` most significant weight planes (None: all)."""
        if planes is not None and (not isinstance(planes, (int, np.integer)) or not 1 <= planes <= 8):
            raise ValueError(f"planes must be an int in 1..8 or None, got {planes!r}")
        self.planes = None if planes is None else int(planes)
        self._reference.set_planes(self.planes)

    def predict_int(self, x: np.ndarray) -> np.ndarray:
        """Integer output accumulators for ``x`` (floats or quantized ints)."""
        return self.backend.run(self.quantize(x), self.planes)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Real-valued outputs (``acc * 2**output_exp``), one row per sample."""
        return self.predict_int(x).astype(np.float64) * 2.0 ** self.model.output_exp

    def verify(self, x: np.ndarray) -> dict:
        """Compare this backend with the emulator row by row (same ``planes``)."""
        q = self.quantize(x)
        got = self.backend.run(q, self.planes).reshape(len(q), -1)
        want = self._reference.run(q).reshape(len(q), -1)
        equal_rows = np.all(got == want, axis=1)
        bad = np.flatnonzero(~equal_rows)
        return {"backend": self.backend.name, "equal": int(equal_rows.sum()), "total": int(len(q)),
                "planes": self.planes, "first_mismatch": None if bad.size == 0 else int(bad[0])}

    def benchmark(self, x: np.ndarray, repeats: int = 5, latency_samples: int = 50) -> dict:
        """Per-stage times, batch-1 latency p50/p99 and batch throughput.

        Labelled ``measured`` only on a real board; everything else is ``emulated``.
        """
        q = self.quantize(x)
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
        fclk = getattr(self.backend, "fclk_mhz", None)
        return {
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
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
