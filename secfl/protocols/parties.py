"""Parties, the server's stage sequence, and the transport that carries their bytes.

A protocol is a set of parties that exchange bytes stage by stage. Every exchange is driven by
the server (the coordinator): it sends some parties one request each and collects their replies
until the stage's deadline, then goes on with whoever answered. Messages between two non-server
parties (shares for a neighbour, a secret context for a client) travel inside those requests and
replies, sealed for their recipient where they are secret. That is exactly what Flower's grid
offers (``send_and_receive``), and what the in-process simulator reproduces.

- :class:`Party` — one party (client, key holder, quorum member, aggregator). It holds only its
  own keys and state, and answers ``handle(stage, request) -> reply``, bytes in and out.
- :class:`ClientParty` — a party that also owns a local update for the round (``set_input``).
- :class:`Coordinator` — the server's side, persistent across rounds; ``run_round(spec,
  transport)`` is its explicit stage sequence and returns the :class:`Revealed` outcome. It holds
  only what the protocol's spec lets the server see.
- :class:`Transport` — ``exchange(stage, requests) -> replies``. Implementations:
  :class:`LocalTransport` (this module: in one process, counting bytes and recording views
  through :class:`~secfl.protocols.network.Network`, simulating dropouts at any stage), and the
  Flower grid transport in :mod:`secfl.runtime.flower`.

A party that raises a :class:`~secfl.errors.SecFLError` while handling a request simply does not
answer: the coordinator treats it like a party that went silent, and the transport records why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from secfl.errors import ConfigError, MalformedMessageError, SecFLError
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.network import Network, server_id
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = ["Party", "ClientParty", "Coordinator", "Transport", "LocalTransport", "StageTimeouts", "RoundRequest"]

_MAX_PARTIES = 1 << 20


@dataclass(frozen=True)
class RoundRequest(Message):
    """Server → party: "round ``round`` is on, with these participants and this update length"
    (the request of a stage whose party needs nothing else)."""

    TYPE = MsgType.ROUND_REQUEST
    round: int
    sender: int
    participants: np.ndarray  # uint32, sorted, distinct
    dim: int

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.participants, dtype=np.uint32)).u64(self.dim)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> RoundRequest:
        ids = r.array("u4")
        if ids.size == 0 or ids.size > _MAX_PARTIES or bool(np.any(np.diff(ids.astype(np.int64)) <= 0)):
            raise MalformedMessageError("ROUND_REQUEST: the participants must be a non-empty sorted set")
        dim = r.u64()
        if not 1 <= dim <= 1 << 34:
            raise MalformedMessageError(f"ROUND_REQUEST: update length {dim}")
        return cls(round, sender, ids, int(dim))


class Party(ABC):
    """One party of a protocol. Holds only its own secrets; speaks only bytes."""

    party_id: int

    @abstractmethod
    def handle(self, stage: str, request: bytes) -> bytes:
        """Answer the server's ``request`` for ``stage`` (parse strictly, typed errors)."""

    def save_state(self) -> bytes:
        """Everything this party holds, as bytes, for an engine that runs it afresh per message
        (Flower's simulation engine keeps them in the node's own context). Secrets included: the
        bytes never leave the node. Parties whose state cannot leave their process refuse."""
        raise ConfigError(f"{type(self).__name__} keeps live state that cannot leave its process;"
                          " run this protocol with `secfl run` or `secfl deploy`")

    def load_state(self, data: bytes) -> None:
        """Restore what :meth:`save_state` wrote (onto a party fresh from ``Protocol.party``)."""
        raise ConfigError(f"{type(self).__name__} cannot restore a saved state")


class ClientParty(Party):
    """A client: a party that also holds its own update and weight for the current round."""

    _input: tuple[int, np.ndarray, float] | None = None

    def set_input(self, rnd: int, update: np.ndarray, weight: float) -> None:
        """The update and weight this client protects in round ``rnd`` (validated when used)."""
        self._input = (int(rnd), update, float(weight))

    def take_input(self, rnd: int) -> tuple[np.ndarray, float]:
        """This round's input, consumed once: a client never protects two updates in one round."""
        if self._input is None or self._input[0] != rnd:
            raise MalformedMessageError(f"client {self.party_id} has no update for round {rnd}")
        _, update, weight = self._input
        self._input = None
        return update, weight

    def _save_input(self, w: Writer) -> Writer:
        if self._input is None:
            return w.u8(0)
        rnd, update, weight = self._input
        return w.u8(1).u64(rnd).f64(weight).array(np.asarray(update, dtype=np.float64).ravel())

    def _load_input(self, r: Reader) -> None:
        if r.u8():
            rnd, weight = r.u64(), r.f64()
            self._input = (rnd, r.array("f8").copy(), weight)
        else:
            self._input = None


class Transport(ABC):
    """Carries the coordinator's requests to the parties and their replies back."""

    #: party -> why it gave no reply (in the latest exchange where it failed)
    failures: dict[int, str]

    @abstractmethod
    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        """Send ``requests[p]`` to every party ``p``; return the replies that arrived before the
        stage's deadline. A party that does not answer is absent from the result."""


class Coordinator(ABC):
    """The server's side of a protocol, persistent across rounds (e.g. a public context)."""

    @abstractmethod
    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        """One round's stage sequence over ``spec.clients``."""


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds the coordinator waits for replies: ``default`` for every stage, ``per_stage``
    overrides by stage name (e.g. ``{"train": 600}``). No stage waits forever."""

    default: float = 120.0
    per_stage: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, v in (("default", self.default), *self.per_stage.items()):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 86_400:
                raise ConfigError(f"stage timeout {name!r} must be a number of seconds in (0, 86400), got {v!r}")

    def for_stage(self, stage: str) -> float:
        return float(self.per_stage.get(stage, self.default))


class LocalTransport(Transport):
    """In one process: every request and reply crosses ``net`` (counted, optionally recorded),
    ``parties`` answers for a party id, and ``silent[stage]`` names the parties that go silent
    before that stage (they receive the request but never answer)."""

    def __init__(self, net: Network, parties: Callable[[int], Party] | Mapping[int, Party], *,
                 coordinator: int | None = None, silent: Mapping[str, Iterable[int]] | None = None) -> None:
        self.net = net
        self._parties = parties
        self.coordinator = server_id(0) if coordinator is None else coordinator
        self.silent = {k: frozenset(v) for k, v in (silent or {}).items()}
        self.failures: dict[int, str] = {}

    def _party(self, pid: int) -> Party:
        if callable(self._parties):
            return self._parties(pid)
        return self._parties[pid]

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        replies: dict[int, bytes] = {}
        for pid, data in requests.items():
            got = self.net.send(self.coordinator, pid, data)
            if pid in self.silent.get(stage, frozenset()):
                self.failures[pid] = f"went silent before stage {stage!r} (simulated dropout)"
                continue
            try:
                reply = self._party(pid).handle(stage, got)
            except SecFLError as exc:
                self.failures[pid] = f"{type(exc).__name__}: {exc}"
                continue
            replies[pid] = self.net.send(pid, self.coordinator, reply)
        return replies
