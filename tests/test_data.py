"""Data loaders on files they make themselves (and on Debian's Fashion-MNIST where installed)."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from flipq.quant.data import FASHION_DIRS, DatasetError, load_dataset


def _idx(path, arr, gz=True):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_fashion_idx_files_load_on_the_input_grid(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    for prefix, n in (("train", 20), ("t10k", 20)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs[:n])
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels[:n], gz=False)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert np.array_equal(ds.x_train[:, 0] * 256, imgs)  # exact on a 2^-8 grid
    assert np.array_equal(ds.y_test, labels)


def test_truncated_idx_and_missing_files_are_named(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    raw = gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()[:-10]
    gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb").write(raw)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: truncated"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\[.gz\] not found"):
        _idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
        _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4))
        load_dataset("fashion-mnist", tmp_path)


def test_cifar_batches_from_a_user_folder(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, 3))}, f)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    with pytest.raises(DatasetError, match="--data-path"):
        load_dataset("cifar10")
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_and_limit():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    ds = load_dataset("digits", limit_train=100)
    assert len(ds.x_train) == 100 and len(ds.x_test) >= 300


@pytest.mark.skipif(not any(d.is_dir() for d in FASHION_DIRS), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
