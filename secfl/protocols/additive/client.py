"""The ``additive`` client: splits its encoded update into S shares, each sealed to its server.

It holds only its own update (``set_input``) and, for the current round, the S servers' public
keys; a fresh ephemeral X25519 key per upload seals each share to its server (HPKE-style), so
the coordinator that relays the shares across sites can open none but its own (server 0's).

Stage it answers across sites: ``additive.upload`` — ``ADD_UPLOAD_REQUEST`` (participants, the
round's public dither seed, the S relayed ``ADD_SERVER_KEY`` messages) → ``ADD_UPLOAD`` (its S
sealed ``ADD_SHARE`` messages). In the simulator the servers' keys arrive directly
(:meth:`AdditiveClient.accept_server_keys`) and the round calls :meth:`AdditiveClient.protect`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secfl.crypto.encoding import WeightedEncoder
from secfl.crypto.identity import Roster
from secfl.crypto.keys import PrivateKey, PublicKey, agree, seal
from secfl.crypto.prg import Prg
from secfl.crypto.sharing import additive_split
from secfl.dp import IntegerMechanism
from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort
from secfl.protocols.additive.messages import (
    AddServerKey,
    AddShare,
    AddUpload,
    AddUploadRequest,
    ShareKind,
    server_key_signed,
    share_ad,
)
from secfl.protocols.additive.options import KDF_LABEL, UPLOAD_STAGE, AdditiveOptions, dither, holder
from secfl.protocols.base import check_update
from secfl.protocols.dp_encoding import DPEncoder, round_encoder
from secfl.protocols.network import server_id
from secfl.protocols.parties import ClientParty

__all__ = ["AdditiveClient"]


class AdditiveClient(ClientParty):
    """One ``additive`` client."""

    def __init__(self, party_id: int, options: AdditiveOptions, dp: IntegerMechanism | None = None,
                 roster: Roster | None = None) -> None:
        if isinstance(party_id, bool) or not isinstance(party_id, int) or not 0 <= party_id < server_id(0):
            raise ConfigError(f"an additive client id must be in [0, 2**31), got {party_id!r}")
        self.party_id = party_id
        self._opt = options
        self._dp = dp
        self._roster = roster  # servers 1..S-1 must have signed their keys
        #: (round, the S servers' public keys) once they arrived
        self._keys: tuple[int, tuple[PublicKey, ...]] | None = None

    def __repr__(self) -> str:
        return f"AdditiveClient({self.party_id})"

    def accept_server_keys(self, rnd: int, messages: Sequence[bytes]) -> None:
        """The S servers' ``ADD_SERVER_KEY`` messages for round ``rnd``, server j's at position j."""
        if len(messages) != self._opt.servers:
            raise MalformedMessageError(f"client {self.party_id}: {len(messages)} server keys, this federation has"
                                        f" {self._opt.servers} aggregation servers")
        keys = []
        for j, data in enumerate(messages):
            msg = AddServerKey.from_bytes(data, expect_round=rnd, expect_sender=server_id(j))
            if self._roster is not None and j > 0:  # server 0 is the coordinator itself
                self._roster.verify(server_id(j), server_key_signed(rnd, j, msg.public_key), msg.signature,
                                    f"client {self.party_id}: aggregation server {j}'s key")
            keys.append(PublicKey(msg.public_key))
        self._keys = (rnd, tuple(keys))

    def protect(self, rnd: int, encoder: WeightedEncoder | DPEncoder, dim: int, update: np.ndarray, weight: float,
                prg: Prg) -> tuple[tuple[int, bytes], ...]:
        """The S ``ADD_SHARE`` messages of ``(update, weight)``: (server id, bytes), server j's at j.

        ``encoder`` is the round's (public) encoder, ``prg`` the rounding dither."""
        if self._keys is None or self._keys[0] != rnd:
            raise ProtocolAbort(f"client {self.party_id} has no server keys: run setup() first")
        keys = self._keys[1]
        vec = check_update(update, dim, who=f"client {self.party_id} update")
        codes = encoder.encode(vec, weight, prg)
        ring = encoder.ring
        length = encoder.length(dim)
        residual, seeds = additive_split(codes, ring, len(keys))
        eph = PrivateKey.generate()
        parts = []
        mine = holder(self.party_id, len(keys))
        seed_iter = iter(seeds)
        for j, pk in enumerate(keys):
            sid = server_id(j)
            if j == mine:
                kind, size, plain = ShareKind.VECTOR, length, ring.pack(residual)
            else:
                kind, size, plain = ShareKind.SEED, 0, next(seed_iter)
            key = agree(eph, pk, KDF_LABEL, rnd, self.party_id, sid)
            sealed = seal(key, plain, share_ad(rnd, self.party_id, sid, kind, size))
            parts.append((sid, AddShare(rnd, self.party_id, sid, eph.public_key.raw, kind, size, sealed).to_bytes()))
        return tuple(parts)

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage != UPLOAD_STAGE:
            raise MalformedMessageError(f"additive client: unknown stage {stage!r}")
        req = AddUploadRequest.from_bytes(request, expect_sender=server_id(0))
        if self.party_id not in {int(c) for c in req.participants}:
            raise MalformedMessageError(f"client {self.party_id} is not a participant of round {req.round}")
        self.accept_server_keys(req.round, req.server_keys)
        encoder = round_encoder(self._opt, len(req.participants), self._dp)
        update, weight = self.take_input(req.round)
        prg = dither(req.seed or None, req.round, self.party_id)
        parts = self.protect(req.round, encoder, req.dim, update, weight, prg)
        self._keys = None  # one upload per round
        return AddUpload(req.round, self.party_id, tuple(data for _, data in parts)).to_bytes()
