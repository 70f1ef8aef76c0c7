"""The ``ckks-threshold`` client: holds the collective public key and encrypts its update.

A client holds no secret of the protocol: the collective key is public, and its only secret is its
own update. Stage it answers across sites: ``thr.upload`` (``THR_UPLOAD_REQUEST``, carrying the
``THR_COLLECTIVE_KEY`` frame the first time under each key → ``THR_UPDATE``). In the simulator the
server sends it the collective key directly (:meth:`ThresholdClient.accept_key`) and the round calls
:meth:`ThresholdClient.protect`.
"""

from __future__ import annotations

import numpy as np

from secfl.crypto.identity import IdentityKey, Roster
from secfl.crypto.threshold import CollectivePublicKey, ThresholdParams, pack_polys
from secfl.errors import AuthenticationError, ConfigError, MalformedMessageError, ProtocolAbort
from secfl.protocols.ckks_threshold.messages import (
    ThrCollectiveKey,
    ThrUpdate,
    ThrUploadRequest,
    key_signed,
    upload_signed,
)
from secfl.protocols.ckks_threshold.options import CkksThresholdOptions, round_codec
from secfl.protocols.network import member_id, server_id
from secfl.protocols.parties import ClientParty

__all__ = ["ThresholdClient", "UPLOAD"]

#: stage name across sites
UPLOAD = "thr.upload"


class ThresholdClient(ClientParty):
    """One ``ckks-threshold`` client. ``shared`` (simulator only) lets clients that received
    identical key bytes share one parsed :class:`CollectivePublicKey` (public material)."""

    def __init__(self, party_id: int, options: CkksThresholdOptions, params: ThresholdParams,
                 shared: dict[bytes, CollectivePublicKey] | None = None, roster: Roster | None = None,
                 identity: IdentityKey | None = None) -> None:
        self.party_id = int(party_id)
        self._roster = roster
        self._identity = identity
        self._opt = options
        self._params = params
        self._shared = shared
        self._key: CollectivePublicKey | None = None
        self._key_bytes: bytes | None = None

    def __repr__(self) -> str:
        return f"ThresholdClient({self.party_id}, key={'yes' if self._key else 'no'})"

    @property
    def key(self) -> CollectivePublicKey | None:
        """The collective public key this client encrypts under (None until provisioned)."""
        return self._key

    def accept_key(self, data: bytes, rnd: int) -> None:
        """``THR_COLLECTIVE_KEY`` from the server: the key to encrypt under from now on, once at
        least t quorum members have signed it (a key the server made up carries no such signatures)."""
        msg = ThrCollectiveKey.from_bytes(data, expect_round=rnd, expect_sender=server_id(0))
        if msg.key == self._key_bytes:
            return
        cached = self._shared.get(msg.key) if self._shared is not None else None
        key = cached if cached is not None else CollectivePublicKey.from_bytes(msg.key)
        if key.params != self._params:
            raise MalformedMessageError(f"client {self.party_id}: the collective key has other parameters than"
                                        f" configured")
        if cached is None:  # the simulator's shared cache holds keys already checked
            self._check_signatures(msg, key)
        if self._shared is not None and cached is None:
            self._shared.clear()  # one key in force at a time
            self._shared[msg.key] = key
        self._key, self._key_bytes = key, msg.key

    def _check_signatures(self, msg: ThrCollectiveKey, key: CollectivePublicKey) -> None:
        """At least t distinct key-share holders (of ``msg.dealers``) signed this key."""
        if self._roster is None:
            raise ConfigError(f"client {self.party_id}: checking the collective key needs the federation roster")
        t = self._opt.quorum[0]
        signed = key_signed(msg.epoch, key.key_id, self._params.to_bytes())
        valid = set()
        for j, sig in msg.signatures:
            if j not in msg.dealers:
                continue
            try:
                self._roster.verify(member_id(j), signed, sig, f"client {self.party_id}: member {j}'s key signature")
            except AuthenticationError:
                continue
            valid.add(j)
        if len(valid) < t:
            raise AuthenticationError(f"client {self.party_id}: the collective key carries {len(valid)} valid member"
                                      f" signature(s), at least {t} are needed; refusing to encrypt under it")

    def protect(self, rnd: int, participants: int, dim: int, update: np.ndarray, weight: float) -> bytes:
        """``THR_UPDATE``: (a·x, a) encoded for this round and encrypted under the collective key."""
        key = self._key
        if key is None:
            raise ProtocolAbort(f"client {self.party_id} holds no collective key (not provisioned in setup)")
        codec = round_codec(self._opt, self._params, dim, participants)
        values = codec.encode(update, weight, f"client {self.party_id}")
        if self._identity is None:
            raise ConfigError(f"client {self.party_id}: signing its upload needs its identity key")
        cts = key.encrypt(values)
        primes = key.params.data_primes
        sig = self._identity.sign(upload_signed(rnd, self.party_id, key.key_id, cts.shape[0],
                                                pack_polys(cts[:, 1], primes)))
        return ThrUpdate(rnd, self.party_id, key.key_id, cts.shape[0], pack_polys(cts, primes), sig).to_bytes()

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage != UPLOAD:
            raise MalformedMessageError(f"ckks-threshold client: unknown stage {stage!r}")
        req = ThrUploadRequest.from_bytes(request, expect_sender=server_id(0))
        if self.party_id not in set(int(c) for c in req.participants):
            raise MalformedMessageError(f"client {self.party_id} is not a participant of round {req.round}")
        if req.key:
            self.accept_key(req.key, req.round)
        if self._key is None or self._key.key_id != req.key_id:
            raise ProtocolAbort(f"client {self.party_id} does not hold the collective key the server names")
        update, weight = self.take_input(req.round)
        return self.protect(req.round, len(req.participants), req.dim, update, weight)
