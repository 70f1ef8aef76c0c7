"""The ``ckks-threshold`` server's stage sequence across sites (any
:class:`~secfl.protocols.parties.Transport`).

Per round, in order (each stage: send, collect the replies that arrive before the deadline, go on
with whoever answered):

0. Key generation, in the first round and whenever the key's decryption budget τ would run out:

   - ``thr.hello`` — every member: ``THR_KEYGEN_REQUEST`` → ``THR_MEMBER_HELLO``.
   - ``thr.deal`` — every member that said hello: ``THR_ROSTER`` → ``THR_DEALING`` (its
     ``THR_PUBKEY_SHARE`` and its ``THR_SHAMIR_SHARES``, each share sealed for its recipient).
   - ``thr.key`` — every roster member that answered ``thr.deal``: ``THR_KEY_DELIVERY`` (the
     sealed shares addressed to it, relayed unopened, and ``THR_COLLECTIVE_KEY``) →
     ``THR_KEY_ACK`` (whether it holds a share).

1. ``thr.upload`` — every participant: ``THR_UPLOAD_REQUEST`` (with ``THR_COLLECTIVE_KEY`` the
   first time under each key) → ``THR_UPDATE``, parsed and added as it arrives; a bad upload drops
   its sender.
2. ``thr.ready`` — every member holding a key share (except ``quorum_dropouts``):
   ``THR_DECRYPT_REQUEST`` → ``THR_READY`` (a member that will not decrypt does not answer).
3. ``thr.partial`` — the t members of an active set: ``THR_PARTIAL_REQUEST`` →
   ``THR_PARTIAL_DECRYPTION``; when one fails, a disjoint active set of ready members is tried,
   until fewer than t remain (:class:`~secfl.errors.InsufficientQuorumError`, nothing decoded).

The server then combines the t partials and decodes the mean (it is the combiner: it learns the
aggregate, as in the in-process round).

Security: as in :mod:`secfl.protocols.ckks_threshold` — the coordinator holds public material only
(the collective key, digests, ciphertexts, flooded partial decryptions); the Shamir shares it
relays are AES-256-GCM blobs sealed member to member. Against a relay that swaps the members'
X25519 keys in the roster the members need authenticated identities (the federation roster).
"""

from __future__ import annotations

import numpy as np

from secfl.errors import ProtocolAbort, SecFLError
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.ckks_threshold.client import UPLOAD
from secfl.protocols.ckks_threshold.member import DEAL, HELLO, KEY, PARTIAL, READY
from secfl.protocols.ckks_threshold.messages import ThrDealing, ThrKeyDelivery, ThrPartialRequest, ThrUploadRequest
from secfl.protocols.ckks_threshold.options import CkksThresholdOptions, round_codec
from secfl.protocols.ckks_threshold.server import SERVER, ThresholdServer
from secfl.protocols.network import member_id
from secfl.protocols.parties import Coordinator, Transport

__all__ = ["ThresholdCoordinator", "SITE_STAGES", "HELLO", "DEAL", "KEY", "UPLOAD", "READY", "PARTIAL"]

#: the coordinator's stages in order (the first three only when a key is generated)
SITE_STAGES = (HELLO, DEAL, KEY, UPLOAD, READY, PARTIAL)


