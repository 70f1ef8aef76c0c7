"""The in-process network every protocol message travels through.

Parties are identified by u32 ids: clients ``0 .. 2**31-1`` (their index), servers and other
non-client roles above :data:`SERVER_BASE`. The network only moves ``bytes``: it counts bytes
sent and received per party (that is what secfl reports as communication) and can record each
party's *view* (every message it received, as the bytes it received) for threat-model
experiments.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from secfl.errors import MalformedMessageError

__all__ = ["SERVER_BASE", "MEMBER_BASE", "server_id", "member_id", "is_client", "Network", "Delivery"]

SERVER_BASE = 0x8000_0000
MEMBER_BASE = 0xC000_0000


def server_id(j: int = 0) -> int:
    """Party id of aggregation server ``j``."""
    return SERVER_BASE + j


def member_id(j: int) -> int:
    """Party id of key-holder / quorum member ``j`` when it is not a client."""
    return MEMBER_BASE + j


def is_client(party: int) -> bool:
    return 0 <= party < SERVER_BASE


@dataclass(frozen=True)
class Delivery:
    """One message as a party received it."""

    sender: int
    recipient: int
    data: bytes


@dataclass
class Network:
    """Counts and (optionally) records every message; delivery is immediate and in order."""

    record_views: bool = False
    sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    received: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    messages: int = 0
    views: dict[int, list[Delivery]] = field(default_factory=lambda: defaultdict(list))

    def send(self, sender: int, recipient: int, data: bytes) -> bytes:
        """Move ``data`` from ``sender`` to ``recipient``; returns the bytes the recipient gets."""
        if not isinstance(data, bytes):
            raise MalformedMessageError(f"only bytes cross the network, got {type(data).__name__}")
        n = len(data)
        self.sent[sender] += n
        self.received[recipient] += n
        self.messages += 1
        if self.record_views:
            self.views[recipient].append(Delivery(sender, recipient, data))
        return data

    def client_bytes(self) -> tuple[int, int]:
        """(bytes sent by clients, bytes received by clients), all clients together."""
        up = sum(v for k, v in self.sent.items() if is_client(k))
        down = sum(v for k, v in self.received.items() if is_client(k))
        return up, down

    def party_bytes(self) -> tuple[int, int]:
        """(bytes sent, bytes received) by every party that is not a server, together.

        Quorum members and key holders count here alongside clients: this is the traffic that
        crosses the parties' uplinks and downlinks, as opposed to server-to-server traffic.
        """
        up = sum(v for k, v in self.sent.items() if not SERVER_BASE <= k < MEMBER_BASE)
        down = sum(v for k, v in self.received.items() if not SERVER_BASE <= k < MEMBER_BASE)
        return up, down
