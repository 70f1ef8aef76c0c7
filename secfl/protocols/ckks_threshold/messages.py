"""``ckks-threshold`` messages: every byte that crosses a party boundary (spec:
``protocols/ckks_threshold.md``, "Messages" and "Across sites").

Frames are :mod:`secfl.protocols.wire` frames; each payload is parsed strictly. The in-process
round sends the key-generation and decryption messages one by one; across sites the coordinator
pairs each stage's request with one reply, so a few messages only wrap others
(``THR_KEYGEN_REQUEST``, ``THR_DEALING``, ``THR_KEY_DELIVERY``, ``THR_KEY_ACK``,
``THR_UPLOAD_REQUEST``, ``THR_PARTIAL_REQUEST``). The Shamir shares inside ``THR_SHAMIR_SHARES``
are AES-256-GCM blobs sealed member to member: the relaying server cannot open them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from secfl.crypto.identity import SIGNATURE_BYTES, signed_bytes
from secfl.crypto.keys import KEY_BYTES
from secfl.crypto.prg import SEED_BYTES
from secfl.crypto.threshold import MAX_MEMBERS
from secfl.errors import MalformedMessageError
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = [
    "ThrMemberHello", "ThrRoster", "ThrPubkeyShare", "ThrShamirShares", "ThrCollectiveKey", "ThrUpdate",
    "ThrDecryptRequest", "ThrReady", "ThrActiveSet", "ThrPartialDecryption",
    "ThrKeygenRequest", "ThrDealing", "ThrKeyDelivery", "ThrKeyAck", "ThrUploadRequest", "ThrPartialRequest",
    "aggregate_digest", "share_ad", "SHARE_LABEL", "hello_signed", "key_signed", "roster_binding", "upload_signed",
]

_MAX_BLOB = 1 << 34
_MAX_PARTIES = 1 << 20
_DIGEST = 32
_KEY_ID = 16
SHARE_LABEL = "secfl/ckks-threshold/shamir"

def _fixed(r: Reader, n: int, what: str) -> bytes:
    b = r.blob(n)
    if len(b) != n:
        raise MalformedMessageError(f"{what}: expected {n} bytes, got {len(b)}")
    return bytes(b)


def _index_set(r: Reader, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    arr = r.array("u4")  # a view of the payload: its size is checked before the tuple is built
    if arr.size > _MAX_PARTIES:
        raise MalformedMessageError(f"{what}: {arr.size} indices, at most {_MAX_PARTIES}")
    vals = tuple(int(v) for v in arr)
    if (not vals and not allow_empty) or any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
        raise MalformedMessageError(f"{what}: must be a non-empty sorted set of distinct indices")
    return vals


def _u32s(values: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)


@dataclass(frozen=True)
class ThrMemberHello(Message):
    """Member → server: its X25519 key and CRP nonce for key generation ``epoch``, signed with
    its identity key (:func:`hello_signed`)."""

    TYPE = MsgType.THR_MEMBER_HELLO
    round: int
    sender: int
    epoch: int
    public_key: bytes
    nonce: bytes
    signature: bytes = b""

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).blob(self.public_key).blob(self.nonce).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrMemberHello:
        return cls(round, sender, r.u32(), _fixed(r, KEY_BYTES, "THR_MEMBER_HELLO key"),
                   _fixed(r, SEED_BYTES, "THR_MEMBER_HELLO nonce"),
                   _fixed(r, SIGNATURE_BYTES, "THR_MEMBER_HELLO signature"))


@dataclass(frozen=True)
class ThrRoster(Message):
    """Server → member: the parameters, threshold and every member's key, nonce and hello
    signature (each member checks every other member's signature against the roster file)."""

    TYPE = MsgType.THR_ROSTER
    round: int
    sender: int
    epoch: int
    threshold: int
    params: bytes
    members: tuple[int, ...]
    public_keys: bytes  # 32 bytes per member, in member order
    nonces: bytes
    signatures: bytes = b""  # 64 bytes per member

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).u32(self.threshold).blob(self.params).array(_u32s(self.members))
        w.blob(self.public_keys).blob(self.nonces).blob(self.signatures)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrRoster:
        epoch, t, params = r.u32(), r.u32(), bytes(r.blob(1 << 16))
        members = _index_set(r, "THR_ROSTER members")
        m = len(members)
        keys = _fixed(r, KEY_BYTES * m, "THR_ROSTER keys")
        nonces = _fixed(r, SEED_BYTES * m, "THR_ROSTER nonces")
        sigs = _fixed(r, SIGNATURE_BYTES * m, "THR_ROSTER signatures")
        if not 1 <= t <= m:
            raise MalformedMessageError(f"THR_ROSTER: threshold {t} for {m} members")
        return cls(round, sender, epoch, t, params, members, keys, nonces, sigs)


