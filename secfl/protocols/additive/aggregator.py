"""An ``additive`` aggregation server: its round key, its running sum, the shares it accepted.

Aggregation server ``j`` (party id ``server_id(j)``) draws a fresh X25519 key per round, opens
the shares sealed to it, keeps a running sum mod ``2**k`` (a seed share is expanded and added,
its 32-byte seed kept in case the client is excluded later; a vector share is added and not
kept), and finally sends one partial sum over the agreed included set. Across sites server 0
lives inside the coordinator (:class:`~secfl.protocols.additive.stages.AdditiveCoordinator`),
which combines the partial sums; servers 1..S−1 are separate sites that answer, stage by stage:

- ``additive.keys`` — ``ROUND_REQUEST`` → ``ADD_SERVER_KEY`` (opens the round, fresh key);
- ``additive.seeds`` — ``ADD_SHARE_BATCH`` (seed shares) → ``ADD_INCLUDED_SET`` (those it committed);
- ``additive.vectors`` — ``ADD_SHARE_BATCH`` (vector shares) → ``ADD_INCLUDED_SET``;
- ``additive.reveal`` — ``ADD_INCLUDED_SET`` (the agreed set) → ``ADD_PARTIAL_SUM``.

A share that fails to parse or open costs only its client. A server produces at most one
partial sum per round: two over sets that differ in one client would hand the combiner that
client's share.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from secfl.crypto.encoding import WeightedEncoder
from secfl.crypto.identity import IdentityKey
from secfl.crypto.keys import SEAL_OVERHEAD, PrivateKey, PublicKey, agree, open_sealed
from secfl.crypto.prg import SEED_BYTES
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import expand_share
from secfl.dp import IntegerMechanism
from secfl.errors import ConfigError, DuplicateSenderError, MalformedMessageError, ProtocolAbort, SecFLError
from secfl.protocols.additive.messages import (
    AddIncludedSet,
    AddPartialSum,
    AddServerKey,
    AddShare,
    AddShareBatch,
    ShareKind,
    ids_digest,
    server_key_signed,
)
from secfl.protocols.additive.options import (
    KDF_LABEL,
    KEYS_STAGE,
    REVEAL_STAGE,
    SEEDS_STAGE,
    VECTORS_STAGE,
    AdditiveOptions,
    check_client_ids,
    holder,
)
from secfl.protocols.dp_encoding import DPEncoder, round_encoder
from secfl.protocols.network import server_id
from secfl.protocols.parties import Party, RoundRequest

__all__ = ["AdditiveAggregator", "COORDINATOR"]

#: Party id of the coordinator (it plays aggregation server 0)
COORDINATOR = server_id(0)


#: the longest update an aggregation server sums (2^28 parameters: a 2 GiB running sum)
MAX_DIM = 1 << 28


class AdditiveAggregator(Party):
    """Aggregation server ``index``: holds only its own round key and what was sealed to it."""

    def __init__(self, index: int, options: AdditiveOptions, dp: IntegerMechanism | None = None,
                 identity: IdentityKey | None = None) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < options.servers:
            raise ConfigError(f"additive has aggregation servers 0..{options.servers - 1}, not {index!r}")
        self.index = index
        self._identity = identity  # signs the round key (servers 1..S-1 at sites)
        self.id = self.party_id = server_id(index)
        self._opt = options
        self._dp = dp
        self.round = -1
        self.participants: frozenset[int] = frozenset()
        self.length = 0
        self.ring = Ring(options.modulus_bits)
        self.key: PrivateKey | None = None  # drawn per round by advertise()
        self.sum = self.ring.zeros(0)
        #: client -> its seed (to undo if the client is excluded) or None for a vector share
        self.accepted: dict[int, bytes | None] = {}
        #: client -> why its share was refused in this round
        self.rejected: dict[int, str] = {}
        self._closed = True

    def __repr__(self) -> str:
        return f"AdditiveAggregator({self.index}, round={self.round}, accepted={len(self.accepted)})"

    # -- the round -----------------------------------------------------------------------------------

    def open_round(self, rnd: int, participants: frozenset[int], dim: int,
                   encoder: WeightedEncoder | DPEncoder | None = None) -> None:
        """Start round ``rnd`` (forgetting any earlier one); refuses an overflowing configuration."""
        check_client_ids(sorted(participants))
        if not 1 <= dim <= MAX_DIM:
            raise MalformedMessageError(f"aggregation server {self.index}: update length {dim} outside [1, {MAX_DIM}]"
                                        f" (a running sum of that size would not fit in memory)")
        enc = round_encoder(self._opt, len(participants), self._dp) if encoder is None else encoder
        self.round = rnd
        self.participants = frozenset(participants)
        self.length = enc.length(dim)
        self.ring = enc.ring
        self.sum = self.ring.zeros(self.length)
        self.accepted = {}
        self.rejected = {}
        self.key = None
        self._closed = False

    def advertise(self) -> bytes:
        """``ADD_SERVER_KEY``: a fresh X25519 key for this round."""
        self.key = PrivateKey.generate()
        raw = self.key.public_key.raw
        sig = self._identity.sign(server_key_signed(self.round, self.index, raw)) if self._identity else b""
        return AddServerKey(self.round, self.id, raw, sig).to_bytes()

    def expected_kind(self, client: int) -> ShareKind:
        return ShareKind.VECTOR if holder(client, self._opt.servers) == self.index else ShareKind.SEED

    def open_share(self, client: int, data: bytes, expect: ShareKind) -> tuple[ShareKind, bytes]:
        """Parse and decrypt ``client``'s share; returns ``(kind, plaintext)`` or raises."""
        msg = AddShare.from_bytes(data, expect_round=self.round, expect_sender=client)
        if msg.recipient != self.id:
            raise MalformedMessageError(f"ADD_SHARE addressed to party {msg.recipient}, delivered to {self.id}")
        if msg.kind is not expect:
            raise MalformedMessageError(
                f"client {client} sent a {msg.kind.name} share to server {self.index}; the rule (client mod S) "
                f"says {expect.name}"
            )
        want = self.ring.nbytes * self.length if expect is ShareKind.VECTOR else SEED_BYTES
        if expect is ShareKind.VECTOR and msg.length != self.length:
            raise MalformedMessageError(f"ADD_SHARE: {msg.length} elements, this round has {self.length}")
        if len(msg.sealed) != want + SEAL_OVERHEAD:
            raise MalformedMessageError(
                f"ADD_SHARE: sealed share of {len(msg.sealed)} bytes, expected {want + SEAL_OVERHEAD}"
            )
        if self.key is None:
            raise ProtocolAbort(f"server {self.index} has no key: run setup() first")
        key = agree(self.key, PublicKey(msg.ephemeral), KDF_LABEL, self.round, client, self.id)
        plain = open_sealed(key, msg.sealed, msg.associated_data(), what=f"client {client}'s share")
        return msg.kind, plain

    def share_vector(self, kind: ShareKind, plain: bytes) -> np.ndarray:
        if kind is ShareKind.SEED:
            return expand_share(plain, self.length, self.ring)
        return self.ring.unpack(plain, self.length, what="vector share")

    def accept(self, client: int, kind: ShareKind, plain: bytes, vector: np.ndarray | None = None) -> None:
        if self._closed:
            raise ProtocolAbort(f"server {self.index}: round {self.round} is closed to shares")
        if client in self.accepted:
            raise DuplicateSenderError(f"server {self.index} already holds a share of client {client}")
        self.ring.add_(self.sum, self.share_vector(kind, plain) if vector is None else vector)
        self.accepted[client] = plain if kind is ShareKind.SEED else None

    def take_batch(self, batch: AddShareBatch) -> bytes:
        """Open and commit each relayed share of one kind; ``ADD_INCLUDED_SET`` of those committed.
        A share that fails costs only its client."""
        if self._closed or self.key is None:
            raise ProtocolAbort(f"server {self.index}: no open round {batch.round} to take shares for")
        taken = []
        for cid, data in zip(batch.clients, batch.shares, strict=True):
            c = int(cid)
            try:
                if c not in self.participants:
                    raise MalformedMessageError(f"client {c} is not a participant of round {self.round}")
                if c in self.accepted or c in self.rejected:
                    raise DuplicateSenderError(f"server {self.index} already saw a share of client {c}")
                expect = self.expected_kind(c)
                if expect is not batch.kind:
                    raise MalformedMessageError(f"client {c}'s share for server {self.index} is a {expect.name}"
                                                f" share, relayed in a {batch.kind.name} batch")
                kind, plain = self.open_share(c, data, expect)
                self.accept(c, kind, plain)
                taken.append(c)
            except SecFLError as exc:
                self.rejected.setdefault(c, f"{type(exc).__name__}: {exc}")
        return AddIncludedSet(self.round, self.id, np.asarray(taken, dtype=np.uint32)).to_bytes()

    def restrict_to(self, included: set[int]) -> None:
        """Remove every accepted client outside ``included`` (re-expanding its seed)."""
        for client in sorted(set(self.accepted) - included):
            seed = self.accepted.pop(client)
            if seed is None:
                raise ProtocolAbort(
                    f"server {self.index} committed client {client}'s vector share but the servers excluded the "
                    "client; the vector holder must commit last"
                )
            self.ring.sub_(self.sum, expand_share(seed, self.length, self.ring))

    def _close(self, ids: np.ndarray) -> None:
        """Fix the included set: restrict the sum to it, once per round."""
        if self._closed:
            raise ProtocolAbort(f"server {self.index} already closed round {self.round} (one partial sum per round)")
        included = {int(c) for c in ids}
        if not included:
            raise ProtocolAbort(f"round {self.round}: the included set is empty")
        self.restrict_to(included)
        missing = sorted(included - set(self.accepted))
        if missing:
            raise ProtocolAbort(f"server {self.index} holds no share of included client(s) {missing[:5]}")
        self._closed = True

    def finish(self, ids: np.ndarray) -> bytes:
        """``ADD_PARTIAL_SUM`` over the agreed included set ``ids`` (sorted)."""
        self._close(ids)
        return AddPartialSum(self.round, self.id, len(ids), ids_digest(ids), self.ring.bits, self.length,
                             self.ring.pack(self.sum)).to_bytes()

    def combine(self, ids: np.ndarray, partials: Mapping[int, bytes]) -> np.ndarray:
        """Server 0: close the round over ``ids`` and add every other server's ``ADD_PARTIAL_SUM``
        to its own sum; returns the integer sum mod ``2**k`` of the included clients' codes."""
        if self.index != 0:
            raise ConfigError("only aggregation server 0 combines the partial sums")
        self._close(ids)
        digest = ids_digest(ids)
        total = np.array(self.sum, copy=True)
        for j in range(1, self._opt.servers):
            sid = server_id(j)
            if sid not in partials:
                raise ProtocolAbort(f"round {self.round}: no partial sum from server {j}")
            part = AddPartialSum.from_bytes(partials[sid], expect_round=self.round, expect_sender=sid)
            if part.count != len(ids) or part.digest != digest:
                raise ProtocolAbort(f"server {j}'s partial sum covers a different set of clients")
            if part.modulus_bits != self.ring.bits or part.length != self.length:
                raise MalformedMessageError(f"server {j}'s partial sum has the wrong shape")
            self.ring.add_(total, self.ring.unpack(part.packed, self.length, what="partial sum"))
        return total

    # -- across sites ------------------------------------------------------------------------------

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage == KEYS_STAGE:
            req = RoundRequest.from_bytes(request, expect_sender=COORDINATOR)
            self.open_round(req.round, frozenset(int(c) for c in req.participants), req.dim)
            return self.advertise()
        if stage in (SEEDS_STAGE, VECTORS_STAGE):
            batch = AddShareBatch.from_bytes(request, expect_round=self.round, expect_sender=COORDINATOR)
            want = ShareKind.SEED if stage == SEEDS_STAGE else ShareKind.VECTOR
            if batch.kind is not want:
                raise MalformedMessageError(f"stage {stage!r} relays {want.name} shares, got {batch.kind.name}")
            return self.take_batch(batch)
        if stage == REVEAL_STAGE:
            msg = AddIncludedSet.from_bytes(request, expect_round=self.round, expect_sender=COORDINATOR)
            if self.index == 0:
                raise MalformedMessageError("server 0 combines the partial sums; it sends none")
            return self.finish(np.asarray(msg.clients, dtype=np.uint32))
        raise MalformedMessageError(f"additive aggregation server: unknown stage {stage!r}")
