"""``plaintext`` — FedAvg with no protection: the baseline every secure protocol is measured against.

Rounds:
  1. Each client sends ``PlainUpdate(round, sender, weight n_k, update)`` to the server.
  2. The server checks each message (type, round, sender, length, finite values, range) and adds
     ``n_k · update`` to a running float64 sum; no upload is kept after it is folded in.
  3. The server reveals ``Σ n_k x_k / Σ n_k``.

Security: none. The server (and anyone on the wire without TLS) reads every individual update
and weight; this is the "honest-but-curious server sees everything" reference point of the
threat-model comparisons. Spec: ``protocols/plaintext.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload, check_update, check_weight
from secfl.protocols.network import Network, server_id
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = ["WireDtype", "PlaintextOptions", "PlainUpdate", "Plaintext"]


class WireDtype(str, Enum):
    """Float width of updates on the wire."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"


@dataclass(frozen=True)
class PlaintextOptions:
    """``wire_dtype``: float32 (4 B/parameter, what FedAvg deployments send) or float64.
    ``max_abs``: the server rejects an update with any |value| above this (None: no bound)."""

    wire_dtype: WireDtype = WireDtype.FLOAT32
    max_abs: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "wire_dtype", WireDtype(self.wire_dtype))
        except ValueError:
            raise ConfigError(
                f"plaintext.wire_dtype must be one of {[d.value for d in WireDtype]}, got {self.wire_dtype!r}"
            ) from None
        if self.max_abs is not None and not (np.isfinite(self.max_abs) and self.max_abs > 0):
            raise ConfigError(f"plaintext.max_abs must be a finite number > 0 or None, got {self.max_abs}")


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


class _PlainRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, options: PlaintextOptions) -> None:
        super().__init__(spec, net)
        self._opt = options
        self._dtype = np.dtype(options.wire_dtype.value)
        self._server = server_id(0)
        self._sum = np.zeros(spec.dim, dtype=np.float64)
        self._total = 0.0
        self._accepted: set[int] = set()
        self._participants = frozenset(spec.clients)

    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        vec = check_update(update, self.spec.dim, who=f"client {client} update")
        w = check_weight(weight, who=f"client {client} weight")
        msg = PlainUpdate(self.spec.round, client, w, np.asarray(vec, dtype=self._dtype))
        return Upload(((self._server, msg.to_bytes()),))

    def receive(self, client: int, upload: Upload) -> None:
        data = self.single_message(client, upload, self._accepted, self._server)
        msg = PlainUpdate.from_bytes(data, expect_round=self.spec.round, expect_sender=client)
        vec = check_update(msg.vector, self.spec.dim, max_abs=self._opt.max_abs, who=f"client {client} update")
        w = check_weight(msg.weight, who=f"client {client} weight")
        self._sum += w * vec.astype(np.float64)
        self._total += w
        self._accepted.add(client)

    def reveal(self) -> Revealed:
        if not self._accepted:
            raise ProtocolAbort(f"round {self.spec.round}: no client update was accepted")
        accepted = tuple(sorted(self._accepted))
        dropped = tuple(sorted(self._participants - set(accepted)))
        return Revealed(self._sum / self._total, self._total, accepted, dropped)


class Plaintext(Protocol):
    """Plain weighted FedAvg over real serialized messages (no protection)."""

    name = "plaintext"
    summary = "no protection: the server reads every update (baseline)"
    reveals_to = "server"
    Options = PlaintextOptions

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _PlainRound(spec, net, self.options)

