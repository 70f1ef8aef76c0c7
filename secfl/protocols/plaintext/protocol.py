"""The ``plaintext`` protocol object and its in-process round."""

from __future__ import annotations

from typing import Any

from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import Party
from secfl.protocols.plaintext.client import PlainClient
from secfl.protocols.plaintext.options import PlaintextOptions
from secfl.protocols.plaintext.server import PlainServer
from secfl.protocols.plaintext.stages import PlainCoordinator

__all__ = ["Plaintext"]


class _PlainRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, options: PlaintextOptions) -> None:
        super().__init__(spec, net)
        self._opt = options
        self._server_id = server_id(0)
        self._server = PlainServer(options, spec.round, frozenset(spec.clients), spec.dim)

    def protect(self, client: int, update: Any, weight: float) -> Upload:
        data = PlainClient(client, self._opt).protect(self.spec.round, self.spec.dim, update, weight)
        return Upload(((self._server_id, data),))

    def receive(self, client: int, upload: Upload) -> None:
        data = self.single_message(client, upload, self._server.accepted, self._server_id)
        self._server.intake(client, data)

    def reveal(self) -> Revealed:
        return self._server.reveal()


class Plaintext(Protocol):
    """Plain weighted FedAvg over real serialized messages (no protection)."""

    name = "plaintext"
    summary = "no protection: the server reads every update (baseline)"
    reveals_to = "server"
    Options = PlaintextOptions

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _PlainRound(spec, net, self.options)

    def coordinator(self) -> PlainCoordinator:
        return PlainCoordinator(self.options)

    def party(self, party_id: int, *, identity: Any = None, roster: Any = None) -> Party:
        return PlainClient(party_id, self.options)
