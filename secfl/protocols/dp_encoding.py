"""Integer encoding with distributed DP noise, for the ring-based protocols (additive, secagg).

Under differential privacy a client's update (already L2-clipped to C by the runtime) is
quantized by the calibrated integer mechanism (:meth:`IntegerMechanism.encode`: scale L/C,
unbiased stochastic rounding), the client adds *its own* integer noise share (discrete Gaussian
or Skellam, fresh CSPRNG) and the result, plus a count element 1, is reduced mod 2^k. The
protocol then masks or shares these residues exactly as it does without DP, so no party ever
handles an unnoised update. Decoding lifts the modular sum back to signed integers (the DP plan
checked that the noisy sum of the round's clients cannot wrap), rescales by γ = C/L and divides
by the revealed count: every included client has weight 1 under DP.

Central mode uses the same encoding without client noise; the server adds the noise to the
revealed mean (:mod:`secfl.runtime.privacy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfl.crypto.encoding import WeightedEncoder
from secfl.crypto.prg import Prg
from secfl.crypto.ring import Ring
from secfl.dp import DPMode, IntegerMechanism, from_modular, to_modular
from secfl.errors import ConfigError, InvalidUpdateError, ProtocolAbort

__all__ = ["DPEncoder", "round_encoder"]


@dataclass(frozen=True)
class DPEncoder:
    """Same interface as :class:`~secfl.crypto.encoding.WeightedEncoder`, for DP rounds."""

    mechanism: IntegerMechanism
    modulus_bits: int
    clients: int
    ring: Ring = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", Ring(self.modulus_bits))
        self.mechanism.check_bits(self.modulus_bits, self.clients, 2.0**-40)

    @property
    def levels(self) -> int:
        return int(self.mechanism.levels)

    def length(self, dim: int) -> int:
        return dim + 1

    def encode(self, x: np.ndarray, weight: float, dither: Prg) -> np.ndarray:
        if float(weight) != 1.0:
            raise InvalidUpdateError(f"under differential privacy every client has weight 1, got {weight!r}")
        q = self.mechanism.encode(np.asarray(x, dtype=np.float64), dither)
        if self.mechanism.mode is DPMode.DISTRIBUTED:
            q = q + self.mechanism.client_share(q.size, Prg())  # this client's own noise share
        out = np.empty(q.size + 1, dtype=np.int64)
        out[:-1] = q
        out[-1] = 1
        return to_modular(out, self.modulus_bits).astype(self.ring.dtype)

    def decode(self, total: np.ndarray, count: int) -> tuple[np.ndarray, float, float]:
        signed = from_modular(np.asarray(total, dtype=np.uint64), self.modulus_bits)
        m = int(signed[-1])
        if m != count or m < 1:
            raise ProtocolAbort(f"revealed count {m} does not match the {count} clients summed")
        mean = np.asarray(self.mechanism.decode(signed[:-1]), dtype=np.float64) / m
        return mean, float(m), self.error_bound(m, float(m))

    def error_bound(self, count: int, b_hat: float) -> float:
        """Rounding error of the mean (the DP noise is deliberate and not counted): < γ."""
        return float(self.mechanism.gamma)


def round_encoder(options: Any, clients: int, dp: IntegerMechanism | None) -> WeightedEncoder | DPEncoder:
    """The encoder of a round: weighted quantization, or the DP mechanism's when DP is on."""
    if dp is None:
        return WeightedEncoder.for_round(options.clip_range, options.bits, options.modulus_bits,
                                         options.max_weight, clients)
    if not isinstance(dp, IntegerMechanism):
        raise ConfigError(f"an integer protocol needs an integer DP mechanism, got {type(dp).__name__}")
    return DPEncoder(dp, options.modulus_bits, clients)


class IntegerDP:
    """Mixin for ring-based protocols: how the runtime switches on distributed integer DP."""

    integer_domain = True
    _dp: IntegerMechanism | None = None
    options: Any

    @property
    def modulus_bits(self) -> int:
        return int(self.options.modulus_bits)

    def with_dp(self, mechanism: IntegerMechanism) -> Any:
        """A new protocol instance whose clients encode with ``mechanism`` (and add its noise)."""
        new = type(self)(self.options)  # type: ignore[call-arg]
        new._dp = mechanism
        return new