@dataclass(frozen=True)
class ThrPubkeyShare(Message):
    """Member → server: b_i over every key-level prime, and the CRP seed it derived."""

    TYPE = MsgType.THR_PUBKEY_SHARE
    round: int
    sender: int
    epoch: int
    seed: bytes
    share: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).blob(self.seed).blob(self.share)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrPubkeyShare:
        return cls(round, sender, r.u32(), _fixed(r, SEED_BYTES, "THR_PUBKEY_SHARE seed"), bytes(r.blob(_MAX_BLOB)))


@dataclass(frozen=True)
class ThrShamirShares(Message):
    """Sealed Shamir shares: member → server (from the sender to each recipient) and server →
    member (from each dealer to that member). Entries: (dealer, recipient, AES-GCM blob)."""

    TYPE = MsgType.THR_SHAMIR_SHARES
    round: int
    sender: int
    epoch: int
    entries: tuple[tuple[int, int, bytes], ...]

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).u32(len(self.entries))
        for dealer, recipient, blob in self.entries:
            w.u32(dealer).u32(recipient).blob(blob)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrShamirShares:
        epoch = r.u32()
        count = r.count(r.u32(), 16, "entries", MAX_MEMBERS)  # dealer, recipient, blob length: 16 bytes
        entries = tuple((r.u32(), r.u32(), bytes(r.blob(_MAX_BLOB))) for _ in range(count))
        if len({(d, t) for d, t, _ in entries}) != count:
            raise MalformedMessageError("THR_SHAMIR_SHARES: duplicate entries")
        return cls(round, sender, epoch, entries)


@dataclass(frozen=True)
class ThrCollectiveKey(Message):
    """Server → members and clients: the dealers in the key and the collective public key; to
    clients also each key-share holder's signature of it (:func:`key_signed`, from its ack)."""

    TYPE = MsgType.THR_COLLECTIVE_KEY
    round: int
    sender: int
    epoch: int
    dealers: tuple[int, ...]
    key: bytes
    signatures: tuple[tuple[int, bytes], ...] = ()  # (member index, signature), sorted

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).array(_u32s(self.dealers)).blob(self.key)
        w.array(_u32s(tuple(j for j, _ in self.signatures))).blob(b"".join(s for _, s in self.signatures))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrCollectiveKey:
        epoch, dealers, key = r.u32(), _index_set(r, "THR_COLLECTIVE_KEY dealers"), bytes(r.blob(_MAX_BLOB))
        signers = _index_set(r, "THR_COLLECTIVE_KEY signers", allow_empty=True)
        if len(signers) > MAX_MEMBERS:
            raise MalformedMessageError(f"THR_COLLECTIVE_KEY: {len(signers)} signers")
        sigs = _fixed(r, SIGNATURE_BYTES * len(signers), "THR_COLLECTIVE_KEY signatures")
        pairs = tuple((j, sigs[SIGNATURE_BYTES * i : SIGNATURE_BYTES * (i + 1)]) for i, j in enumerate(signers))
        return cls(round, sender, epoch, dealers, key, pairs)


@dataclass(frozen=True)
class ThrUpdate(Message):
    """Client → server: the ciphertexts of (a_k x_k, a_k) under the collective key (NTT form),
    and the client's signature of their ``c_1`` (:func:`upload_signed`): members decrypt only a
    ``c_1`` they can check is the sum of such signed uploads."""

    TYPE = MsgType.THR_UPDATE
    round: int
    sender: int
    key_id: bytes
    count: int
    ciphertexts: bytes
    signature: bytes = b""

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).u32(self.count).blob(self.ciphertexts).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrUpdate:
        return cls(round, sender, _fixed(r, _KEY_ID, "THR_UPDATE key id"), r.u32(), bytes(r.blob(_MAX_BLOB)),
                   _fixed(r, SIGNATURE_BYTES, "THR_UPDATE signature"))


@dataclass(frozen=True)
class ThrDecryptRequest(Message):
    """Server → member: a decryption is about to be requested (included clients, one digest per
    ciphertext); members able and willing answer THR_READY."""

    TYPE = MsgType.THR_DECRYPT_REQUEST
    round: int
    sender: int
    key_id: bytes
    included: tuple[int, ...]
    digests: tuple[bytes, ...]

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).array(_u32s(self.included)).blob(b"".join(self.digests))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrDecryptRequest:
        key_id = _fixed(r, _KEY_ID, "THR_DECRYPT_REQUEST key id")
        included = _index_set(r, "THR_DECRYPT_REQUEST included clients")
        raw = bytes(r.blob(_MAX_BLOB))
        if not raw or len(raw) % _DIGEST:
            raise MalformedMessageError("THR_DECRYPT_REQUEST: digests must be whole 32-byte values")
        return cls(round, sender, key_id, included, tuple(raw[i : i + _DIGEST] for i in range(0, len(raw), _DIGEST)))


