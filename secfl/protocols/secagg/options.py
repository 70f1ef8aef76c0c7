"""``secagg`` options and the public graph: the random k-regular masking graph and its defaults.

Also the names of the stages a client may go silent before (``RoundSpec.dropouts`` in the
in-process round; :data:`secfl.protocols.secagg.stages.SITE_STAGES` are the same stages as
exchanges of a :class:`~secfl.protocols.parties.Transport`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from secfl.crypto.encoding import check_quantization_options
from secfl.crypto.prg import Prg
from secfl.crypto.sharing import SHAMIR_PRIME
from secfl.errors import ConfigError, InsecureParametersError

__all__ = ["STAGES", "SITE_STAGES", "ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "CONSISTENCY", "UNMASK",
           "SecAggOptions",
           "default_neighbours", "default_threshold", "harary_graph", "MAX_CLIENT_ID", "check_client_ids",
           "derive_graph", "graph_risks"]

#: stage names accepted in ``RoundSpec.dropouts``: clients listed go silent before that stage
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")

#: the same stages as exchanges across sites (names of :meth:`Transport.exchange` stages), in order
ADVERTISE_KEYS = "secagg.advertise_keys"
SHARE_KEYS = "secagg.share_keys"
MASKED_INPUT = "secagg.masked_input"
UNMASK = "secagg.unmask"
#: the optional consistency check (``consistency_check=True``), between masked_input and unmask
CONSISTENCY = "secagg.consistency"
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


def _hyper_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[X ≥ at_least] for X ~ Hypergeometric(population, marked, draws), exactly (big integers)."""
    top = min(draws, marked)
    if at_least > top:
        return 0.0
    num = sum(math.comb(marked, x) * math.comb(population - marked, draws - x) for x in range(at_least, top + 1))
    return num / math.comb(population, draws)


def _binom_tail(k: int, p: float, more_than: int) -> float:
    """P[X > more_than] for X ~ Binomial(k, p)."""
    return sum(math.comb(k, x) * p**x * (1 - p) ** (k - x) for x in range(more_than + 1, k + 1))


def _log2(p: float) -> float:
    return math.log2(p) if p > 0 else float("-inf")


