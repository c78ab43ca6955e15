"""The search's disk cache: one JSON file per trained candidate, named by a hash of its bits and
every training setting (data included), beside its exported QONNX model; the hardware figures
inside it are keyed again by the hardware settings, so another board or folding reuses the
training. A stopped search started again on the same folder trains nothing twice.

>>> cache = SearchCache(tmp_path / "cache")                                   # doctest: +SKIP
>>> key = cache.key({"bits": [4, 4, 4, 4], "training": {...}})                # doctest: +SKIP
>>> cache.get(key) is None                                                    # doctest: +SKIP
True

Files are written atomically by the one process that runs the search (workers return data),
so an interrupted write leaves no half entry behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flipq.host.files import write_atomic, write_json

CACHE_VERSION = 1  # bump when a cached figure's meaning changes


def digest(payload) -> str:
    """A short stable hash of JSON-able ``payload``."""
    text = json.dumps({"v": CACHE_VERSION, "p": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class SearchCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(payload) -> str:
        return digest(payload)

    def _json(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def onnx_path(self, key: str) -> Path:
        return self.folder / f"{key}.onnx"

    def get(self, key: str) -> dict | None:
        path = self._json(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # an unreadable entry is retrained, not trusted

    def put(self, key: str, entry: dict, onnx: bytes | None = None) -> None:
        if onnx is not None:  # the model first: an entry never points at a missing model
            write_atomic(self.onnx_path(key), onnx)
        write_json(self._json(key), {**entry, "key": key})

    def float_path(self, key: str) -> Path:
        return self.folder / f"float-{key}.pt"
