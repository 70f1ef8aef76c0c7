"""Integer encoding of a *weighted* update, so that a sum mod ``2**k`` reveals a weighted mean.

A client with update ``x`` (length d) and weight ``n > 0`` encodes, with the public maximum
weight ``W`` and the :class:`~secfl.crypto.fixedpoint.Quantizer` ``(r, bits)``
(``L = 2**bits − 1`` levels, step ``Δ = 2r / L``)::

    w      = n / W                        in (0, 1]      (the client refuses n > W)
    x'     = clamp(x, −r, r)
    q_i    = SR((w·x'_i + r) / Δ)         in [0, L]      i = 1..d
    q_w    = SR(w · L)                    in [0, L]      the weight, one extra element

``SR`` is unbiased stochastic rounding: ``floor(y) + [u < y − floor(y)]`` with ``u`` a 32-bit
uniform from a :class:`~secfl.crypto.prg.Prg` (the same rule as ``Quantizer.encode``, written
for speed: one pass per operation, no temporaries; the 32-bit dither biases the rounding
probability by less than 2**-32). The vector ``(q_1 .. q_d, q_w)`` has ``d + 1`` elements in
``[0, L]``; the server only ever sees it masked or shared, never ``w``.

**Overflow.** The sum of ``m`` encodings is at most ``m·L`` per element; a configuration is
refused (:class:`~secfl.errors.InsecureParametersError`) unless ``m·L < 2**k`` for the actual
number ``m`` of clients that can be summed, so the sum mod ``2**k`` *is* the integer sum.

**Decoding.** From the integer sums ``Q_i = Σ q_i`` and ``Q_w = Σ q_w`` over ``m`` clients::

    B̂ = Q_w / L                     ≈ Σ w_k            (revealed total weight: W·B̂)
    Â = Q·Δ − m·r                   ≈ Σ w_k x'_k
    mean = Â / B̂

**Error bound** (per coordinate; derivation in ``protocols/additive.md``; tested): each rounding is off
by less than one step, so ``|Â − Σ w x'| < m·Δ`` and ``|B̂ − Σ w| < m/L``; with ``|Σ w x' / Σ w| ≤ r``::

    |mean − Σ w_k x'_k / Σ w_k|  <  (m·Δ + r·m/L) / B̂  =  3·r·m / (L·B̂)

— computable by anyone from the revealed values (:meth:`WeightedEncoder.error_bound`). With every
weight equal to ``W`` that is 1.5 Δ; it grows as ``W / mean(n)``: choose ``W`` as a tight public
bound on the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from secfl.crypto.fixedpoint import Quantizer
from secfl.crypto.prg import Prg
from secfl.crypto.ring import Ring
from secfl.errors import ConfigError, InsecureParametersError, InvalidUpdateError, ProtocolAbort

__all__ = ["WeightedEncoder", "auto_bits", "check_quantization_options", "check_within_clip"]

#: Automatic quantization never uses more bits than this (float64 keeps codes exact to 2**52;
#: 30 bits is already far below float32 resolution of a clipped update).
MAX_AUTO_BITS = 30


def auto_bits(modulus_bits: int, clients: int) -> int:
    """The largest quantization width ``b ≤ 30`` with ``clients · (2**b − 1) < 2**modulus_bits``."""
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    b = min(MAX_AUTO_BITS, modulus_bits)
    while b >= 1 and clients * ((1 << b) - 1) >= 1 << modulus_bits:
        b -= 1
    if b < 1:
        raise InsecureParametersError(
            f"no quantization width fits: {clients} clients × (2**1 − 1) ≥ 2**{modulus_bits} (the modulus); "
            "raise modulus_bits"
        )
    return b


def check_quantization_options(
    protocol: str, clip_range: float, bits: int | None, modulus_bits: int, max_weight: float
) -> None:
    """Validate the options every integer protocol shares, naming ``protocol.field`` on failure."""
    if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not (
        math.isfinite(clip_range) and clip_range > 0
    ):
        raise ConfigError(f"{protocol}.clip_range must be a finite number > 0, got {clip_range!r}")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 52):
        raise ConfigError(f"{protocol}.bits must be None (automatic) or an integer in [1, 52], got {bits!r}")
    if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int) or not 2 <= modulus_bits <= 64:
        raise ConfigError(f"{protocol}.modulus_bits must be an integer in [2, 64], got {modulus_bits!r}")
    if bits is not None and bits >= modulus_bits:
        raise InsecureParametersError(
            f"{protocol}.bits = {bits} leaves no headroom in a 2**{modulus_bits} modulus: the sum of two codes wraps"
        )
    if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not (
        math.isfinite(max_weight) and max_weight > 0
    ):
        raise ConfigError(f"{protocol}.max_weight must be a finite number > 0, got {max_weight!r}")


def check_within_clip(mean: np.ndarray, clip_range: float, error_bound: float) -> None:
    """The sanity check on a revealed mean: every input was clamped to ``[−r, r]``, so a weighted
    mean beyond ``r`` plus its error bound comes from a tampered or crafted aggregate.
    Raises :class:`~secfl.errors.ProtocolAbort` (nothing is applied)."""
    peak = float(np.max(np.abs(mean))) if np.size(mean) else 0.0
    limit = clip_range + error_bound
    if not np.isfinite(peak) or peak > limit * (1 + 1e-9):
        raise ProtocolAbort(f"the revealed mean reaches {peak:.6g}, beyond the clipping range {clip_range:g}"
                            f" (+ error bound {error_bound:.3g}): a tampered or crafted aggregate; round aborted")


@dataclass(frozen=True)
class WeightedEncoder:
    """Encode ``(x, n)`` as ``d + 1`` ring elements; decode a sum of ``m`` of them to the mean.

    ``clients`` is the number of encodings that may be summed; construction refuses a
    ``(bits, modulus_bits, clients)`` that can wrap around, naming the bound.
    """

    clip_range: float
    bits: int
    modulus_bits: int
    max_weight: float
    clients: int
    quantizer: Quantizer = field(init=False, repr=False)
    ring: Ring = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ring = Ring(self.modulus_bits)
        q = Quantizer(self.clip_range, self.bits)
        if not (isinstance(self.max_weight, (int, float)) and math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigError(f"max_weight must be a finite number > 0, got {self.max_weight!r}")
        if not isinstance(self.clients, int) or self.clients < 1:
            raise ConfigError(f"clients must be an integer >= 1, got {self.clients!r}")
        worst = self.clients * q.levels
        if worst >= ring.modulus:
            raise InsecureParametersError(
                f"the sum can wrap around: {self.clients} clients × (2**{q.bits} − 1) = {worst} ≥ 2**{ring.bits} "
                f"(the modulus); use bits ≤ {auto_bits(ring.bits, self.clients)} or a larger modulus_bits"
            )
        object.__setattr__(self, "quantizer", q)
        object.__setattr__(self, "ring", ring)

    @classmethod
    def for_round(
        cls, clip_range: float, bits: int | None, modulus_bits: int, max_weight: float, clients: int
    ) -> WeightedEncoder:
        """The encoder for a round of ``clients``; ``bits=None`` picks :func:`auto_bits`."""
        b = auto_bits(modulus_bits, clients) if bits is None else bits
        return cls(float(clip_range), b, modulus_bits, float(max_weight), clients)

    @property
    def levels(self) -> int:
        return self.quantizer.levels

    def length(self, dim: int) -> int:
        """Encoded length for a ``dim``-parameter update: ``dim + 1`` (the weight is the last)."""
        return dim + 1

    def weight_fraction(self, weight: float) -> float:
        """``n / W``, refusing a weight above the public maximum."""
        w = float(weight)
        if not (math.isfinite(w) and w > 0):
            raise InvalidUpdateError(f"weight must be finite and > 0, got {weight!r}")
        if w > self.max_weight:
            raise InvalidUpdateError(
                f"weight {w:g} exceeds max_weight {self.max_weight:g} (a public protocol option: raise it to "
                "a bound on every client's weight)"
            )
        return w / self.max_weight

    def encode(self, x: np.ndarray, weight: float, dither: Prg) -> np.ndarray:
        """The ``d + 1`` codes of ``(x, weight)`` in the ring's dtype (see the module docstring)."""
        w = self.weight_fraction(weight)
        r = float(self.clip_range)
        inv_step = 1.0 / self.quantizer.step
        n = x.shape[0]
        y = np.empty(n + 1, dtype=np.float64)
        head = y[:n]
        np.maximum(x, -r, out=head)  # clamp (np.clip is several times slower)
        np.minimum(head, r, out=head)
        head *= w * inv_step
        head += r * inv_step  # ≥ 0: w·x' ≥ −r
        y[n] = w * self.levels
        lo = np.floor(y)
        y -= lo  # the fractional part, in [0, 1)
        y *= 4294967296.0  # frac · 2**32, compared with a uniform 32-bit word
        lo += dither.uint32(n + 1) < y
        np.minimum(lo, self.levels, out=lo)
        return lo.astype(self.ring.dtype)

    def decode(self, total: np.ndarray, count: int) -> tuple[np.ndarray, float, float]:
        """``(mean, total_weight, bound)`` from the integer sum of ``count`` encodings.

        ``total_weight`` is ``W·B̂`` (the revealed estimate of ``Σ n_k``), ``bound`` the error
        bound of the mean from the module docstring.
        """
        if count < 1:
            raise ProtocolAbort("nothing to decode: no client was summed")
        if count > self.clients:
            raise ProtocolAbort(f"{count} encodings summed but the overflow check covered only {self.clients}")
        tot = np.asarray(total)
        qw = int(tot[-1])
        if qw == 0:
            raise ProtocolAbort(
                f"the revealed total weight rounds to 0 (Σ n/W < 1/(2**{self.bits}−1)): lower max_weight"
            )
        b_hat = qw / self.levels
        a_hat = self.quantizer.decode_sum(tot[:-1], count)
        mean = a_hat / b_hat
        bound = self.error_bound(count, b_hat)
        check_within_clip(mean, float(self.clip_range), bound)
        return mean, b_hat * float(self.max_weight), bound

    def error_bound(self, count: int, b_hat: float) -> float:
        """``3·r·m / (L·B̂)``: the largest error of any coordinate of the revealed mean."""
        return 3.0 * float(self.clip_range) * count / (self.levels * b_hat)