@dataclass(frozen=True)
class ThrReady(Message):
    """Member → server: ready to decrypt the announced aggregate (its digest echoed)."""

    TYPE = MsgType.THR_READY
    round: int
    sender: int
    key_id: bytes
    digest: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).blob(self.digest)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrReady:
        return cls(round, sender, _fixed(r, _KEY_ID, "THR_READY key id"), _fixed(r, _DIGEST, "THR_READY digest"))


@dataclass(frozen=True)
class ThrActiveSet(Message):
    """Server → member of the active set: the set (fixed before any share is computed), the
    included clients, the aggregate's digest and its c_1 polynomials; and the evidence that c_1
    is real: every included client's own c_1 and its signature of it (the member re-adds them)."""

    TYPE = MsgType.THR_ACTIVE_SET
    round: int
    sender: int
    key_id: bytes
    active: tuple[int, ...]
    included: tuple[int, ...]
    digest: bytes
    count: int
    c1: bytes
    signatures: bytes = b""  # 64 bytes per included client, in order
    client_c1: bytes = b""  # each included client's c_1, as packed as c1, in order

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).array(_u32s(self.active)).array(_u32s(self.included)).blob(self.digest)
        w.u32(self.count).blob(self.c1).blob(self.signatures).blob(self.client_c1)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrActiveSet:
        key_id = _fixed(r, _KEY_ID, "THR_ACTIVE_SET key id")
        active = _index_set(r, "THR_ACTIVE_SET active set")
        included = _index_set(r, "THR_ACTIVE_SET included clients")
        digest = _fixed(r, _DIGEST, "THR_ACTIVE_SET digest")
        count, c1 = r.u32(), bytes(r.blob(_MAX_BLOB))
        sigs = _fixed(r, SIGNATURE_BYTES * len(included), "THR_ACTIVE_SET signatures")
        client_c1 = _fixed(r, len(c1) * len(included), "THR_ACTIVE_SET client c1")
        return cls(round, sender, key_id, active, included, digest, count, c1, sigs, client_c1)


@dataclass(frozen=True)
class ThrPartialDecryption(Message):
    """Member → server: its flooded partial decryption of every ciphertext of the aggregate."""

    TYPE = MsgType.THR_PARTIAL_DECRYPTION
    round: int
    sender: int
    key_id: bytes
    digest: bytes
    active: tuple[int, ...]
    partial: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).blob(self.digest).array(_u32s(self.active)).blob(self.partial)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrPartialDecryption:
        key_id = _fixed(r, _KEY_ID, "THR_PARTIAL_DECRYPTION key id")
        digest = _fixed(r, _DIGEST, "THR_PARTIAL_DECRYPTION digest")
        return cls(round, sender, key_id, digest, _index_set(r, "THR_PARTIAL_DECRYPTION active set"),
                   bytes(r.blob(_MAX_BLOB)))


# -- across sites: one request and one reply per stage ----------------------------------------------


@dataclass(frozen=True)
class ThrKeygenRequest(Message):
    """Server → member (stage ``thr.hello``): key generation ``epoch`` starts; answer
    ``THR_MEMBER_HELLO``."""

    TYPE = MsgType.THR_KEYGEN_REQUEST
    round: int
    sender: int
    epoch: int

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrKeygenRequest:
        return cls(round, sender, r.u32())


@dataclass(frozen=True)
class ThrDealing(Message):
    """Member → server (reply of ``thr.deal``): its ``THR_PUBKEY_SHARE`` and ``THR_SHAMIR_SHARES``
    frames (the shares sealed for their recipients)."""

    TYPE = MsgType.THR_DEALING
    round: int
    sender: int
    pubkey_share: bytes
    shamir_shares: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.pubkey_share).blob(self.shamir_shares)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrDealing:
        return cls(round, sender, r.blob(_MAX_BLOB), r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class ThrKeyDelivery(Message):
    """Server → member (request of ``thr.key``): the ``THR_SHAMIR_SHARES`` frame forwarding the
    sealed shares addressed to it, and the ``THR_COLLECTIVE_KEY`` frame."""

    TYPE = MsgType.THR_KEY_DELIVERY
    round: int
    sender: int
    shares: bytes
    key: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.shares).blob(self.key)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrKeyDelivery:
        return cls(round, sender, r.blob(_MAX_BLOB), r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class ThrKeyAck(Message):
    """Member → server: whether it formed a key share of the collective key ``key_id`` (a
    member that missed or could not open a dealer's share holds none and never decrypts)."""

    TYPE = MsgType.THR_KEY_ACK
    round: int
    sender: int
    epoch: int
    key_id: bytes
    holds_share: bool
    signature: bytes = b""  # a holder's signature of the key (:func:`key_signed`); empty otherwise

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).blob(self.key_id).u8(int(self.holds_share)).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrKeyAck:
        epoch, key_id, flag = r.u32(), _fixed(r, _KEY_ID, "THR_KEY_ACK key id"), r.u8()
        if flag > 1:
            raise MalformedMessageError(f"THR_KEY_ACK: flag {flag}")
        sig = _fixed(r, SIGNATURE_BYTES if flag else 0, "THR_KEY_ACK signature")
        return cls(round, sender, epoch, key_id, bool(flag), sig)


