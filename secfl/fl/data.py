"""Datasets for federated simulations: loading, a stratified train/test split, standardization.

Every loader returns a :class:`Dataset` with float32 inputs of shape ``(n, *input_shape)`` and,
for classification, int64 labels in ``0..num_classes-1``; for regression, float32 targets.
Sources: scikit-learn's bundled ``breast-cancer``, ``digits`` and ``diabetes`` (regression; no
download), a seeded ``synthetic`` classification problem and a seeded ``synthetic-linear``
regression one, a user ``.npz`` file, or a directory of MNIST-style IDX files. Nothing here
touches the network, imports torch or unpickles data.

The task (:class:`Task`) is inferred from the labels unless given: integer labels mean
classification, float targets regression; a given task is checked against them. Regression data
is split at random (not stratified); its targets are not standardized (metrics stay in the
data's units).

Standardization is fitted on the training part only (:func:`fit_standardizer`) and then applied
to both parts, so no statistic of the held-out test set reaches training. Tabular data gets a
per-feature mean/std; images are first scaled to [0, 1] and then get one global mean/std.

Shuffling here uses numpy's generator seeded by ``seed``: data order is not security-relevant.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
from dataclasses import dataclass
from enum import Enum

import numpy as np

from secfl.errors import ConfigError

__all__ = [
    "Task",
    "DatasetName",
    "DataConfig",
    "Dataset",
    "Standardizer",
    "fit_standardizer",
    "stratified_split",
    "read_idx",
    "load_dataset",
]


class Task(str, Enum):
    """What the model predicts: class labels (cross-entropy) or real targets (mean squared error)."""

    AUTO = "auto"
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class DatasetName(str, Enum):
    """Where the examples come from."""

    BREAST_CANCER = "breast-cancer"
    DIGITS = "digits"
    SYNTHETIC = "synthetic"
    DIABETES = "diabetes"
    SYNTHETIC_LINEAR = "synthetic-linear"
    NPZ = "npz"
    MNIST_IDX = "mnist-idx"


_NEEDS_PATH = (DatasetName.NPZ, DatasetName.MNIST_IDX)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and how to prepare it.

    ``path`` is required for ``npz`` (a ``.npz`` file with arrays ``x`` and ``y``, optionally
    ``x_test`` and ``y_test``) and ``mnist-idx`` (a directory of IDX files), and must be unset
    otherwise. ``test_fraction`` is the stratified held-out share; it is ignored when the source
    ships its own test set. The ``synthetic_*`` fields only matter for ``synthetic`` (and
    ``synthetic_samples``, ``synthetic_features`` and ``synthetic_noise`` for ``synthetic-linear``:
    ``y = x·w + b + noise``, with ``w``, ``b`` drawn from the seed and Gaussian noise of standard
    deviation ``synthetic_noise``).
    """

    name: DatasetName = DatasetName.BREAST_CANCER
    path: str | None = None
    test_fraction: float = 0.2
    standardize: bool = True
    synthetic_samples: int = 2000
    synthetic_features: int = 20
    synthetic_classes: int = 2
    synthetic_noise: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.name, DatasetName):
            try:
                object.__setattr__(self, "name", DatasetName(self.name))
            except ValueError:
                allowed = ", ".join(repr(n.value) for n in DatasetName)
                raise ConfigError(f"name must be one of {allowed}, got {self.name!r}") from None
        if self.path is not None:
            if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
                raise ConfigError(f"path must be a non-empty string or None, got {self.path!r}")
            object.__setattr__(self, "path", os.fspath(self.path))
        if self.name in _NEEDS_PATH and self.path is None:
            raise ConfigError(f"path is required when name is {self.name.value!r}")
        if self.name not in _NEEDS_PATH and self.path is not None:
            raise ConfigError(f"path is only used with name 'npz' or 'mnist-idx', "
                              f"not {self.name.value!r}")
        tf = self.test_fraction
        if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0.0 < tf < 1.0:
            raise ConfigError(f"test_fraction must be a float in (0, 1), got {tf!r}")
        object.__setattr__(self, "test_fraction", float(tf))
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be a bool, got {self.standardize!r}")
        noise = self.synthetic_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise ConfigError(f"synthetic_noise must be a finite float >= 0, got {noise!r}")
        object.__setattr__(self, "synthetic_noise", float(noise))
        classes = _check_int("synthetic_classes", self.synthetic_classes, 2)
        features = _check_int("synthetic_features", self.synthetic_features, 1)
        _check_int("synthetic_samples", self.synthetic_samples, 4 * classes)
        if features < 31 and classes > 2**features:
            raise ConfigError(f"synthetic_classes must be <= 2**synthetic_features "
                              f"= {2**features}, got {classes}")


