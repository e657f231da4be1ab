"""Data loaders on small files the tests create, the shared streams, and their errors."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from gansuite.common.data import gaussian_truth, load_dataset
from gansuite.common.errors import GanSuiteError
from gansuite.common.overrides import apply_overrides
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.spec import DataSpec
from gansuite.common.streams import Streams

from shared_data import require_mnist


def _write_idx(path, images: np.ndarray, magic: int = 0x00000803, gz: bool = True) -> None:
    raw = struct.pack(">I", magic) + struct.pack(">III", *images.shape) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_gaussian_data_has_the_d2l_moments():
    spec = apply_overrides(preset("gaussian"), ["data.n_examples=200000"])
    x = load_dataset(spec.data, 0).values
    mean, cov = gaussian_truth(spec.data)
    np.testing.assert_allclose(mean, [1.0, 2.0])
    np.testing.assert_allclose(cov, [[1.01, 1.95], [1.95, 4.25]])
    np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.05)


def test_shapes_dataset_is_offline_deterministic_and_in_range():
    data = DataSpec(kind="shapes", n_examples=16, image_size=64, channels=3)
    a, b = load_dataset(data, 5), load_dataset(data, 5)
    np.testing.assert_array_equal(a.values, b.values)
    x = a.get(np.arange(16))
    assert x.shape == (16, 3, 64, 64) and x.dtype == np.float64
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    grey = load_dataset(DataSpec(kind="shapes", n_examples=4, channels=1), 5).get(np.arange(4))
    assert grey.shape == (4, 1, 64, 64)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_resizes_to_64(tmp_path, gz):
    imgs = np.zeros((3, 28, 28), np.uint8)
    imgs[:, 10:18, 10:18] = 255
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    _write_idx(tmp_path / name, imgs, gz=gz)
    ds = load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1), 0)
    x = ds.get(np.arange(3))
    assert x.shape == (3, 1, 64, 64)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 32, 32] == 1.0  # ToTensor + Normalize(0.5, 0.5)


def test_idx_loader_errors(tmp_path):
    with pytest.raises(GanSuiteError, match="does not exist"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path / "missing"), channels=1), 0)
    with pytest.raises(GanSuiteError, match="no '\\*images-idx3-ubyte"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1), 0)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(bad, np.zeros((2, 28, 28), np.uint8), magic=0x00000801)
    with pytest.raises(GanSuiteError, match="magic 00000801, expected 00000803"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1), 0)
    raw = struct.pack(">IIII", 0x803, 5, 28, 28) + b"\0" * 100
    bad.write_bytes(gzip.compress(raw))
    with pytest.raises(GanSuiteError, match="truncated"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1), 0)


def _write_labels(path, labels: np.ndarray, gz: bool = True) -> None:
    raw = struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_idx_loader_reads_torchvisions_raw_folder_once_per_split_with_labels(tmp_path):
    """torchvision's MNIST/raw holds train and t10k, each raw AND .gz: one split, loaded once."""
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    train_y, test_y = rng.integers(0, 10, 7), rng.integers(0, 10, 3)
    for gz in (False, True):
        ext = ".gz" if gz else ""
        _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", train, gz=gz)
        _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", test, gz=gz)
        _write_labels(tmp_path / f"train-labels-idx1-ubyte{ext}", train_y, gz=gz)
        _write_labels(tmp_path / f"t10k-labels-idx1-ubyte{ext}", test_y, gz=gz)
    ds = load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1, image_size=28), 0)
    assert ds.n == 7 and ds.values.shape == (7, 1, 28, 28)  # the training split, no duplicates
    np.testing.assert_array_equal(ds.values[:, 0], train)
    np.testing.assert_array_equal(ds.labels, train_y)
    ds = load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1, image_size=28, split="test"), 0)
    assert ds.n == 3
    np.testing.assert_array_equal(ds.labels, test_y)


def test_idx_loader_names_the_missing_split(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(GanSuiteError, match=r"^data.split: .* has no 'train' split \(train-images-\*\); it holds: test$"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1), 0)
    _write_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(GanSuiteError, match="3 labels for 2 images"):
        load_dataset(DataSpec(kind="idx", path=str(tmp_path), channels=1, split="test"), 0)


