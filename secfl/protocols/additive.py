"""``additive`` — additive secret sharing across S ≥ 2 non-colluding aggregation servers.

Rounds (spec: ``protocols/additive.md``):
  0. *Setup.* Each server ``j`` draws a fresh X25519 key and sends ``ADD_SERVER_KEY`` to every
     client.
  1. *Share.* Client ``c`` encodes ``(x, n)`` as ``d + 1`` integers mod ``2**k``
     (:class:`~secfl.crypto.encoding.WeightedEncoder`: the weight is the last element) and
     splits them into S additive shares: S − 1 expanded from fresh 32-byte seeds by AES-CTR, the
     residual ``codes − Σ PRG(seed)`` a full vector. The vector goes to server ``c mod S`` (the
     load is spread), a seed to every other server. Each share travels in one ``ADD_SHARE``
     message, sealed with AES-256-GCM under ``HKDF(X25519(e_c, pk_j))`` (``e_c`` a per-round
     ephemeral client key whose public half rides in the message, HPKE-style), the associated
     data binding protocol, round, client, server, share kind and length.
  2. *Accumulate.* Each server opens its share, expands a seed, and adds it to a running sum
     (it keeps the 32-byte seed, never the vector). A client's share is committed only when all
     its shares opened; the vector holder commits last, so no server ever has to remove a
     vector.
  3. *Agree.* Servers exchange ``ADD_INCLUDED_SET``; the included set is the intersection. A seed
     share of a client outside it is re-expanded and subtracted.
  4. *Reveal.* Servers 1..S−1 send ``ADD_PARTIAL_SUM`` (with the included-set digest) to
     server 0, which adds the partial sums mod ``2**k`` and decodes the weighted mean.

Security: every share a server sees is uniform mod ``2**k`` and independent of the update unless
it also holds the other S − 1 shares: any coalition of up to S − 1 servers (and any number of
clients) learns nothing beyond the aggregate; all S servers together read every update. A
partial sum is likewise uniform. Weights are shared with the update, so no server sees one.
Dropouts are free (a client that never uploads is simply not summed); a server that drops
aborts the round. Semi-honest servers are assumed: a malicious server can bias the result.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from secfl.crypto.encoding import check_quantization_options
from secfl.crypto.keys import KEY_BYTES, SEAL_OVERHEAD, PrivateKey, PublicKey, agree, open_sealed, seal
from secfl.crypto.prg import SEED_BYTES, Prg, derive_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import additive_split, expand_share
from secfl.dp import IntegerMechanism
from secfl.errors import ConfigError, DuplicateSenderError, MalformedMessageError, ProtocolAbort, SecFLError
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload, check_update
from secfl.protocols.dp_encoding import IntegerDP, round_encoder
from secfl.protocols.network import Network, server_id
from secfl.protocols.secagg import PhaseClock
from secfl.protocols.wire import WIRE_VERSION, Message, MsgType, Reader, Writer

__all__ = [
    "AdditiveOptions",
    "ShareKind",
    "AddServerKey",
    "AddShare",
    "AddIncludedSet",
    "AddPartialSum",
    "Additive",
    "MAX_SERVERS",
]

MAX_SERVERS = 64
_KDF_LABEL = "secfl/additive/share-key"


@dataclass(frozen=True)
class AdditiveOptions:
    """Options of ``additive``.

    ``servers``: S ≥ 2 aggregators (privacy holds unless all S collude).
    ``clip_range`` r: updates are clamped to ±r before quantization.
    ``bits``: quantization width; ``None`` picks the largest width (≤ 30) whose sum over this
    round's clients cannot wrap mod ``2**modulus_bits``; an explicit width that can wrap is refused.
    ``modulus_bits`` k: arithmetic mod ``2**k``; a share element takes ``ceil(k/8)`` bytes on the
    wire (32 → 4 bytes/parameter).
    ``max_weight`` W: public bound on a client's weight; a client refuses a larger one. The
    revealed mean's error bound grows with ``W / mean weight`` (see ``protocols/additive.md``).
    """

    servers: int = 2
    clip_range: float = 8.0
    bits: int | None = None
    modulus_bits: int = 32
    max_weight: float = 4096.0

    def __post_init__(self) -> None:
        if isinstance(self.servers, bool) or not isinstance(self.servers, int) or not 2 <= self.servers <= MAX_SERVERS:
            raise ConfigError(f"additive.servers must be an integer in [2, {MAX_SERVERS}], got {self.servers!r}")
        check_quantization_options("additive", self.clip_range, self.bits, self.modulus_bits, self.max_weight)


class ShareKind(IntEnum):
    SEED = 1
    VECTOR = 2


# ------------------------------------------------------------------------------------ messages
@dataclass(frozen=True)
class AddServerKey(Message):
    """Server j → client: the server's X25519 public key for this round."""

    TYPE = MsgType.ADD_SERVER_KEY
    round: int
    sender: int
    public_key: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.public_key)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddServerKey:
        pk = r.blob(KEY_BYTES)
        if len(pk) != KEY_BYTES:
            raise MalformedMessageError(f"ADD_SERVER_KEY: a public key is {KEY_BYTES} bytes, got {len(pk)}")
        return cls(round, sender, pk)


