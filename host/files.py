"""Output files replaced whole or not at all, and output folders checked before any work.

Every artifact flipq writes (a build folder's checkpoints and reports, an overlay folder,
``flipq run --output``) goes through :func:`replacing`: it is written to a temporary file
beside its place and moved there with ``os.replace`` (atomic on POSIX), so a run that fails or
is interrupted mid-write leaves the earlier file as it was. Standard library only: the board
side writes through it too.

>>> import tempfile, pathlib
>>> folder = prepare_out_dir(pathlib.Path(tempfile.mkdtemp()) / "build")
>>> _ = write_json(folder / "train.json", {"epochs": 3})
>>> sorted(p.name for p in folder.iterdir())
['train.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def prepare_out_dir(path: str | Path, what: str = "output folder", create: bool = True) -> Path:
    """Create ``path`` if needed and make sure files can be written there. A path that is a
    file, or a folder that cannot be created or written (a read-only mount, missing
    permissions), is refused with a one-line error naming ``what`` and the path. With
    ``create=False`` nothing is left behind: the nearest existing folder is probed instead."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p} is an existing file, not a folder; give a folder "
                                 "(it is created when missing)")
    if not create and not p.exists():
        base = next((a for a in p.absolute().parents if a.exists()), None)
        if base is None or not base.is_dir():
            raise NotADirectoryError(f"{what} {p}: a part of the path is a file, not a folder")
        _probe(base, f"{what} {p} cannot be created ({{}}); give a writable place")
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{what} {p}: a part of the path is a file, not a folder") from None
    except OSError as e:
        raise PermissionError(f"{what} {p} cannot be created ({e.strerror}); give a writable place") from None
    _probe(p, f"{what} {p} is not writable ({{}}); give a writable folder")
    return p


def _probe(folder: Path, message: str) -> None:
    """Create and remove a file in ``folder``; on failure raise ``message`` (``{}``: the reason)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".flipq-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(message.format(e.strerror)) from None


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write (it ends in the same suffix, so
    ``np.save``, ``np.savez`` and ``torch.save`` keep the name); when the block ends without an
    error the temporary replaces ``path``, otherwise it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_atomic(path, json.dumps(obj, indent=1))


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with replacing(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def confined(base: str | Path, name, source: str, field: str) -> Path:
    """``base / name`` for a path a file names (a library, a source to copy), refused unless it is
    relative and resolves inside ``base`` with every symlink followed: a file someone else wrote
    cannot point flipq at a library or source outside the folder it came in."""
    base = Path(base)
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute():
        raise ValueError(f"{source}: field '{field}' = {name!r} must be a relative path inside {base}")
    root = base.resolve()
    path = (base / name).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{source}: field '{field}' = {name!r} resolves outside {base} (to {path}); "
                         "a build folder names only its own files")
    return path


class FolderLockedError(FileExistsError):
    """Another flipq process works in the same folder; the message names its pid."""


@contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder/.flipq.lock`` (an advisory ``flock``, released when the process ends however
    it ends) for the block; a second process asking for it is refused with the holder's pid,
    rather than mixing its files with the first one's."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".flipq.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLockedError(f"{folder}: another `{what}` (pid {holder}) is working in this folder; "
                                    "wait for it to finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock


__all__ = ["FolderLockedError", "confined", "copy_atomic", "folder_lock", "prepare_out_dir", "replacing",
           "write_atomic", "write_json"]
