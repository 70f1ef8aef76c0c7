"""``additive`` messages: every byte that crosses a party boundary (spec: ``protocols/additive.md``).

Frames are :mod:`secfl.protocols.wire` frames; each payload is parsed strictly. The first four
are the protocol's own messages (in the simulator they travel directly between the parties);
the last three carry them across sites, where every message goes through the coordinator:

- ``ADD_SERVER_KEY`` — aggregation server j → client: its X25519 key for this round.
- ``ADD_SHARE`` — client → server j: one additive share, sealed to server j (AES-256-GCM under
  ``HKDF(X25519(e_c, pk_j))``), so the coordinator relaying it cannot open it.
- ``ADD_INCLUDED_SET`` — server → server: the clients whose shares it accepted; across sites also
  coordinator → server: the agreed included set a partial sum must cover.
- ``ADD_PARTIAL_SUM`` — server j → server 0 (the coordinator across sites).
- ``ADD_UPLOAD_REQUEST`` — coordinator → client: the round, its participants, the dither seed and
  the S relayed ``ADD_SERVER_KEY`` messages.
- ``ADD_UPLOAD`` — client → coordinator: its S sealed ``ADD_SHARE`` messages.
- ``ADD_SHARE_BATCH`` — coordinator → server j: the sealed shares addressed to it (seed shares,
  or vector shares), relayed unopened.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from secfl.crypto.identity import SIGNATURE_BYTES, signed_bytes
from secfl.crypto.keys import KEY_BYTES
from secfl.crypto.prg import SEED_BYTES
from secfl.errors import MalformedMessageError
from secfl.protocols.additive.options import MAX_SERVERS
from secfl.protocols.wire import WIRE_VERSION, Message, MsgType, Reader, Writer

__all__ = [
    "server_key_signed",
    "ShareKind", "AddServerKey", "AddShare", "AddIncludedSet", "AddPartialSum", "AddUploadRequest",
    "AddUpload", "AddShareBatch", "share_ad", "ids_digest",
]

MAX_BLOB = 1 << 34
_MAX_PARTIES = 1 << 20
_MAX_KEY_MESSAGE = 256  # an ADD_SERVER_KEY frame is 64 bytes, 136 with its signature


class ShareKind(IntEnum):
    SEED = 1
    VECTOR = 2


def _sorted_ids(r: Reader, what: str, *, allow_empty: bool = True) -> np.ndarray:
    """A strictly increasing u32 id list (length checked before anything is allocated)."""
    raw = r.array("uint32")  # a view of the payload: nothing allocated yet
    if raw.size > _MAX_PARTIES:
        raise MalformedMessageError(f"{what}: {raw.size} client ids, at most {_MAX_PARTIES}")
    if raw.size == 0 and not allow_empty:
        raise MalformedMessageError(f"{what}: no client ids")
    ids = raw.astype(np.int64)
    if ids.size > 1 and not np.all(np.diff(ids) > 0):
        raise MalformedMessageError(f"{what}: client ids must be strictly increasing")
    return ids


def ids_digest(ids: np.ndarray) -> bytes:
    """SHA-256 of a sorted id set (u32 little-endian): what a partial sum says it covers."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<u4").tobytes()).digest()


def _blobs(w: Writer, blobs: tuple[bytes, ...]) -> None:
    w.u32(len(blobs))
    for b in blobs:
        w.blob(b)


def _read_blobs(r: Reader, most: int, max_len: int = MAX_BLOB) -> tuple[bytes, ...]:
    n = r.count(r.u32(), 8, "embedded messages", most)  # each has at least its u64 length
    return tuple(r.blob(max_len) for _ in range(n))


@dataclass(frozen=True)
class AddServerKey(Message):
    """Server j → client: the server's X25519 public key for this round and (with a federation
    roster, servers 1..S−1) its identity key's signature of it (:func:`server_key_signed`)."""

    TYPE = MsgType.ADD_SERVER_KEY
    round: int
    sender: int
    public_key: bytes
    signature: bytes = b""

    def _write(self, w: Writer) -> None:
        w.blob(self.public_key).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddServerKey:
        pk = r.blob(KEY_BYTES)
        if len(pk) != KEY_BYTES:
            raise MalformedMessageError(f"ADD_SERVER_KEY: a public key is {KEY_BYTES} bytes, got {len(pk)}")
        sig = r.blob(SIGNATURE_BYTES)
        if len(sig) not in (0, SIGNATURE_BYTES):
            raise MalformedMessageError(f"ADD_SERVER_KEY: a signature is {SIGNATURE_BYTES} bytes")
        return cls(round, sender, pk, sig)


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
        sealed = r.blob(MAX_BLOB)
        return cls(round, sender, recipient, eph, kind, length, sealed)

    def associated_data(self) -> bytes:
        return share_ad(self.round, self.sender, self.recipient, self.kind, self.length)


