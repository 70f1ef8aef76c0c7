"""Tests for secfl.fl.data: built-in datasets, npz and IDX loaders, split, standardization."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from secfl.errors import ConfigError
from secfl.fl.data import (
    DataConfig,
    DatasetName,
    Standardizer,
    fit_standardizer,
    load_dataset,
    read_idx,
    stratified_split,
)

BUILTIN = [
    ("breast-cancer", 569, (30,), 2),
    ("digits", 1797, (1, 8, 8), 10),
    ("synthetic", 2000, (20,), 2),
]


# --- built-in datasets --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "total", "shape", "classes"), BUILTIN)
def test_builtin_shapes_dtypes_and_split(name: str, total: int, shape: tuple[int, ...],
                                         classes: int) -> None:
    ds = load_dataset(DataConfig(name=DatasetName(name)), seed=3)
    assert ds.name == name and ds.num_classes == classes and ds.input_shape == shape
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.shape == (ds.y_train.size, *shape)
    assert ds.x_test.shape == (ds.y_test.size, *shape)
    assert ds.y_train.size + ds.y_test.size == total
    assert abs(ds.y_test.size / total - 0.2) < 0.01
    assert set(np.unique(ds.y_train)) == set(range(classes)) == set(np.unique(ds.y_test))
    assert np.all(np.isfinite(ds.x_train)) and np.all(np.isfinite(ds.x_test))


@pytest.mark.parametrize("name", ["breast-cancer", "digits", "synthetic"])
def test_builtin_deterministic_per_seed(name: str) -> None:
    a, b = load_dataset(DataConfig(name=DatasetName(name)), 5), load_dataset(DataConfig(name=DatasetName(name)), 5)
    c = load_dataset(DataConfig(name=DatasetName(name)), 6)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)


def test_breast_cancer_uses_disjoint_seeded_split() -> None:
    raw = load_breast_cancer()
    ds = load_dataset(DataConfig(name=DatasetName.BREAST_CANCER, standardize=False), seed=11)
    train_idx, test_idx = stratified_split(raw.target, 0.2, 11)
    assert np.intersect1d(train_idx, test_idx).size == 0
    np.testing.assert_array_equal(ds.x_train, raw.data[train_idx].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, raw.data[test_idx].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, raw.target[test_idx])
    assert ds.standardizer is None


def test_standardization_uses_training_statistics_only() -> None:
    raw = load_breast_cancer()
    ds = load_dataset(DataConfig(name=DatasetName.BREAST_CANCER), seed=2)
    train_idx, _ = stratified_split(raw.target, 0.2, 2)
    x_tr = raw.data[train_idx].astype(np.float32)
    assert ds.standardizer is not None
    np.testing.assert_allclose(ds.standardizer.mean, x_tr.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(ds.standardizer.std, x_tr.std(0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.std(0), 1.0, atol=1e-4)
    assert np.abs(ds.x_test.mean(0)).max() > 1e-3  # test part is not itself re-centred


def test_digits_images_scaled_and_globally_standardized() -> None:
    ds = load_dataset(DataConfig(name=DatasetName.DIGITS, standardize=False), seed=0)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    st = load_dataset(DataConfig(name=DatasetName.DIGITS), seed=0).standardizer
    assert st is not None and st.mean.shape == () and st.std.shape == ()
    np.testing.assert_allclose(st.mean, ds.x_train.mean(dtype=np.float64), rtol=1e-6)


def test_synthetic_is_learnable_by_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    ds = load_dataset(DataConfig(name=DatasetName.SYNTHETIC, synthetic_samples=1000,
                                 synthetic_features=10, synthetic_classes=3), seed=1)
    assert ds.num_classes == 3 and ds.input_shape == (10,)
    model = LogisticRegression(max_iter=500).fit(ds.x_train, ds.y_train)
    assert model.score(ds.x_test, ds.y_test) > 0.85


# --- configuration ------------------------------------------------------------------------


def test_config_coerces_strings_and_rejects_bad_values() -> None:
    assert DataConfig(name="digits").name is DatasetName.DIGITS  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name must be one of .*'breast-cancer'.*'mnist-idx'"):
        DataConfig(name="cifar")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="path is required"):
        DataConfig(name=DatasetName.NPZ)
    with pytest.raises(ConfigError, match="path is only used"):
        DataConfig(name=DatasetName.DIGITS, path="/tmp/x")
    for bad in (0.0, 1.0, -0.1, True, "0.2"):
        with pytest.raises(ConfigError, match="test_fraction"):
            DataConfig(test_fraction=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="synthetic_classes"):
        DataConfig(name=DatasetName.SYNTHETIC, synthetic_features=2, synthetic_classes=5)
    with pytest.raises(ConfigError, match="synthetic_samples"):
        DataConfig(name=DatasetName.SYNTHETIC, synthetic_samples=3)
    with pytest.raises(ConfigError, match="standardize"):
        DataConfig(standardize=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        load_dataset(DataConfig(), seed=-1)


# --- split and standardizer ---------------------------------------------------------------


def test_stratified_split_partitions_each_class() -> None:
    y = np.repeat([0, 1, 2, 5], [50, 20, 7, 1])
    tr, te = stratified_split(y, 0.3, seed=4)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(y.size))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    np.testing.assert_array_equal(np.bincount(y[te], minlength=6)[[0, 1, 2, 5]], [15, 6, 2, 0])
    tr2, te2 = stratified_split(y, 0.3, seed=4)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, 0.3, seed=5)[1])


def test_standardizer_constant_feature_and_shape_check() -> None:
    x = np.stack([np.full(10, 3.0), np.arange(10.0)], axis=1)
    st = fit_standardizer(x)
    assert st.std[0] == 1.0
    out = st.apply(x)
    assert out.dtype == np.float32 and np.all(out[:, 0] == 0.0)
    with pytest.raises(ConfigError, match="feature shape"):
        st.apply(np.zeros((2, 3)))
    with pytest.raises(ConfigError):
        Standardizer(mean=np.zeros(2), std=np.array([1.0, 0.0]))


# --- npz ----------------------------------------------------------------------------------


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def test_npz_loads_and_remaps_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.repeat([3, 7, 9], 20)
    ds = load_dataset(DataConfig(name=DatasetName.NPZ, path=_npz(tmp_path / "d.npz", x=x, y=y)), 0)
    assert ds.num_classes == 3 and ds.input_shape == (4,)
    assert set(np.unique(ds.y_train)) == {0, 1, 2}
    assert ds.y_train.size + ds.y_test.size == 60


def test_npz_test_rows_do_not_leak_into_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3))
    y = np.repeat([0, 1], 40)
    a = load_dataset(DataConfig(name=DatasetName.NPZ, path=_npz(tmp_path / "a.npz", x=x, y=y)), 9)
    _, test_idx = stratified_split(y, 0.2, 9)
    x_mod = x.copy()
    x_mod[test_idx] = 1e6  # wildly different held-out rows
    b = load_dataset(DataConfig(name=DatasetName.NPZ, path=_npz(tmp_path / "b.npz", x=x_mod, y=y)), 9)
    assert a.standardizer is not None and b.standardizer is not None
    np.testing.assert_array_equal(a.standardizer.mean, b.standardizer.mean)
    np.testing.assert_array_equal(a.standardizer.std, b.standardizer.std)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_test, b.x_test)


def test_npz_images_and_own_test_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(30, 1, 4, 4), dtype=np.uint8)
    xt = rng.integers(0, 256, size=(10, 1, 4, 4), dtype=np.uint8)
    y, yt = np.arange(30) % 2, np.arange(10) % 2
    path = _npz(tmp_path / "img.npz", x=x, y=y, x_test=xt, y_test=yt)
    ds = load_dataset(DataConfig(name=DatasetName.NPZ, path=path, standardize=False), 0)
    assert ds.input_shape == (1, 4, 4) and ds.x_test.shape == (10, 1, 4, 4)
    np.testing.assert_allclose(ds.x_train, x / 255.0, rtol=1e-6)


@pytest.mark.parametrize(("arrays", "match"), [
    ({"x": np.zeros((4, 2))}, r"missing array\(s\) \['y'\]"),
    ({"x": np.array([[0.0, np.nan]] * 4), "y": np.array([0, 1, 0, 1])}, "NaN"),
    ({"x": np.array([[1e300]] * 4), "y": np.array([0, 1, 0, 1])}, "float32 range"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, "shape"),
    ({"x": np.zeros(4), "y": np.array([0, 1, 0, 1])}, "shape"),
    ({"x": np.zeros((4, 2)), "y": np.array(["a", "b", "a", "b"])}, "integer class labels or float"),
    ({"x": np.zeros((4, 2)), "y": np.array([0.0, np.nan, 0.0, 1.0])}, "NaN"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4, dtype=np.int64)}, "1 class"),
    ({"x": np.array([[object()]] * 4, dtype=object), "y": np.array([0, 1, 0, 1])}, "pickle"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 2))},
     "together"),
])
def test_npz_bad_files(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=match):
        load_dataset(DataConfig(name=DatasetName.NPZ, path=path), 0)


def test_npz_missing_or_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(DataConfig(name=DatasetName.NPZ, path=str(tmp_path / "nope.npz")), 0)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ConfigError, match="not a readable"):
        load_dataset(DataConfig(name=DatasetName.NPZ, path=str(garbage)), 0)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ConfigError, match="single .npy"):
        load_dataset(DataConfig(name=DatasetName.NPZ, path=str(single)), 0)


# --- IDX ----------------------------------------------------------------------------------


def _idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(dtype).tobytes()


def _write_idx(path: Path, a: np.ndarray, gz: bool) -> None:
    data = _idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _mnist_dir(root: Path, gz: bool, with_test: bool, n: int = 40) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    y = (np.arange(n) % 4).astype(np.uint8)
    _write_idx(root / "train-images-idx3-ubyte", x, gz)
    _write_idx(root / "train-labels-idx1-ubyte", y, gz)
    if with_test:
        _write_idx(root / "t10k-images-idx3-ubyte", x[:12], gz)
        _write_idx(root / "t10k-labels-idx1-ubyte", y[:12], gz)
    return x, y


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_with_test_files(tmp_path: Path, gz: bool) -> None:
    x, y = _mnist_dir(tmp_path, gz=gz, with_test=True)
    ds = load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path), standardize=False), 0)
    assert ds.input_shape == (1, 6, 5) and ds.num_classes == 4
    np.testing.assert_allclose(ds.x_train[:, 0], x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, y)
    assert ds.x_test.shape == (12, 1, 6, 5)


def test_mnist_idx_without_test_files_is_split(tmp_path: Path) -> None:
    _mnist_dir(tmp_path, gz=False, with_test=False)
    ds = load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path), test_fraction=0.25), 0)
    assert ds.x_train.shape == (30, 1, 6, 5) and ds.x_test.shape == (10, 1, 6, 5)
    assert ds.standardizer is not None and ds.standardizer.mean.shape == ()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_or_trailing_is_rejected(tmp_path: Path, gz: bool) -> None:
    data = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    for name, blob, match in [("short", data[:-1], "truncated"), ("long", data + b"\0", "trailing"),
                              ("head", data[:6], "truncated IDX header")]:
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(blob) if gz else blob)
        with pytest.raises(ConfigError, match=match):
            read_idx(path)


def test_idx_bad_header_and_dtypes(tmp_path: Path) -> None:
    good = _idx_bytes(np.arange(6, dtype=np.uint8))
    (tmp_path / "magic").write_bytes(b"\x01" + good[1:])
    (tmp_path / "code").write_bytes(good[:2] + b"\x07" + good[3:])
    (tmp_path / "gz.gz").write_bytes(b"not gzip at all")
    for name, match in [("magic", "magic"), ("code", "dtype code"), ("gz.gz", "cannot read")]:
        with pytest.raises(ConfigError, match=match):
            read_idx(tmp_path / name)
    a = np.array([[-3, 500], [7, -1000]], dtype=np.int16)
    (tmp_path / "i16").write_bytes(_idx_bytes(a, code=0x0B))
    out = read_idx(tmp_path / "i16")
    assert out.dtype == np.int16 and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_mnist_idx_inconsistent_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path / "none")), 0)
    with pytest.raises(ConfigError, match="no train-images"):
        load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path)), 0)
    x, y = _mnist_dir(tmp_path, gz=False, with_test=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:3], gz=False)
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte.* is missing"):
        load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path)), 0)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", y[:4], gz=False)
    with pytest.raises(ConfigError, match="3 images but 4 labels"):
        load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path)), 0)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y.reshape(8, 5), gz=False)
    with pytest.raises(ConfigError, match="expected uint8 labels"):
        load_dataset(DataConfig(name=DatasetName.MNIST_IDX, path=str(tmp_path)), 0)
