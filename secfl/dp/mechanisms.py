"""Noise mechanisms: one interface, three distributions, each with its one-round RDP curve.

A :class:`NoiseMechanism` is fixed by the noise multiplier z, the clip norm C, the mode and
n_h (``min_honest``). The aggregate noise has standard deviation σ = z·C (in real units for the
Gaussian; in quantization steps, σ = z·L with L = C/γ, for the integer mechanisms). In
distributed mode every client adds a share of variance σ²/n_h, so any n_h honest shares sum
to the full σ² (exactly for the Gaussian and Skellam; for the discrete Gaussian the sum is
close to N_Z(0, σ²), which the τ term of its RDP bound pays for).

RDP of one round, no subsampling, for client-level add/remove neighbours (sensitivity of one
client's contribution to the sum: C, or Δ₂ / Δ₁ after quantization):

* Gaussian (Mironov, "Rényi Differential Privacy", CSF 2017): ε(α) = α·C²/(2σ²) = α/(2z²).
* Distributed discrete Gaussian (Kairouz, Liu & Steinke, ICML 2021, arXiv:2102.06387, Thm. 1
  and Prop. 14 / eq. (17)):
  with n shares N_Z(0, s²), σ² = n·s², τ = 10·Σ_{k=1}^{n-1} exp(-2π²s²·k/(k+1)),
  ε(α) = min{ α/2·Δ₂²/σ² + τd,  α/2·(Δ₂²/σ² + 2τΔ₁/σ + τ²d),  α/2·(Δ₂/σ + τ√d)² } (s ≥ 1/2).
* Skellam (Agarwal, Kairouz & Liu, NeurIPS 2021, arXiv:2110.04995, RDP of the distributed
  Skellam mechanism; the sum of shares is Skellam of variance μ = σ²):
  ε(α) = α·Δ₂²/(2μ) + min{ ((2α-1)Δ₂² + 6Δ₁)/(4μ²), 3Δ₁/(2μ) }.

Integer mechanisms also quantize: x ↦ x·L/C, stochastic rounding, clamp to [-L, L]. Rounding
moves each coordinate by less than 1, so a clipped update maps to an integer vector with
‖·‖₂ ≤ Δ₂ = L + √d (triangle inequality; KLS21 use the same unconditional bound, and a
tighter one with conditional rounding that we do not implement) and ‖·‖₁ ≤ Δ₁ = Δ₂·min(√d, Δ₂).
Their modular sum must not wrap: :meth:`IntegerMechanism.check_bits`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from secfl.crypto.prg import Prg
from secfl.dp import samplers
from secfl.dp.config import DPConfig, DPMode, MechanismKind
from secfl.errors import ConfigError, InsecureParametersError, InvalidUpdateError, ProtocolAbort

__all__ = [
    "NoiseMechanism",
    "GaussianMechanism",
    "IntegerMechanism",
    "DiscreteGaussianMechanism",
    "SkellamMechanism",
    "make_mechanism",
    "gaussian_tail",
    "skellam_tail",
    "to_modular",
    "from_modular",
]

NORM_SLACK = 1e-9  # relative float slack allowed on ‖x‖₂ ≤ C when quantizing (in the Δ₂ bound)


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ConfigError(f"noise dimension must be an integer >= 1, got {dim!r}")
    return int(dim)


def _check_prob(p: float) -> float:
    if not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
        raise ConfigError(f"failure probability must be in (0, 1), got {p!r}")
    return float(p)


def gaussian_tail(variance: float, dim: int, failure_prob: float) -> float:
    """t with P(max_i |Z_i| > t) ≤ ``failure_prob`` for ``dim`` coordinates of σ²-subgaussian noise.

    P(|Z| > t) ≤ 2·exp(-t²/(2σ²)) for a Gaussian, for N_Z(0, s²) (s-subgaussian: Canonne,
    Kamath & Steinke 2020) and for sums of independent such variables (variances add);
    a union bound over coordinates gives t = σ·√(2 ln(2d/β)).
    """
    _check_dim(dim)
    _check_prob(failure_prob)
    return math.sqrt(2.0 * variance * math.log(2.0 * dim / failure_prob))


def skellam_tail(variance: float, dim: int, failure_prob: float) -> float:
    """t with P(max_i |Z_i| > t) ≤ ``failure_prob`` for symmetric Skellam noise of variance μ.

    Chernoff: E[e^{θZ}] = exp(μ(cosh θ - 1)), so P(Z ≥ a) ≤ exp(-μ·h(a/μ)) with
    h(u) = u·asinh(u) - √(1+u²) + 1; solve μ·h(t/μ) = ln(2d/β) (union bound, two sides).
    """
    _check_dim(dim)
    _check_prob(failure_prob)
    if variance <= 0:
        return 0.0
    target = math.log(2.0 * dim / failure_prob)

    def rate(u: float) -> float:
        return variance * (u * math.asinh(u) - math.sqrt(1.0 + u * u) + 1.0)

    lo, hi = 0.0, 1.0
    while rate(hi) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if rate(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return hi * variance


def to_modular(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed int64 values → residues mod 2^bits (uint64, two's complement)."""
    if not 1 <= bits <= 64:
        raise ConfigError(f"modulus bits must be in [1, 64], got {bits!r}")
    out = np.asarray(values, dtype=np.int64).view(np.uint64)
    return out & np.uint64((1 << bits) - 1) if bits < 64 else out.copy()


