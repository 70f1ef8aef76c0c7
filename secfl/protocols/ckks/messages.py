"""``ckks`` messages: every byte that crosses a party boundary (spec: ``protocols/ckks.md``).

Frames are :mod:`secfl.protocols.wire` frames; each payload is parsed strictly. In the
in-process simulator the key holder provisions clients over a direct confidential channel
(``CKKS_SECRET_CONTEXT``); across sites the secret context is sealed end to end for each client
(``CKKS_HELLO`` → ``CKKS_KEY_REQUEST`` → ``CKKS_KEYS`` → ``CKKS_UPLOAD_REQUEST``), so the
relaying server only ever sees AES-GCM ciphertexts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.crypto.identity import SIGNATURE_BYTES, signed_bytes
from secfl.crypto.keys import KEY_BYTES
from secfl.errors import MalformedMessageError
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = [
    "CkksContextMessage", "CkksSecretContextMessage", "CkksUpdate", "CkksAggregate", "CkksHello",
    "CkksKeyRequest", "CkksKeys", "CkksUploadRequest", "CkksReveal", "CkksRevealRequest", "MAX_BLOB",
    "hello_signed", "holder_signed",
]

MAX_BLOB = 1 << 34
_MAX_PARTIES = 1 << 20


def _party_ids(r: Reader, what: str, *, allow_empty: bool = False) -> np.ndarray:
    """A sorted, distinct u32 id list (length checked before anything is allocated)."""
    ids = r.array("u4")
    if ids.size > _MAX_PARTIES or (ids.size == 0 and not allow_empty) or \
            bool(np.any(np.diff(ids.astype(np.int64)) <= 0)):
        raise MalformedMessageError(f"{what}: the party ids must be a non-empty sorted set")
    return ids


@dataclass(frozen=True)
class CkksContextMessage(Message):
    """Key holder → server: the public context (parameters + public key, never a secret key)."""

    TYPE = MsgType.CKKS_PUBLIC_CONTEXT
    round: int
    sender: int
    context: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.context)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksContextMessage:
        return cls(round, sender, r.blob(MAX_BLOB))


@dataclass(frozen=True)
class CkksSecretContextMessage(Message):
    """Key holder → client (provisioning, confidential channel): the secret context."""

    TYPE = MsgType.CKKS_SECRET_CONTEXT
    round: int
    sender: int
    context: bytes

    def __repr__(self) -> str:  # key material: never printed
        return f"CkksSecretContextMessage(round={self.round}, sender={self.sender}, <{len(self.context)} secret bytes>)"

    def _write(self, w: Writer) -> None:
        w.blob(self.context)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksSecretContextMessage:
        return cls(round, sender, r.blob(MAX_BLOB))


@dataclass(frozen=True)
class CkksUpdate(Message):
    """Client → server: the encrypted (a_k x_k, a_k) (``CkksCiphertexts.to_bytes``)."""

    TYPE = MsgType.CKKS_UPDATE
    round: int
    sender: int
    ciphertexts: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksUpdate:
        return cls(round, sender, r.blob(MAX_BLOB))


@dataclass(frozen=True)
class CkksAggregate(Message):
    """Server → key holder: the clients included and the sum of their ciphertexts."""

    TYPE = MsgType.CKKS_AGGREGATE
    round: int
    sender: int
    included: np.ndarray  # uint32, sorted, distinct
    ciphertexts: bytes

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.included, dtype=np.uint32)).blob(self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksAggregate:
        included = _party_ids(r, "CKKS_AGGREGATE included clients")
        return cls(round, sender, included, r.blob(MAX_BLOB))


def _signature(r: Reader, what: str) -> bytes:
    sig = r.blob(SIGNATURE_BYTES)
    if len(sig) not in (0, SIGNATURE_BYTES):
        raise MalformedMessageError(f"{what}: a signature is {SIGNATURE_BYTES} bytes, got {len(sig)}")
    return sig


def hello_signed(rnd: int, client: int, public_key: bytes) -> bytes:
    """What a client signs in its ``CKKS_HELLO``: its one-time provisioning key."""
    return signed_bytes("secfl/ckks/hello", rnd, client, public_key)


def holder_signed(rnd: int, client: int, client_key: bytes, holder_key: bytes) -> bytes:
    """What the key holder signs for each client: its one-time key, bound to the client's."""
    return signed_bytes("secfl/ckks/holder-key", rnd, client, client_key, holder_key)


