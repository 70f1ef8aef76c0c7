"""Message framing: every message between parties is bytes with a strict format.

Frame (little-endian, fixed widths)::

    magic      2 bytes  b"SF"
    version    u8       WIRE_VERSION
    type       u8       MsgType
    round      u32
    sender     u32      party id (see :mod:`secfl.protocols.network`)
    length     u64      payload length in bytes
    payload    length bytes (type-specific, written with :class:`Writer`)
    crc32      u32      over everything above

The CRC catches accidental corruption and truncation; it is not authentication. Authenticity of
the sender is the channel's job (TLS in a deployment; the simulator's network knows the true
sender and the receiver checks the header against it), and protocols that relay secrets through
the server encrypt them with an AEAD on top of this frame.

Parsing is strict: wrong magic, version, type, round, sender, length, CRC, trailing bytes or a
payload that fails validation raise :class:`~secfl.errors.MalformedMessageError` (or its child
:class:`~secfl.errors.ReplayError` for a message of another round). Nothing is ever unpickled.

Parsing comes before allocating: a count or length read from the wire is checked against the
bytes actually present (and a sane upper bound) before anything sized by it exists --
:meth:`Reader.blob` and :meth:`Reader.array` check the bytes left, :meth:`Reader.count` does it
for a list of items read one by one (``tests/test_parse_before_allocate.py``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import numpy as np

from secfl.errors import MalformedMessageError, ReplayError

__all__ = [
    "WIRE_VERSION",
    "MsgType",
    "Frame",
    "Writer",
    "Reader",
    "Message",
    "HEADER_BYTES",
    "OVERHEAD_BYTES",
]

WIRE_VERSION = 1
MAGIC = b"SF"
_HEADER = struct.Struct("<2sBBIIQ")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size
OVERHEAD_BYTES = _HEADER.size + _CRC.size
MAX_PAYLOAD = 1 << 34  # 16 GiB: a sanity bound, far above any real message


class MsgType(IntEnum):
    """Every message type of every protocol (one registry, so a tag is never reused)."""

    MODEL_BROADCAST = 1
    ROUND_REQUEST = 2
    TRAIN_DONE = 3
    SITE_HELLO = 4
    RUN_FINISH = 5
    RUN_CONFIG = 6
    PLAIN_UPDATE = 10
    # ckks (issue 3)
    CKKS_PUBLIC_CONTEXT = 20
    CKKS_UPDATE = 21
    CKKS_AGGREGATE = 22
    CKKS_SECRET_CONTEXT = 23
    CKKS_HELLO = 24
    CKKS_KEY_REQUEST = 25
    CKKS_KEYS = 26
    CKKS_UPLOAD_REQUEST = 27
    CKKS_REVEAL = 28
    CKKS_REVEAL_REQUEST = 29
    # ckks-threshold (issue 4)
    THR_PUBKEY_SHARE = 30
    THR_SHAMIR_SHARES = 31
    THR_COLLECTIVE_KEY = 32
    THR_ACTIVE_SET = 33
    THR_DECRYPT_REQUEST = 34
    THR_PARTIAL_DECRYPTION = 35
    THR_MEMBER_HELLO = 36
    THR_ROSTER = 37
    THR_UPDATE = 38
    THR_READY = 39
    # ckks-threshold across sites (issue 11; its block 30-39 is full)
    THR_KEYGEN_REQUEST = 130
    THR_DEALING = 131
    THR_KEY_DELIVERY = 132
    THR_KEY_ACK = 133
    THR_UPLOAD_REQUEST = 134
    THR_PARTIAL_REQUEST = 135
    # additive (issue 5)
    ADD_SHARE = 40
    ADD_PARTIAL_SUM = 41
    ADD_INCLUDED_SET = 42
    ADD_SERVER_KEY = 43
    ADD_UPLOAD_REQUEST = 44  # across sites (issue 11)
    ADD_UPLOAD = 45
    ADD_SHARE_BATCH = 46
    # secagg (issue 5)
    SA_ADVERTISE_KEYS = 50
    SA_KEY_ROSTER = 51
    SA_SHARE_KEYS = 52
    SA_SHARES_FORWARD = 53
    SA_MASKED_INPUT = 54
    SA_UNMASK_REQUEST = 55
    SA_UNMASK_RESPONSE = 56
    SA_CONSISTENCY_REQUEST = 57  # the optional consistency check (issue 12)
    SA_CONSISTENCY_SIGNATURE = 58
    SA_CHECKED_UNMASK_REQUEST = 59


@dataclass(frozen=True)
class Frame:
    """A parsed frame: header fields and the raw payload."""

    type: MsgType
    round: int
    sender: int
    payload: bytes | memoryview  # parsed frames hold a zero-copy view of the received bytes

    def to_bytes(self) -> bytes:
        if not 0 <= self.round < 1 << 32 or not 0 <= self.sender < 1 << 32:
            raise MalformedMessageError(f"round {self.round} or sender {self.sender} out of u32 range")
        head = _HEADER.pack(MAGIC, WIRE_VERSION, int(self.type), self.round, self.sender, len(self.payload))
        crc = zlib.crc32(self.payload, zlib.crc32(head))
        return b"".join((head, self.payload, _CRC.pack(crc)))

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        expect_type: MsgType | None = None,
        expect_round: int | None = None,
        expect_sender: int | None = None,
    ) -> Frame:
        """Parse and check one frame; the ``expect_*`` arguments make the check stricter."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessageError(f"a message must be bytes, got {type(data).__name__}")
        data = bytes(data) if not isinstance(data, bytes) else data
        if len(data) < OVERHEAD_BYTES:
            raise MalformedMessageError(
                f"message truncated: {len(data)} bytes, a frame needs at least {OVERHEAD_BYTES}"
            )
        magic, version, tag, rnd, sender, length = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise MalformedMessageError(f"bad magic {magic!r}: not a secfl message")
        if version != WIRE_VERSION:
            raise MalformedMessageError(f"unsupported wire version {version} (this build speaks {WIRE_VERSION})")
        if length > MAX_PAYLOAD or len(data) != OVERHEAD_BYTES + length:
            raise MalformedMessageError(
                f"length mismatch: header says {length} payload bytes, frame carries {len(data) - OVERHEAD_BYTES}"
            )
        (crc,) = _CRC.unpack_from(data, HEADER_BYTES + length)
        view = memoryview(data)
        if zlib.crc32(view[: HEADER_BYTES + length]) != crc:
            raise MalformedMessageError("checksum mismatch: the message was altered or corrupted in transit")
        try:
            mtype = MsgType(tag)
        except ValueError:
            raise MalformedMessageError(f"unknown message type {tag}") from None
        if expect_type is not None and mtype != expect_type:
            raise MalformedMessageError(f"expected a {expect_type.name} message, got {mtype.name}")
        if expect_round is not None and rnd != expect_round:
            raise ReplayError(f"message is for round {rnd}, this is round {expect_round}")
        if expect_sender is not None and sender != expect_sender:
            raise MalformedMessageError(f"header names sender {sender} but the channel says {expect_sender}")
        # a zero-copy view: arrays parsed from it share the received buffer
        return cls(mtype, rnd, sender, view[HEADER_BYTES : HEADER_BYTES + length])