def from_modular(residues: np.ndarray, bits: int) -> np.ndarray:
    """Residues mod 2^bits → the centred representative in [-2^(bits-1), 2^(bits-1)) (int64)."""
    if not 1 <= bits <= 64:
        raise ConfigError(f"modulus bits must be in [1, 64], got {bits!r}")
    shift = np.uint64(64 - bits)  # sign-extend the low ``bits`` bits
    return (np.asarray(residues, dtype=np.uint64) << shift).view(np.int64) >> np.int64(64 - bits)


@dataclass(frozen=True, kw_only=True)
class NoiseMechanism(ABC):
    """Noise for the sum of clipped client updates.

    ``noise_multiplier`` z > 0, ``clip`` C > 0, ``mode``, ``min_honest`` n_h ≥ 1.
    """

    kind: ClassVar[MechanismKind]
    integer: ClassVar[bool] = False

    noise_multiplier: float
    clip: float
    mode: DPMode = DPMode.DISTRIBUTED
    min_honest: int = 1

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.mode, DPMode):
            raise ConfigError(f"mode must be a DPMode, got {self.mode!r}")
        if isinstance(self.min_honest, bool) or not isinstance(self.min_honest, int) or self.min_honest < 1:
            raise ConfigError(f"min_honest must be an integer >= 1, got {self.min_honest!r}")

    # ------------------------------------------------------------------ noise sizes
    @property
    @abstractmethod
    def aggregate_std(self) -> float:
        """σ, the standard deviation of the noise in the revealed sum (units of the output)."""

    @property
    def aggregate_variance(self) -> float:
        """σ²: per-coordinate noise variance of the sum of n_h shares (or of the central noise)."""
        return self.aggregate_std ** 2

    @property
    def share_variance(self) -> float:
        """Variance of one client's share (distributed mode): σ²/n_h, rounded up."""
        return float(np.nextafter(self.aggregate_variance / self.min_honest, np.inf))

    @property
    def honest_shares(self) -> int:
        """Number of noise shares the privacy analysis counts on: n_h, or 1 in central mode."""
        return self.min_honest if self.mode is DPMode.DISTRIBUTED else 1

    # ------------------------------------------------------------------ sampling
    def client_share(self, dim: int, prg: Prg) -> np.ndarray:
        """One client's noise share for a ``dim``-vector (distributed mode only)."""
        if self.mode is not DPMode.DISTRIBUTED:
            raise ConfigError("central-mode DP: clients add no noise; the server calls central()")
        return self._sample(_check_dim(dim), prg, self.share_variance)

    def central(self, dim: int, prg: Prg) -> np.ndarray:
        """The full noise σ², added once by the server to the revealed sum (central mode)."""
        return self._sample(_check_dim(dim), prg, self.aggregate_variance)

    @abstractmethod
    def _sample(self, dim: int, prg: Prg, variance: float) -> np.ndarray: ...

    def noise_tail(self, dim: int, failure_prob: float, contributors: int | None = None) -> float:
        """Bound t on max_i |noise_i| of the sum, exceeded with probability ≤ ``failure_prob``.

        ``contributors``: clients whose shares are in the sum (distributed mode; default n_h,
        at most all clients of the round); ignored in central mode.
        """
        if self.mode is DPMode.CENTRAL:
            var = self.aggregate_variance
        else:
            k = self.min_honest if contributors is None else int(contributors)
            if k < 1:
                raise ConfigError(f"contributors must be >= 1, got {contributors!r}")
            var = k * self.share_variance
        return self._tail(var, _check_dim(dim), failure_prob)

    def _tail(self, variance: float, dim: int, failure_prob: float) -> float:
        return gaussian_tail(variance, dim, failure_prob)

    def require_survivors(self, survivors: int) -> None:
        """Raise :class:`ProtocolAbort` if fewer than n_h clients' shares reached the sum.

        A necessary check only: honesty of n_h of them remains the configured assumption.
        """
        if self.mode is DPMode.DISTRIBUTED and survivors < self.min_honest:
            raise ProtocolAbort(f"distributed DP needs at least min_honest={self.min_honest} surviving "
                                f"clients' noise shares in the sum, got {survivors}")

    # ------------------------------------------------------------------ privacy
    @abstractmethod
    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """RDP ε(α) of one round, full participation, at each order α > 1."""

    def dp_event(self) -> Any:
        """The ``dp_accounting.DpEvent`` of one round when the library covers it, else ``None``."""
        return None

    def describe(self) -> dict[str, object]:
        """Plain values for results files."""
        return {"mechanism": self.kind.value, "mode": self.mode.value, "noise_multiplier": self.noise_multiplier,
                "clip": self.clip, "min_honest": self.min_honest, "aggregate_std": self.aggregate_std}


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism(NoiseMechanism):
    """Float Gaussian noise, σ = z·C, for protocols that encrypt reals (CKKS)."""

    kind: ClassVar[MechanismKind] = MechanismKind.GAUSSIAN

    @property
    def aggregate_std(self) -> float:
        return self.noise_multiplier * self.clip

    def _sample(self, dim: int, prg: Prg, variance: float) -> np.ndarray:
        return samplers.gaussian(prg, dim, math.sqrt(variance))

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """α/(2z²) (Mironov 2017): the n_h shares sum to exactly N(0, σ²)."""
        return np.asarray(orders, dtype=np.float64) / (2.0 * self.noise_multiplier ** 2)

    def dp_event(self) -> Any:
        from dp_accounting import dp_event  # imported on use: dp_accounting takes ~2 s to import

        return dp_event.GaussianDpEvent(self.noise_multiplier)