@dataclass(frozen=True)
class CkksHello(Message):
    """Client → server → key holder: the client's one-time X25519 key for its provisioning."""

    TYPE = MsgType.CKKS_HELLO
    round: int
    sender: int
    public_key: bytes
    signature: bytes = b""  # with a federation roster: the client's signature (hello_signed)

    def _write(self, w: Writer) -> None:
        w.blob(self.public_key).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksHello:
        key = r.blob(KEY_BYTES)
        if len(key) != KEY_BYTES:
            raise MalformedMessageError(f"CKKS_HELLO: an X25519 key is {KEY_BYTES} bytes, got {len(key)}")
        return cls(round, sender, key, _signature(r, "CKKS_HELLO"))


@dataclass(frozen=True)
class CkksKeyRequest(Message):
    """Server → key holder: send the public context (``need_public``) and seal the secret context
    for these clients under their hello keys."""

    TYPE = MsgType.CKKS_KEY_REQUEST
    round: int
    sender: int
    need_public: bool
    clients: np.ndarray  # uint32, sorted
    hellos: tuple[bytes, ...]  # one X25519 key per client
    signatures: tuple[bytes, ...] = ()  # each client's hello signature (empty without a roster)

    def _write(self, w: Writer) -> None:
        w.u8(int(self.need_public)).array(np.asarray(self.clients, dtype=np.uint32))
        sigs = self.signatures or (b"",) * len(self.hellos)
        for key, sig in zip(self.hellos, sigs, strict=True):
            w.blob(key).blob(sig)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksKeyRequest:
        flag = r.u8()
        if flag > 1:
            raise MalformedMessageError(f"CKKS_KEY_REQUEST: need_public flag {flag}")
        clients = _party_ids(r, "CKKS_KEY_REQUEST clients", allow_empty=True)
        r.count(clients.size, 16, "hello keys")  # each has at least its two u64 lengths
        keys, sigs = [], []
        for _ in range(clients.size):
            keys.append(r.blob(KEY_BYTES))
            sigs.append(_signature(r, "CKKS_KEY_REQUEST"))
        if any(len(k) != KEY_BYTES for k in keys):
            raise MalformedMessageError("CKKS_KEY_REQUEST: every hello key is 32 bytes")
        return cls(round, sender, bool(flag), clients, tuple(keys), tuple(sigs))


@dataclass(frozen=True)
class CkksKeys(Message):
    """Key holder → server: the public context (or nothing), and per requested client the key
    holder's one-time X25519 key and the sealed secret context (AES-256-GCM)."""

    TYPE = MsgType.CKKS_KEYS
    round: int
    sender: int
    public_context: bytes
    clients: np.ndarray  # uint32, sorted
    holder_keys: tuple[bytes, ...]
    sealed: tuple[bytes, ...]
    signatures: tuple[bytes, ...] = ()  # the key holder's signature of each holder key (holder_signed)

    def __repr__(self) -> str:
        return f"CkksKeys(round={self.round}, {len(self.sealed)} sealed secret context(s))"

    def _write(self, w: Writer) -> None:
        w.blob(self.public_context).array(np.asarray(self.clients, dtype=np.uint32))
        sigs = self.signatures or (b"",) * len(self.sealed)
        for key, blob, sig in zip(self.holder_keys, self.sealed, sigs, strict=True):
            w.blob(key).blob(blob).blob(sig)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksKeys:
        public = r.blob(MAX_BLOB)
        clients = _party_ids(r, "CKKS_KEYS clients", allow_empty=True)
        r.count(clients.size, 24, "holder keys and sealed contexts")  # three u64 lengths each at least
        keys, blobs, sigs = [], [], []
        for _ in range(clients.size):
            keys.append(r.blob(KEY_BYTES))
            blobs.append(r.blob(MAX_BLOB))
            sigs.append(_signature(r, "CKKS_KEYS"))
        if any(len(k) != KEY_BYTES for k in keys):
            raise MalformedMessageError("CKKS_KEYS: every holder key is 32 bytes")
        return cls(round, sender, public, clients, tuple(keys), tuple(blobs), tuple(sigs))


