"""Split a training set among simulated clients, with realistic non-IID skew.

Three schemes, all returning one sorted int64 index array per client (disjoint, covering every
example, each at least ``min_size`` long) and deterministic for a seed:

* ``iid``: a uniform random split with quantity skew: client sizes proportional to
  log-normal(0, ``size_skew``) weights (``size_skew=0``: equal sizes).
* ``dirichlet``: label skew (Hsu et al., 2019): each class is divided among clients with
  proportions drawn from Dirichlet(``alpha``); small ``alpha`` means few classes per client.
* ``shards``: pathological label skew (McMahan et al., 2017): examples sorted by label are cut
  into ``num_clients * shards_per_client`` contiguous shards of unequal sizes (log-normal
  weights with ``size_skew``), and each client receives ``shards_per_client`` of them.

``sizes = [n_1, ..., n_K]`` (with ``iid``) gives client k exactly ``n_k`` examples, drawn at
random; examples beyond ``sum(sizes)`` are left out (they go to no client). Regression targets
(float ``y``) take ``iid`` only: label skew needs classes.

Clients that end up below ``min_size`` are topped up with random examples taken from the
largest clients, so the guarantee holds without rejection sampling. Randomness comes from
numpy's generator seeded by ``seed``: the split is not security-relevant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from secfl.errors import ConfigError

__all__ = ["PartitionKind", "PartitionConfig", "partition"]


class PartitionKind(str, Enum):
    """How examples are spread over clients."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    SHARDS = "shards"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: object, *, positive: bool) -> float:
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a finite float {bound}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ConfigError(f"{name} must be a finite float {bound}, got {value!r}")
    return v