@dataclass(frozen=True, kw_only=True)
class IntegerMechanism(NoiseMechanism):
    """Integer noise on quantized updates, for protocols that sum modulo 2^b.

    ``levels`` L: a clipped update is scaled by L/C (γ = C/L is the quantization step), so
    every coordinate lies in [-L, L]; ``dim`` d: the vector length (the RDP bound depends on it).
    Noise sizes (``aggregate_std`` = z·L, shares, tails) are in quantization steps.
    """

    integer: ClassVar[bool] = True
    max_sample_variance: ClassVar[float]  # the sampler's limit (int64 samples)

    levels: int
    dim: int

    def __post_init__(self) -> None:
        super().__post_init__()
        lv = self.levels
        if isinstance(lv, bool) or not isinstance(lv, (int, np.integer)) or not 1 <= lv < 1 << 62:
            raise ConfigError(f"levels must be an integer in [1, 2**62), got {self.levels!r}")
        object.__setattr__(self, "levels", int(self.levels))
        object.__setattr__(self, "dim", _check_dim(self.dim))

    @property
    def sampleable(self) -> bool:
        """Whether the noise this mode draws is within the sampler's int64 range.

        :func:`secfl.dp.plan_privacy` only picks levels for which this holds; otherwise the
        samplers raise ConfigError when asked for noise.
        """
        var = self.share_variance if self.mode is DPMode.DISTRIBUTED else self.aggregate_variance
        return var <= self.max_sample_variance

    @property
    def gamma(self) -> float:
        """γ = C/L, the real value of one quantization step."""
        return self.clip / self.levels

    @property
    def aggregate_std(self) -> float:
        return self.noise_multiplier * self.levels

    @property
    def l2_sensitivity(self) -> float:
        """Δ₂ = L(1 + slack) + √d: largest ‖·‖₂ of one client's quantized update."""
        return self.levels * (1.0 + NORM_SLACK) + math.sqrt(self.dim)

    @property
    def l1_sensitivity(self) -> float:
        """Δ₁ = Δ₂·min(√d, Δ₂) (‖v‖₁ ≤ √d‖v‖₂, and ≤ ‖v‖₂² for integer vectors)."""
        d2 = self.l2_sensitivity
        return d2 * min(math.sqrt(self.dim), d2)

    # ------------------------------------------------------------------ quantization
    def encode(self, update: np.ndarray, prg: Prg) -> np.ndarray:
        """Clipped update → int64 in [-L, L]: scale by L/C, stochastic rounding, clamp.

        Refuses (InvalidUpdateError) a vector of the wrong length, non-finite, or with
        ‖x‖₂ > C (clip with :func:`secfl.dp.clip_l2` first): the sensitivity depends on it.
        """
        x = np.asarray(update, dtype=np.float64)
        if x.shape != (self.dim,):
            raise InvalidUpdateError(f"update has shape {x.shape}, expected ({self.dim},)")
        if not np.all(np.isfinite(x)):
            raise InvalidUpdateError("update has non-finite values")
        norm = float(np.linalg.norm(x))
        if norm > self.clip * (1.0 + NORM_SLACK):
            raise InvalidUpdateError(f"update L2 norm {norm:.6g} exceeds the clip norm {self.clip:.6g}; "
                                     "clip before quantizing")
        y = x * (self.levels / self.clip)
        lo = np.floor(y)
        q = lo + (prg.random(self.dim) < (y - lo))
        return np.clip(q, -self.levels, self.levels).astype(np.int64)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """Integer (noisy) sum → real sum: ``total·γ`` (float64)."""
        return np.asarray(total, dtype=np.float64) * self.gamma

    # ------------------------------------------------------------------ bit width
    def sum_bound(self, n_clients: int, failure_prob: float) -> int:
        """B with P(some |coordinate of the noisy sum| > B) ≤ ``failure_prob``.

        n clients contribute at most L each; in distributed mode all n add shares (their
        noise adds up to n·σ²/n_h); in central mode the server adds noise after the reveal,
        outside the modular sum.
        """
        if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
            raise ConfigError(f"n_clients must be an integer >= 1, got {n_clients!r}")
        signal = int(n_clients) * self.levels
        if self.mode is DPMode.CENTRAL:
            return signal
        return signal + math.ceil(self.noise_tail(self.dim, failure_prob, contributors=int(n_clients)))

    def required_bits(self, n_clients: int, failure_prob: float) -> int:
        """Smallest b with B ≤ 2^(b-1) - 1: the centred sum mod 2^b equals the true sum."""
        return self.sum_bound(n_clients, failure_prob).bit_length() + 1

    def check_bits(self, modulus_bits: int, n_clients: int, failure_prob: float) -> None:
        """Raise :class:`InsecureParametersError` if the noisy modular sum can wrap."""
        need = self.required_bits(n_clients, failure_prob)
        if need > modulus_bits:
            if self.mode is DPMode.CENTRAL:
                what = f"{n_clients} clients × {self.levels} levels"
            else:
                tail = math.ceil(self.noise_tail(self.dim, failure_prob, contributors=int(n_clients)))
                what = (f"{n_clients} clients × {self.levels} levels + noise tail {tail} "
                        f"(sum of {n_clients} shares, exceeded with probability {failure_prob:.3g})")
            raise InsecureParametersError(
                f"noisy modular sum can wrap: |sum| ≤ {self.sum_bound(n_clients, failure_prob)} = {what} needs "
                f"{need} bits > modulus_bits={modulus_bits}; use fewer levels or a wider modulus")

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(levels=self.levels, gamma=self.gamma, dim=self.dim,
                   l2_sensitivity=self.l2_sensitivity, l1_sensitivity=self.l1_sensitivity)
        return out


