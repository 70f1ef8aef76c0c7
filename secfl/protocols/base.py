"""The one interface every aggregation protocol implements.

A :class:`Protocol` is configured once (a frozen ``Options`` dataclass) and opens one
:class:`ProtocolRound` per federated round. A round has four steps, driven by the runtime:

1. ``setup()`` — whatever must happen before clients protect their updates (key generation,
   key advertisement, ...). Messages go through the :class:`~secfl.protocols.network.Network`.
2. ``protect(client, update, weight)`` — **client side**: turn one update and its weight into
   the bytes the client uploads (:class:`Upload`: one message per recipient).
3. ``receive(client, upload)`` — **server side**: parse the bytes strictly, check them, and fold
   them into a running aggregate. It never holds anything that reveals one client's update
   (except in ``plaintext``). A typed :class:`~secfl.errors.SecFLError` here means the client
   is dropped from the round; nothing already accepted is lost.
4. ``reveal()`` — recover the weighted mean ``Σ w_k x_k / Σ w_k`` over the accepted clients, by
   whichever party the protocol names (:attr:`Protocol.reveals_to`).

The runtime times each step separately (setup / protect / aggregate / reveal) and the network
counts bytes, so every protocol is measured the same way.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from secfl.errors import ConfigError, DuplicateSenderError, InvalidUpdateError, MalformedMessageError
from secfl.protocols.network import Network

__all__ = [
    "RoundSpec",
    "Upload",
    "Revealed",
    "Protocol",
    "ProtocolRound",
    "check_update",
    "check_weight",
    "weight_precision",
    "build_options",
    "upload_one",
]


@dataclass(frozen=True)
class RoundSpec:
    """What a round is about: its number, its participants and the update length.

    ``dropouts`` maps a protocol-specific stage name to the clients that go silent before that
    stage (e.g. ``{"share_keys": {3}}`` for SecAgg); the common stage — a client that never
    uploads — is expressed by the runtime simply not calling ``protect`` for it.
    ``seed`` makes the non-secret randomness (stochastic rounding dither) reproducible; keys,
    masks and shares always come from fresh OS randomness.
    """

    round: int
    clients: tuple[int, ...]
    dim: int
    seed: bytes | None = None
    dropouts: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.round < 0 or self.round >= 1 << 32:
            raise ConfigError(f"round must be in [0, 2**32), got {self.round}")
        if self.dim < 1:
            raise ConfigError(f"dim must be >= 1, got {self.dim}")
        if len(set(self.clients)) != len(self.clients):
            raise ConfigError("clients must be distinct")
        if not self.clients:
            raise ConfigError("a round needs at least one client")


@dataclass(frozen=True)
class Upload:
    """A client's upload: one serialized message per recipient party."""

    parts: tuple[tuple[int, bytes], ...]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for _, b in self.parts)


@dataclass(frozen=True)
class Revealed:
    """The outcome of a round: the weighted mean and who is in it."""

    mean: np.ndarray  # float64
    total_weight: float
    included: tuple[int, ...]
    dropped: tuple[int, ...]


class ProtocolRound(ABC):
    """One round of a protocol. See the module docstring for the four steps."""

    spec: RoundSpec
    net: Network

    def __init__(self, spec: RoundSpec, net: Network) -> None:
        self.spec = spec
        self.net = net

    def deliver(self, client: int, upload: Upload) -> list[tuple[int, bytes]]:
        """Move every part of ``upload`` through the network; returns (recipient, bytes) pairs."""
        return [(to, self.net.send(client, to, data)) for to, data in upload.parts]

    def single_message(self, client: int, upload: Upload, accepted: set[int], server: int) -> bytes:
        """Server-side intake of a one-message upload: the client is a participant, has not
        contributed yet, and sent exactly one message to ``server``; returns its bytes."""
        if client not in self.spec.clients:
            raise MalformedMessageError(f"client {client} is not a participant of round {self.spec.round}")
        if client in accepted:
            raise DuplicateSenderError(f"client {client} already contributed to round {self.spec.round}")
        parts = self.deliver(client, upload)
        if len(parts) != 1 or parts[0][0] != server:
            raise MalformedMessageError(f"client {client}: expected exactly one message to the server")
        return parts[0][1]

    def party_state(self, party: int) -> dict[str, Any]:
        """What ``party`` holds of its own in this round — its keys, key shares or protocol-side
        object — for attack experiments (:mod:`secfl.threats`) that corrupt it. Nothing here is
        ever sent; a party without secrets has none (the default)."""
        return {}

    def setup(self) -> None:  # noqa: B027 - optional step
        """Pre-upload message exchange; the default protocol needs none."""

    @abstractmethod
    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        """Client side: the bytes that ``client`` uploads for this update and weight."""

    @abstractmethod
    def receive(self, client: int, upload: Upload) -> None:
        """Server side: parse, check and accumulate one client's upload (atomically)."""

    @abstractmethod
    def reveal(self) -> Revealed:
        """Recover the weighted mean over the accepted clients."""