class ThresholdCoordinator(Coordinator):
    """The server across sites: its :class:`ThresholdServer` (public material only), and which
    clients already hold the current key."""

    UPLOAD_STAGE = UPLOAD

    def __init__(self, options: CkksThresholdOptions) -> None:
        self.options = options
        self.params = options.resolved_params()
        self.server = ThresholdServer(options, self.params)
        #: clients holding the current collective key (reset when a new key is generated)
        self.provisioned: set[int] = set()
        #: party -> why it dropped out of the latest round (clients) or of its key generation /
        #: decryption (members, by party id)
        self.dropped: dict[int, str] = {}
        #: the active set whose partials were combined in the latest round
        self.active_set: tuple[int, ...] = ()

    @property
    def error_bound(self) -> float | None:
        """Bound on |revealed mean − exact weighted mean| per coordinate, latest round."""
        return self.server.error_bound

    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        rnd, clients = spec.round, tuple(sorted(spec.clients))
        participants = frozenset(clients)
        self.dropped, self.active_set = {}, ()
        round_codec(self.options, self.params, spec.dim, len(clients))  # refuses an overflowing round first
        server = self.server
        if server.needs_keygen(self.params.ciphertexts_for(spec.dim + 1)):
            self._keygen(rnd, transport)
        # 1: uploads, added as they arrive
        server.open_round(rnd, participants, spec.dim)
        key = server.key
        if key is None:
            raise ProtocolAbort(f"round {rnd}: no collective key")
        ids = np.asarray(clients, dtype=np.uint32)
        key_msg = server.client_key_message(rnd)
        requests = {c: ThrUploadRequest(rnd, SERVER, ids, spec.dim, key.key_id,
                                        b"" if c in self.provisioned else key_msg).to_bytes() for c in clients}
        for c, data in transport.exchange(UPLOAD, requests).items():
            try:
                server.intake(c, data)
            except SecFLError as exc:
                self.dropped[c] = f"{type(exc).__name__}: {exc}"
                continue
            self.provisioned.add(c)
        for c in clients:
            if c not in server.accepted:
                self.dropped.setdefault(c, transport.failures.get(c, "no reply"))
                self.provisioned.discard(c)  # a restarted client gets the key again next round
        # 2: who is ready to decrypt this aggregate
        poll = server.decrypt_request()
        offline = set(self.options.quorum_dropouts)
        asked = [j for j in server.dealers if j not in offline]
        got = transport.exchange(READY, {member_id(j): poll for j in asked})
        ready: list[int] = []
        for j in asked:
            answer = got.get(member_id(j))
            if answer is None:
                continue
            try:
                if server.accept_ready(j, answer):
                    ready.append(j)
            except SecFLError as exc:
                self._drop(j, exc)

        # 3: partial decryptions from fixed active sets
        def ask(active: tuple[int, ...], request: bytes) -> dict[int, bytes | str]:
            wrapped = ThrPartialRequest(rnd, SERVER, len(clients), request).to_bytes()
            replies = transport.exchange(PARTIAL, {member_id(j): wrapped for j in active})
            out: dict[int, bytes | str] = {}
            for j in active:
                reply = replies.get(member_id(j))
                out[j] = reply if reply is not None else transport.failures.get(member_id(j), "no reply")
            return out

        self.active_set, partials = server.decrypt(ready, ask)
        return server.reveal(self.active_set, partials)

    def _keygen(self, rnd: int, transport: Transport) -> None:
        """Stages ``thr.hello``, ``thr.deal``, ``thr.key``: the server relays, members deal. A
        member that does not answer, or whose reply fails, is left out (recorded in :attr:`dropped`)."""
        server, n = self.server, self.options.quorum[1]
        self.provisioned = set()
        request = server.begin_keygen(rnd)
        got = transport.exchange(HELLO, {member_id(j): request for j in range(n)})
        for j in range(n):
            if member_id(j) in got:
                try:
                    server.accept_hello(j, got[member_id(j)])
                except SecFLError as exc:
                    self._drop(j, exc)
        roster, ros = server.roster_message()
        got = transport.exchange(DEAL, {member_id(j): ros for j in roster})
        for j in roster:
            if member_id(j) in got:
                try:
                    msg = ThrDealing.from_bytes(got[member_id(j)], expect_round=rnd, expect_sender=member_id(j))
                    server.accept_dealing(j, msg.pubkey_share, msg.shamir_shares)
                except SecFLError as exc:
                    self._drop(j, exc)
        key_msg = server.dealing_done()
        answered = [j for j in roster if member_id(j) in got]  # a member silent at thr.deal is not asked again
        got = transport.exchange(KEY, {member_id(j): ThrKeyDelivery(rnd, SERVER, server.forward(j), key_msg).to_bytes()
                                       for j in answered})
        for j in answered:
            if member_id(j) in got:
                try:
                    server.accept_ack(j, got[member_id(j)])
                except SecFLError as exc:
                    self._drop(j, exc)
        server.finish_keygen()

    def _drop(self, j: int, exc: SecFLError) -> None:
        self.dropped[member_id(j)] = f"{type(exc).__name__}: {exc}"