@functools.lru_cache(maxsize=256)
def graph_risks(n: int, k: int, t: int, corrupt: float, dropout: float) -> dict[str, float]:
    """log2 of the failure probabilities of a round of ``n`` clients on a k-regular ring graph
    (:func:`harary_graph`) with threshold t, when a fraction ``corrupt`` of the clients colludes
    with the server and a fraction ``dropout`` drops (union bounds, following Bell et al. 2020):

    - ``exposure``: some honest client has at least t corrupt neighbours (they and the server
      reconstruct its secrets): (n − γn)·P[Hyp(n−1, ⌈γn⌉, k) ≥ t]; −inf when γn < t on the
      complete graph;
    - ``disconnection``: the honest survivors' graph splits (the server then learns the partial
      sums of the parts): two disjoint runs of ⌊k/2⌋ consecutive bad nodes on the random ring,
      (n·(γ+δ)^⌊k/2⌋)²/2; 0 on the complete graph;
    - ``abort``: some survivor keeps fewer than t live neighbours (the round fails):
      n·P[Bin(k, δ) > k − t].
    """
    bad = math.ceil(corrupt * n)
    exposure = (n - bad) * _hyper_tail(n - 1, bad, k, t)
    if k >= n - 1:
        disconnection = 0.0
    else:
        run = n * (corrupt + dropout) ** (k // 2)
        disconnection = min(1.0, run * run / 2)
    abort = min(1.0, n * _binom_tail(k, dropout, k - t))
    return {"exposure": _log2(min(1.0, exposure)), "disconnection": _log2(disconnection), "abort": _log2(abort)}


@functools.lru_cache(maxsize=256)
def derive_graph(n: int, corrupt: float, dropout: float, security_bits: int, correctness_bits: int
                 ) -> tuple[int, int]:
    """The smallest degree k (then the smallest threshold t > k/2) whose exposure and
    disconnection probabilities are at most 2^−security_bits and whose abort probability is at
    most 2^−correctness_bits; the complete graph (k = n − 1, smallest secure t) when none is.
    Raises :class:`InsecureParametersError` when even the complete graph cannot keep the
    corrupt clients below the threshold."""
    for k in range(2, n):
        if (k * n) % 2:
            continue
        for t in range(k // 2 + 1, k + 1):
            risk = graph_risks(n, k, t, corrupt, dropout)
            if risk["exposure"] > -security_bits:
                continue  # a larger t lowers the exposure
            if risk["disconnection"] > -security_bits or risk["abort"] > -correctness_bits:
                break  # a larger t only raises the abort probability: try a larger k
            return k, t
    k = n - 1 if (n * (n - 1)) % 2 == 0 else n - 2
    for t in range(k // 2 + 1, k + 1):
        if graph_risks(n, k, t, corrupt, dropout)["exposure"] <= -security_bits:
            return k, t
    raise InsecureParametersError(f"secagg: with {n} clients of which a fraction {corrupt} is corrupt, no threshold"
                                  f" keeps every honest client's secrets safe (2^-{security_bits}); lower"
                                  f" corrupt_fraction or add clients")


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
    ``consistency_check``: Bonawitz et al.'s consistency round for a malicious server: before
    unmasking, every client signs the set U3 of clients whose masked input counts, and a client
    releases shares only for a U3 that at least ``t`` of its neighbours signed too, and only shares
    consistent with it (self-mask shares for U3, mask-key shares outside it). Needs identity keys
    and the roster (across sites); one more exchange per round (cost: ``benchmarks/bench_envelope.py``).
    ``processes``: where the *simulation* runs its clients (:mod:`secfl.protocols.hosts`): 1 →
    in this process; ``p ≥ 2`` → spread over ``p`` worker processes that also precompute masks
    ahead of the uploads and run the server's mask removal; ``None`` → one per core (at most 8)
    from 100 clients up, else 1. It changes timings, never results.
    """

    neighbours: int | None = None
    threshold: int | None = None
    corrupt_fraction: float = 0.2
    dropout_fraction: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 20
    clip_range: float = 8.0
    bits: int | None = None
    modulus_bits: int = 32
    max_weight: float = 4096.0
    processes: int | None = None
    consistency_check: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.consistency_check, bool):
            raise ConfigError(f"secagg.consistency_check must be true or false, got {self.consistency_check!r}")
        p = self.processes
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 64):
            raise ConfigError(f"secagg.processes must be None (automatic) or an integer in [1, 64], got {p!r}")
        for name in ("neighbours", "threshold"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"secagg.{name} must be None (automatic) or an integer >= 1, got {v!r}")
        check_quantization_options("secagg", self.clip_range, self.bits, self.modulus_bits, self.max_weight)
        for name in ("corrupt_fraction", "dropout_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 0.5:
                raise ConfigError(f"secagg.{name} must be a fraction in [0, 0.5), got {v!r}")
        if self.corrupt_fraction + self.dropout_fraction >= 1:
            raise ConfigError("secagg.corrupt_fraction + dropout_fraction must be below 1")
        for name, lo in (("security_bits", 20), ("correctness_bits", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 128:
                raise ConfigError(f"secagg.{name} must be an integer in [{lo}, 128], got {v!r}")

    def graph_parameters(self, n: int) -> tuple[int, int]:
        """``(k, t)`` for a round of ``n`` clients, validated (errors name the option): the given
        ``neighbours`` / ``threshold``, else derived from the threat model (:func:`derive_graph`)."""
        if n < 3:
            raise ConfigError(f"secagg needs at least 3 clients (got {n}): with 2, each learns the other's update")
        derived = None
        if self.neighbours is None or self.threshold is None:
            derived = derive_graph(n, float(self.corrupt_fraction), float(self.dropout_fraction),
                                   self.security_bits, self.correctness_bits)
        k = derived[0] if self.neighbours is None else self.neighbours  # type: ignore[index]
        if not 2 <= k <= n - 1:
            raise ConfigError(f"secagg.neighbours must be in [2, {n - 1}] for {n} clients, got {k}")
        if (k * n) % 2:
            raise ConfigError(f"secagg.neighbours = {k} with {n} clients: no k-regular graph (k·n is odd)")
        if self.threshold is not None:
            t = self.threshold
        elif derived is not None and self.neighbours is None:
            t = derived[1]
        else:  # k given: the smallest secure majority for it
            t = next((t for t in range(k // 2 + 1, k + 1)
                      if graph_risks(n, k, t, float(self.corrupt_fraction), float(self.dropout_fraction))["exposure"]
                      <= -self.security_bits), k)
        if t > k:
            raise ConfigError(f"secagg.threshold = {t} exceeds the {k} neighbours that hold shares")
        if 2 * t <= k:
            raise InsecureParametersError(
                f"secagg.threshold = {t} ≤ k/2 = {k / 2:g}: a server could collect t shares of both a client's "
                f"self-mask seed and its mask key from disjoint halves of its {k} neighbours; use t ≥ {k // 2 + 1}"
            )
        return k, t

    def graph_report(self, n: int) -> dict[str, float | int | None]:
        """What a round of ``n`` clients uses and risks: k, t, the threat model, and the log2
        failure probabilities of :func:`graph_risks`."""
        k, t = self.graph_parameters(n)
        return {"neighbours": k, "threshold": t, "corrupt_fraction": float(self.corrupt_fraction),
                "dropout_fraction": float(self.dropout_fraction),
                **{f"log2_p_{name}": (v if math.isfinite(v) else None) for name, v in  # None: impossible
                   graph_risks(n, k, t, float(self.corrupt_fraction), float(self.dropout_fraction)).items()}}



def check_client_ids(clients: Iterable[int]) -> None:
    """Client ids must be Shamir points minus one: in ``[0, MAX_CLIENT_ID]``."""
    bad = sorted(c for c in clients if not 0 <= c <= MAX_CLIENT_ID)
    if bad:
        raise ConfigError(f"secagg client ids must be in [0, {MAX_CLIENT_ID}], got {bad[:5]}")
