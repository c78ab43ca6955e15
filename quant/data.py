"""Datasets: scikit-learn's bundled digits (default), Fashion-MNIST from Debian's
``dataset-fashion-mnist``, CIFAR-10 from a folder the user gives. Nothing is downloaded.

>>> ds = load_dataset("digits")
>>> ds.x_test.shape[1:], len(ds.x_test) >= 300
((1, 8, 8), True)
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS = ("digits", "fashion-mnist", "cifar10")
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/share/fashion-mnist"))


class DatasetError(ValueError):
    """A data set that is missing or unreadable; the message says which file and how to fix it.
    The user's input to fix (a path, a package to install): the command line exits 2."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # float32, NCHW
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    signed_input: bool = False  # True when inputs can be negative (needs a signed input quantizer)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_dataset(name: str, path: str | Path | None = None, seed: int = 0,
                 limit_train: int | None = None) -> Dataset:
    loaders = dict(zip(DATASETS, (_digits, _fashion, _cifar10)))
    if name not in loaders:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(loaders)})")
    ds = loaders[name](path, seed)
    if limit_train is not None and limit_train < len(ds.x_train):
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(ds.x_train), limit_train, replace=False))
        ds = Dataset(ds.name, ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test, ds.signed_input)
    return ds


def train_val_rows(n: int, train_size: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a training subset (the rows ``load_dataset(limit_train=train_size)``
    keeps) and of a disjoint validation set drawn from the remaining training rows: knobs are
    tuned on it, the test set is only scored.

    >>> tr, val = train_val_rows(100, 60, 20, seed=1)
    >>> len(tr), len(val), len(np.intersect1d(tr, val))
    (60, 20, 0)
    """
    if train_size + val_size > n:
        raise DatasetError(f"{train_size} training + {val_size} validation rows exceed the {n} training rows")
    idx = np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False))
    rest = np.setdiff1d(np.arange(n), idx)
    val = np.sort(np.random.default_rng(2000 + seed).choice(rest, val_size, replace=False))
    return idx, val


def _digits(path, seed) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # Pixel values are 0..16; /16 puts them on a power-of-two grid, so an 8-bit (or 5-bit)
    # unsigned input quantizer represents them exactly.
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=0.25,
                                          random_state=seed, stratify=d.target)
    return Dataset("digits", xtr, ytr, xte, yte)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: unreadable IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(dims))} values)")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}")


def _fashion(path, seed) -> Dataset:
    folders = [Path(path)] if path else [d for d in FASHION_DIRS if d.is_dir()]
    if not folders:
        raise DatasetError(
            "Fashion-MNIST not found under /usr/share/datasets/fashion-mnist. Install it with "
            "`apt-get install dataset-fashion-mnist` (Debian), or pass --data-path FOLDER holding "
            "the IDX files (train-images-idx3-ubyte[.gz], ...)")
    folder = folders[0]
    arrays = {k: _read_idx(_find_idx(folder, f"{k}-idx{3 if 'images' in k else 1}-ubyte"))
              for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    # /256 keeps every pixel on an 8-bit power-of-two grid (exact for the input quantizer).
    def prep(a):
        return (a.astype(np.float32) / 256.0)[:, None]
    return Dataset("fashion-mnist", prep(arrays["train-images"]), arrays["train-labels"].astype(np.int64),
                   prep(arrays["t10k-images"]), arrays["t10k-labels"].astype(np.int64))


def _cifar10(path, seed) -> Dataset:
    if path is None:
        raise DatasetError("CIFAR-10 is read from a folder you give (--data-path) holding the "
                           "python batches data_batch_1..5 and test_batch; nothing is downloaded")
    folder = Path(path)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"

    def batch(name):
        f = folder / name
        if not f.is_file():
            raise DatasetError(f"CIFAR-10 batch not found: {f}")
        try:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as e:
            raise DatasetError(f"{f}: not a CIFAR-10 python batch ({e})") from e
        return x, y

    tr = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = batch("test_batch")
    xtr = np.concatenate([t[0] for t in tr])
    ytr = np.concatenate([t[1] for t in tr])
    return Dataset("cifar10", (xtr.astype(np.float32) / 256.0), ytr, (xte.astype(np.float32) / 256.0), yte)
