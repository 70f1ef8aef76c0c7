"""``secagg`` messages: every message a party sends, a frozen dataclass with strict parsing.

Client → server: ``SA_ADVERTISE_KEYS``, ``SA_SHARE_KEYS`` (sealed share pairs, one per
neighbour), ``SA_MASKED_INPUT``, ``SA_UNMASK_RESPONSE``. Server → client: ``SA_KEY_ROSTER``,
``SA_SHARES_FORWARD`` (the sealed pairs addressed to that client, relayed unopened),
``SA_UNMASK_REQUEST``. With the consistency check (``consistency_check=True``): server → client
``SA_CONSISTENCY_REQUEST`` (the set U3 of clients whose masked input counts), client → server
``SA_CONSISTENCY_SIGNATURE`` (its identity key's signature of U3), and ``SA_CHECKED_UNMASK_REQUEST``
in place of ``SA_UNMASK_REQUEST`` (U3 and the neighbours' signatures of it). Across sites the
first request of a round is the generic :class:`~secfl.protocols.parties.RoundRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.crypto.identity import SIGNATURE_BYTES, signed_bytes
from secfl.crypto.keys import KEY_BYTES
from secfl.crypto.sharing import SHAMIR_PRIME
from secfl.errors import MalformedMessageError
from secfl.protocols.secagg.masks import CHUNKS, SEALED_BYTES
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = ["advertise_signed", "SaAdvertiseKeys", "SaKeyRoster", "SaShareKeys", "SaSharesForward", "SaMaskedInput",
           "SaUnmaskRequest", "SaUnmaskResponse", "SaConsistencyRequest", "SaConsistencySignature",
           "SaCheckedUnmaskRequest", "consistency_signed"]


_MAX_PARTIES = 1 << 20


def _ids(r: Reader, what: str, *, sorted_ids: bool = True) -> list[int]:
    arr = r.array("uint32")  # a view of the payload: its size is checked before the list is built
    if arr.size > _MAX_PARTIES:
        raise MalformedMessageError(f"{what}: {arr.size} party ids, at most {_MAX_PARTIES}")
    ids = [int(v) for v in arr.tolist()]
    if len(set(ids)) != len(ids):
        raise MalformedMessageError(f"{what}: repeated party id")
    if sorted_ids and ids != sorted(ids):
        raise MalformedMessageError(f"{what}: party ids must be increasing")
    return ids


@dataclass(frozen=True)
class SaAdvertiseKeys(Message):
    """Client → server: the public halves of its encryption key ``c`` and mask key ``s``, and
    (when the federation has a roster) its identity key's signature of them (:func:`advertise_signed`)."""

    TYPE = MsgType.SA_ADVERTISE_KEYS
    round: int
    sender: int
    c_public: bytes
    s_public: bytes
    signature: bytes = b""  # empty, or 64 bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.c_public).blob(self.s_public).blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaAdvertiseKeys:
        c, s = r.blob(KEY_BYTES), r.blob(KEY_BYTES)
        if len(c) != KEY_BYTES or len(s) != KEY_BYTES:
            raise MalformedMessageError(f"SA_ADVERTISE_KEYS: public keys are {KEY_BYTES} bytes")
        if c == s:
            raise MalformedMessageError("SA_ADVERTISE_KEYS: the encryption and mask keys must differ")
        sig = r.blob(SIGNATURE_BYTES)
        if len(sig) not in (0, SIGNATURE_BYTES):
            raise MalformedMessageError(f"SA_ADVERTISE_KEYS: a signature is {SIGNATURE_BYTES} bytes")
        return cls(round, sender, c, s, sig)


