"""The Flower grid as a :class:`~secfl.protocols.parties.Transport` (inside secfl's ServerApp).

Every request becomes one Flower ``Message`` of type ``query.secfl`` to the node that hosts the
party, carrying a ``ConfigRecord`` ``{"party": id, "stage": name, "data": bytes}``; the reply
carries ``{"data": bytes}`` or ``{"error": text}``. Replies are pulled with a short poll
(``poll`` seconds) until all arrived or the stage's deadline passed: a party that has not
answered by then is simply absent (Flower's grid returns fewer replies; nothing waits forever).
Bytes are counted on :attr:`net` exactly as in the simulator (the secfl frames, not Flower's
envelope).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import StageTimeouts, Transport
from secfl.runtime.flower.audit import append

__all__ = ["FlowerTransport", "MESSAGE_TYPE", "RECORD"]

MESSAGE_TYPE = "query.secfl"
RECORD = "secfl"


class FlowerTransport(Transport):
    """``grid``: Flower's ``Grid``; ``nodes``: party id -> node id (kept up to date by the app)."""

    def __init__(self, grid: Any, nodes: dict[int, int], timeouts: StageTimeouts, net: Network,
                 *, poll: float = 0.05, record: Path | None = None) -> None:
        self.record = record
        self.grid = grid
        self.nodes = nodes
        self.timeouts = timeouts
        self.net = net
        self.poll = poll
        self.failures: dict[int, str] = {}

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        from flwr.app import ConfigRecord, Message, RecordDict

        pending: dict[str, int] = {}
        messages = []
        for pid, data in requests.items():
            node = self.nodes.get(pid)
            if node is None:
                self.failures[pid] = "no site hosts this party (not connected)"
                continue
            self.net.send(server_id(0), pid, data)
            if self.record is not None:
                append(self.record, False, pid, stage, data)
            content = RecordDict({RECORD: ConfigRecord({"party": int(pid), "stage": stage, "data": data})})
            messages.append((pid, Message(content=content, dst_node_id=node, message_type=MESSAGE_TYPE)))
        if not messages:
            return {}
        ids = list(self.grid.push_messages([m for _, m in messages]))
        for (pid, _), mid in zip(messages, ids, strict=True):
            pending[mid] = pid
        replies: dict[int, bytes] = {}
        deadline = time.monotonic() + self.timeouts.for_stage(stage)
        while pending and time.monotonic() < deadline:
            for msg in self.grid.pull_messages(set(pending)):
                if msg.metadata.reply_to_message_id not in pending:
                    continue
                pid = pending.pop(msg.metadata.reply_to_message_id)
                if msg.has_error():
                    self.failures[pid] = f"site error: {msg.error.reason}"
                    continue
                rec = msg.content[RECORD]
                if "error" in rec:
                    self.failures[pid] = str(rec["error"])
                    continue
                data = rec["data"]
                if not isinstance(data, bytes):
                    self.failures[pid] = "malformed reply (no bytes)"
                    continue
                replies[pid] = self.net.send(pid, server_id(0), data)
                if self.record is not None:
                    append(self.record, True, pid, stage, data)
            if pending:
                time.sleep(self.poll)
        for pid in pending.values():
            self.failures[pid] = f"no reply to stage {stage!r} within {self.timeouts.for_stage(stage):g} s"
        return replies