@dataclass(frozen=True, kw_only=True)
class DiscreteGaussianMechanism(IntegerMechanism):
    """Distributed discrete Gaussian (Kairouz–Liu–Steinke 2021): shares N_Z(0, σ²/n_h)."""

    kind: ClassVar[MechanismKind] = MechanismKind.DISCRETE_GAUSSIAN
    max_sample_variance: ClassVar[float] = samplers.MAX_DISCRETE_GAUSSIAN_VARIANCE

    def __post_init__(self) -> None:
        super().__post_init__()
        s2 = self.share_variance if self.mode is DPMode.DISTRIBUTED else self.aggregate_variance
        if s2 < 0.25:
            raise InsecureParametersError(f"discrete Gaussian share std {math.sqrt(s2):.3g} < 1/2 "
                                          "(KLS21 Thm. 1 needs s ≥ 1/2): raise levels or noise")

    def _sample(self, dim: int, prg: Prg, variance: float) -> np.ndarray:
        return samplers.discrete_gaussian(prg, dim, variance)

    def tau(self) -> float:
        """τ = 10·Σ_{k=1}^{n-1} exp(-2π²s²·k/(k+1)) for n = n_h shares of parameter s²."""
        n = self.honest_shares
        if n == 1:
            return 0.0
        s2 = self.share_variance
        k = np.arange(1, n, dtype=np.float64)
        return float(10.0 * np.sum(np.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1.0))))

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """KLS21 Prop. 14 / eq. (17) with Δ₂, Δ₁ of the quantized update and τ of n_h shares."""
        a = np.asarray(orders, dtype=np.float64)
        n = self.honest_shares
        s2 = self.share_variance if n > 1 else self.aggregate_variance
        sigma = math.sqrt(n * s2)
        l2, l1 = self.l2_sensitivity / sigma, self.l1_sensitivity / sigma
        tau, d = self.tau(), self.dim
        t1 = a / 2.0 * l2 ** 2 + tau * d
        t2 = a / 2.0 * (l2 ** 2 + 2.0 * l1 * tau + tau ** 2 * d)
        t3 = a / 2.0 * (l2 + math.sqrt(d) * tau) ** 2
        return np.minimum(np.minimum(t1, t2), t3)


