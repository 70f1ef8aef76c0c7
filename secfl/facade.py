"""``secfl.secure_mean``: one complete protocol round, in-process, over real serialized messages."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfl.crypto.prg import derive_seed
from secfl.errors import ConfigError, ProtocolAbort
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.base import upload_one, weight_precision
from secfl.protocols.network import Network

__all__ = ["SecureMeanResult", "secure_mean"]

log = logging.getLogger("secfl")


@dataclass(frozen=True)
class SecureMeanResult:
    """What one round revealed and what it cost.

    ``mean``: the weighted mean (float64) over ``included`` clients; ``bytes_up`` / ``bytes_down``:
    bytes sent / received by all non-server parties, from the actual serialized messages;
    ``seconds``: phase → wall seconds (setup, protect, aggregate, reveal, total);
    ``dropped``: client index → reason; ``error_bound``: the protocol's bound on
    ``|mean − exact weighted mean|`` per coordinate (None: exact up to the wire's float rounding,
    ``plaintext``).
    """

    mean: np.ndarray
    bytes_up: int
    bytes_down: int
    seconds: dict[str, float]
    included: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    total_weight: float = 0.0
    network: Network | None = None
    error_bound: float | None = None


def secure_mean(
    updates: Sequence[np.ndarray] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    protocol: str = "plaintext",
    *,
    seed: int | None = None,
    dropouts: Iterable[int] = (),
    stage_dropouts: Mapping[str, Iterable[int]] | None = None,
    record_views: bool = False,
    **options: Any,
) -> SecureMeanResult:
    """Weighted mean of ``updates`` computed by ``protocol`` over real messages.

    ``updates``: one 1-D float vector per client (a list or a 2-D array). ``weights``: one
    positive weight per client (default 1). ``seed``: makes the non-secret randomness
    (quantization dither) reproducible; keys, masks and shares are always fresh.
    ``dropouts``: clients that go silent after setup, before their protected update arrives.
    ``stage_dropouts``: protocol stage name → clients that go silent before that stage.
    Every other keyword is a protocol option (unknown names are refused with the allowed list).

    Precision: the encoding scales each update by ``weight / max_weight`` before it quantizes or
    encodes it, so a loose ``max_weight`` throws away ``log2(max_weight / max weight)`` bits.
    Unless you set it, ``max_weight`` is the largest of ``weights`` (1 for uniform weights): every
    bit of the quantization and CKKS scale goes to the values.
    """
    vectors = [np.asarray(u) for u in updates]
    if not vectors:
        raise ConfigError("updates: need at least one client update")
    dim = int(vectors[0].shape[0]) if vectors[0].ndim == 1 else -1
    if dim < 1:
        raise ConfigError(f"updates: each update must be a non-empty 1-D vector, got shape {vectors[0].shape}")
    n = len(vectors)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ConfigError(f"weights: expected {n} weights, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ConfigError("weights: every weight must be a finite number > 0")
    dropped_set = {int(d) for d in dropouts}
    if not dropped_set <= set(range(n)):
        raise ConfigError(f"dropouts: indices must be in [0, {n}), got {sorted(dropped_set)}")
    stage = {k: frozenset(int(c) for c in v) for k, v in (stage_dropouts or {}).items()}
    round_seed = derive_seed(int(seed).to_bytes(32, "little", signed=True), "secure_mean") if seed is not None else None

    options = dict(options)
    if "max_weight" not in options and _takes_max_weight(protocol):
        options["max_weight"] = float(w.max())  # the tightest public bound: these are the weights
    elif "max_weight" in options and _takes_max_weight(protocol):
        cost = weight_precision(options["max_weight"], float(w.max()))
        if cost["bits_given_up"] >= 1:
            log.warning("secure_mean: max_weight %g is above the largest weight %g: the encoding gives up %.1f bits"
                        " of precision (leave max_weight unset for the tight bound)", cost["max_weight"],
                        cost["largest_weight"], cost["bits_given_up"])
    proto = make_protocol(protocol, **options)
    net = Network(record_views=record_views)
    seconds = {"setup": 0.0, "protect": 0.0, "aggregate": 0.0, "reveal": 0.0}
    dropped: dict[int, str] = {c: "dropped out before upload" for c in dropped_set}
    t_start = time.perf_counter()
    try:
        rnd = proto.open_round(RoundSpec(0, tuple(range(n)), dim, seed=round_seed, dropouts=stage), net)
        t = time.perf_counter()
        rnd.setup()
        seconds["setup"] = time.perf_counter() - t
        for c in range(n):
            if c in dropped_set:
                continue
            failed = upload_one(rnd, c, vectors[c], float(w[c]), seconds)
            if failed is not None:
                dropped[c] = failed[1]
        t = time.perf_counter()
        try:
            revealed = rnd.reveal()
        except ProtocolAbort as exc:
            refused = {c: why for c, why in dropped.items() if c not in dropped_set}
            if refused and len(dropped) == n:  # say why, not only that nothing was accepted
                first = next(iter(sorted(refused.items())))
                hint = (" Every value must lie within the protocol's clip_range (an option of secure_mean)."
                        if all("outside the allowed range" in why for why in refused.values()) else "")
                raise ProtocolAbort(f"{exc}: every client's upload was refused (client {first[0]}: {first[1]}"
                                    f"{f'; and {len(refused) - 1} more' if len(refused) > 1 else ''}).{hint}"
                                    ) from None
            raise
        seconds["reveal"] = time.perf_counter() - t
    finally:
        proto.close()
    seconds["total"] = time.perf_counter() - t_start
    for c in revealed.dropped:
        dropped.setdefault(c, "dropped by the protocol")
    up, down = net.party_bytes()
    return SecureMeanResult(
        mean=np.asarray(revealed.mean, dtype=np.float64),
        bytes_up=up,
        bytes_down=down,
        seconds=seconds,
        included=revealed.included,
        dropped=dict(sorted(dropped.items())),
        total_weight=revealed.total_weight,
        network=net if record_views else None,
        error_bound=_bound(rnd),
    )


def _bound(rnd: Any) -> float | None:
    bound = getattr(rnd, "error_bound", None)
    return None if bound is None else float(bound)


def _takes_max_weight(protocol: str) -> bool:
    import dataclasses

    from secfl.protocols import get_protocol

    options = getattr(get_protocol(protocol), "Options", None)
    return options is not None and any(f.name == "max_weight" for f in dataclasses.fields(options))
