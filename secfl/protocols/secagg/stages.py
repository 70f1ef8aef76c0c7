"""The ``secagg`` server's stage sequence across sites (any :class:`~secfl.protocols.parties.Transport`).

Per round, in order; each stage sends one request per party, collects the replies that arrive
before the deadline, and goes on with whoever answered (a missing or rejected reply drops only
its sender, recorded in :attr:`SecAggCoordinator.dropped`):

1. ``secagg.advertise_keys`` — to every participant: ``ROUND_REQUEST`` → ``SA_ADVERTISE_KEYS``.
   The server draws the k-regular graph over the clients that advertised.
2. ``secagg.share_keys`` — to every client in the graph: ``SA_KEY_ROSTER`` (its neighbours'
   public keys) → ``SA_SHARE_KEYS`` (share pairs sealed for each neighbour). The server prunes
   clients left with fewer than ``t`` neighbours that shared.
3. ``secagg.masked_input`` — to every remaining client: ``SA_SHARES_FORWARD`` (the sealed pairs
   addressed to it, relayed unopened) → ``SA_MASKED_INPUT``, added to the running sum as it arrives.
4. ``secagg.consistency`` (only with ``consistency_check``) — to every client of U3 (masked input
   accepted): ``SA_CONSISTENCY_REQUEST`` (U3) → ``SA_CONSISTENCY_SIGNATURE``. Only clients that
   signed are asked to unmask.
5. ``secagg.unmask`` — to every client whose masked input was accepted: ``SA_UNMASK_REQUEST``
   (``SA_CHECKED_UNMASK_REQUEST``: plus U3 and the neighbours' signatures of it) →
   ``SA_UNMASK_RESPONSE``; with ``t`` shares per client the server removes every mask and decodes.

Dropouts at any stage are survived as long as every surviving client keeps ``t`` answering
neighbours; otherwise the round ends with :class:`~secfl.errors.InsufficientQuorumError`.

Security: as in :mod:`secfl.protocols.secagg` — the coordinator holds a :class:`SecAggServer`
(public keys, sealed blobs, masked inputs, one kind of share per client) and nothing else.
With a federation roster, key advertisements are signed (a relay cannot swap keys); the
consistency check keeps a malicious server from telling different clients different U3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from secfl.dp import IntegerMechanism
from secfl.errors import InsufficientQuorumError, ProtocolAbort, SecFLError
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.dp_encoding import round_encoder
from secfl.protocols.hosts import PartyHost
from secfl.protocols.network import server_id
from secfl.protocols.parties import Coordinator, RoundRequest, Transport
from secfl.protocols.secagg.options import (
    ADVERTISE_KEYS,
    CONSISTENCY,
    MASKED_INPUT,
    SHARE_KEYS,
    SITE_STAGES,
    UNMASK,
    SecAggOptions,
    check_client_ids,
)
from secfl.protocols.secagg.server import SecAggServer

__all__ = ["SecAggCoordinator", "SITE_STAGES"]

SERVER = server_id(0)


class SecAggCoordinator(Coordinator):
    """The SecAgg+ server across sites. ``helpers``: an optional host whose workers remove the
    masks in parallel (the server's own helper processes; they receive the server's
    reconstructed secrets only)."""

    UPLOAD_STAGE = MASKED_INPUT

    def __init__(self, options: SecAggOptions | None = None, dp: IntegerMechanism | None = None,
                 helpers: PartyHost | None = None) -> None:
        self.options = SecAggOptions() if options is None else options
        self._dp = dp
        self.helpers = helpers
        #: the latest round's server state (public material, sealed blobs, the running sum)
        self.server: SecAggServer | None = None
        #: client -> why it dropped out of the latest round (and at which stage)
        self.dropped: dict[int, str] = {}
        #: client -> why its unmask answer was not used (its masked input still counts)
        self.unmask_failures: dict[int, str] = {}
        #: the latest round's bound on |revealed mean − exact weighted mean| per coordinate
        self.error_bound: float | None = None

    def _collect(self, transport: Transport, stage: str, requests: Mapping[int, bytes],
                 intake: Callable[[int, bytes], None], failed: dict[int, str]) -> None:
        """One stage: send, then take each reply that arrived; a bad one costs only its sender."""
        replies = transport.exchange(stage, requests)
        for pid in sorted(requests):
            data = replies.get(pid)
            if data is None:
                failed.setdefault(pid, f"{stage}: {transport.failures.get(pid, 'no reply')}")
                continue
            try:
                intake(pid, data)
            except SecFLError as exc:
                failed.setdefault(pid, f"{stage}: {type(exc).__name__}: {exc}")

    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        clients = tuple(sorted(spec.clients))
        check_client_ids(clients)
        rnd, n = spec.round, len(clients)
        k, t = self.options.graph_parameters(n)
        encoder = round_encoder(self.options, n, self._dp)
        srv = self.server = SecAggServer(rnd, k, t, encoder.ring, encoder.length(spec.dim))
        self.dropped, self.unmask_failures, self.error_bound = {}, {}, None
        # 1. advertise keys; the graph over those who did
        ask = RoundRequest(rnd, SERVER, np.asarray(clients, dtype=np.uint32), spec.dim).to_bytes()
        self._collect(transport, ADVERTISE_KEYS, {c: ask for c in clients}, srv.on_advertise, self.dropped)
        srv.build_graph()
        # 2. share keys (sealed pairs); prune clients with fewer than t neighbours that shared
        self._collect(transport, SHARE_KEYS, {u: srv.roster(u) for u in sorted(srv.graph)}, srv.on_share_keys,
                      self.dropped)
        srv.prune()
        for u, why in srv.excluded.items():
            self.dropped.setdefault(u, why)
        if not srv.active:
            raise InsufficientQuorumError(
                f"round {rnd}: no client kept {t} neighbours through share_keys; nothing can be aggregated"
            )
        # 3. forward the sealed pairs; masked inputs, summed as they arrive
        self._collect(transport, MASKED_INPUT, {v: srv.forward(v) for v in sorted(srv.active)},
                      srv.on_masked_input, self.dropped)
        if not srv.masked:
            raise ProtocolAbort(f"round {rnd}: no masked input was accepted")
        # 4. consistency check (option): every client of U3 signs U3; only signers unmask
        checked = self.options.consistency_check
        askable = sorted(srv.masked)
        if checked:
            u3 = srv.consistency_request()
            self._collect(transport, CONSISTENCY, {v: u3 for v in askable}, srv.on_consistency,
                          self.unmask_failures)
            askable = sorted(srv.u3_signatures)
        # 5. unmask: one kind of share per client, from its neighbours
        asked = {v: srv.unmask_request(v, checked=checked) for v in askable}
        self._collect(transport, UNMASK, asked, srv.on_unmask_response, self.unmask_failures)
        total = srv.unmask(self.helpers)
        mean, total_weight, bound = encoder.decode(total, len(srv.masked))
        self.error_bound = bound
        included = tuple(sorted(srv.masked))
        return Revealed(mean, total_weight, included, tuple(c for c in clients if c not in srv.masked))
