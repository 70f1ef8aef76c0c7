"""The ``plaintext`` client: sends its update and weight in the clear."""

from __future__ import annotations

import numpy as np

from secfl.errors import MalformedMessageError
from secfl.protocols.base import check_update, check_weight
from secfl.protocols.network import server_id
from secfl.protocols.parties import ClientParty, RoundRequest
from secfl.protocols.plaintext.messages import PlainUpdate
from secfl.protocols.plaintext.options import PlaintextOptions
from secfl.protocols.wire import Reader, Writer

__all__ = ["PlainClient"]


class PlainClient(ClientParty):
    """Stage ``plaintext.upload``: ``ROUND_REQUEST`` → ``PLAIN_UPDATE``."""

    def __init__(self, party_id: int, options: PlaintextOptions) -> None:
        self.party_id = party_id
        self._dtype = np.dtype(options.wire_dtype.value)

    def protect(self, rnd: int, dim: int, update: np.ndarray, weight: float) -> bytes:
        vec = check_update(update, dim, who=f"client {self.party_id} update")
        w = check_weight(weight, who=f"client {self.party_id} weight")
        return PlainUpdate(rnd, self.party_id, w, np.asarray(vec, dtype=self._dtype)).to_bytes()

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage != "plaintext.upload":
            raise MalformedMessageError(f"plaintext client: unknown stage {stage!r}")
        req = RoundRequest.from_bytes(request, expect_sender=server_id(0))
        if self.party_id not in set(int(c) for c in req.participants):
            raise MalformedMessageError(f"client {self.party_id} is not a participant of round {req.round}")
        update, weight = self.take_input(req.round)
        return self.protect(req.round, req.dim, update, weight)

    def save_state(self) -> bytes:
        """Only the round's input: a plaintext client holds nothing else."""
        return self._save_input(Writer().u32(self.party_id)).getvalue()

    def load_state(self, data: bytes) -> None:
        r = Reader(data, "plaintext client state")
        if r.u32() != self.party_id:
            raise MalformedMessageError(f"the saved state is not client {self.party_id}'s")
        self._load_input(r)
        r.done()
