"""The C-sim backend: the compiled bit-serial hls4ml project, called through its C ABI.

Needs numpy and the standard library only (ctypes): the library was built by
``flipq.hls.bitserial.build_bitserial`` and exports

    int flipq_run(const int64_t *in_int, int64_t *out_acc, int n, int planes)

taking integer inputs (NHWC flattened per sample, on the input quantizer's grid) and
returning integer output accumulators; plus ``flipq_abi_version``, ``flipq_n_in``,
``flipq_n_out`` and ``flipq_max_planes`` to check the library against ``meta``.

>>> csim = CsimBackend(Path("build/demo/hls/hls4ml_prj/firmware/libmyproject_flipq.so"),
...                    json.loads(Path("build/demo/hls/csim_meta.json").read_text()))  # doctest: +SKIP
>>> acc = csim.run(q, planes=4)                                                        # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import json  # noqa: F401  (used in the docstring example)
import time
from pathlib import Path

import numpy as np

ABI_VERSION = 2


_SYMBOLS = ("flipq_abi_version", "flipq_n_in", "flipq_n_out", "flipq_max_planes", "flipq_run", "flipq_cycles",
            "flipq_reset_cycles")


class CsimError(RuntimeError):
    """A C-sim library that is missing, mismatched, or refused a call; names the library."""


def check_meta(meta, source: str = "csim.json") -> dict:
    """Refuse a C-sim description (``csim.json``'s ``meta``) whose fields are not what `flipq hls`
    writes: shapes of positive ints, ``max_planes`` in 1..8, a model hash, layers named by the one
    layer-name pattern. Runs before the library is loaded, so a bad file loads no native code."""
    from flipq.host.names import check_layer_name

    def bad(field, value, want):
        return ValueError(f"{source}: field 'meta.{field}' = {value!r} {want}; rerun `flipq hls`")

    if not isinstance(meta, dict):
        raise ValueError(f"{source}: field 'meta' = {type(meta).__name__}, expected an object; rerun `flipq hls`")
    for key in ("input_shape", "output_shape"):
        v = meta.get(key)
        if not isinstance(v, list) or not v or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v):
            raise bad(key, v, "is not a list of positive ints")
    planes = meta.get("max_planes")
    if isinstance(planes, bool) or not isinstance(planes, int) or not 1 <= planes <= 8:
        raise bad("max_planes", planes, "is not an int in 1..8")
    if not isinstance(meta.get("model_hash"), str):
        raise bad("model_hash", meta.get("model_hash"), "is not a model hash")
    layers = meta.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(lay, dict) for lay in layers):
        raise bad("layers", layers, "is not a list of layer objects")
    for i, lay in enumerate(layers):
        check_layer_name(lay.get("name"), source, f"meta.layers[{i}].name")
    return meta


class CsimBackend:
    name = "csim"
    measured = False  # C-sim timings are host timings, not the board's

    def __init__(self, lib_path: Path, meta: dict):
        self.lib_path = Path(lib_path)
        self._lib = None
        if not self.lib_path.is_file():
            raise CsimError(f"C-sim library not found: {self.lib_path}")
        check_meta(meta, f"{self.lib_path}: C-sim description")  # every check on data before native code loads
        self.input_shape = tuple(int(d) for d in meta["input_shape"])
        self.output_shape = tuple(int(d) for d in meta["output_shape"])
        self.max_planes = int(meta["max_planes"])
        try:
            lib = ctypes.CDLL(str(self.lib_path))
        except OSError as e:
            raise CsimError(f"{self.lib_path}: cannot load the C-sim library ({e})") from e
        missing = [fn for fn in _SYMBOLS if not hasattr(lib, fn)]
        if missing:
            raise CsimError(f"{self.lib_path}: not a flipq C-sim library (no {missing[0]}); rerun `flipq hls`")
        self._lib = lib
        for fn in ("flipq_abi_version", "flipq_n_in", "flipq_n_out", "flipq_max_planes"):
            getattr(lib, fn).restype = ctypes.c_int
            getattr(lib, fn).argtypes = []
        lib.flipq_run.restype = ctypes.c_int
        lib.flipq_cycles.restype = None
        lib.flipq_cycles.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.flipq_reset_cycles.restype = None
        lib.flipq_reset_cycles.argtypes = []
        self.layer_names = [lay["name"] for lay in meta.get("layers", [])]
        lib.flipq_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        abi = lib.flipq_abi_version()
        if abi != ABI_VERSION:
            raise CsimError(f"{self.lib_path}: C ABI version {abi}, this host speaks {ABI_VERSION}")
        n_in, n_out = int(np.prod(self.input_shape)), int(np.prod(self.output_shape))
        if (lib.flipq_n_in(), lib.flipq_n_out()) != (n_in, n_out):
            raise CsimError(f"{self.lib_path}: library takes {lib.flipq_n_in()} inputs and gives "
                            f"{lib.flipq_n_out()} outputs per sample; meta says {self.input_shape} -> "
                            f"{self.output_shape} ({n_in} -> {n_out})")
        if lib.flipq_max_planes() != self.max_planes:
            raise CsimError(f"{self.lib_path}: library runs at most {lib.flipq_max_planes()} planes; its "
                            f"description says max_planes {self.max_planes}; rerun `flipq hls`")
        self.last_timings: dict = {}

    def run(self, q_in: np.ndarray, planes: int | None) -> np.ndarray:
        """Integer NHWC inputs ``(n, *input_shape)`` -> integer accumulators ``(n, *output_shape)``;
        ``planes=None`` accumulates every plane."""
        if self._lib is None:
            raise CsimError(f"{self.lib_path}: backend is closed")
        planes = self.max_planes if planes is None else int(planes)
        if not 1 <= planes <= self.max_planes:
            raise ValueError(f"planes must be in 1..{self.max_planes}, got {planes}")
        t0 = time.perf_counter()
        q = np.ascontiguousarray(q_in, dtype=np.int64)
        if q.shape[1:] != self.input_shape:
            raise ValueError(f"C-sim input shape {q.shape[1:]} does not match the model's {self.input_shape} "
                             "(integer NHWC, batch first)")
        n = q.shape[0]
        out = np.empty((n,) + self.output_shape, dtype=np.int64)
        t1 = time.perf_counter()
        rc = self._lib.flipq_run(q.ctypes.data, out.ctypes.data, n, planes)
        t2 = time.perf_counter()
        if rc != 0:
            raise CsimError(f"{self.lib_path}: flipq_run returned {rc} (n={n}, planes={planes})")
        self.last_timings = {"pack": t1 - t0, "transfer": 0.0, "compute": t2 - t1,
                             "unpack": time.perf_counter() - t2}
        return out

    def count_cycles(self, q_in: np.ndarray, planes: int | None) -> dict:
        """Run ``q_in`` and return the cycles the kernels' own loops counted, per layer name:
        ``{"mvau": ..., "swg": ...}`` (``swg`` for convs), summed over the rows of ``q_in``
        (one row gives one sample's figures)."""
        self._lib.flipq_reset_cycles()
        self.run(q_in, planes)
        raw = np.zeros(2 * len(self.layer_names), dtype=np.uint64)
        self._lib.flipq_cycles(raw.ctypes.data, len(self.layer_names))
        out = {}
        for i, name in enumerate(self.layer_names):
            out[name] = {"mvau": int(raw[2 * i])}
            if raw[2 * i + 1]:
                out[name]["swg"] = int(raw[2 * i + 1])
        return out

    def close(self) -> None:
        """Drop the library handle (dlclose where the platform has it)."""
        lib, self._lib = self._lib, None
        if lib is not None:
            dlclose = getattr(ctypes.CDLL(None), "dlclose", None)
            if dlclose is not None:
                dlclose.argtypes = [ctypes.c_void_p]
                dlclose(lib._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
