"""The ``additive`` protocol object and its in-process round (the simulator's transport).

:class:`_AdditiveRound` drives the same party objects that run across sites — one
:class:`AdditiveAggregator` per server and an :class:`AdditiveClient` per client, each holding
only its own state — through the four steps of :class:`~secfl.protocols.base.ProtocolRound`,
every message crossing the :class:`~secfl.protocols.network.Network` as bytes, directly between
the parties the spec names (server → client keys, client → server shares, server ↔ server
included sets, server → server 0 partial sums). Across sites :class:`AdditiveCoordinator` relays
the same messages instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secfl.crypto.prg import Prg
from secfl.dp import IntegerMechanism
from secfl.errors import ConfigError, DuplicateSenderError, MalformedMessageError, ProtocolAbort, SecFLError
from secfl.protocols.additive.aggregator import AdditiveAggregator
from secfl.protocols.additive.client import AdditiveClient
from secfl.protocols.additive.messages import AddIncludedSet, ShareKind
from secfl.protocols.additive.options import AdditiveOptions, check_client_ids, dither, holder
from secfl.protocols.additive.stages import AdditiveCoordinator
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.dp_encoding import IntegerDP, round_encoder
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import Party
from secfl.protocols.secagg import PhaseClock

__all__ = ["Additive"]


class _AdditiveRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, options: AdditiveOptions,
                 dp: IntegerMechanism | None = None) -> None:
        super().__init__(spec, net)
        unknown = sorted(k for k, v in spec.dropouts.items() if v)
        if unknown:
            raise ConfigError(
                f"additive has no stage dropouts (got {unknown}): a client that drops simply never uploads"
            )
        self._opt = options
        self._dp = dp
        self._participants = frozenset(spec.clients)
        check_client_ids(spec.clients)
        self.encoder = round_encoder(options, len(spec.clients), dp)
        self.ring = self.encoder.ring
        self._length = self.encoder.length(spec.dim)
        self._servers = [AdditiveAggregator(j, options, dp) for j in range(options.servers)]
        for srv in self._servers:
            srv.open_round(spec.round, self._participants, spec.dim, self.encoder)
        self._clients: dict[int, AdditiveClient] = {}
        self._rejected: set[int] = set()
        self._revealed = False
        self._clock = PhaseClock()
        #: filled by reveal(): the integer sum mod 2**k over the included clients, and the bound
        self.integer_sum: np.ndarray | None = None
        self.error_bound: float | None = None

    @property
    def servers(self) -> int:
        return self._opt.servers

    def dither(self, client: int) -> Prg:
        """The rounding dither of ``client``: seeded from ``RoundSpec.seed`` when set (not secret)."""
        return dither(self.spec.seed, self.spec.round, client)

    def party_state(self, party: int) -> dict[str, Any]:
        """Aggregation server ``j``: its aggregator (X25519 key, accepted shares, running sum)."""
        found = [srv for srv in self._servers if srv.id == party]
        return {"aggregator": found[0]} if found else {}

    def holder(self, client: int) -> int:
        """Index of the server that receives ``client``'s vector share."""
        return holder(client, self._opt.servers)

    @property
    def seconds(self) -> dict[str, float]:
        """Compute seconds spent inside setup() and reveal(), split into client and server side."""
        return dict(self._clock.seconds)

    # -------------------------------------------------------------------------- step 0
    def setup(self) -> None:
        clock = self._clock
        with clock("server"):
            wires = [srv.advertise() for srv in self._servers]
        for c in self.spec.clients:
            with clock("client"):
                got = [self.net.send(srv.id, c, wire) for srv, wire in zip(self._servers, wires, strict=True)]
                client = AdditiveClient(c, self._opt, self._dp)
                client.accept_server_keys(self.spec.round, got)
            self._clients[c] = client

    # -------------------------------------------------------------------------- step 1 (client)
    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if client not in self._participants:
            raise ConfigError(f"client {client} is not a participant of round {self.spec.round}")
        party = self._clients.get(client)
        if party is None:
            raise ProtocolAbort(f"client {client} has no server keys: run setup() first")
        parts = party.protect(self.spec.round, self.encoder, self.spec.dim, update, weight, self.dither(client))
        return Upload(parts)

    # -------------------------------------------------------------------------- step 2 (servers)
    def receive(self, client: int, upload: Upload) -> None:
        if client not in self._participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {self.spec.round}")
        if self._revealed:
            raise ProtocolAbort(f"client {client}'s shares arrived after the servers agreed on the included set")
        if any(client in s.accepted for s in self._servers) or client in self._rejected:
            raise DuplicateSenderError(f"client {client} already uploaded in round {self.spec.round}")
        try:
            self._receive(client, upload)
        except SecFLError:
            self._rejected.add(client)
            raise

    def _receive(self, client: int, upload: Upload) -> None:
        parts = self.deliver(client, upload)
        by_server: dict[int, bytes] = {}
        for to, data in parts:
            if to in by_server:
                raise MalformedMessageError(f"client {client} sent two shares to party {to}")
            by_server[to] = data
        want = {s.id for s in self._servers}
        if set(by_server) != want:
            raise MalformedMessageError(
                f"client {client} must send exactly one share to each of the {self.servers} servers"
            )
        opened = []
        for srv in self._servers:  # every server opens and checks its own share first ...
            k, plain = srv.open_share(client, by_server[srv.id], srv.expected_kind(client))
            vector = srv.share_vector(k, plain)
            opened.append((srv, k, plain, vector))
        # ... then seed holders commit, and the vector holder last (it never has to undo)
        for srv, k, plain, vector in sorted(opened, key=lambda o: o[1] is ShareKind.VECTOR):
            srv.accept(client, k, plain, vector)

    # -------------------------------------------------------------------------- steps 3-4
    def reveal(self) -> Revealed:
        if self._revealed:
            raise ProtocolAbort(f"round {self.spec.round} was already revealed")
        self._revealed = True
        with self._clock("server"):
            return self._reveal()

    def _reveal(self) -> Revealed:
        rnd = self.spec.round
        # 3. agree on the included set: every server tells every other what it accepted
        view = {srv.index: set(srv.accepted) for srv in self._servers}
        for srv in self._servers:
            mine = np.asarray(sorted(srv.accepted), dtype=np.uint32)
            wire = AddIncludedSet(rnd, srv.id, mine).to_bytes()
            for other in self._servers:
                if other is srv:
                    continue
                got = AddIncludedSet.from_bytes(self.net.send(srv.id, other.id, wire), expect_round=rnd,
                                                expect_sender=srv.id)
                view[other.index] &= {int(c) for c in got.clients}
        included = view[0]
        if any(v != included for v in view.values()):  # pragma: no cover - intersection is symmetric
            raise ProtocolAbort("servers disagree on the included set")
        for srv in self._servers:
            srv.restrict_to(included)
        if not included:
            raise ProtocolAbort(f"round {rnd}: no client's shares were accepted by every server")
        ids = np.asarray(sorted(included), dtype=np.uint32)
        # 4. partial sums to server 0, which combines
        combiner = self._servers[0]
        partials = {srv.id: self.net.send(srv.id, combiner.id, srv.finish(ids)) for srv in self._servers[1:]}
        total = combiner.combine(ids, partials)
        self.integer_sum = total
        mean, total_weight, bound = self.encoder.decode(total, len(ids))
        self.error_bound = bound
        acc = tuple(int(c) for c in ids)
        dropped = tuple(sorted(self._participants - included))
        return Revealed(mean, total_weight, acc, dropped)


