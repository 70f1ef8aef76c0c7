"""The ``ckks`` server's stage sequence across sites (any :class:`~secfl.protocols.parties.Transport`).

Per round, in order (each stage: send, collect replies until the deadline, go on with whoever
answered):

1. ``ckks.hello`` — only to clients not yet provisioned: ``ROUND_REQUEST`` → ``CKKS_HELLO``.
2. ``ckks.keys`` — to the key holder, when the server has no public context yet or new clients
   said hello: ``CKKS_KEY_REQUEST`` → ``CKKS_KEYS`` (public context; secret contexts sealed per
   client, which the server relays unopened).
3. ``ckks.upload`` — to every participant: ``CKKS_UPLOAD_REQUEST`` (with its sealed context the
   first time) → ``CKKS_UPDATE``, parsed and added as it arrives; a bad upload drops its sender.
4. ``ckks.reveal`` — to the key holder: ``CKKS_REVEAL_REQUEST`` (the aggregate) → ``CKKS_REVEAL``.

Security: as in :mod:`secfl.protocols.ckks` — the server holds the public context and
ciphertexts only; the revealed mean it receives is decoded onto the grid (no CKKS noise).
Sealed provisioning protects the secret context from an honest-but-curious relay. Against an
active relay, with a federation roster: each client signs its hello key and the key holder seals
only to a hello whose signature verifies; the key holder signs each one-time key (bound to the
client's hello key) and a client opens only a context sealed under a key holder's signed key.
"""

from __future__ import annotations

import numpy as np

from secfl.crypto.encoding import check_within_clip
from secfl.errors import InsufficientQuorumError, MalformedMessageError, ProtocolAbort
from secfl.protocols.base import Revealed, RoundSpec
from secfl.protocols.ckks.client import KEY_HOLDER
from secfl.protocols.ckks.messages import (
    CkksHello,
    CkksKeyRequest,
    CkksReveal,
    CkksRevealRequest,
    CkksUploadRequest,
)
from secfl.protocols.ckks.options import CkksOptions
from secfl.protocols.ckks.server import SERVER, CkksServer
from secfl.protocols.ckks_encoding import InputKind
from secfl.protocols.parties import Coordinator, RoundRequest, Transport

__all__ = ["CkksCoordinator", "STAGES"]

STAGES = ("ckks.hello", "ckks.keys", "ckks.upload", "ckks.reveal")


class CkksCoordinator(Coordinator):
    """The server across sites: its :class:`CkksServer` plus who has been provisioned."""

    def __init__(self, options: CkksOptions) -> None:
        self.options = options
        self.params = options.resolved_params()
        self.server = CkksServer(options, self.params)
        self.provisioned: set[int] = set()
        #: the error bound the key holder reported for the latest round
        self.error_bound: float | None = None
        #: client -> why it dropped out of the latest round
        self.dropped: dict[int, str] = {}

    UPLOAD_STAGE = "ckks.upload"

    def forget(self, party: int) -> None:
        """A site restarted: its client lost its key and is provisioned again."""
        self.provisioned.discard(party)

    def run_round(self, spec: RoundSpec, transport: Transport) -> Revealed:
        rnd, clients = spec.round, tuple(sorted(spec.clients))
        ids = np.asarray(clients, dtype=np.uint32)
        self.dropped = {}
        # 1-2: keys, and provisioning for newcomers
        new = [c for c in clients if c not in self.provisioned]
        hellos: dict[int, CkksHello] = {}
        if new:
            ask = RoundRequest(rnd, SERVER, ids, spec.dim).to_bytes()
            for c, data in transport.exchange("ckks.hello", {c: ask for c in new}).items():
                try:
                    hellos[c] = CkksHello.from_bytes(data, expect_round=rnd, expect_sender=c)
                except MalformedMessageError as exc:
                    self.dropped[c] = f"bad hello: {exc}"
        sealed: dict[int, tuple[bytes, bytes, bytes]] = {}
        if self.server.context is None or hellos:
            order = sorted(hellos)
            req = CkksKeyRequest(rnd, SERVER, self.server.context is None, np.asarray(order, dtype=np.uint32),
                                 tuple(hellos[c].public_key for c in order), tuple(hellos[c].signature for c in order))
            got = transport.exchange("ckks.keys", {KEY_HOLDER: req.to_bytes()})
            if KEY_HOLDER not in got:
                raise InsufficientQuorumError(f"round {rnd}: the key holder did not answer"
                                              f" ({transport.failures.get(KEY_HOLDER, 'no reply')})")
            sealed = self.server.accept_keys(got[KEY_HOLDER], rnd)
        # 3: uploads, added as they arrive
        participants = frozenset(clients)
        self.server.open_round(rnd, participants, spec.dim)
        requests = {}
        for c in clients:
            if c in self.provisioned:
                requests[c] = CkksUploadRequest(rnd, SERVER, ids, spec.dim).to_bytes()
            elif c in sealed:
                key, blob, sig = sealed[c]
                requests[c] = CkksUploadRequest(rnd, SERVER, ids, spec.dim, key, blob, sig).to_bytes()
            else:
                self.dropped.setdefault(c, "not provisioned (no hello)")
        for c, data in transport.exchange("ckks.upload", requests).items():
            self.provisioned.add(c)
            try:
                self.server.intake(c, data)
            except MalformedMessageError as exc:
                self.dropped[c] = f"{type(exc).__name__}: {exc}"
        for c in clients:
            if c not in self.server.accepted:
                self.dropped.setdefault(c, transport.failures.get(c, "no reply"))
        # 4: reveal
        agg = self.server.aggregate_message()
        req_reveal = CkksRevealRequest(rnd, SERVER, ids, spec.dim, agg)
        got = transport.exchange("ckks.reveal", {KEY_HOLDER: req_reveal.to_bytes()})
        if KEY_HOLDER not in got:
            raise ProtocolAbort(f"round {rnd}: the key holder did not reveal"
                                f" ({transport.failures.get(KEY_HOLDER, 'no reply')})")
        out = CkksReveal.from_bytes(got[KEY_HOLDER], expect_round=rnd, expect_sender=KEY_HOLDER)
        included = tuple(int(c) for c in out.included)
        if set(included) != self.server.accepted or out.mean.size != spec.dim:
            raise ProtocolAbort(f"round {rnd}: the key holder revealed another set or length than aggregated")
        self.error_bound = out.error_bound
        if self.options.input is not InputKind.QUANTIZED:  # the key holder's mean is checked like every other
            check_within_clip(out.mean, float(self.options.clip_range), float(out.error_bound))
        dropped = tuple(sorted(participants - set(included)))
        return Revealed(np.array(out.mean), out.total_weight, included, dropped)