@dataclass(frozen=True, kw_only=True)
class SkellamMechanism(IntegerMechanism):
    """Distributed Skellam (Agarwal–Kairouz–Liu 2021): shares Sk with variance σ²/n_h."""

    kind: ClassVar[MechanismKind] = MechanismKind.SKELLAM
    max_sample_variance: ClassVar[float] = samplers.MAX_SKELLAM_VARIANCE

    def _sample(self, dim: int, prg: Prg, variance: float) -> np.ndarray:
        return samplers.skellam(prg, dim, variance)

    def _tail(self, variance: float, dim: int, failure_prob: float) -> float:
        return skellam_tail(variance, dim, failure_prob)

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """AKL21: the sum of n_h shares is exactly Skellam with variance μ ≥ σ²."""
        a = np.asarray(orders, dtype=np.float64)
        n = self.honest_shares
        mu = n * self.share_variance if n > 1 else self.aggregate_variance
        l2, l1 = self.l2_sensitivity, self.l1_sensitivity
        return a * l2 ** 2 / (2.0 * mu) + np.minimum(((2.0 * a - 1.0) * l2 ** 2 + 6.0 * l1) / (4.0 * mu ** 2),
                                                     3.0 * l1 / (2.0 * mu))


_CLASSES: dict[MechanismKind, type[NoiseMechanism]] = {
    MechanismKind.GAUSSIAN: GaussianMechanism,
    MechanismKind.DISCRETE_GAUSSIAN: DiscreteGaussianMechanism,
    MechanismKind.SKELLAM: SkellamMechanism,
}


def make_mechanism(config: DPConfig, noise_multiplier: float | None = None, *,
                   levels: int | None = None, dim: int | None = None) -> NoiseMechanism:
    """The mechanism ``config`` names, with z = ``noise_multiplier`` (default: the config's).

    Integer mechanisms also need ``levels`` (L = C/γ) and ``dim``.
    """
    z = config.noise_multiplier if noise_multiplier is None else noise_multiplier
    if z is None:
        raise ConfigError("no noise_multiplier: calibrate it from epsilon first (secfl.dp.plan_privacy)")
    cls = _CLASSES[config.mechanism]
    common = dict(noise_multiplier=z, clip=config.clip, mode=config.mode, min_honest=config.min_honest)
    if issubclass(cls, IntegerMechanism):
        if levels is None or dim is None:
            raise ConfigError(f"the {config.mechanism.value} mechanism needs levels and dim")
        return cls(levels=levels, dim=dim, **common)  # type: ignore[arg-type]
    return cls(**common)  # type: ignore[arg-type]
