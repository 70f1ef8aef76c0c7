"""The ``secagg`` protocol object and its in-process round (the simulator).

:class:`SecAgg` opens :class:`_SecAggRound`, which drives one :class:`SecAggClient` per client
(through a :class:`~secfl.protocols.hosts.PartyHost`: in this process, or spread over worker
processes that precompute masks ahead of the uploads) and one :class:`SecAggServer` through the
four steps of :class:`~secfl.protocols.base.ProtocolRound`, every message crossing the
:class:`~secfl.protocols.network.Network` as bytes. Across sites, :meth:`SecAgg.coordinator` and
:meth:`SecAgg.party` give the same parties, driven by :class:`SecAggCoordinator` over a
:class:`~secfl.protocols.parties.Transport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from secfl.dp import IntegerMechanism
from secfl.errors import (
    ConfigError,
    DroppedOutError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload, check_update
from secfl.protocols.dp_encoding import IntegerDP, round_encoder
from secfl.protocols.hosts import PartyHost, WorkerCrashed, auto_processes, make_host
from secfl.protocols.network import Network
from secfl.protocols.parties import Party
from secfl.protocols.secagg.client import SecAggClient
from secfl.protocols.secagg.options import STAGES, SecAggOptions, check_client_ids
from secfl.protocols.secagg.server import SecAggServer
from secfl.protocols.secagg.stages import SecAggCoordinator

__all__ = ["SecAgg", "PhaseClock"]

log = logging.getLogger("secfl.protocols.secagg")


class PhaseClock:
    """Accumulates wall seconds per side (``"client"`` / ``"server"``) of a simulated round."""

    def __init__(self) -> None:
        self.seconds = {"client": 0.0, "server": 0.0}

    @contextmanager
    def __call__(self, side: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[side] += time.perf_counter() - t


class _SecAggRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, options: SecAggOptions, host: PartyHost,
                 dp: IntegerMechanism | None = None) -> None:
        super().__init__(spec, net)
        self._host = host
        self._epoch = -1
        unknown = sorted(set(spec.dropouts) - set(STAGES))
        if unknown:
            raise ConfigError(f"secagg dropout stages are {list(STAGES)}; unknown: {unknown}")
        check_client_ids(spec.clients)
        if options.consistency_check:
            raise ConfigError("secagg.consistency_check signs U3 with each client's identity key: it runs across"
                              " sites (secfl deploy), not in the one-process simulator, whose clients have none")
        self._participants = frozenset(spec.clients)
        for stage, who in spec.dropouts.items():
            if not set(who) <= self._participants:
                outside = sorted(set(who) - self._participants)
                raise ConfigError(f"dropouts[{stage!r}] names clients outside the round: {outside}")
        self._opt = options
        n = len(spec.clients)
        self.k, self.t = options.graph_parameters(n)
        self.encoder = round_encoder(options, n, dp)
        self.ring = self.encoder.ring
        self._length = self.encoder.length(spec.dim)
        self._server = SecAggServer(spec.round, self.k, self.t, self.ring, self._length)
        self._gone: dict[int, str] = {}  # client -> why it cannot take part any more
        self._setup_done = False
        self._revealing = False
        self._clock = PhaseClock()
        self._protect_host_seconds = 0.0  # host seconds inside protect(), timed by its caller
        #: client -> why its unmask answer was not used (its masked input still counts)
        self.unmask_failures: dict[int, str] = {}
        #: filled by reveal()
        self.integer_sum: np.ndarray | None = None
        self.error_bound: float | None = None

    @property
    def seconds(self) -> dict[str, float]:
        """Compute seconds spent inside setup() and reveal(), split into client and server side
        (``protect`` is client work and ``receive`` server work: their callers time them).

        Client seconds are the clients' own compute as the host measured it, including masks
        precomputed in worker processes ahead of ``protect``; server seconds are wall time."""
        client = max(0.0, self._host.seconds - self._protect_host_seconds) if self._epoch >= 0 else 0.0
        return {"client": client, "server": self._clock.seconds["server"]}

    def _call(self, method: str, args: dict[int, tuple]) -> dict[int, object]:
        """Run ``method`` on many clients through the host (a typed error is that client's result)."""
        if self._host.epoch != self._epoch:
            raise ProtocolAbort(f"round {self.spec.round}: a later round of this protocol replaced its clients")
        return self._host.call(method, args)

    @property
    def processes(self) -> int:
        """Processes this round's clients run in (1: this process)."""
        return self._host.processes

    def _silent(self, stage: str) -> frozenset[int]:
        return frozenset(self.spec.dropouts.get(stage, frozenset()))

    def client(self, cid: int) -> SecAggClient:
        """The client-side state of ``cid`` (tests and attack experiments; ``processes = 1`` only)."""
        party: SecAggClient = self._host.party(cid)
        return party

    @property
    def server(self) -> SecAggServer:
        return self._server

    def party_state(self, party: int) -> dict[str, Any]:
        """The server: its graph and active set; client ``c``: its client object (keys, shares
        received, self-mask seed) while it lives in this process (``processes = 1``)."""
        if party == self._server.id:
            return {"graph": self._server.graph, "active": frozenset(self._server.active)}
        if self._host.processes == 1 and self._epoch >= 0 and party in self._participants:
            try:
                return {"client": self._host.party(party)}
            except KeyError:  # silent before advertise_keys: it holds nothing
                return {}
        return {}

    # -------------------------------------------------------------------------- rounds 0-1
    def setup(self) -> None:
        if self._setup_done:
            raise ProtocolAbort("setup() already ran for this round")
        self._setup_done = True
        rnd, srv, net, clock = self.spec.round, self._server, self.net, self._clock
        # 0. advertise keys (each client draws its two key pairs; the server reads them in order)
        speaking = [c for c in self.spec.clients if c not in self._silent("advertise_keys")]
        for c in self.spec.clients:
            if c not in speaking:
                self._gone[c] = "went silent before advertise_keys"
        late = self._silent("share_keys") | self._silent("masked_input")
        self._epoch = self._host.create(SecAggClient.for_round, speaking, rnd, self.encoder, self._length,
                                        self.spec.seed, offline=[c for c in sorted(speaking) if c not in late])
        adverts = self._call("advertise", {c: () for c in speaking})
        for c in sorted(speaking):
            try:
                with clock("server"):
                    srv.on_advertise(c, net.send(c, srv.id, _ok(adverts[c])))
            except SecFLError as exc:
                self._gone[c] = f"advertise_keys rejected: {exc}"
        with clock("server"):
            srv.build_graph()
            rosters = {u: (net.send(srv.id, u, srv.roster(u)),) for u in sorted(srv.graph)}
        for u, out in self._call("on_roster", rosters).items():
            if isinstance(out, SecFLError):
                self._gone[u] = f"key roster rejected: {out}"
        # 1. share keys
        sharing = [u for u in sorted(srv.graph) if u not in self._silent("share_keys") and u not in self._gone]
        for u in sorted(srv.graph):
            if u in self._silent("share_keys"):
                self._gone[u] = "went silent before share_keys"
        shared = self._call("share_keys", {u: () for u in sharing})
        for u in sharing:
            try:
                with clock("server"):
                    srv.on_share_keys(u, net.send(u, srv.id, _ok(shared[u])))
            except SecFLError as exc:
                self._gone[u] = f"share_keys rejected: {exc}"
        with clock("server"):
            srv.prune()
        self._gone.update(srv.excluded)
        if not srv.active:
            raise InsufficientQuorumError(
                f"round {rnd}: no client kept {self.t} neighbours through share_keys; nothing can be aggregated"
            )
        with clock("server"):
            forwards = {v: (net.send(srv.id, v, srv.forward(v)),) for v in sorted(srv.active)}
        for v, out in self._call("on_forward", forwards).items():
            if isinstance(out, SecFLError):
                self._gone[v] = f"shares forward rejected: {out}"

    # -------------------------------------------------------------------------- round 2
    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if client not in self._participants:
            raise ConfigError(f"client {client} is not a participant of round {self.spec.round}")
        if not self._setup_done:
            raise ProtocolAbort("run setup() before protect()")
        if client in self._gone:
            raise DroppedOutError(f"client {client}: {self._gone[client]}")
        if client in self._silent("masked_input"):
            raise DroppedOutError(f"client {client} went silent before masked_input (simulated)")
        vec = check_update(update, self.spec.dim, who=f"client {client} update")
        before = self._host.seconds
        try:
            data = _ok(self._call("masked_input", {client: (vec, weight)})[client])
        finally:
            self._protect_host_seconds += self._host.seconds - before
        return Upload(((self._server.id, data),))

    def receive(self, client: int, upload: Upload) -> None:
        if client not in self._participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {self.spec.round}")
        if self._revealing:
            # the active set is fixed once unmasking starts: a late input could be combined with a
            # mask key already reconstructed for its sender
            raise ProtocolAbort(f"client {client}'s masked input arrived after unmasking started; refused")
        parts = self.deliver(client, upload)
        if len(parts) != 1 or parts[0][0] != self._server.id:
            raise MalformedMessageError(f"client {client}: expected exactly one message to the server")
        self._server.on_masked_input(client, parts[0][1])

    # -------------------------------------------------------------------------- round 3
    def reveal(self) -> Revealed:
        srv, net = self._server, self.net
        if self._revealing:
            raise ProtocolAbort(f"round {self.spec.round} was already unmasked")
        self._revealing = True
        if not srv.masked:
            raise ProtocolAbort(f"round {self.spec.round}: no masked input was accepted")
        silent, clock = self._silent("unmask"), self._clock
        with clock("server"):
            asked = {v: (net.send(srv.id, v, srv.unmask_request(v)),) for v in sorted(srv.masked)}
        answers = self._call("unmask", {v: req for v, req in asked.items() if v not in silent})
        for v, out in answers.items():
            try:
                with clock("server"):
                    srv.on_unmask_response(v, net.send(v, srv.id, _ok(out)))
            except SecFLError as exc:  # a refusing or malformed answer costs that answer only
                self.unmask_failures[v] = f"{type(exc).__name__}: {exc}"
        with clock("server"):
            total = srv.unmask(None if self._host.processes == 1 else self._host)
        self.integer_sum = total
        count = len(srv.masked)
        mean, total_weight, bound = self.encoder.decode(total, count)
        self.error_bound = bound
        included = tuple(sorted(srv.masked))
        dropped = tuple(sorted(self._participants - srv.masked))
        return Revealed(mean, total_weight, included, dropped)


def _ok(result: object) -> bytes:
    """A client's reply through the host: its bytes, or its typed error raised here."""
    if isinstance(result, SecFLError):
        raise result
    if not isinstance(result, bytes):
        raise MalformedMessageError(f"a client answered with {type(result).__name__}, not bytes")
    return result


class SecAgg(IntegerDP, Protocol):
    """SecAgg+: pairwise + self masks on a random k-regular graph, dropout recovery by Shamir."""

    name = "secagg"
    summary = "SecAgg+ masking on a random k-regular graph; one server; survives dropouts at every stage"
    reveals_to = "server"
    Options = SecAggOptions
    #: across sites every party needs its site's identity key and the federation roster
    needs_identities = True

    def __init__(self, options: SecAggOptions | None = None) -> None:
        super().__init__(options)
        self._host: PartyHost | None = None
        self._spawn_failed = False

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        want = self.options.processes or auto_processes(len(spec.clients))
        if self.options.processes is None and (self._spawn_failed or (want > 1 and not _main_is_importable())):
            if want > 1 and not self._spawn_failed:
                log.warning("secagg: clients run in this process instead of %d workers: the main program was read"
                            " from stdin, which spawned workers cannot import (run it from a file for workers)", want)
            self._spawn_failed, want = True, 1
        if want > 1 and (self._host is None or self._host.processes != want or not self._host.alive):
            self.close()
            try:
                self._host = make_host(want)
            except WorkerCrashed as exc:
                if self.options.processes is not None:
                    raise
                # automatic choice only: an unguarded script or one read from stdin cannot spawn workers
                log.warning("secagg: clients run in this process instead of %d workers: %s", want,
                            str(exc).splitlines()[0])
                self._spawn_failed, want = True, 1
        host: PartyHost = make_host(1) if want == 1 or self._host is None else self._host
        return _SecAggRound(spec, net, self.options, host, self._dp)

    def coordinator(self) -> SecAggCoordinator:
        """The server's stage sequence across sites (holds what the spec lets the server see)."""
        return SecAggCoordinator(self.options, self._dp)

    def party(self, party_id: int, *, identity: Any = None, roster: Any = None) -> Party:
        """A new client party for a site (it lives across rounds; fresh keys every round)."""
        return SecAggClient(party_id, self.options, self._dp, identity=identity, roster=roster)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None


def _main_is_importable() -> bool:
    """Whether spawned workers can re-import ``__main__``: not when it was read from stdin
    (``python - < script``), whose ``__file__`` names no file."""
    import os
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.exists(path)
