"""Tests for secfl.fl.partition: invariants, skew, determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.errors import ConfigError
from secfl.fl.partition import PartitionConfig, PartitionKind, partition

KINDS = list(PartitionKind)


def _labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


def _check_invariants(parts: list[np.ndarray], n: int, k: int, min_size: int) -> None:
    assert len(parts) == k
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1 and p.size >= min_size
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    everything = np.concatenate(parts)
    assert everything.size == n  # disjoint ...
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # ... and covering


def _label_skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label histogram and the global."""
    classes = int(y.max()) + 1
    glob = np.bincount(y, minlength=classes) / y.size
    return float(np.mean([0.5 * np.abs(np.bincount(y[p], minlength=classes) / p.size - glob).sum()
                          for p in parts]))


@pytest.mark.parametrize("kind", KINDS)
def test_invariants_unequal_sizes_and_determinism(kind: PartitionKind) -> None:
    y = _labels(1000, 10)
    cfg = PartitionConfig(kind=kind, min_size=5)
    parts = partition(y, 20, cfg, seed=1)
    _check_invariants(parts, 1000, 20, 5)
    assert len({p.size for p in parts}) > 1
    again = partition(y, 20, cfg, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(y, 20, cfg, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_without_size_skew_is_balanced() -> None:
    y = _labels(1003, 4)
    parts = partition(y, 10, PartitionConfig(kind=PartitionKind.IID, size_skew=0.0), seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003
    assert _label_skew(y, parts) < 0.1


def test_dirichlet_small_alpha_gives_more_label_skew() -> None:
    y = _labels(3000, 10)
    skew = {a: np.mean([_label_skew(y, partition(y, 20, PartitionConfig(kind=PartitionKind.DIRICHLET,
                                                                        alpha=a), seed=s))
                        for s in range(3)])
            for a in (0.05, 1.0, 100.0)}
    assert skew[0.05] > skew[1.0] + 0.15
    assert skew[1.0] > skew[100.0] + 0.1
    assert skew[100.0] < 0.1


def test_shards_give_few_labels_per_client() -> None:
    y = _labels(2000, 10)
    parts = partition(y, 20, PartitionConfig(kind=PartitionKind.SHARDS, shards_per_client=2), seed=3)
    labels_per_client = [np.unique(y[p]).size for p in parts]
    assert np.mean(labels_per_client) <= 3.0
    assert _label_skew(y, parts) > 0.6


def test_min_size_enforced_under_extreme_skew() -> None:
    y = _labels(500, 5)
    cfg = PartitionConfig(kind=PartitionKind.DIRICHLET, alpha=1e-3, min_size=20)
    _check_invariants(partition(y, 25, cfg, seed=0), 500, 25, 20)  # exactly n = k * min_size


def test_arbitrary_integer_labels_and_single_client() -> None:
    y = np.array([-5, 100, 100, 7, -5, 7, 7, 100])
    parts = partition(y, 1, PartitionConfig(kind=PartitionKind.DIRICHLET), seed=0)
    np.testing.assert_array_equal(parts[0], np.arange(8))


def test_validation_errors() -> None:
    y = _labels(100, 3)
    assert PartitionConfig(kind="shards").kind is PartitionKind.SHARDS  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="kind must be one of 'iid', 'dirichlet', 'shards'"):
        PartitionConfig(kind="random")  # type: ignore[arg-type]
    for field, bad in [("alpha", 0.0), ("alpha", float("nan")), ("alpha", True),
                       ("size_skew", -1.0), ("shards_per_client", 0), ("min_size", 0),
                       ("min_size", 2.5)]:
        with pytest.raises(ConfigError, match=field):
            PartitionConfig(**{field: bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_clients"):
        partition(y, 0, PartitionConfig(), seed=0)
    with pytest.raises(ConfigError, match="num_clients \\* min_size"):
        partition(y, 51, PartitionConfig(min_size=2), seed=0)
    with pytest.raises(ConfigError, match="shards_per_client"):
        partition(y, 40, PartitionConfig(kind=PartitionKind.SHARDS, shards_per_client=3, min_size=1), seed=0)
    with pytest.raises(ConfigError, match="skews labels"):  # regression targets: iid only
        partition(y.astype(float), 2, PartitionConfig(kind=PartitionKind.DIRICHLET), seed=0)
    with pytest.raises(ConfigError, match="seed"):
        partition(y, 2, PartitionConfig(), seed=-1)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    num_clients=st.integers(1, 20),
    extra=st.integers(0, 200),
    classes=st.integers(1, 6),
    min_size=st.integers(1, 4),
    alpha=st.floats(1e-3, 100.0),
    shards=st.integers(1, 4),
    skew=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**32),
)
def test_partition_invariants_property(kind: PartitionKind, num_clients: int, extra: int,
                                       classes: int, min_size: int, alpha: float, shards: int,
                                       skew: float, seed: int) -> None:
    n = num_clients * min_size + extra
    y = _labels(n, classes, seed=seed % 1000)
    cfg = PartitionConfig(kind=kind, alpha=alpha, shards_per_client=shards, size_skew=skew,
                          min_size=min_size)
    if kind is PartitionKind.SHARDS and num_clients * shards > n:
        with pytest.raises(ConfigError):
            partition(y, num_clients, cfg, seed)
        return
    _check_invariants(partition(y, num_clients, cfg, seed), n, num_clients, min_size)