class _DType(IntEnum):
    F32 = 1
    F64 = 2
    U8 = 3
    U32 = 4
    U64 = 5
    I64 = 6


_DTYPES: dict[_DType, np.dtype[Any]] = {
    _DType.F32: np.dtype("<f4"),
    _DType.F64: np.dtype("<f8"),
    _DType.U8: np.dtype("u1"),
    _DType.U32: np.dtype("<u4"),
    _DType.U64: np.dtype("<u8"),
    _DType.I64: np.dtype("<i8"),
}
_CODES = {v.newbyteorder("="): k for k, v in _DTYPES.items()}


class Writer:
    """Builds a payload from fixed-width little-endian fields and length-prefixed blocks."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        self._parts.append(struct.pack("<B", v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(struct.pack("<I", v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(struct.pack("<Q", v))
        return self

    def f64(self, v: float) -> Writer:
        self._parts.append(struct.pack("<d", v))
        return self

    def blob(self, b: bytes) -> Writer:
        self._parts.append(struct.pack("<Q", len(b)))
        self._parts.append(bytes(b))
        return self

    def array(self, a: np.ndarray) -> Writer:
        a = np.ascontiguousarray(a)
        code = _CODES.get(a.dtype.newbyteorder("="))
        if code is None or a.ndim != 1:
            raise MalformedMessageError(f"cannot frame array of dtype {a.dtype} and ndim {a.ndim}")
        self._parts.append(struct.pack("<BQ", code, a.size))
        self._parts.append(a.astype(_DTYPES[code], copy=False).tobytes())
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Strict reader for a payload written by :class:`Writer`; call :meth:`done` at the end."""

    __slots__ = ("_buf", "_pos", "_what")

    def __init__(self, buf: bytes | memoryview, what: str = "payload") -> None:
        self._buf = memoryview(buf)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._buf):
            raise MalformedMessageError(f"{self._what} truncated at byte {self._pos} (needed {n} more)")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._buf) - self._pos

    def count(self, n: int, min_item_bytes: int, what: str, most: int | None = None) -> int:
        """Check a count read from the wire before anything is built for it: ``n`` items of at
        least ``min_item_bytes`` each must fit in the bytes left (and ``n <= most``). Returns ``n``."""
        if most is not None and n > most:
            raise MalformedMessageError(f"{self._what}: {n} {what}, at most {most}")
        if n * min_item_bytes > self.remaining:
            raise MalformedMessageError(f"{self._what}: {n} {what} of at least {min_item_bytes} bytes each,"
                                        f" but only {self.remaining} bytes are left")
        return n

    def u8(self) -> int:
        return int(self._take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self._take(8))[0])

    def f64(self) -> float:
        return float(struct.unpack("<d", self._take(8))[0])

    def blob(self, max_len: int | None = None) -> bytes:
        n = self.u64()
        if max_len is not None and n > max_len:
            raise MalformedMessageError(f"{self._what}: block of {n} bytes exceeds the limit {max_len}")
        return bytes(self._take(n))

    def array(self, dtype: str | None = None, length: int | None = None) -> np.ndarray:
        """Read an array; ``dtype``/``length`` pin what the caller expects. The result is a
        view of the payload (no copy), its length checked against the bytes left first."""
        code = self.u8()
        try:
            dt = _DTYPES[_DType(code)]
        except ValueError:
            raise MalformedMessageError(f"{self._what}: unknown array dtype code {code}") from None
        n = self.u64()
        if dtype is not None and dt != np.dtype(dtype).newbyteorder("<") and dt != np.dtype(dtype):
            raise MalformedMessageError(f"{self._what}: expected array of {np.dtype(dtype)}, got {dt}")
        if length is not None and n != length:
            raise MalformedMessageError(f"{self._what}: expected {length} values, got {n}")
        raw = self._take(n * dt.itemsize)
        return np.frombuffer(raw, dtype=dt)

    def done(self) -> None:
        if self._pos != len(self._buf):
            raise MalformedMessageError(f"{self._what}: {len(self._buf) - self._pos} unexpected trailing bytes")


M = TypeVar("M", bound="Message")


class Message:
    """Base of every message dataclass: ``round`` and ``sender`` fields plus a payload codec.

    Subclasses are frozen dataclasses that set ``TYPE`` and implement ``_write`` / ``_read``.
    """

    TYPE: ClassVar[MsgType]
    round: int
    sender: int

    def _write(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read(cls: type[M], r: Reader, round: int, sender: int) -> M:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        w = Writer()
        self._write(w)
        return Frame(self.TYPE, self.round, self.sender, w.getvalue()).to_bytes()

    @classmethod
    def from_bytes(
        cls: type[M], data: bytes, *, expect_round: int | None = None, expect_sender: int | None = None
    ) -> M:
        frame = Frame.from_bytes(data, expect_type=cls.TYPE, expect_round=expect_round, expect_sender=expect_sender)
        r = Reader(frame.payload, cls.TYPE.name)
        msg = cls._read(r, frame.round, frame.sender)
        r.done()
        return msg