@dataclass(frozen=True)
class PartitionConfig:
    """Partition scheme and its parameters (``alpha``: dirichlet; ``shards_per_client``:
    shards; ``size_skew``: iid and shard sizes; ``min_size``: all; ``sizes``: exact client
    sizes, iid only, replacing ``size_skew`` and ``min_size``)."""

    kind: PartitionKind = PartitionKind.IID
    alpha: float = 0.5
    shards_per_client: int = 2
    size_skew: float = 0.5
    min_size: int = 2
    sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PartitionKind):
            try:
                object.__setattr__(self, "kind", PartitionKind(self.kind))
            except ValueError:
                allowed = ", ".join(repr(k.value) for k in PartitionKind)
                raise ConfigError(f"kind must be one of {allowed}, got {self.kind!r}") from None
        object.__setattr__(self, "alpha", _check_float("alpha", self.alpha, positive=True))
        object.__setattr__(self, "size_skew",
                           _check_float("size_skew", self.size_skew, positive=False))
        object.__setattr__(self, "shards_per_client",
                           _check_int("shards_per_client", self.shards_per_client, 1))
        object.__setattr__(self, "min_size", _check_int("min_size", self.min_size, 1))
        if self.sizes is not None:
            if isinstance(self.sizes, (str, bytes)) or not hasattr(self.sizes, "__iter__"):
                raise ConfigError(f"partition.sizes must be a list of client sizes, got {self.sizes!r}")
            sizes = tuple(_check_int("partition.sizes[i]", v, 1) for v in self.sizes)
            if not sizes:
                raise ConfigError("partition.sizes must name at least one client size")
            if self.kind is not PartitionKind.IID:
                raise ConfigError(f"partition.sizes works with kind = 'iid' only, not {self.kind.value!r}")
            object.__setattr__(self, "sizes", sizes)


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer sizes >= ``minimum`` summing to ``total``, the surplus split in proportion to
    ``weights`` by largest remainder."""
    k = weights.size
    spare = total - k * minimum
    share = weights / weights.sum() * spare
    sizes = np.floor(share).astype(np.int64)
    left = spare - int(sizes.sum())
    if left:
        sizes[np.argsort(-(share - sizes), kind="stable")[:left]] += 1
    return sizes + minimum


def _iid(n: int, k: int, cfg: PartitionConfig, rng: np.random.Generator) -> np.ndarray:
    weights = rng.lognormal(0.0, cfg.size_skew, size=k)
    sizes = _allocate(n, weights, cfg.min_size)
    owner = np.empty(n, dtype=np.int64)
    owner[rng.permutation(n)] = np.repeat(np.arange(k), sizes)
    return owner


def _dirichlet(labels: np.ndarray, k: int, cfg: PartitionConfig,
               rng: np.random.Generator) -> np.ndarray:
    owner = np.empty(labels.size, dtype=np.int64)
    for c in range(int(labels.max()) + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        counts = rng.multinomial(members.size, rng.dirichlet(np.full(k, cfg.alpha)))
        owner[members] = np.repeat(np.arange(k), counts)
    return owner


def _shards(labels: np.ndarray, k: int, cfg: PartitionConfig,
            rng: np.random.Generator) -> np.ndarray:
    n, num_shards = labels.size, k * cfg.shards_per_client
    if num_shards > n:
        raise ConfigError(f"num_clients * shards_per_client = {num_shards} exceeds the "
                          f"{n} training examples; lower shards_per_client or num_clients")
    perm = rng.permutation(n)
    by_label = perm[np.argsort(labels[perm], kind="stable")]  # random order within a class
    shard_sizes = _allocate(n, rng.lognormal(0.0, cfg.size_skew, size=num_shards), 1)
    shard_owner = np.empty(num_shards, dtype=np.int64)
    shard_owner[rng.permutation(num_shards)] = np.repeat(np.arange(k), cfg.shards_per_client)
    owner = np.empty(n, dtype=np.int64)
    owner[by_label] = np.repeat(shard_owner, shard_sizes)
    return owner


def _top_up(owner: np.ndarray, k: int, min_size: int, rng: np.random.Generator) -> None:
    """Move random examples from the largest clients to those below ``min_size`` (in place)."""
    sizes = np.bincount(owner, minlength=k)
    deficit = np.maximum(min_size - sizes, 0)
    need = int(deficit.sum())
    if need == 0:
        return
    taken = []
    for donor in np.argsort(-sizes, kind="stable"):  # surplus always suffices: k*min_size <= n
        give = min(int(sizes[donor]) - min_size, need)
        if give <= 0:
            break
        taken.append(rng.choice(np.flatnonzero(owner == donor), size=give, replace=False))
        need -= give
        if need == 0:
            break
    pool = rng.permutation(np.concatenate(taken))
    owner[pool] = np.repeat(np.arange(k), deficit)


def partition(y: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int) -> list[np.ndarray]:
    """Split training indices ``0..len(y)-1`` among ``num_clients`` clients.

    Returns one sorted int64 index array per client: disjoint, covering every index, each at
    least ``cfg.min_size`` long. Same ``(y, num_clients, cfg, seed)`` -> same result.
    """
    if not isinstance(cfg, PartitionConfig):
        raise ConfigError(f"cfg must be a PartitionConfig, got {type(cfg).__name__}")
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        raise ConfigError(f"y must be a 1-D array of labels or targets, got {y.dtype} {y.shape}")
    k = _check_int("num_clients", num_clients, 1)
    seed = _check_int("seed", seed, 0)
    n = y.size
    if cfg.sizes is not None:
        return _exact(n, k, cfg.sizes, seed)
    if y.dtype.kind == "f" and cfg.kind is not PartitionKind.IID:
        raise ConfigError(f"partition.kind = {cfg.kind.value!r} skews labels, which regression targets do not"
                          " have: use kind = 'iid' (with size_skew or sizes)")
    if k * cfg.min_size > n:
        raise ConfigError(f"num_clients * min_size = {k} * {cfg.min_size} = {k * cfg.min_size} "
                          f"exceeds the {n} training examples")
    rng = np.random.default_rng(seed)
    labels = np.unique(y, return_inverse=True)[1].reshape(-1)
    if cfg.kind is PartitionKind.IID:
        owner = _iid(n, k, cfg, rng)
    elif cfg.kind is PartitionKind.DIRICHLET:
        owner = _dirichlet(labels, k, cfg, rng)
    else:
        owner = _shards(labels, k, cfg, rng)
    _top_up(owner, k, cfg.min_size, rng)
    order = np.argsort(owner, kind="stable")  # stable: indices ascending within each client
    bounds = np.cumsum(np.bincount(owner, minlength=k))[:-1]
    return [part.astype(np.int64) for part in np.split(order, bounds)]


def _exact(n: int, k: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Client j gets exactly ``sizes[j]`` random examples; the rest go to nobody."""
    if len(sizes) != k:
        raise ConfigError(f"partition.sizes names {len(sizes)} clients, the experiment has clients = {k}")
    if sum(sizes) > n:
        raise ConfigError(f"partition.sizes asks for {sum(sizes)} examples, the training set has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum(sizes)[:-1]
    return [np.sort(part).astype(np.int64) for part in np.split(perm[: sum(sizes)], bounds)]
