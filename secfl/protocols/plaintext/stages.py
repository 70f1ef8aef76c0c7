"""The ``plaintext`` server's stage sequence across sites: one stage, ``plaintext.upload``
(``ROUND_REQUEST`` → ``PLAIN_UPDATE``), each reply checked and added as it arrives."""

from __future__ import annotations

import numpy as np

from secfl.errors import SecFLError
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.network import server_id
from secfl.protocols.parties import Coordinator, RoundRequest, Transport
from secfl.protocols.plaintext.options import PlaintextOptions
from secfl.protocols.plaintext.server import PlainServer

__all__ = ["PlainCoordinator", "STAGES"]

STAGES = ("plaintext.upload",)


class PlainCoordinator(Coordinator):
    def __init__(self, options: PlaintextOptions) -> None:
        self.options = options
        #: client -> why it dropped out of the latest round
        self.dropped: dict[int, str] = {}

    UPLOAD_STAGE = "plaintext.upload"

    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        clients = tuple(sorted(spec.clients))
        server = PlainServer(self.options, spec.round, frozenset(clients), spec.dim)
        ask = RoundRequest(spec.round, server_id(0), np.asarray(clients, dtype=np.uint32), spec.dim).to_bytes()
        self.dropped = {}
        for c, data in transport.exchange("plaintext.upload", {c: ask for c in clients}).items():
            try:
                server.intake(c, data)
            except SecFLError as exc:
                self.dropped[c] = f"{type(exc).__name__}: {exc}"
        for c in clients:
            if c not in server.accepted:
                self.dropped.setdefault(c, transport.failures.get(c, "no reply"))
        return server.reveal()