def share_ad(rnd: int, client: int, server: int, kind: ShareKind, length: int) -> bytes:
    """Associated data of a sealed share: protocol, wire version, round, client, server, kind, length."""
    return b"secfl/additive/share" + struct.pack("<BIIIBQ", WIRE_VERSION, rnd, client, server, int(kind), length)


@dataclass(frozen=True)
class AddIncludedSet(Message):
    """Server → server (and coordinator → server across sites): a set of clients (sorted ids)."""

    TYPE = MsgType.ADD_INCLUDED_SET
    round: int
    sender: int
    clients: np.ndarray

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.clients, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddIncludedSet:
        return cls(round, sender, _sorted_ids(r, "ADD_INCLUDED_SET"))


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
        return cls(round, sender, count, digest, r.u8(), r.u64(), r.blob(MAX_BLOB))


@dataclass(frozen=True)
class AddUploadRequest(Message):
    """Coordinator → client: "upload your shares": the participants, the update length, the
    round's public dither seed (empty when unseeded) and the S servers' ``ADD_SERVER_KEY``
    messages, relayed as the servers sent them (server j's at position j)."""

    TYPE = MsgType.ADD_UPLOAD_REQUEST
    round: int
    sender: int
    participants: np.ndarray
    dim: int
    seed: bytes
    server_keys: tuple[bytes, ...]

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.participants, dtype=np.uint32)).u64(self.dim).blob(self.seed)
        _blobs(w, self.server_keys)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddUploadRequest:
        ids = _sorted_ids(r, "ADD_UPLOAD_REQUEST", allow_empty=False)
        dim = r.u64()
        if not 1 <= dim <= 1 << 34:
            raise MalformedMessageError(f"ADD_UPLOAD_REQUEST: update length {dim}")
        seed = r.blob(SEED_BYTES)
        if len(seed) not in (0, SEED_BYTES):
            raise MalformedMessageError(f"ADD_UPLOAD_REQUEST: a dither seed is {SEED_BYTES} bytes or absent")
        keys = _read_blobs(r, MAX_SERVERS, _MAX_KEY_MESSAGE)
        if len(keys) < 2:
            raise MalformedMessageError(f"ADD_UPLOAD_REQUEST: {len(keys)} server keys, at least 2")
        return cls(round, sender, ids, int(dim), seed, keys)


@dataclass(frozen=True)
class AddUpload(Message):
    """Client → coordinator: its S ``ADD_SHARE`` messages, server j's at position j (each sealed
    to its server: the coordinator relays all but its own unopened)."""

    TYPE = MsgType.ADD_UPLOAD
    round: int
    sender: int
    shares: tuple[bytes, ...]

    def _write(self, w: Writer) -> None:
        _blobs(w, self.shares)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddUpload:
        return cls(round, sender, _read_blobs(r, MAX_SERVERS))


@dataclass(frozen=True)
class AddShareBatch(Message):
    """Coordinator → server j: ``ADD_SHARE`` messages of one kind addressed to server j, one per
    listed client (ids strictly increasing, messages in the same order), relayed unopened."""

    TYPE = MsgType.ADD_SHARE_BATCH
    round: int
    sender: int
    kind: ShareKind
    clients: np.ndarray
    shares: tuple[bytes, ...]

    def _write(self, w: Writer) -> None:
        w.u8(int(self.kind)).array(np.asarray(self.clients, dtype=np.uint32))
        _blobs(w, self.shares)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> AddShareBatch:
        try:
            kind = ShareKind(r.u8())
        except ValueError:
            raise MalformedMessageError("ADD_SHARE_BATCH: unknown share kind") from None
        ids = _sorted_ids(r, "ADD_SHARE_BATCH")
        shares = _read_blobs(r, int(ids.size))
        if len(shares) != ids.size:
            raise MalformedMessageError(f"ADD_SHARE_BATCH: {ids.size} clients but {len(shares)} shares")
        return cls(round, sender, kind, ids, shares)


def server_key_signed(rnd: int, server: int, public_key: bytes) -> bytes:
    """What aggregation server ``server`` signs when it advertises its round key."""
    return signed_bytes("secfl/additive/server-key", rnd, server, public_key)