@dataclass(frozen=True)
class SaKeyRoster(Message):
    """Server → client: the threshold and each neighbour's id, two public keys and (when the
    federation has a roster) the neighbour's signature of them."""

    TYPE = MsgType.SA_KEY_ROSTER
    round: int
    sender: int
    threshold: int
    neighbours: tuple[int, ...]
    keys: bytes  # 64 bytes per neighbour: c public ‖ s public
    signatures: bytes = b""  # empty, or 64 bytes per neighbour

    def _write(self, w: Writer) -> None:
        w.u32(self.threshold).array(np.asarray(self.neighbours, dtype=np.uint32)).blob(self.keys)
        w.blob(self.signatures)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaKeyRoster:
        t = r.u32()
        ids = _ids(r, "SA_KEY_ROSTER")
        keys = r.blob(2 * KEY_BYTES * len(ids))
        if len(keys) != 2 * KEY_BYTES * len(ids):
            raise MalformedMessageError("SA_KEY_ROSTER: key block does not match the neighbour count")
        if not 1 <= t <= len(ids):
            raise MalformedMessageError(f"SA_KEY_ROSTER: threshold {t} outside [1, {len(ids)}]")
        sigs = r.blob(SIGNATURE_BYTES * len(ids))
        if len(sigs) not in (0, SIGNATURE_BYTES * len(ids)):
            raise MalformedMessageError("SA_KEY_ROSTER: signature block does not match the neighbour count")
        return cls(round, sender, t, tuple(ids), keys, sigs)


@dataclass(frozen=True)
class _Ciphertexts(Message):
    """Shared layout: a list of (party id, sealed share pair), fixed-size ciphertexts."""

    round: int
    sender: int
    parties: tuple[int, ...]
    sealed: bytes  # len(parties) × SEALED_BYTES

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.parties, dtype=np.uint32)).blob(self.sealed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int):  # type: ignore[no-untyped-def]
        ids = _ids(r, cls.TYPE.name)
        blob = r.blob(SEALED_BYTES * len(ids))
        if len(blob) != SEALED_BYTES * len(ids):
            raise MalformedMessageError(f"{cls.TYPE.name}: ciphertext block does not match the party count")
        return cls(round, sender, tuple(ids), blob)

    def items(self) -> list[tuple[int, bytes]]:
        return [(p, self.sealed[i * SEALED_BYTES : (i + 1) * SEALED_BYTES]) for i, p in enumerate(self.parties)]


@dataclass(frozen=True)
class SaShareKeys(_Ciphertexts):
    """Client u → server: for each neighbour v, ``AES-GCM_{k_{u→v}}(u, v, [b_u]_v, [s_u]_v)``."""

    TYPE = MsgType.SA_SHARE_KEYS


@dataclass(frozen=True)
class SaSharesForward(_Ciphertexts):
    """Server → client v: the ciphertexts addressed to v, by sender u."""

    TYPE = MsgType.SA_SHARES_FORWARD


@dataclass(frozen=True)
class SaMaskedInput(Message):
    """Client → server: the masked encoding ``y_u`` (``ceil(k/8)`` bytes per element)."""

    TYPE = MsgType.SA_MASKED_INPUT
    round: int
    sender: int
    modulus_bits: int
    length: int
    packed: bytes

    def _write(self, w: Writer) -> None:
        w.u8(self.modulus_bits).u64(self.length).blob(self.packed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaMaskedInput:
        return cls(round, sender, r.u8(), r.u64(), r.blob())


@dataclass(frozen=True)
class SaUnmaskRequest(Message):
    """Server → client v: neighbours whose self-mask share (``survivors``) or mask-key share
    (``dropped``) it wants."""

    TYPE = MsgType.SA_UNMASK_REQUEST
    round: int
    sender: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.survivors, dtype=np.uint32)).array(np.asarray(self.dropped, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaUnmaskRequest:
        return cls(round, sender, tuple(_ids(r, "SA_UNMASK_REQUEST")), tuple(_ids(r, "SA_UNMASK_REQUEST")))


@dataclass(frozen=True)
class SaUnmaskResponse(Message):
    """Client v → server: its shares of ``b_u`` for survivors and of ``s_u`` for dropped peers."""

    TYPE = MsgType.SA_UNMASK_RESPONSE
    round: int
    sender: int
    survivors: tuple[int, ...]
    b_shares: np.ndarray  # (len(survivors), 9) field elements
    dropped: tuple[int, ...]
    s_shares: np.ndarray  # (len(dropped), 9)

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.survivors, dtype=np.uint32))
        w.array(np.asarray(self.b_shares, dtype=np.uint32).reshape(-1))
        w.array(np.asarray(self.dropped, dtype=np.uint32))
        w.array(np.asarray(self.s_shares, dtype=np.uint32).reshape(-1))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaUnmaskResponse:
        out = []
        for _ in range(2):
            ids = _ids(r, "SA_UNMASK_RESPONSE")
            vals = r.array("uint32", length=len(ids) * CHUNKS)
            if vals.size and int(vals.max()) >= SHAMIR_PRIME:
                raise MalformedMessageError("SA_UNMASK_RESPONSE: share value outside the field")
            out.append((tuple(ids), vals.astype(np.uint64).reshape(len(ids), CHUNKS)))
        return cls(round, sender, out[0][0], out[0][1], out[1][0], out[1][1])