def test_the_shared_mnist_test_set_loads_with_its_labels():
    """../shared/data/mnist: the 10,000 MNIST test digits (md5 sums in its README)."""
    SHARED_MNIST = require_mnist()
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in SHARED_MNIST.glob("*.gz")}
    assert md5 == {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                   "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    ds = load_dataset(DataSpec(kind="idx", path=str(SHARED_MNIST), channels=1, image_size=28, split="test"), 0)
    assert ds.n == 10000 and ds.values.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_image_folder_resize_center_crop(tmp_path):
    from PIL import Image

    sub = tmp_path / "faces"
    sub.mkdir()
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 200  # centre 40 columns bright: after resize 64x128 + crop, all bright
    Image.fromarray(wide).save(sub / "a.png")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(sub / "b.jpg")
    ds = load_dataset(DataSpec(kind="image_folder", path=str(tmp_path), channels=3), 0)
    x = ds.get(np.arange(2))
    assert x.shape == (2, 3, 64, 64)
    assert x[0, :, 32, 4:60].min() > 0.5  # the crop kept the bright centre
    assert abs(x[1].mean() - (10 / 255 - 0.5) / 0.5) < 0.02


def test_image_folder_errors(tmp_path):
    with pytest.raises(GanSuiteError, match="no images"):
        load_dataset(DataSpec(kind="image_folder", path=str(tmp_path)), 0)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(GanSuiteError, match="cannot decode image .*broken.png"):
        load_dataset(DataSpec(kind="image_folder", path=str(tmp_path)), 0)


def test_streams_cover_each_epoch_once_and_are_random_access():
    spec = preset("gaussian")
    st = Streams(spec, 7)
    assert st.iterations_per_epoch == 125 and st.total_iterations == 2500
    seen = np.concatenate([st.indices(i) for i in range(125)])
    assert sorted(seen.tolist()) == list(range(1000))
    assert not np.array_equal(st.permutation(0), st.permutation(1))
    b = st.batch(130)
    again = Streams(spec, 7).batch(130)  # no replay needed: keyed by iteration
    np.testing.assert_array_equal(b.real, again.real)
    np.testing.assert_array_equal(b.z, again.z)
    assert b.z.shape == (8, 2) and b.epoch == 1
    assert not np.array_equal(Streams(spec, 8).batch(130).z, b.z)


def test_streams_keep_the_last_partial_batch_unless_drop_last():
    spec = apply_overrides(preset("dcgan-tiny"), ["data.n_examples=40", "train.batch_size=16"])
    st = Streams(spec, 0)
    assert st.iterations_per_epoch == 3 and len(st.real(2)) == 8 and st.noise(2).shape == (8, 16, 1, 1)
    dropped = Streams(apply_overrides(spec, ["train.drop_last=true"]), 0)
    assert dropped.iterations_per_epoch == 2


def test_init_params_follow_the_spec_distributions():
    p = init_params(preset("dcgan"), 0)
    w = np.concatenate([v.ravel() for k, v in p.items() if k.endswith("weight") and v.ndim == 4])
    gamma = np.concatenate([v for k, v in p.items() if k.endswith("weight") and v.ndim == 1])
    assert abs(w.std() - 0.02) < 2e-4 and abs(w.mean()) < 1e-4
    assert abs(gamma.mean() - 1.0) < 5e-3 and abs(gamma.std() - 0.02) < 3e-3
    assert all(np.all(v == 0) for k, v in p.items() if k.endswith((".bias", "running_mean")))
    assert all(np.all(v == 1) for k, v in p.items() if k.endswith("running_var"))
    p32 = init_params(preset("dcgan"), 0, "float32")
    np.testing.assert_array_equal(p32["G.0.weight"], p["G.0.weight"].astype(np.float32))
    g = init_params(preset("gaussian"), 0)
    assert np.all(g["D.0.bias"] != 0)  # d2l initialises biases N(0, 0.02) too