class Protocol(ABC):
    """A configured protocol; opens rounds. Subclasses set the class attributes below."""

    name: ClassVar[str]
    summary: ClassVar[str]
    reveals_to: ClassVar[str]
    Options: ClassVar[type[Any]]

    def __init__(self, options: Any = None) -> None:
        self.options = self.Options() if options is None else options
        if not isinstance(self.options, self.Options):
            raise ConfigError(
                f"{self.name}: options must be {self.Options.__name__}, got {type(self.options).__name__}"
            )

    @abstractmethod
    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        """A new round over ``spec.clients``; messages go through ``net``."""

    def coordinator(self) -> Any:
        """The server's stage sequence across sites (a :class:`secfl.protocols.parties.Coordinator`)."""
        raise ConfigError(f"protocol {self.name!r} cannot run across sites yet (no stage sequence)")

    def party(self, party_id: int, *, identity: Any = None, roster: Any = None) -> Any:
        """A fresh party object for a site (a :class:`secfl.protocols.parties.Party`).
        ``identity`` (the site's :class:`~secfl.crypto.identity.IdentityKey`) and ``roster``
        (the federation's :class:`~secfl.crypto.identity.Roster`): for protocols whose parties
        sign their key advertisements or check others'."""
        raise ConfigError(f"protocol {self.name!r} cannot run across sites yet (no party classes)")

    def close(self) -> None:  # noqa: B027 - optional
        """Release resources (process pools)."""

    def clients_left(self, clients: frozenset[int]) -> None:  # noqa: B027 - optional
        """``clients`` left the federation for good (dynamic membership): a protocol whose clients
        hold a long-lived secret regenerates its keys here; others keep nothing per client."""


def upload_one(rnd: ProtocolRound, client: int, update: np.ndarray, weight: float,
               seconds: dict[str, float]) -> tuple[str, str] | None:
    """One client's turn: ``protect`` (client side) then ``receive`` (server side).

    Adds wall seconds to ``seconds["protect"]`` and ``seconds["aggregate"]``. Returns ``None`` when
    the upload was accepted, else ``(side, reason)`` with side ``"client"`` (the client refused to
    protect, e.g. NaN) or ``"server"`` (the server rejected the bytes): the client is dropped.
    """
    from secfl.errors import SecFLError

    t = time.perf_counter()
    try:
        upload = rnd.protect(client, update, weight)
    except SecFLError as exc:
        return "client", f"{type(exc).__name__}: {exc}"
    finally:
        seconds["protect"] += time.perf_counter() - t
    t = time.perf_counter()
    try:
        rnd.receive(client, upload)
    except SecFLError as exc:
        return "server", f"{type(exc).__name__}: {exc}"
    finally:
        seconds["aggregate"] += time.perf_counter() - t
    return None


def build_options(cls: type[Any], name: str, values: Mapping[str, Any]) -> Any:
    """Instantiate an options dataclass, naming unknown keys and the allowed ones."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"protocol {name!r} has no option(s) {unknown}; allowed: {sorted(allowed) or 'none'}")
    return cls(**values)


def check_update(update: np.ndarray, dim: int, *, max_abs: float | None = None, who: str = "update") -> np.ndarray:
    """Validate an update vector: 1-D, length ``dim``, finite, optionally within ±max_abs."""
    arr = np.asarray(update)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidUpdateError(f"{who}: expected a vector of length {dim}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidUpdateError(f"{who}: expected numeric values, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidUpdateError(f"{who}: {bad} non-finite value(s) (NaN/Inf)")
    if max_abs is not None:
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if peak > max_abs:
            raise InvalidUpdateError(f"{who}: value {peak:.6g} outside the allowed range ±{max_abs:.6g}")
    return arr


def weight_precision(max_weight: float, largest_weight: float) -> dict[str, float]:
    """What a public weight bound costs. Every update is scaled by ``weight / max_weight`` before it
    is quantized or encoded, so a bound above the largest weight actually used gives up
    ``log2(max_weight / largest_weight)`` bits of precision (0 for the tight bound)."""
    lost = max(0.0, math.log2(float(max_weight) / float(largest_weight)))
    return {"max_weight": float(max_weight), "largest_weight": float(largest_weight), "bits_given_up": round(lost, 2)}


def check_weight(weight: float, *, who: str = "weight", max_weight: float | None = None) -> float:
    """Validate a client weight: finite and > 0 (and ≤ max_weight when given)."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise InvalidUpdateError(f"{who}: not a number: {weight!r}") from None
    if not np.isfinite(w) or w <= 0:
        raise InvalidUpdateError(f"{who}: must be finite and > 0, got {w}")
    if max_weight is not None and w > max_weight:
        raise InvalidUpdateError(f"{who}: {w} exceeds the maximum {max_weight}")
    return w
