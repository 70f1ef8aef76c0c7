"""The ``ckks`` key holder: generates the keys, provisions clients, decrypts the aggregate.

A client-side party (it stands for "any client": every client holds the same key). Stages it
answers across sites: ``ckks.keys`` → ``CKKS_KEYS`` (the public context the first time, and the
secret context sealed for each new client under its hello key), ``ckks.reveal`` →
``CKKS_REVEAL`` (the mean decoded onto the grid). It checks that the aggregate it decrypts names
only participants of the round.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from secfl.crypto.ckks import CkksParams, CkksSecretContext
from secfl.crypto.identity import IdentityKey, Roster
from secfl.crypto.keys import PrivateKey, seal
from secfl.errors import AuthenticationError, MalformedMessageError
from secfl.protocols.base import Revealed
from secfl.protocols.ckks.client import KEY_HOLDER, provision_key
from secfl.protocols.ckks.messages import (
    CkksAggregate,
    CkksContextMessage,
    CkksKeyRequest,
    CkksKeys,
    CkksReveal,
    CkksRevealRequest,
    CkksSecretContextMessage,
    hello_signed,
    holder_signed,
)
from secfl.protocols.ckks.options import CkksOptions, round_codec
from secfl.protocols.network import server_id
from secfl.protocols.parties import Party

__all__ = ["CkksKeyHolder"]


log = logging.getLogger("secfl")


class CkksKeyHolder(Party):
    """Holds the secret context (generated on first use, kept for later rounds)."""

    party_id = KEY_HOLDER

    def __init__(self, options: CkksOptions, params: CkksParams, identity: IdentityKey | None = None,
                 roster: Roster | None = None) -> None:
        self._opt = options
        self._identity = identity  # signs each one-time provisioning key
        self._roster = roster  # each client's hello must carry its signature
        self._params = params
        self._secret: CkksSecretContext | None = None
        #: round -> (participants, dim), as the coordinator announced them (checked at reveal)
        self._rounds: dict[int, tuple[frozenset[int], int]] = {}
        #: set by :meth:`reveal`: the error bound of the latest reveal
        self.error_bound: float | None = None

    def __repr__(self) -> str:
        return f"CkksKeyHolder(keys={'yes' if self._secret else 'not yet'})"

    def state(self) -> dict[str, Any]:
        return {} if self._secret is None else {"secret_context": self._secret}

    @property
    def context(self) -> CkksSecretContext:
        if self._secret is None:
            self._secret = CkksSecretContext.generate(self._params)
        return self._secret

    def public_message(self, rnd: int) -> bytes:
        """``CKKS_PUBLIC_CONTEXT`` for the server: parameters and public key, no secret key."""
        return CkksContextMessage(rnd, KEY_HOLDER, self.context.public().to_bytes()).to_bytes()

    def secret_message(self, rnd: int) -> bytes:
        """``CKKS_SECRET_CONTEXT`` for the simulator's direct confidential channel to a client."""
        return CkksSecretContextMessage(rnd, KEY_HOLDER, self.context.to_bytes(include_secret_key=True)).to_bytes()

    def _keys(self, req: CkksKeyRequest) -> bytes:
        public = self.context.public().to_bytes() if req.need_public else b""
        secret = self.context.to_bytes(include_secret_key=True)
        holder_keys, sealed, sigs, served = [], [], [], []
        for client, hello, hello_sig in zip(req.clients, req.hellos, req.signatures, strict=True):
            c = int(client)
            if self._roster is not None:  # a relay that swapped the hello key cannot sign for it
                try:
                    self._roster.verify(c, hello_signed(req.round, c, hello), hello_sig,
                                        f"key holder: client {c}'s hello key")
                except AuthenticationError as exc:
                    log.warning("%s; no secret context sealed for it", exc)
                    continue
            served.append(c)
            eph = PrivateKey.generate()
            if self._identity is not None:
                sigs.append(self._identity.sign(holder_signed(req.round, c, hello, eph.public_key.raw)))
            key = provision_key(eph, hello, req.round, c)
            ad = b"secfl/ckks/secret-context" + req.round.to_bytes(4, "little") + c.to_bytes(4, "little")
            holder_keys.append(eph.public_key.raw)
            sealed.append(seal(key, secret, ad))
        return CkksKeys(req.round, KEY_HOLDER, public, np.asarray(served, dtype=np.uint32), tuple(holder_keys),
                        tuple(sealed), tuple(sigs)).to_bytes()

    def expect_round(self, rnd: int, participants: frozenset[int], dim: int) -> None:
        """The round's participants and length (the simulator tells it directly; across sites they
        arrive with the aggregate)."""
        self._rounds = {rnd: (participants, dim)}

    def reveal(self, data: bytes, rnd: int) -> Revealed:
        """Decrypt a ``CKKS_AGGREGATE`` and decode it (grid by default): the round's outcome."""
        if rnd not in self._rounds or self._secret is None:
            raise MalformedMessageError(f"key holder: no open round {rnd} (or no keys yet)")
        participants, dim = self._rounds[rnd]
        msg = CkksAggregate.from_bytes(data, expect_round=rnd, expect_sender=server_id(0))
        included = tuple(int(c) for c in msg.included)
        if not set(included) <= participants:
            raise MalformedMessageError("CKKS_AGGREGATE names clients that are not participants of this round")
        codec = round_codec(self._opt, self._params, dim, len(participants))
        cts = self._secret.public().ciphertexts_from_bytes(msg.ciphertexts,
                                                           expect_count=self._params.ciphertexts_for(dim + 1))
        values = self._secret.decrypt(cts, dim + 1)
        bound = self._params.sum_error_bound(len(included), codec.max_abs(), symmetric=True)
        mean, weight, self.error_bound = codec.decode(values, bound, rnd)
        dropped = tuple(sorted(participants - set(included)))
        return Revealed(mean, weight, included, dropped)

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage == "ckks.keys":
            return self._keys(CkksKeyRequest.from_bytes(request, expect_sender=server_id(0)))
        if stage == "ckks.reveal":
            req = CkksRevealRequest.from_bytes(request, expect_sender=server_id(0))
            self.expect_round(req.round, frozenset(int(c) for c in req.participants), req.dim)
            out = self.reveal(req.aggregate, req.round)
            return CkksReveal(req.round, KEY_HOLDER, np.asarray(out.included, dtype=np.uint32), out.mean,
                              out.total_weight, float(self.error_bound or 0.0)).to_bytes()
        raise MalformedMessageError(f"ckks key holder: unknown stage {stage!r}")
