"""The ``additive`` server side across sites: the stage sequence (any
:class:`~secfl.protocols.parties.Transport`).

The coordinator plays aggregation server 0 (it combines the partial sums, as the spec names
server 0 to) and relays everything between the clients and aggregation servers 1..S−1, which are
separate sites (party ids ``server_id(1) … server_id(S−1)``). Per round, in order (each stage:
send, collect replies until the deadline, go on with whoever answered):

1. ``additive.keys`` — to servers 1..S−1: ``ROUND_REQUEST`` → ``ADD_SERVER_KEY`` (server 0 draws
   its own key in place).
2. ``additive.upload`` — to every participant: ``ADD_UPLOAD_REQUEST`` (the S server keys, relayed
   as the servers sent them) → ``ADD_UPLOAD`` (S ``ADD_SHARE`` messages, each sealed to its
   server). The coordinator checks the envelope (round, sender, recipients, kinds, lengths);
   a client that does not answer, or answers badly, is dropped here.
3. ``additive.seeds`` — to servers 1..S−1: ``ADD_SHARE_BATCH`` of the seed shares sealed to each
   → ``ADD_INCLUDED_SET`` (the shares it opened and committed). Server 0 takes its own batch in
   place. A client is a candidate when every one of its seed holders committed its seed.
4. ``additive.vectors`` — to servers 1..S−1: ``ADD_SHARE_BATCH`` of the candidates' vector shares
   → ``ADD_INCLUDED_SET``. The included set is the candidates whose vector holder committed the
   vector. (Vectors are committed only after every seed opened, so a vector never has to be
   removed; seed holders subtract the re-expanded seed of a client that was excluded.)
5. ``additive.reveal`` — to servers 1..S−1: ``ADD_INCLUDED_SET`` (the included set) →
   ``ADD_PARTIAL_SUM`` over it (count and digest checked); server 0 adds them to its own sum and
   decodes the weighted mean.

Clients may drop at stage 2 for free. Every aggregation server must answer every stage (all S
partial sums are needed): a server that is silent or answers badly aborts the round
(:class:`~secfl.errors.ProtocolAbort`); the next round starts afresh.

Security: the coordinator holds what server 0 may hold — its own key and shares, the included
sets and partial sums — and relays the other servers' shares sealed end to end
(``HKDF(X25519(e_c, pk_j))`` + AES-256-GCM) without being able to open them. The server keys it
relays are not signed: a coordinator that swapped them for its own could open every share, which
the semi-honest model of ``protocols/additive.md`` excludes (authenticated server identities
would close it). Likewise it chooses the included set it announces, as server 0 does in the
simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from secfl.crypto.prg import SEED_BYTES
from secfl.dp import IntegerMechanism
from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort, SecFLError
from secfl.protocols.additive.aggregator import COORDINATOR, AdditiveAggregator
from secfl.protocols.additive.messages import (
    AddIncludedSet,
    AddServerKey,
    AddShare,
    AddShareBatch,
    AddUpload,
    AddUploadRequest,
    ShareKind,
)
from secfl.protocols.additive.options import (
    KEYS_STAGE,
    REVEAL_STAGE,
    SEEDS_STAGE,
    STAGES,
    UPLOAD_STAGE,
    VECTORS_STAGE,
    AdditiveOptions,
    check_client_ids,
    holder,
)
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.dp_encoding import round_encoder
from secfl.protocols.network import server_id
from secfl.protocols.parties import Coordinator, RoundRequest, Transport
from secfl.protocols.wire import Message

__all__ = ["AdditiveCoordinator", "STAGES"]

M = TypeVar("M", bound=Message)


class AdditiveCoordinator(Coordinator):
    """The server side across sites: aggregation server 0 plus the relay to servers 1..S−1."""

    UPLOAD_STAGE = UPLOAD_STAGE

    def __init__(self, options: AdditiveOptions, dp: IntegerMechanism | None = None) -> None:
        self.options = options
        self._dp = dp
        #: aggregation server 0, played by the coordinator itself
        self.server = AdditiveAggregator(0, options, dp)
        self._remote = tuple(server_id(j) for j in range(1, options.servers))
        #: client -> why it dropped out of the latest round
        self.dropped: dict[int, str] = {}
        #: set by a completed round: the error bound of its mean, and the integer sum mod 2**k
        self.error_bound: float | None = None
        self.integer_sum: np.ndarray | None = None

    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        rnd, clients, S = spec.round, tuple(sorted(spec.clients)), self.options.servers
        check_client_ids(clients)
        if spec.seed is not None and len(spec.seed) != SEED_BYTES:
            raise ConfigError(f"RoundSpec.seed must be {SEED_BYTES} bytes for additive, got {len(spec.seed)}")
        participants = frozenset(clients)
        encoder = round_encoder(self.options, len(clients), self._dp)  # refuses an overflowing round
        length = encoder.length(spec.dim)
        ids = np.asarray(clients, dtype=np.uint32)
        self.dropped, self.error_bound, self.integer_sum = {}, None, None
        # 1. keys: server 0 in place, the others through the transport
        self.server.open_round(rnd, participants, spec.dim, encoder)
        keys = {0: self.server.advertise()}
        ask = RoundRequest(rnd, COORDINATOR, ids, spec.dim).to_bytes()
        for sid, data in self._all_servers(transport, KEYS_STAGE, {sid: ask for sid in self._remote}, rnd).items():
            self._server_reply(AddServerKey, data, rnd, sid, KEYS_STAGE)
            keys[sid - COORDINATOR] = data
        # 2. upload: each client's S sealed shares, envelope checked here
        seed = spec.seed or b""
        req = AddUploadRequest(rnd, COORDINATOR, ids, spec.dim, seed, tuple(keys[j] for j in range(S))).to_bytes()
        shares: dict[int, tuple[bytes, ...]] = {}
        for c, data in transport.exchange(UPLOAD_STAGE, {c: req for c in clients}).items():
            try:
                shares[c] = self._check_upload(c, data, rnd, length)
            except SecFLError as exc:
                self.dropped[c] = f"{type(exc).__name__}: {exc}"
        for c in clients:
            if c not in shares:
                self.dropped.setdefault(c, transport.failures.get(c, "no reply"))
        # 3. seeds first: a client stays a candidate when every seed holder committed its seed
        took = self._relay(transport, SEEDS_STAGE, ShareKind.SEED, shares, rnd)
        candidates = []
        for c in sorted(shares):
            refused = [j for j in range(S) if j != holder(c, S) and c not in took[j]]
            if refused:
                self.dropped[c] = self._refusal(c, refused[0], "seed")
            else:
                candidates.append(c)
        # 4. then the vectors, only the candidates'
        took = self._relay(transport, VECTORS_STAGE, ShareKind.VECTOR, {c: shares[c] for c in candidates}, rnd)
        shares.clear()
        included = []
        for c in candidates:
            h = holder(c, S)
            if c in took[h]:
                included.append(c)
            else:
                self.dropped[c] = self._refusal(c, h, "vector")
        if not included:
            raise ProtocolAbort(f"round {rnd}: no client's shares were accepted by every server")
        # 5. reveal: one partial sum per server over the included set, combined by server 0
        inc = np.asarray(included, dtype=np.uint32)
        ask = AddIncludedSet(rnd, COORDINATOR, inc).to_bytes()
        partials = self._all_servers(transport, REVEAL_STAGE, {sid: ask for sid in self._remote}, rnd)
        try:
            total = self.server.combine(inc, partials)
        except MalformedMessageError as exc:
            raise ProtocolAbort(f"round {rnd}: a partial sum is malformed ({exc})") from None
        mean, total_weight, self.error_bound = encoder.decode(total, len(included))
        self.integer_sum = total
        return Revealed(mean, total_weight, tuple(included), tuple(sorted(participants - set(included))))

    # -- helpers -----------------------------------------------------------------------------------

    def _check_upload(self, c: int, data: bytes, rnd: int, length: int) -> tuple[bytes, ...]:
        """``ADD_UPLOAD``'s envelope: one share per server in order, each of the right kind and size."""
        up = AddUpload.from_bytes(data, expect_round=rnd, expect_sender=c)
        S = self.options.servers
        if len(up.shares) != S:
            raise MalformedMessageError(f"client {c} must send exactly one share to each of the {S} servers")
        for j, blob in enumerate(up.shares):
            msg = AddShare.from_bytes(blob, expect_round=rnd, expect_sender=c)
            kind = ShareKind.VECTOR if j == holder(c, S) else ShareKind.SEED
            if msg.recipient != server_id(j) or msg.kind is not kind:
                raise MalformedMessageError(f"client {c}'s share at position {j} is not a {kind.name} share for"
                                            f" server {j}")
            if kind is ShareKind.VECTOR and msg.length != length:
                raise MalformedMessageError(f"ADD_SHARE: {msg.length} elements, this round has {length}")
        return up.shares

    def _relay(self, transport: Transport, stage: str, kind: ShareKind, shares: Mapping[int, tuple[bytes, ...]],
               rnd: int) -> dict[int, set[int]]:
        """Send each server the shares of ``kind`` sealed to it; server index -> clients it committed."""
        S = self.options.servers
        batches = {}
        for j in range(S):
            mine = [c for c in sorted(shares) if (holder(c, S) == j) == (kind is ShareKind.VECTOR)]
            batches[j] = AddShareBatch(rnd, COORDINATOR, kind, np.asarray(mine, dtype=np.uint32),
                                       tuple(shares[c][j] for c in mine))
        replies = {0: self.server.take_batch(batches[0])}
        remote = {server_id(j): batches[j].to_bytes() for j in range(1, S)}
        for sid, data in self._all_servers(transport, stage, remote, rnd).items():
            replies[sid - COORDINATOR] = data
        took = {}
        for j, data in replies.items():
            msg = self._server_reply(AddIncludedSet, data, rnd, server_id(j), stage)
            took[j] = {int(c) for c in msg.clients} & {int(c) for c in batches[j].clients}
        return took

    def _all_servers(self, transport: Transport, stage: str, requests: Mapping[int, bytes],
                     rnd: int) -> dict[int, bytes]:
        got = transport.exchange(stage, requests) if requests else {}
        for sid in requests:
            if sid not in got:
                why = transport.failures.get(sid, "no reply")
                raise ProtocolAbort(f"round {rnd}: aggregation server {sid - COORDINATOR} did not answer at stage"
                                    f" {stage!r} ({why}); every server's share of the sum is needed")
        return got

    @staticmethod
    def _server_reply(cls: type[M], data: bytes, rnd: int, sid: int, stage: str) -> M:
        try:
            return cls.from_bytes(data, expect_round=rnd, expect_sender=sid)
        except MalformedMessageError as exc:
            raise ProtocolAbort(f"round {rnd}: aggregation server {sid - COORDINATOR} answered stage {stage!r}"
                                f" badly ({exc})") from None

    def _refusal(self, client: int, j: int, what: str) -> str:
        if j == 0 and client in self.server.rejected:
            return f"aggregation server 0 refused its {what} share: {self.server.rejected[client]}"
        return f"aggregation server {j} refused its {what} share"
