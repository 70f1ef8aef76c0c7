"""What the server's processes handled: a recording of every message, and a check for secrets.

``secfl deploy server --record FILE`` appends every request the server sends and every reply it
receives (the secfl frames, byte for byte) to FILE: ``direction u8 (0 request, 1 reply) | party
u32 | stage length u16 | stage | length u64 | bytes``. :func:`audit` lists what must never be
there: a CKKS secret context in the clear (a secfl context whose header says it carries the
secret key, inside any message), or an individual plaintext update (``PLAIN_UPDATE``) under a
protocol other than ``plaintext``. Sealed blobs (AES-GCM) and ciphertexts pass.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from secfl.errors import MalformedMessageError
from secfl.protocols.envelope import ENVELOPE_BYTES
from secfl.protocols.wire import Frame, MsgType

__all__ = ["Recorded", "append", "read_record", "audit", "SECRET_CONTEXT_MARKER"]

_HEAD = struct.Struct("<BIH")
_LEN = struct.Struct("<Q")
#: the first bytes of a serialized CKKS context that carries the secret key (magic, version, kind)
SECRET_CONTEXT_MARKER = b"SFCKKS\x02\x02"


@dataclass(frozen=True)
class Recorded:
    reply: bool
    party: int
    stage: str
    data: bytes


def append(path: Path, reply: bool, party: int, stage: str, data: bytes) -> None:
    raw = stage.encode()
    with path.open("ab") as fh:
        fh.write(_HEAD.pack(int(reply), party, len(raw)) + raw + _LEN.pack(len(data)) + data)


def read_record(path: str | Path) -> list[Recorded]:
    buf = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(buf):
        if pos + _HEAD.size > len(buf):
            raise MalformedMessageError("recording truncated")
        reply, party, n = _HEAD.unpack_from(buf, pos)
        pos += _HEAD.size
        stage = buf[pos : pos + n].decode()
        pos += n
        (length,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size
        out.append(Recorded(bool(reply), party, stage, buf[pos : pos + length]))
        pos += length
    return out


def audit(records: list[Recorded], protocol: str) -> list[str]:
    """Every violation found (empty: the server handled nothing secret)."""
    problems = []
    for i, rec in enumerate(records):
        where = f"message {i} ({'reply from' if rec.reply else 'request to'} party {rec.party}, stage {rec.stage})"
        if SECRET_CONTEXT_MARKER in rec.data:
            problems.append(f"{where}: a CKKS secret context in the clear")
        kind = _frame_type(rec.data)
        if kind is None:
            continue
        if kind is MsgType.CKKS_SECRET_CONTEXT:
            problems.append(f"{where}: CKKS_SECRET_CONTEXT")
        if kind is MsgType.PLAIN_UPDATE and protocol != "plaintext":
            problems.append(f"{where}: an individual plaintext update")
    return problems


def _frame_type(data: bytes) -> MsgType | None:
    """The frame's type, whether the message was recorded with its signed envelope or without."""
    for body in (data, data[:-ENVELOPE_BYTES] if len(data) > ENVELOPE_BYTES else b""):
        try:
            return Frame.from_bytes(body).type
        except MalformedMessageError:
            continue
    return None
