"""Fixed-point quantization with stochastic rounding, for protocols that work on integers.

A :class:`Quantizer` maps a real ``x`` to an integer ``q`` in ``[0, 2**bits - 1]``::

    x' = clamp(x, -r, r)                  r = clip range
    y  = (x' + r) / Δ                     Δ = 2r / (2**bits - 1)   (the step)
    q  = floor(y) + [u < y - floor(y)]    u ~ U[0, 1) from a cryptographic PRG

and back with ``x̂ = q·Δ - r``.

Error bound (property-tested): ``|x̂ - x'| < Δ`` for every coordinate, and ``E[x̂] = x'``
(stochastic rounding is unbiased). A sum of ``m`` quantized values decodes with
:meth:`Quantizer.decode_sum` as ``Σq·Δ - m·r``; its error is below ``m·Δ`` (and, being a sum of
independent zero-mean errors, typically ``~√m·Δ/2``), so a weighted mean
``Σ w_k x̂_k / Σ w_k`` is within ``Δ`` of ``Σ w_k x'_k / Σ w_k``. Values outside ``±r`` are clamped:
that error is the caller's choice of range (clip first, then quantize).

The rounding dither is not secret (it carries no key), but it comes from :class:`~secfl.crypto.prg.Prg`
so that a seeded run is reproducible and an unseeded one is unpredictable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.crypto.prg import Prg
from secfl.errors import ConfigError

__all__ = ["Quantizer"]


@dataclass(frozen=True)
class Quantizer:
    """``clip_range`` r > 0 and ``bits`` in [1, 52] (so every integer is exact in float64)."""

    clip_range: float
    bits: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigError(f"quantizer clip_range must be a finite number > 0, got {self.clip_range}")
        if not isinstance(self.bits, (int, np.integer)) or not 1 <= int(self.bits) <= 52:
            raise ConfigError(f"quantizer bits must be an integer in [1, 52], got {self.bits!r}")

    @property
    def levels(self) -> int:
        """Largest code, ``2**bits - 1``."""
        return (1 << int(self.bits)) - 1

    @property
    def step(self) -> float:
        """Δ, the distance between two adjacent codes."""
        return 2.0 * self.clip_range / self.levels

    def encode(self, x: np.ndarray, prg: Prg) -> np.ndarray:
        """Stochastically round ``clamp(x)`` to codes in ``[0, levels]`` (uint64)."""
        xs = np.clip(np.asarray(x, dtype=np.float64), -self.clip_range, self.clip_range)
        y = (xs + self.clip_range) / self.step
        lo = np.floor(y)
        q = lo + (prg.random(y.size).reshape(y.shape) < (y - lo))
        return np.clip(q, 0, self.levels).astype(np.uint64)

    def decode(self, q: np.ndarray) -> np.ndarray:
        """Codes back to reals: ``q·Δ - r`` (float64)."""
        return np.asarray(q, dtype=np.float64) * self.step - self.clip_range

    def decode_sum(self, qsum: np.ndarray, count: int) -> np.ndarray:
        """Decode the integer sum of ``count`` codes to the sum of their reals."""
        return np.asarray(qsum, dtype=np.float64) * self.step - count * self.clip_range

    def sum_bits(self, count: int) -> int:
        """Bits needed to hold the sum of ``count`` codes without wrapping."""
        return int(count * self.levels).bit_length()