@dataclass(frozen=True)
class AddShare(Message):
    """Client → server j: one additive share, sealed to that server.

    ``length`` is the number of ring elements (0 for a seed share); ``sealed`` is
    ``nonce ‖ AES-GCM(share) ‖ tag``.
    """

    TYPE = MsgType.ADD_SHARE
    round: int
    sender: int
    recipient: int
    ephemeral: bytes
    kind: ShareKind
    length: int
    sealed: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.recipient).blob(self.ephemeral).u8(int(self.kind)).u64(self.length).blob(self.sealed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddShare:
        recipient = r.u32()
        eph = r.blob(KEY_BYTES)
        if len(eph) != KEY_BYTES:
            raise MalformedMessageError(f"ADD_SHARE: ephemeral key must be {KEY_BYTES} bytes, got {len(eph)}")
        try:
            kind = ShareKind(r.u8())
        except ValueError:
            raise MalformedMessageError("ADD_SHARE: unknown share kind") from None
        length = r.u64()
        if kind is ShareKind.SEED and length != 0:
            raise MalformedMessageError("ADD_SHARE: a seed share has length 0")
        sealed = r.blob()
        return cls(round, sender, recipient, eph, kind, length, sealed)

    def associated_data(self) -> bytes:
        return share_ad(self.round, self.sender, self.recipient, self.kind, self.length)


def share_ad(rnd: int, client: int, server: int, kind: ShareKind, length: int) -> bytes:
    """Associated data of a sealed share: protocol, wire version, round, client, server, kind, length."""
    return b"secfl/additive/share" + struct.pack("<BIIIBQ", WIRE_VERSION, rnd, client, server, int(kind), length)


def _ids_digest(ids: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<u4").tobytes()).digest()


def _read_ids(r: Reader, what: str) -> np.ndarray:
    ids = r.array("uint32").astype(np.int64)
    if ids.size > 1 and not np.all(np.diff(ids) > 0):
        raise MalformedMessageError(f"{what}: client ids must be strictly increasing")
    return ids


@dataclass(frozen=True)
class AddIncludedSet(Message):
    """Server → server: the clients whose shares this server accepted (sorted ids)."""

    TYPE = MsgType.ADD_INCLUDED_SET
    round: int
    sender: int
    clients: np.ndarray

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.clients, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddIncludedSet:
        return cls(round, sender, _read_ids(r, "ADD_INCLUDED_SET"))


@dataclass(frozen=True)
class AddPartialSum(Message):
    """Server j → server 0: its partial sum over the agreed included set."""

    TYPE = MsgType.ADD_PARTIAL_SUM
    round: int
    sender: int
    count: int
    digest: bytes
    modulus_bits: int
    length: int
    packed: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.count).blob(self.digest).u8(self.modulus_bits).u64(self.length).blob(self.packed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddPartialSum:
        count = r.u32()
        digest = r.blob(32)
        if len(digest) != 32:
            raise MalformedMessageError("ADD_PARTIAL_SUM: the included-set digest is 32 bytes")
        return cls(round, sender, count, digest, r.u8(), r.u64(), r.blob())


# ------------------------------------------------------------------------------------ parties
class _Aggregator:
    """One aggregation server: its key, its running sum, what it accepted."""

    def __init__(self, index: int, rnd: int, length: int, ring: Ring) -> None:
        self.index = index
        self.id = server_id(index)
        self.round = rnd
        self.length = length
        self.ring = ring
        self.key: PrivateKey | None = None  # drawn in setup()
        self.sum = ring.zeros(length)
        #: client -> its seed (to undo if the client is excluded) or None for a vector share
        self.accepted: dict[int, bytes | None] = {}

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
        key = agree(self.key, PublicKey(msg.ephemeral), _KDF_LABEL, self.round, client, self.id)
        plain = open_sealed(key, msg.sealed, msg.associated_data(), what=f"client {client}'s share")
        return msg.kind, plain

    def share_vector(self, kind: ShareKind, plain: bytes) -> np.ndarray:
        if kind is ShareKind.SEED:
            return expand_share(plain, self.length, self.ring)
        return self.ring.unpack(plain, self.length, what="vector share")

    def accept(self, client: int, kind: ShareKind, plain: bytes, vector: np.ndarray | None = None) -> None:
        if client in self.accepted:
            raise DuplicateSenderError(f"server {self.index} already holds a share of client {client}")
        self.ring.add_(self.sum, self.share_vector(kind, plain) if vector is None else vector)
        self.accepted[client] = plain if kind is ShareKind.SEED else None

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
        self._participants = frozenset(spec.clients)
        if any(not 0 <= c < server_id(0) for c in spec.clients):
            raise ConfigError("client ids must be in [0, 2**31)")
        self.encoder = round_encoder(options, len(spec.clients), dp)
        self.ring = self.encoder.ring
        self._length = self.encoder.length(spec.dim)
        self._servers = [_Aggregator(j, spec.round, self._length, self.ring) for j in range(options.servers)]
        self._server_keys: dict[int, tuple[PublicKey, ...]] = {}
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
        if self.spec.seed is None:
            return Prg()
        return Prg(derive_seed(self.spec.seed, "additive/dither", self.spec.round, client))

    def party_state(self, party: int) -> dict[str, Any]:
        """Aggregation server ``j``: its aggregator (X25519 key, accepted shares, running sum)."""
        found = [srv for srv in self._servers if srv.id == party]
        return {"aggregator": found[0]} if found else {}

    def holder(self, client: int) -> int:
        """Index of the server that receives ``client``'s vector share."""
        return client % self._opt.servers

    # -------------------------------------------------------------------------- step 0
    def setup(self) -> None:
        clock = self._clock
        wires = []
        with clock("server"):
            for srv in self._servers:
                srv.key = PrivateKey.generate()
                wires.append(AddServerKey(self.spec.round, srv.id, srv.key.public_key.raw).to_bytes())
        for c in self.spec.clients:
            keys = []
            with clock("client"):
                for srv, wire in zip(self._servers, wires, strict=True):
                    got = AddServerKey.from_bytes(self.net.send(srv.id, c, wire), expect_round=self.spec.round,
                                                  expect_sender=srv.id)
                    keys.append(PublicKey(got.public_key))
            self._server_keys[c] = tuple(keys)

    @property
    def seconds(self) -> dict[str, float]:
        """Compute seconds spent inside setup() and reveal(), split into client and server side."""
        return dict(self._clock.seconds)

    # -------------------------------------------------------------------------- step 1 (client)
    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if client not in self._participants:
            raise ConfigError(f"client {client} is not a participant of round {self.spec.round}")
        keys = self._server_keys.get(client)
        if keys is None:
            raise ProtocolAbort(f"client {client} has no server keys: run setup() first")
        vec = check_update(update, self.spec.dim, who=f"client {client} update")
        codes = self.encoder.encode(vec, weight, self.dither(client))
        residual, seeds = additive_split(codes, self.ring, self.servers)
        eph = PrivateKey.generate()
        parts = []
        holder = self.holder(client)
        seed_iter = iter(seeds)
        for j, pk in enumerate(keys):
            sid = server_id(j)
            if j == holder:
                kind, length, plain = ShareKind.VECTOR, self._length, self.ring.pack(residual)
            else:
                kind, length, plain = ShareKind.SEED, 0, next(seed_iter)
            key = agree(eph, pk, _KDF_LABEL, self.spec.round, client, sid)
            sealed = seal(key, plain, share_ad(self.spec.round, client, sid, kind, length))
            msg = AddShare(self.spec.round, client, sid, eph.public_key.raw, kind, length, sealed)
            parts.append((sid, msg.to_bytes()))
        return Upload(tuple(parts))

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
        holder = self.holder(client)
        opened = []
        for srv in self._servers:  # every server opens and checks its own share first ...
            kind = ShareKind.VECTOR if srv.index == holder else ShareKind.SEED
            k, plain = srv.open_share(client, by_server[srv.id], kind)
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
        digest = _ids_digest(ids)
        # 4. partial sums to server 0
        combiner = self._servers[0]
        total = np.array(combiner.sum, copy=True)
        for srv in self._servers[1:]:
            wire = AddPartialSum(rnd, srv.id, len(ids), digest, self.ring.bits, self._length,
                                 self.ring.pack(srv.sum)).to_bytes()
            part = AddPartialSum.from_bytes(self.net.send(srv.id, combiner.id, wire), expect_round=rnd,
                                            expect_sender=srv.id)
            if part.count != len(ids) or part.digest != digest:
                raise ProtocolAbort(f"server {srv.index}'s partial sum covers a different set of clients")
            if part.modulus_bits != self.ring.bits or part.length != self._length:
                raise MalformedMessageError(f"server {srv.index}'s partial sum has the wrong shape")
            self.ring.add_(total, self.ring.unpack(part.packed, self._length, what="partial sum"))
        self.integer_sum = total
        mean, total_weight, bound = self.encoder.decode(total, len(ids))
        self.error_bound = bound
        acc = tuple(int(c) for c in ids)
        dropped = tuple(sorted(self._participants - included))
        return Revealed(mean, total_weight, acc, dropped)


class Additive(IntegerDP, Protocol):
    """Additive secret sharing over S non-colluding servers (private unless all S collude)."""

    name = "additive"
    summary = "additive secret sharing across S non-colluding servers; private unless all S collude"
    reveals_to = "the aggregation servers (server 0 combines the S partial sums)"
    Options = AdditiveOptions

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _AdditiveRound(spec, net, self.options, self._dp)