class Additive(IntegerDP, Protocol):
    """Additive secret sharing over S non-colluding servers (private unless all S collude).

    :meth:`coordinator` gives the server side across sites (it plays aggregation server 0);
    :meth:`party` a fresh party for a site: aggregation server ``j`` for ``server_id(j)``, else
    client ``party_id``; :meth:`site_roles` places servers 1..S−1 at sites 0..S−2.
    """

    name = "additive"
    summary = "additive secret sharing across S non-colluding servers; private unless all S collude"
    reveals_to = "the aggregation servers (server 0 combines the S partial sums)"
    Options = AdditiveOptions
    #: across sites every party needs its site's identity key and the federation roster
    needs_identities = True

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _AdditiveRound(spec, net, self.options, self._dp)

    def coordinator(self) -> AdditiveCoordinator:
        """The server side across sites: aggregation server 0 and the relay to the others."""
        return AdditiveCoordinator(self.options, self._dp)

    def party(self, party_id: int, *, identity: Any = None, roster: Any = None) -> Party:
        """Aggregation server ``j`` for ``server_id(j)`` (0 ≤ j < S; server 0 is normally played
        by the coordinator), else client ``party_id``."""
        j = party_id - server_id(0)
        if 0 <= j < self.options.servers:
            return AdditiveAggregator(j, self.options, self._dp, identity)
        return AdditiveClient(party_id, self.options, self._dp, roster)

    def site_roles(self, site: int, sites: int) -> tuple[int, ...]:
        """Across sites, site ``j − 1`` also plays aggregation server ``j`` (1 ≤ j < S); the
        coordinator plays server 0. The organisations running them must not all collude."""
        if sites < self.options.servers - 1:
            raise ConfigError(f"additive with {self.options.servers} aggregation servers needs at least "
                              f"{self.options.servers - 1} sites to host servers 1..{self.options.servers - 1}")
        return (server_id(site + 1),) if site + 1 < self.options.servers else ()