@dataclass(frozen=True)
class ThrUploadRequest(Message):
    """Server → client (request of ``thr.upload``): the round's participants and update length,
    the id of the key to encrypt under, and — when the client does not hold that key yet — the
    ``THR_COLLECTIVE_KEY`` frame (empty otherwise). Nothing in it is secret."""

    TYPE = MsgType.THR_UPLOAD_REQUEST
    round: int
    sender: int
    participants: np.ndarray  # uint32, sorted, distinct
    dim: int
    key_id: bytes
    key: bytes = b""

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.participants, dtype=np.uint32)).u64(self.dim).blob(self.key_id).blob(self.key)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrUploadRequest:
        ids = r.array("u4")
        if ids.size == 0 or ids.size > _MAX_PARTIES or bool(np.any(np.diff(ids.astype(np.int64)) <= 0)):
            raise MalformedMessageError("THR_UPLOAD_REQUEST: the participants must be a non-empty sorted set")
        dim = r.u64()
        if not 1 <= dim <= 1 << 34:
            raise MalformedMessageError(f"THR_UPLOAD_REQUEST: update length {dim}")
        return cls(round, sender, ids, int(dim), _fixed(r, _KEY_ID, "THR_UPLOAD_REQUEST key id"), r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class ThrPartialRequest(Message):
    """Server → member of the active set (request of ``thr.partial``): the round's participant
    count (the public bound on the clients summed, which sizes the flooding noise) and the
    ``THR_ACTIVE_SET`` frame."""

    TYPE = MsgType.THR_PARTIAL_REQUEST
    round: int
    sender: int
    clients: int
    active_set: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.clients).blob(self.active_set)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrPartialRequest:
        clients = r.u32()
        if not 1 <= clients <= _MAX_PARTIES:
            raise MalformedMessageError(f"THR_PARTIAL_REQUEST: {clients} participants")
        return cls(round, sender, clients, r.blob(_MAX_BLOB))


def aggregate_digest(digests: tuple[bytes, ...] | list[bytes]) -> bytes:
    """SHA-256 over the ciphertext digests of an aggregate (what members agree to decrypt)."""
    return hashlib.sha256(b"secfl-thr-aggregate-v1" + b"".join(digests)).digest()


def share_ad(round_: int, epoch: int, dealer: int, recipient: int, seed: bytes) -> bytes:
    """Associated data of the sealed Shamir share from ``dealer`` to ``recipient``."""
    return b"secfl-thr-shamir-v1" + struct.pack("<IIII", round_, epoch, dealer, recipient) + seed


def hello_signed(epoch: int, member: int, params: bytes, public_key: bytes, nonce: bytes) -> bytes:
    """What a member signs in its hello: its X25519 key and CRP nonce for this key generation."""
    return signed_bytes("secfl/ckks-threshold/hello", epoch, member, params, public_key, nonce)


def key_signed(epoch: int, key_id: bytes, params: bytes) -> bytes:
    """What a key-share holder signs: the collective key (its id) of key generation ``epoch``."""
    return signed_bytes("secfl/ckks-threshold/collective-key", epoch, key_id, params)


def roster_binding(identities: bytes, msg: ThrRoster) -> bytes:
    """SHA-256 over the federation roster's digest and the whole signed key roster (members,
    keys, nonces, signatures): bound into the CRP seed, hence into every sealed share's AD."""
    h = hashlib.sha256(b"secfl-thr-roster-v1" + identities)
    h.update(struct.pack("<II", msg.epoch, msg.threshold) + msg.params + _u32s(msg.members).tobytes())
    h.update(msg.public_keys + msg.nonces + msg.signatures)
    return h.digest()


def upload_signed(round_: int, client: int, key_id: bytes, count: int, c1: bytes) -> bytes:
    """What a client signs in its upload: the SHA-256 of its packed ``c_1`` for this round and key."""
    return signed_bytes("secfl/ckks-threshold/upload", round_, client, key_id, count, hashlib.sha256(c1).digest())
