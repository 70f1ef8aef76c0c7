"""``secagg`` options and the public graph: the random k-regular masking graph and its defaults.

Also the names of the stages a client may go silent before (``RoundSpec.dropouts`` in the
in-process round; :data:`secfl.protocols.secagg.stages.SITE_STAGES` are the same stages as
exchanges of a :class:`~secfl.protocols.parties.Transport`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from secfl.crypto.encoding import check_quantization_options
from secfl.crypto.prg import Prg
from secfl.crypto.sharing import SHAMIR_PRIME
from secfl.errors import ConfigError, InsecureParametersError

__all__ = ["STAGES", "SITE_STAGES", "ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "UNMASK", "SecAggOptions",
           "default_neighbours", "default_threshold", "harary_graph", "MAX_CLIENT_ID", "check_client_ids"]

#: stage names accepted in ``RoundSpec.dropouts``: clients listed go silent before that stage
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")

#: the same stages as exchanges across sites (names of :meth:`Transport.exchange` stages), in order
ADVERTISE_KEYS = "secagg.advertise_keys"
SHARE_KEYS = "secagg.share_keys"
MASKED_INPUT = "secagg.masked_input"
UNMASK = "secagg.unmask"
SITE_STAGES = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK)

#: the largest client id: Shamir points are id + 1, which must stay below the field prime
MAX_CLIENT_ID = SHAMIR_PRIME - 2


def default_neighbours(n: int) -> int:
    """Smallest even ``k ≥ 2·ceil(log2 n)``, capped at ``n − 1`` (the complete graph)."""
    if n < 2:
        return 0
    k = 2 * math.ceil(math.log2(n))
    k += k % 2
    return min(k, n - 1)


def default_threshold(k: int) -> int:
    """A strict majority of the neighbours: ``floor(k/2) + 1``."""
    return k // 2 + 1


def harary_graph(nodes: Iterable[int], k: int, prg: Prg | None = None) -> dict[int, frozenset[int]]:
    """A random k-regular graph (Bell et al.): the Harary graph ``H(k, m)`` on a random ring order.

    Nodes sit on a ring in an order drawn from ``prg`` (CSPRNG); each is joined to the ``k/2``
    nearest on each side, plus the opposite node when ``k`` is odd (``m`` must then be even).
    """
    ids = sorted(int(v) for v in nodes)
    m = len(ids)
    if not 0 <= k <= m - 1:
        raise ConfigError(f"a {k}-regular graph needs more than {k} nodes, got {m}")
    if (k * m) % 2:
        raise ConfigError(f"no {k}-regular graph on {m} nodes (k·m must be even)")
    prg = Prg() if prg is None else prg
    order = np.argsort(prg.uint64(m), kind="stable")
    ring = [ids[i] for i in order.tolist()]
    adj: dict[int, set[int]] = {v: set() for v in ids}
    for pos, v in enumerate(ring):
        for off in range(1, k // 2 + 1):
            w = ring[(pos + off) % m]
            adj[v].add(w)
            adj[w].add(v)
        if k % 2:
            w = ring[(pos + m // 2) % m]
            adj[v].add(w)
            adj[w].add(v)
    return {v: frozenset(s) for v, s in adj.items()}


@dataclass(frozen=True)
class SecAggOptions:
    """Options of ``secagg``.

    ``neighbours`` k: degree of the random graph; ``None`` → :func:`default_neighbours` of the
    round's client count (20 for 1000 clients). ``threshold`` t: Shamir threshold, ``t > k/2``
    (security: see the module docstring) and ``t ≤ k``; ``None`` → ``floor(k/2) + 1``. A client
    needs ``t`` neighbours alive at the end, so up to ``k − t`` of anyone's neighbours may drop.
    ``clip_range``, ``bits``, ``modulus_bits``, ``max_weight``: the integer encoding (see
    :class:`~secfl.crypto.encoding.WeightedEncoder`; ``bits=None`` picks the widest that cannot
    wrap for this round's client count).
    ``processes``: where the *simulation* runs its clients (:mod:`secfl.protocols.hosts`): 1 →
    in this process; ``p ≥ 2`` → spread over ``p`` worker processes that also precompute masks
    ahead of the uploads and run the server's mask removal; ``None`` → one per core (at most 8)
    from 100 clients up, else 1. It changes timings, never results.
    """

    neighbours: int | None = None
    threshold: int | None = None
    clip_range: float = 8.0
    bits: int | None = None
    modulus_bits: int = 32
    max_weight: float = 4096.0
    processes: int | None = None

    def __post_init__(self) -> None:
        p = self.processes
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 64):
            raise ConfigError(f"secagg.processes must be None (automatic) or an integer in [1, 64], got {p!r}")
        for name in ("neighbours", "threshold"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"secagg.{name} must be None (automatic) or an integer >= 1, got {v!r}")
        check_quantization_options("secagg", self.clip_range, self.bits, self.modulus_bits, self.max_weight)

    def graph_parameters(self, n: int) -> tuple[int, int]:
        """``(k, t)`` for a round of ``n`` clients, validated (errors name the option)."""
        if n < 3:
            raise ConfigError(f"secagg needs at least 3 clients (got {n}): with 2, each learns the other's update")
        k = default_neighbours(n) if self.neighbours is None else self.neighbours
        if not 2 <= k <= n - 1:
            raise ConfigError(f"secagg.neighbours must be in [2, {n - 1}] for {n} clients, got {k}")
        if (k * n) % 2:
            raise ConfigError(f"secagg.neighbours = {k} with {n} clients: no k-regular graph (k·n is odd)")
        t = default_threshold(k) if self.threshold is None else self.threshold
        if t > k:
            raise ConfigError(f"secagg.threshold = {t} exceeds the {k} neighbours that hold shares")
        if 2 * t <= k:
            raise InsecureParametersError(
                f"secagg.threshold = {t} ≤ k/2 = {k / 2:g}: a server could collect t shares of both a client's "
                f"self-mask seed and its mask key from disjoint halves of its {k} neighbours; use t ≥ {k // 2 + 1}"
            )
        return k, t



def check_client_ids(clients: Iterable[int]) -> None:
    """Client ids must be Shamir points minus one: in ``[0, MAX_CLIENT_ID]``."""
    bad = sorted(c for c in clients if not 0 <= c <= MAX_CLIENT_ID)
    if bad:
        raise ConfigError(f"secagg client ids must be in [0, {MAX_CLIENT_ID}], got {bad[:5]}")
