"""The reals a CKKS client encrypts, and how the key holders turn the decrypted sums into the mean.

Shared by ``ckks`` and ``ckks-threshold``. A client encrypts ``dim + 1`` reals: its weighted
update ``a·x`` and its weight ``a`` in the spare last slot. :class:`SlotCodec` fixes, for one
round, how those reals are formed (:class:`InputKind`) and how a decrypted sum is decoded.

Security (Li–Micciancio, Eurocrypt 2021): whoever holds a ciphertext and its *noisy* decryption
can solve for the secret key. ``GRID`` input puts every client's reals on a public grid whose step
is more than twice the bound on the sum's CKKS noise, and the key holder rounds the decrypted sums
back onto it: the revealed mean is then a deterministic function of the clients' inputs and
carries no trace of the noise (except with the bound's tail probability, < 2.5e-14 per value).
Spec: ``protocols/ckks.md`` ("Grid decoding").
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto.encoding import check_within_clip
from secfl.errors import ConfigError, InsecureParametersError, InvalidUpdateError, ProtocolAbort, SecurityWarning
from secfl.protocols.base import check_update, check_weight

__all__ = ["InputKind", "SlotCodec", "warn_noisy_reveal", "weight_factor"]

_log = logging.getLogger("secfl")
#: Relative slack on the clients' largest value once rounded onto the grid.
_GRID_SLACK = 1.0 + 2.0**-10
#: The grid's integers stay exactly representable in float64 with this margin.
_MAX_GRID_INT = 2.0**52


class InputKind(str, Enum):
    """What clients feed in, and what the decrypted sums become.

    GRID (``ckks``'s default): real updates within ±clip_range, weights a_k = n_k / max_weight;
    each client rounds a_k·x_k (and a_k) onto a public grid of step 2^-g, chosen per round as
    fine as the CKKS noise allows, and encrypts it lifted by 2^j (the headroom the overflow bound
    leaves). The key holder rounds the decrypted sums back onto the grid, which removes the CKKS
    noise exactly: the revealed mean carries rounding error only (``error_bound``), and no noise
    a key-recovery attack could use. QUANTIZED: integer updates and integer weights n_k; the sums
    are rounded to integers (exact when the error bound is below 1/2). FLOAT (``ckks-threshold``,
    whose partial decryptions carry flooding noise): reals as for GRID, decoded as they come.
    UNSAFE_FLOAT (``ckks`` only, explicit): the noisy float decryption is revealed as is — whoever
    also holds the aggregate ciphertext (the server) can recover the key; warns every round.
    """

    GRID = "grid"
    QUANTIZED = "quantized"
    FLOAT = "float"
    UNSAFE_FLOAT = "unsafe-float"


def warn_noisy_reveal(protocol: str, rnd: int) -> None:
    """The loud warning of :attr:`InputKind.UNSAFE_FLOAT`, once per round (warning and log)."""
    text = (f"{protocol} round {rnd}: input='unsafe-float' reveals the noisy CKKS decryption; a party holding the"
            " aggregate ciphertext and the revealed mean can recover the secret key (Li-Micciancio) and read every"
            " individual update. Use input='grid' (the default) unless no such party sees the mean.")
    _log.warning(text)
    warnings.warn(text, SecurityWarning, stacklevel=3)


def weight_factor(opt: Any) -> float:
    """c_w: the factor on the weight slot (GRID: the largest power of two <= max(clip_range, 1))."""
    if InputKind(opt.input) is not InputKind.GRID:
        return 1.0
    return 2.0 ** math.floor(math.log2(max(float(opt.clip_range), 1.0)))


@dataclass(frozen=True)
class SlotCodec:
    """One round's encoding of (a·x, a) into slots and decoding of their decrypted sum.

    ``lift`` = 2^j and ``grid`` = 2^g (GRID only; 1 and 0 otherwise); ``weight_factor`` = c_w,
    the largest power of two ≤ max(clip_range, 1), by which the weight slot is scaled so that it
    gets the grid's full resolution (it still stays within the clipping range).
    """

    input: InputKind
    dim: int
    clip_range: float
    max_weight: float
    lift: float = 1.0
    grid: float = 0.0
    weight_factor: float = 1.0
    clients: int = 1

    @classmethod
    def for_round(cls, opt: Any, dim: int, clients: int,
                  sum_error_bound: Callable[[float], float] | None = None,
                  check_overflow: Callable[[float], None] | None = None) -> SlotCodec:
        """The codec for a round of ``clients`` under options ``opt`` (``input``, ``clip_range``,
        ``max_weight``). GRID needs the parameter set's ``sum_error_bound(max_abs)`` and
        ``check_overflow(max_abs)`` for this many clients: the lift is the largest power of two
        the overflow bound accepts, the grid the finest whose half step exceeds the lifted noise."""
        kind = InputKind(opt.input)
        base = cls(kind, dim, float(opt.clip_range), float(opt.max_weight), clients=int(clients))
        if kind is not InputKind.GRID:
            return base
        if sum_error_bound is None or check_overflow is None:
            raise ConfigError("grid input needs the parameter set's error and overflow bounds")
        plain = max(float(opt.clip_range), 1.0)
        check_overflow(plain)  # InsecureParametersError as for any input
        j = 0
        while j < 64:
            try:
                check_overflow(plain * _GRID_SLACK * 2.0 ** (j + 1))
            except InsecureParametersError:
                break
            j += 1
        lift = 2.0**j
        max_abs = plain * _GRID_SLACK * lift if j else plain
        noise = sum_error_bound(max_abs) / lift  # bound on each decrypted real, in grid units
        g = math.floor(-math.log2(2.0 * noise))
        while g > -64 and clients * plain * _GRID_SLACK * 2.0**g >= _MAX_GRID_INT:
            g -= 1
        return cls(kind, dim, base.clip_range, base.max_weight, lift, 2.0**g, weight_factor(opt), int(clients))

    @property
    def grid_bits(self) -> int | None:
        """g, the grid's resolution in bits (GRID only)."""
        return int(math.log2(self.grid)) if self.grid else None

    def max_abs(self) -> float:
        """Largest |value| a client encrypts (the overflow check's max|value|)."""
        if self.input is InputKind.QUANTIZED:
            return self.max_weight * self.clip_range
        return max(self.clip_range, 1.0) * (self.lift * _GRID_SLACK if self.lift > 1.0 else 1.0)

    def encode(self, update: np.ndarray, weight: float, who: str) -> np.ndarray:
        """The ``dim + 1`` reals a client encrypts (update and weight validated first)."""
        vec = check_update(update, self.dim, max_abs=self.clip_range, who=f"{who} update")
        w = check_weight(weight, who=f"{who} weight", max_weight=self.max_weight)
        values = np.empty(self.dim + 1, dtype=np.float64)
        if self.input is InputKind.QUANTIZED:
            if not float(w).is_integer():
                raise InvalidUpdateError(f"{who} weight: quantized input needs an integer weight, got {w}")
            if vec.dtype.kind == "f" and not bool(np.all(vec == np.rint(vec))):
                raise InvalidUpdateError(f"{who} update: quantized input must be integer-valued")
            np.multiply(vec, w, out=values[:-1], casting="unsafe")
            values[-1] = w
            return values
        a = w / self.max_weight
        np.multiply(vec, a, out=values[:-1], casting="unsafe")
        values[-1] = a
        if self.grid:
            values[-1] *= self.weight_factor
            np.rint(values * self.grid, out=values)  # exact integers (< 2^52): the grid points
            values *= self.lift / self.grid  # powers of two: exact
        return values

    def decode(self, values: np.ndarray, bound: float, rnd: int) -> tuple[np.ndarray, float, float]:
        """Decrypted sums -> ``(mean, total weight, error bound)``. ``bound``: the per-real error
        bound of the decrypted sums (for GRID: at the lifted magnitude, :meth:`max_abs`)."""
        sums, total = values[:-1], float(values[-1])
        if self.input is InputKind.QUANTIZED:
            sums, total = np.rint(sums), float(np.rint(total))
            err_x = err_w = 0.0
        elif self.grid:
            if bound * self.grid / self.lift >= 0.5:  # cannot happen with for_round's choice
                raise ProtocolAbort(f"round {rnd}: the CKKS noise bound exceeds half a grid step")
            scale = self.grid / self.lift
            sums = np.rint(sums * scale) / self.grid  # the exact sum of the clients' grid points
            total = float(np.rint(total * scale)) / (self.grid * self.weight_factor)
            err_x = self.clients * 0.5 / self.grid  # each client's rounding to the grid
            err_w = err_x / self.weight_factor
        else:
            err_x = err_w = bound
        if total <= err_w:
            raise ProtocolAbort(f"round {rnd}: decrypted total weight {total:.3g} is not positive")
        mean = sums / total
        peak = float(np.max(np.abs(mean))) if mean.size else 0.0
        error = (err_x + peak * err_w) / (total - err_w)
        weight = total if self.input is InputKind.QUANTIZED else total * self.max_weight
        if self.input is not InputKind.QUANTIZED:
            check_within_clip(mean, self.clip_range, error)
        return mean, weight, error
