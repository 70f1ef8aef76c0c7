"""An active relay for the authentication tests: it sits between the coordinator and the parties
and rewrites the requests of one stage, or the replies, as a malicious server or a network
adversary would (fresh, valid frames: the CRC does not save anyone)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from secfl.protocols.parties import Transport

Rewrite = Callable[[int, bytes], bytes]


class Relay(Transport):
    """Wraps ``inner``; at ``stage`` passes each request through ``on_request(pid, data)`` and
    each reply through ``on_reply(pid, data)``; counts the requests it rewrote."""

    def __init__(self, inner: Transport, stage: str, on_request: Rewrite | None = None,
                 on_reply: Rewrite | None = None) -> None:
        self.inner, self.stage = inner, stage
        self.on_request, self.on_reply = on_request, on_reply
        self.rewritten = 0

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        if stage == self.stage and self.on_request is not None:
            requests = {pid: self.on_request(pid, data) for pid, data in requests.items()}
            self.rewritten += len(requests)
        got = self.inner.exchange(stage, requests)
        if stage == self.stage and self.on_reply is not None:
            got = {pid: self.on_reply(pid, data) for pid, data in got.items()}
        return got


def rewrite_active_set(craft: Callable[[Any], Any]) -> Rewrite:
    """A relay rewrite for THR_PARTIAL_REQUEST: ``craft(msg) -> msg`` rewrites the THR_ACTIVE_SET
    (aggregate, active members, clients) that a quorum member receives."""
    from secfl.protocols.ckks_threshold.messages import ThrActiveSet, ThrPartialRequest

    def rewrite(_pid: int, data: bytes) -> bytes:
        req = ThrPartialRequest.from_bytes(data)
        msg = craft(ThrActiveSet.from_bytes(req.active_set))
        return ThrPartialRequest(req.round, req.sender, req.clients, msg.to_bytes()).to_bytes()

    return rewrite
