"""The ``plaintext`` server: checks each update and adds ``n_k · x_k`` to a running sum."""

from __future__ import annotations

import numpy as np

from secfl.errors import DuplicateSenderError, MalformedMessageError, ProtocolAbort
from secfl.protocols.base import Revealed, check_update, check_weight
from secfl.protocols.plaintext.messages import PlainUpdate
from secfl.protocols.plaintext.options import PlaintextOptions

__all__ = ["PlainServer"]


class PlainServer:
    """One round's running sum; no upload is kept after it is folded in."""

    def __init__(self, options: PlaintextOptions, rnd: int, participants: frozenset[int], dim: int) -> None:
        self._opt = options
        self._round = rnd
        self._participants = participants
        self._dim = dim
        self._sum = np.zeros(dim, dtype=np.float64)
        self._total = 0.0
        self.accepted: set[int] = set()

    def intake(self, client: int, data: bytes) -> None:
        if client not in self._participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {self._round}")
        if client in self.accepted:
            raise DuplicateSenderError(f"client {client} already contributed to round {self._round}")
        msg = PlainUpdate.from_bytes(data, expect_round=self._round, expect_sender=client)
        vec = check_update(msg.vector, self._dim, max_abs=self._opt.max_abs, who=f"client {client} update")
        w = check_weight(msg.weight, who=f"client {client} weight")
        self._sum += w * vec.astype(np.float64)
        self._total += w
        self.accepted.add(client)

    def reveal(self) -> Revealed:
        if not self.accepted:
            raise ProtocolAbort(f"round {self._round}: no client update was accepted")
        accepted = tuple(sorted(self.accepted))
        dropped = tuple(sorted(self._participants - set(accepted)))
        return Revealed(self._sum / self._total, self._total, accepted, dropped)