@dataclass(frozen=True, eq=False)  # arrays: compare fields explicitly, not with ==
class Standardizer:
    """``apply(x) = (x - mean) / std``; ``mean``/``std`` have shape ``()`` (global) or the
    per-example feature shape (per-feature)."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.shape != std.shape:
            raise ConfigError(f"Standardizer mean shape {mean.shape} != std shape {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ConfigError("Standardizer mean must be finite and std finite and > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize a batch ``x`` of shape ``(n, *feature_shape)``; returns float32."""
        x = np.asarray(x)
        if self.mean.ndim and x.shape[1:] != self.mean.shape:
            raise ConfigError(f"x has feature shape {x.shape[1:]}, "
                              f"the standardizer was fitted on {self.mean.shape}")
        out = x.astype(np.float32, copy=True)
        out -= self.mean.astype(np.float32)
        out /= self.std.astype(np.float32)
        return out


def fit_standardizer(x_train: np.ndarray, per_feature: bool = True) -> Standardizer:
    """Fit mean/std on ``x_train`` only: per feature (tabular) or one global pair (images).

    Constant features get std 1 so they map to 0 instead of dividing by zero.
    """
    x = np.asarray(x_train)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"x_train must have shape (n >= 1, ...), got {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    axis = 0 if per_feature else None
    mean = x.mean(axis=axis, dtype=np.float64)
    std = np.sqrt(np.square(x - mean.astype(x.dtype)).mean(axis=axis, dtype=np.float64))
    std = np.where(std <= 1e-12 * np.maximum(1.0, np.abs(mean)), 1.0, std)
    return Standardizer(mean=np.asarray(mean), std=np.asarray(std))