@dataclass(frozen=True)
class CkksUploadRequest(Message):
    """Server → client: the round's participants and update length, and — the first time — the
    sealed secret context with the key holder's one-time key (both empty otherwise)."""

    TYPE = MsgType.CKKS_UPLOAD_REQUEST
    round: int
    sender: int
    participants: np.ndarray  # uint32, sorted
    dim: int
    holder_key: bytes = b""
    sealed: bytes = b""
    holder_signature: bytes = b""

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.participants, dtype=np.uint32)).u64(self.dim).blob(self.holder_key).blob(self.sealed)
        w.blob(self.holder_signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksUploadRequest:
        participants = _party_ids(r, "CKKS_UPLOAD_REQUEST participants")
        dim = r.u64()
        if not 1 <= dim <= 1 << 34:
            raise MalformedMessageError(f"CKKS_UPLOAD_REQUEST: update length {dim}")
        key, sealed = r.blob(KEY_BYTES), r.blob(MAX_BLOB)
        if len(key) not in (0, KEY_BYTES) or (len(key) == 0) != (len(sealed) == 0):
            raise MalformedMessageError("CKKS_UPLOAD_REQUEST: holder key and sealed context go together")
        return cls(round, sender, participants, int(dim), key, sealed, _signature(r, "CKKS_UPLOAD_REQUEST"))


@dataclass(frozen=True)
class CkksReveal(Message):
    """Key holder → server: the revealed mean (decoded onto the grid by default), the total
    weight, the clients in it and the error bound."""

    TYPE = MsgType.CKKS_REVEAL
    round: int
    sender: int
    included: np.ndarray  # uint32, sorted
    mean: np.ndarray  # float64
    total_weight: float
    error_bound: float

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.included, dtype=np.uint32)).array(np.asarray(self.mean, dtype=np.float64))
        w.f64(self.total_weight).f64(self.error_bound)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksReveal:
        included = _party_ids(r, "CKKS_REVEAL included clients")
        mean = r.array("f8")
        total, error = r.f64(), r.f64()
        if not (bool(np.all(np.isfinite(mean))) and np.isfinite(total) and total > 0 and np.isfinite(error)
                and error >= 0):
            raise MalformedMessageError("CKKS_REVEAL: non-finite mean, or a total weight / error bound out of range")
        return cls(round, sender, included, mean, total, error)


@dataclass(frozen=True)
class CkksRevealRequest(Message):
    """Server → key holder: the round's participants and update length, and the
    ``CKKS_AGGREGATE`` frame to decrypt."""

    TYPE = MsgType.CKKS_REVEAL_REQUEST
    round: int
    sender: int
    participants: np.ndarray  # uint32, sorted
    dim: int
    aggregate: bytes

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.participants, dtype=np.uint32)).u64(self.dim).blob(self.aggregate)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksRevealRequest:
        participants = _party_ids(r, "CKKS_REVEAL_REQUEST participants")
        dim = r.u64()
        if not 1 <= dim <= 1 << 34:
            raise MalformedMessageError(f"CKKS_REVEAL_REQUEST: update length {dim}")
        return cls(round, sender, participants, int(dim), r.blob(MAX_BLOB))
