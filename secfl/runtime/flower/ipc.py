"""The local pipe between a site's Flower ClientApp (a fresh process per message) and the site's
own long-lived program, which holds its data, model and protocol parties.

Flower starts a new ClientApp process for every message, so a party's keys cannot live there;
they live in the ``secfl deploy client`` process, which serves this pipe on a Unix socket in a
private (0700) directory of the same machine. One request: ``party u32 | stage length u16 |
data length u64 | stage | data``; one answer: ``status u8 (0 ok, 1 error) | length u64 | bytes``.
Nothing here crosses a network: it is the site talking to itself.
"""

from __future__ import annotations

import socket
import struct

from secfl.errors import MalformedMessageError

__all__ = ["call", "read_request", "write_answer", "MAX_FRAME"]

_REQ = struct.Struct("<IHQ")
_ANS = struct.Struct("<BQ")
MAX_FRAME = 1 << 34


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise MalformedMessageError(f"site pipe closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def call(path: str, party: int, stage: str, data: bytes, timeout: float = 3600.0) -> tuple[bool, bytes]:
    """Send one request to the site program at ``path``; ``(ok, answer)``."""
    raw = stage.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(_REQ.pack(party, len(raw), len(data)) + raw + data)
        status, n = _ANS.unpack(_recv_exact(sock, _ANS.size))
        if n > MAX_FRAME:
            raise MalformedMessageError(f"site pipe: answer of {n} bytes")
        return status == 0, _recv_exact(sock, n)


def read_request(sock: socket.socket) -> tuple[int, str, bytes]:
    party, slen, n = _REQ.unpack(_recv_exact(sock, _REQ.size))
    if n > MAX_FRAME:
        raise MalformedMessageError(f"site pipe: request of {n} bytes")
    stage = _recv_exact(sock, slen).decode()
    return party, stage, _recv_exact(sock, n)


def write_answer(sock: socket.socket, ok: bool, payload: bytes) -> None:
    sock.sendall(_ANS.pack(0 if ok else 1, len(payload)) + payload)