def advertise_signed(rnd: int, client: int, c_public: bytes, s_public: bytes) -> bytes:
    """What a client signs when it advertises its round keys."""
    return signed_bytes("secfl/secagg/advertise", rnd, client, c_public, s_public)


def consistency_signed(rnd: int, roster_digest: bytes, survivors: tuple[int, ...]) -> bytes:
    """What a client signs in the consistency check: the round, the roster and the set U3."""
    return signed_bytes("secfl/secagg/consistency/v1", roster_digest, rnd,
                        np.asarray(survivors, dtype="<u4").tobytes())


@dataclass(frozen=True)
class SaConsistencyRequest(Message):
    """Server → client (consistency check): U3, the clients whose masked input the sum holds."""

    TYPE = MsgType.SA_CONSISTENCY_REQUEST
    round: int
    sender: int
    survivors: tuple[int, ...]

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.survivors, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaConsistencyRequest:
        return cls(round, sender, tuple(_ids(r, "SA_CONSISTENCY_REQUEST")))


@dataclass(frozen=True)
class SaConsistencySignature(Message):
    """Client → server (consistency check): its identity key's signature of U3 (:func:`consistency_signed`)."""

    TYPE = MsgType.SA_CONSISTENCY_SIGNATURE
    round: int
    sender: int
    signature: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.signature)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaConsistencySignature:
        sig = r.blob(SIGNATURE_BYTES)
        if len(sig) != SIGNATURE_BYTES:
            raise MalformedMessageError(f"SA_CONSISTENCY_SIGNATURE: a signature is {SIGNATURE_BYTES} bytes")
        return cls(round, sender, sig)


@dataclass(frozen=True)
class SaCheckedUnmaskRequest(Message):
    """Server → client v (consistency check): as ``SA_UNMASK_REQUEST``, plus U3 and the signatures
    of U3 by v's neighbours that signed it (``signers``, 64 bytes each in ``signatures``)."""

    TYPE = MsgType.SA_CHECKED_UNMASK_REQUEST
    round: int
    sender: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    u3: tuple[int, ...]
    signers: tuple[int, ...]
    signatures: bytes

    def _write(self, w: Writer) -> None:
        for ids in (self.survivors, self.dropped, self.u3, self.signers):
            w.array(np.asarray(ids, dtype=np.uint32))
        w.blob(self.signatures)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaCheckedUnmaskRequest:
        what = "SA_CHECKED_UNMASK_REQUEST"
        survivors, dropped, u3, signers = (tuple(_ids(r, what)) for _ in range(4))
        sigs = r.blob(SIGNATURE_BYTES * len(signers))
        if len(sigs) != SIGNATURE_BYTES * len(signers):
            raise MalformedMessageError(f"{what}: signature block does not match the signer count")
        return cls(round, sender, survivors, dropped, u3, signers, sigs)

    def signature_of(self, i: int) -> bytes:
        return self.signatures[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]
