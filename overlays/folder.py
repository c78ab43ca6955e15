"""The overlay folder on disk: made (or refused) before any work, and written file by file
atomically, so a run that fails half way leaves the earlier artifacts as they were.

>>> out = prepare_out_dir("build/demo/overlay")          # doctest: +SKIP
>>> write_atomic(out / "accel.json", text)                # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and make sure files can be written there; a path that is a file,
    or a folder that cannot be written, is refused with a one-line error naming it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"overlay folder {p} is an existing file, not a folder; "
                                 "give --out a folder (it is created when missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"overlay folder {p}: a part of the path is a file, not a folder; "
                                 "give --out a folder path") from None
    except OSError as e:
        raise PermissionError(f"overlay folder {p} cannot be created ({e.strerror}); "
                              "give --out a writable place") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".flipq-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"overlay folder {p} is not writable ({e.strerror}); "
                              "give --out a writable folder") from None
    return p


@contextmanager
def replacing(path: str | Path):
    """Yield a temporary path beside ``path`` to write; on success it is renamed over ``path``
    (readers see the old file or the new one, never half of one), on failure removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (see :func:`replacing`)."""
    with replacing(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


__all__ = ["copy_atomic", "prepare_out_dir", "replacing", "write_atomic"]
