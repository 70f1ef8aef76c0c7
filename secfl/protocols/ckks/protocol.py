"""The ``ckks`` protocol object and its in-process round (the simulator's transport).

:class:`Ckks` holds one :class:`CkksKeyHolder`, one :class:`CkksServer` and a
:class:`CkksClient` per client, each with only its own state; :class:`_CkksRound` drives them
through the four steps of :class:`~secfl.protocols.base.ProtocolRound`, every message crossing
the :class:`~secfl.protocols.network.Network` as bytes. The key holder provisions clients over a
direct (simulated confidential) channel here; across sites :class:`CkksCoordinator` relays sealed
contexts instead. Clients that received identical secret-context bytes share one parsed copy and
one encryption pool (a simulation shortcut: no party reads another's object).
"""

from __future__ import annotations

import logging
from typing import Any

from secfl.crypto.ckks import CkksEncryptor, CkksParams, CkksPublicContext, CkksSecretContext
from secfl.errors import ProtocolAbort
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.ckks.client import KEY_HOLDER, CkksClient
from secfl.protocols.ckks.key_holder import CkksKeyHolder
from secfl.protocols.ckks.options import CkksOptions, round_codec
from secfl.protocols.ckks.server import SERVER, CkksServer
from secfl.protocols.ckks.stages import CkksCoordinator
from secfl.protocols.ckks_encoding import InputKind, warn_noisy_reveal
from secfl.protocols.network import Network
from secfl.protocols.parties import Party

__all__ = ["Ckks"]

log = logging.getLogger("secfl.protocols.ckks")


class _CkksRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, proto: Ckks) -> None:
        super().__init__(spec, net)
        self._proto = proto
        self._participants = frozenset(spec.clients)
        self._codec = round_codec(proto.options, proto.params, spec.dim, len(spec.clients))
        self._open = False
        if proto.options.input is InputKind.UNSAFE_FLOAT:
            warn_noisy_reveal("ckks", spec.round)
        #: bound on |revealed mean - exact weighted mean| per coordinate, set by reveal()
        self.error_bound: float | None = None

    def party_state(self, party: int) -> dict[str, Any]:
        """The key holder, and every provisioned client: the shared secret context."""
        return self._proto._party_state(party)

    def setup(self) -> None:
        self._proto._provision(self.spec, self.net)
        self._proto.server.open_round(self.spec.round, self._participants, self.spec.dim)
        self._open = True

    def protect(self, client: int, update: Any, weight: float) -> Upload:
        if not self._open:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before protect()")
        data = self._proto.client(client).protect(self.spec.round, len(self.spec.clients), self.spec.dim,
                                                  update, weight)
        return Upload(((SERVER, data),))

    def receive(self, client: int, upload: Upload) -> None:
        if not self._open:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before receive()")
        server = self._proto.server
        data = self.single_message(client, upload, server.accepted, SERVER)
        server.intake(client, data)

    def reveal(self) -> Revealed:
        server, holder = self._proto.server, self._proto.key_holder
        if not self._open or not server.accepted:
            raise ProtocolAbort(f"round {self.spec.round}: no client update was accepted")
        data = self.net.send(SERVER, KEY_HOLDER, server.aggregate_message())
        holder.expect_round(self.spec.round, self._participants, self.spec.dim)
        revealed = holder.reveal(data, self.spec.round)
        self.error_bound = holder.error_bound
        return revealed


class Ckks(Protocol):
    """CKKS aggregation; keys are generated once (first round) and kept for later rounds.

    Parties: :attr:`key_holder` (:class:`CkksKeyHolder`), :attr:`server` (:class:`CkksServer`,
    public material only), and a :class:`CkksClient` per client (:meth:`client`).
    :meth:`coordinator` gives the server's stage sequence for other transports; :meth:`party`
    a fresh party for a site. :meth:`close` ends the encryption process pools.
    """

    name = "ckks"
    summary = "CKKS homomorphic encryption: the server adds ciphertexts; a key holder decrypts the aggregate"
    reveals_to = "key holder (member 0; every client holds the same key)"
    Options = CkksOptions
    #: across sites every party needs its site's identity key and the federation roster
    needs_identities = True

    def __init__(self, options: CkksOptions | None = None) -> None:
        super().__init__(options)
        self.params: CkksParams = self.options.resolved_params()
        self.key_holder = CkksKeyHolder(self.options, self.params)
        self.server = CkksServer(self.options, self.params)
        self._clients: dict[int, CkksClient] = {}
        self._shared: dict[bytes, tuple[CkksSecretContext, CkksEncryptor]] = {}

    # views kept for callers of earlier versions (tests, threat experiments)
    @property
    def _holder(self) -> CkksSecretContext | None:
        return self.key_holder.state().get("secret_context")

    @property
    def _server(self) -> CkksPublicContext | None:
        return self.server.context

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _CkksRound(spec, net, self)

    def coordinator(self) -> CkksCoordinator:
        """The server's stage sequence across sites (holds public material only)."""
        return CkksCoordinator(self.options)

    def party(self, party_id: int, *, identity: Any = None, roster: Any = None) -> Party:
        """A new party for a site: the key holder for :data:`KEY_HOLDER`, else client ``party_id``."""
        if party_id == KEY_HOLDER:
            return CkksKeyHolder(self.options, self.params, identity, roster)
        return CkksClient(party_id, self.options, self.params, identity=identity, roster=roster)

    def site_roles(self, site: int, sites: int) -> tuple[int, ...]:
        """Across sites, site 0 also plays the key holder."""
        return (KEY_HOLDER,) if site == 0 else ()

    def client(self, cid: int) -> CkksClient:
        got = self._clients.get(cid)
        if got is None or not got.provisioned:
            raise ProtocolAbort(f"client {cid} holds no CKKS key (not provisioned in setup)")
        return got

    def _provision(self, spec: RoundSpec, net: Network) -> None:
        """Setup messages: the public context once; the secret context to each new client."""
        holder = self.key_holder
        if self.server.context is None:
            data = net.send(KEY_HOLDER, SERVER, holder.public_message(spec.round))
            self.server.accept_public(data, spec.round)
        secret: bytes | None = None
        for c in spec.clients:
            if c in self._clients and self._clients[c].provisioned:
                continue
            if secret is None:
                secret = holder.secret_message(spec.round)
            client = self._clients.setdefault(c, CkksClient(c, self.options, self.params, self._shared))
            client.accept_secret_context(net.send(KEY_HOLDER, c, secret), spec.round)

    def _party_state(self, party: int) -> dict[str, Any]:
        if party == KEY_HOLDER:
            return self.key_holder.state()
        client = self._clients.get(party)
        return {} if client is None else client.state()

    def clients_left(self, clients: frozenset[int]) -> None:
        """Every client holds the shared secret key, so a departed one could still decrypt: the
        next round runs under a fresh key pair and every remaining client is provisioned again."""
        if not clients:
            return
        log.warning("ckks: client(s) %s left the federation; new keys from the next round (they hold the old key)",
                    sorted(clients))
        self.close()
        self._clients.clear()
        self.key_holder = CkksKeyHolder(self.options, self.params)
        self.server = CkksServer(self.options, self.params)

    def close(self) -> None:
        for _, encryptor in self._shared.values():
            encryptor.close()
        self._shared.clear()
        for client in self._clients.values():
            client.close()