@dataclass(frozen=True, eq=False)  # arrays: compare fields explicitly, not with ==
class Dataset:
    """A prepared dataset: ``x_*`` float32 of shape ``(n, *input_shape)``, ``y_*`` int64 in
    ``0..num_classes-1`` (classification) or float32 targets (regression, ``num_classes`` 1: the
    model's one output). ``standardizer`` is what was fitted on the training inputs (None when
    standardization is off)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    standardizer: Standardizer | None = None
    task: Task = Task.CLASSIFICATION

    @property
    def num_outputs(self) -> int:
        """How many outputs the model needs: one logit per class, or one value (regression)."""
        return 1 if self.task is Task.REGRESSION else self.num_classes


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> sorted int64 ``(train_idx, test_idx)``.

    The test set gets ``round(len(y) * test_fraction)`` examples (fewer only when tiny classes
    cap it), each class contributing in proportion to its size (largest remainder) while
    keeping at least one example in training; a class of one example stays in training.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.size < 2:
        raise ConfigError(f"labels must be 1-D with at least 2 entries, got shape {y.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    perm = rng.permutation(y.size)
    order = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random within class
    _, group, counts = np.unique(y[order], return_inverse=True, return_counts=True)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n_test = _class_quotas(counts, test_fraction)
    if n_test.sum() == 0:
        raise ConfigError(f"test_fraction={test_fraction} leaves no test example "
                          f"out of {y.size}")
    rank = np.arange(y.size) - starts[group]
    is_test = rank < n_test[group]
    return np.sort(order[~is_test]).astype(np.int64), np.sort(order[is_test]).astype(np.int64)


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded uniform split of ``0..n-1`` -> sorted int64 ``(train_idx, test_idx)`` with
    ``round(n * test_fraction)`` test examples (at least one each side): for regression targets."""
    if n < 2:
        raise ConfigError(f"need at least 2 examples to split, got {n}")
    n_test = min(max(1, int(np.floor(n * test_fraction + 0.5))), n - 1)
    perm = np.random.default_rng(_check_int("seed", seed, 0)).permutation(n)
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def _class_quotas(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class test counts summing to round(total * fraction), each <= count - 1."""
    cap = counts - 1
    share = counts * fraction
    quota = np.minimum(np.floor(share).astype(np.int64), cap)
    left = min(int(np.floor(counts.sum() * fraction + 0.5)), int(cap.sum())) - int(quota.sum())
    if left > 0:
        open_ = np.flatnonzero(quota < cap)
        best = open_[np.argsort(-(share[open_] - quota[open_]), kind="stable")[:left]]
        quota[best] += 1
    return quota


# --- IDX files ----------------------------------------------------------------------------

#: largest IDX body read (8 GiB): a header promising more is refused before any allocation
_IDX_MAX_BYTES = 8 << 30
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file (plain, or gzip when the name ends in ``.gz``) strictly.

    Format: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per
    dimension, then exactly ``prod(dims)`` big-endian values. Anything else -> ConfigError.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00":
                raise ConfigError(f"{path}: not an IDX file (bad magic number)")
            code, ndim = header[2], header[3]
            if code not in _IDX_DTYPES:
                raise ConfigError(f"{path}: unknown IDX dtype code 0x{code:02x}")
            if ndim == 0:
                raise ConfigError(f"{path}: IDX file with zero dimensions")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise ConfigError(f"{path}: truncated IDX header")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
            dtype = np.dtype(_IDX_DTYPES[code])
            expected = math.prod(dims) * dtype.itemsize
            if not path.endswith(".gz") and expected > os.path.getsize(path):
                raise ConfigError(f"{path}: IDX data truncated (header promises {expected} bytes for dims {dims},"
                                  f" the file has {os.path.getsize(path)})")
            if expected > _IDX_MAX_BYTES:
                raise ConfigError(f"{path}: IDX header promises {expected} bytes (dims {dims}); the limit is"
                                  f" {_IDX_MAX_BYTES}")
            body = f.read(expected + 1)  # bounded: never reads more than the header promises
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: cannot read IDX file: {exc}") from exc
    if len(body) != expected:
        what = "truncated" if len(body) < expected else "has trailing bytes"
        raise ConfigError(f"{path}: IDX data {what} (header promises {expected} bytes "
                          f"for dims {dims})")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):  # the plain file wins when both exist
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _load_idx_pair(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    img_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    if img_path is None and lbl_path is None:
        return None
    if img_path is None or lbl_path is None:
        missing = f"{prefix}-{'images-idx3' if img_path is None else 'labels-idx1'}-ubyte[.gz]"
        raise ConfigError(f"path {directory!r}: {missing} is missing")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3 or min(images.shape) == 0:
        raise ConfigError(f"{img_path}: expected non-empty uint8 images of shape (n, rows, cols), "
                          f"got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ConfigError(f"{lbl_path}: expected uint8 labels of shape (n,), "
                          f"got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ConfigError(f"{prefix} set has {images.shape[0]} images "
                          f"but {labels.shape[0]} labels")
    return images[:, None, :, :], labels


# --- sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    image: bool  # True: scaled to [0, 1], global standardization; False: per-feature


def _load_mnist_idx(directory: str) -> _Raw:
    if not os.path.isdir(directory):
        raise ConfigError(f"path {directory!r} is not a directory (name 'mnist-idx')")
    train = _load_idx_pair(directory, "train")
    if train is None:
        raise ConfigError(f"path {directory!r} has no train-images-idx3-ubyte[.gz] "
                          f"and train-labels-idx1-ubyte[.gz]")
    test = _load_idx_pair(directory, "t10k")
    if test is not None and test[0].shape[1:] != train[0].shape[1:]:
        raise ConfigError(f"t10k images have shape {test[0].shape[1:]}, "
                          f"train images {train[0].shape[1:]}")
    scale = np.float32(1.0 / 255.0)
    return _Raw(train[0].astype(np.float32) * scale, train[1],
                None if test is None else test[0].astype(np.float32) * scale,
                None if test is None else test[1], image=True)


def _npz_arrays(path: str, x_key: str, y_key: str,
                archive: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = archive[x_key], archive[y_key]
    except ValueError as exc:  # object arrays need pickle, which is never allowed
        raise ConfigError(f"{path}: arrays {x_key!r}/{y_key!r} cannot be loaded without "
                          f"pickle ({exc}); store plain numeric arrays") from exc
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: {x_key!r} must be numeric, got dtype {x.dtype}")
    if y.dtype.kind not in "iuf":
        raise ConfigError(f"{path}: {y_key!r} must hold integer class labels or float regression targets, got"
                          f" dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ConfigError(f"{path}: {y_key!r} holds NaN or inf")
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ConfigError(f"{path}: need {x_key!r} of shape (n, ...) with ndim >= 2 and "
                          f"{y_key!r} of shape (n,), n >= 1; got {x.shape} and {y.shape}")
    if 0 in x.shape[1:]:
        raise ConfigError(f"{path}: {x_key!r} has an empty feature dimension {x.shape}")
    return x, y


def _load_npz(path: str) -> _Raw:
    if not os.path.isfile(path):
        raise ConfigError(f"path {path!r} does not exist or is not a file (name 'npz')")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not magic.startswith(b"PK\x03\x04") and not magic.startswith(b"PK\x05\x06"):
        kind = "a single .npy array" if magic.startswith(b"\x93NUMPY") else "not a zip archive"
        raise ConfigError(f"{path}: not an .npz archive ({kind}; it starts with {magic[:6]!r}): save your arrays"
                          " with numpy.savez(path, x=..., y=...)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a readable .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"{path}: expected a .npz archive with arrays 'x' and 'y', "
                          f"got a single .npy array")
    with archive:
        keys = set(archive.files)
        missing = {"x", "y"} - keys
        if missing:
            raise ConfigError(f"{path}: missing array(s) {sorted(missing)}; "
                              f"found {sorted(keys)}")
        has_test = {"x_test", "y_test"} & keys
        if has_test and has_test != {"x_test", "y_test"}:
            raise ConfigError(f"{path}: 'x_test' and 'y_test' must be given together")
        x, y = _npz_arrays(path, "x", "y", archive)
        x_test = y_test = None
        if has_test:
            x_test, y_test = _npz_arrays(path, "x_test", "y_test", archive)
            if x_test.shape[1:] != x.shape[1:]:
                raise ConfigError(f"{path}: 'x_test' examples have shape {x_test.shape[1:]}, "
                                  f"'x' examples {x.shape[1:]}")
    image = x.ndim >= 3
    return _Raw(_npz_float(path, x, image), y,
                None if x_test is None else _npz_float(path, x_test, image), y_test, image=image)


def _npz_float(path: str, a: np.ndarray, image: bool) -> np.ndarray:
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        out = a.astype(np.float32)
    if image and a.dtype == np.uint8:
        out *= np.float32(1.0 / 255.0)
    if not np.all(np.isfinite(out)):
        raise ConfigError(f"{path}: inputs contain NaN/inf or values outside float32 range")
    return out


def _load_builtin(cfg: DataConfig, seed: int) -> _Raw:
    from sklearn import datasets as skd  # bundled copies, no download

    if cfg.name is DatasetName.BREAST_CANCER:
        bunch = skd.load_breast_cancer()
        return _Raw(bunch.data.astype(np.float32), bunch.target, None, None, image=False)
    if cfg.name is DatasetName.DIGITS:
        bunch = skd.load_digits()
        x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
        return _Raw(x, bunch.target, None, None, image=True)
    if cfg.name is DatasetName.DIABETES:  # 442 patients, 10 features, disease progression after a year
        bunch = skd.load_diabetes()
        return _Raw(bunch.data.astype(np.float32), bunch.target.astype(np.float32), None, None, image=False)
    if cfg.name is DatasetName.SYNTHETIC_LINEAR:
        gen = np.random.default_rng(np.random.SeedSequence([seed, 0x11AE]))
        x = gen.standard_normal((cfg.synthetic_samples, cfg.synthetic_features))
        w, b = gen.standard_normal(cfg.synthetic_features), float(gen.standard_normal())
        y = x @ w + b + cfg.synthetic_noise * gen.standard_normal(cfg.synthetic_samples)
        return _Raw(x.astype(np.float32), y.astype(np.float32), None, None, image=False)
    rs = np.random.RandomState(np.random.MT19937(np.random.SeedSequence([seed, 0x5EED])))
    x, y = skd.make_classification(
        n_samples=cfg.synthetic_samples, n_features=cfg.synthetic_features,
        n_informative=cfg.synthetic_features, n_redundant=0, n_repeated=0,
        n_classes=cfg.synthetic_classes, n_clusters_per_class=1, class_sep=2.0,
        flip_y=0.0, random_state=rs)
    return _Raw(x.astype(np.float32), y, None, None, image=False)


def _task_of(raw: _Raw, task: Task | str, source: str) -> Task:
    """The task the labels support: ``task`` checked, or inferred (float targets: regression)."""
    try:
        task = Task(task)
    except ValueError:
        raise ConfigError(f"task: unknown {task!r}; allowed: {', '.join(t.value for t in Task)}") from None
    ys = [raw.y] if raw.y_test is None else [raw.y, raw.y_test]
    floats = any(y.dtype.kind == "f" for y in ys)
    if task is Task.AUTO:
        return Task.REGRESSION if floats else Task.CLASSIFICATION
    if task is Task.CLASSIFICATION and floats and not all(np.all(y == np.round(y)) for y in ys):
        raise ConfigError(f"task = 'classification', but dataset {source!r} has non-integer targets (e.g."
                          f" {next(float(v) for y in ys for v in y.ravel() if v != round(float(v)))}); set task ="
                          " 'regression' or leave it unset")
    return task


def load_dataset(cfg: DataConfig, seed: int, task: Task | str = Task.AUTO) -> Dataset:
    """Load ``cfg.name``; for classification remap labels to ``0..K-1`` and split (seeded,
    stratified), for regression split at random, unless the source has its own test set; then
    standardize the inputs with statistics of the training part only. ``task``: see :class:`Task`
    (``auto``: from the labels)."""
    if not isinstance(cfg, DataConfig):
        raise ConfigError(f"cfg must be a DataConfig, got {type(cfg).__name__}")
    seed = _check_int("seed", seed, 0)
    if cfg.name is DatasetName.NPZ:
        raw = _load_npz(str(cfg.path))
    elif cfg.name is DatasetName.MNIST_IDX:
        raw = _load_mnist_idx(str(cfg.path))
    else:
        raw = _load_builtin(cfg, seed)
    kind = _task_of(raw, task, cfg.name.value)
    if kind is Task.REGRESSION:
        return _regression(cfg, raw, seed)

    y_all = raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])
    classes, y_all = np.unique(y_all, return_inverse=True)
    if classes.size < 2:
        raise ConfigError(f"dataset {cfg.name.value!r} has {classes.size} class(es); need >= 2")
    y_all = y_all.astype(np.int64).reshape(-1)
    if raw.x_test is None:
        train_idx, test_idx = stratified_split(y_all, cfg.test_fraction, seed)
        x_train, y_train = raw.x[train_idx], y_all[train_idx]
        x_test, y_test = raw.x[test_idx], y_all[test_idx]
    else:
        n = raw.y.shape[0]
        x_train, y_train, x_test, y_test = raw.x, y_all[:n], raw.x_test, y_all[n:]

    standardizer = None
    if cfg.standardize:
        standardizer = fit_standardizer(x_train, per_feature=not raw.image)
        x_train, x_test = standardizer.apply(x_train), standardizer.apply(x_test)
    return Dataset(
        name=cfg.name.value,
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=y_train,
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=y_test,
        num_classes=int(classes.size),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        standardizer=standardizer,
    )


def _regression(cfg: DataConfig, raw: _Raw, seed: int) -> Dataset:
    y_all = (raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])).astype(np.float32).reshape(-1)
    if raw.x_test is None:
        train_idx, test_idx = random_split(y_all.size, cfg.test_fraction, seed)
        x_train, y_train, x_test, y_test = raw.x[train_idx], y_all[train_idx], raw.x[test_idx], y_all[test_idx]
    else:
        n = raw.y.shape[0]
        x_train, y_train, x_test, y_test = raw.x, y_all[:n], raw.x_test, y_all[n:]
    standardizer = None
    if cfg.standardize:
        standardizer = fit_standardizer(x_train, per_feature=not raw.image)
        x_train, x_test = standardizer.apply(x_train), standardizer.apply(x_test)
    return Dataset(name=cfg.name.value, x_train=np.ascontiguousarray(x_train, dtype=np.float32), y_train=y_train,
                   x_test=np.ascontiguousarray(x_test, dtype=np.float32), y_test=y_test, num_classes=1,
                   input_shape=tuple(int(d) for d in x_train.shape[1:]), standardizer=standardizer,
                   task=Task.REGRESSION)
