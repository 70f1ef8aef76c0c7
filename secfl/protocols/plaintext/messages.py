"""``plaintext`` messages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.errors import MalformedMessageError
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = ["PlainUpdate"]


@dataclass(frozen=True)
class PlainUpdate(Message):
    """Client → server: the update in the clear and its weight."""

    TYPE = MsgType.PLAIN_UPDATE
    round: int
    sender: int
    weight: float
    vector: np.ndarray

    def _write(self, w: Writer) -> None:
        w.f64(self.weight).array(self.vector)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> PlainUpdate:
        weight = r.f64()
        vector = r.array()
        if vector.dtype.kind != "f":
            raise MalformedMessageError(f"PLAIN_UPDATE: expected a float vector, got {vector.dtype}")
        return cls(round, sender, weight, vector)
