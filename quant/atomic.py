"""Build artifacts are replaced whole or not at all: each is written to a temporary file beside
its place and moved there with ``os.replace`` (atomic on POSIX), so a run that fails or is
interrupted mid-write leaves the earlier artifact as it was.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_json(folder / "train.json", {"epochs": 3})
>>> sorted(p.name for p in folder.iterdir())
['train.json']
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so ``np.savez`` and ``torch.save``
    keep the name); when the block ends without an error it replaces ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1))
