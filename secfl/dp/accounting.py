"""Privacy accounting over rounds: client-level (ε, δ) with Poisson client sampling.

One interface, :class:`Accountant` (``step``, ``get_epsilon``, ``state_dict`` /
``load_state_dict``), and a registry :data:`ACCOUNTANTS` from name to class:

* ``"rdp"`` — Rényi DP composed over rounds, converted to (ε, δ) with the conversion of
  Canonne, Kamath & Steinke 2020 / Asoodeh et al. 2020 (``dp_accounting``'s ``compute_epsilon``).
  Gaussian: Google's ``dp_accounting.rdp.RdpAccountant`` with
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` (Mironov, Talwar & Zhang 2019, exact
  sampled-Gaussian RDP). Discrete Gaussian and Skellam: their one-round RDP curves
  (:mod:`secfl.dp.mechanisms`), amplified for q < 1 by the general upper bound for Poisson
  subsampling of any RDP mechanism of Zhu & Wang, "Poisson Subsampled Rényi Differential
  Privacy", ICML 2019 (their general upper bound, with the factor 3), at integer orders 2…256,
  taking the minimum with the unamplified curve at each order.
* ``"pld"`` — ``dp_accounting.pld.PLDAccountant`` (privacy loss distributions; tighter), Gaussian only.

Neighbouring relation: add/remove one client (all of its data). Sampling: each client takes
part in a round independently with probability q (Poisson sampling). With a fixed-size cohort
drawn without replacement, account with q = 1 (always valid, no amplification).

:func:`calibrate_noise_multiplier` finds the smallest z (to a relative tolerance) whose ε after
the given rounds is at most the target: a bracket by doubling, then regula falsi (Illinois).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from secfl.dp.config import ACCOUNTANT_NAMES
from secfl.dp.mechanisms import NoiseMechanism
from secfl.errors import ConfigError, InsecureParametersError

__all__ = [
    "Accountant",
    "RdpAccountant",
    "PldAccountant",
    "ACCOUNTANTS",
    "make_accountant",
    "subsampled_rdp",
    "rdp_to_epsilon",
    "epsilon_after",
    "calibrate_noise_multiplier",
    "GAUSSIAN_ORDERS",
    "INTEGER_ORDERS",
]

# dp_accounting's default orders (its DEFAULT_RDP_ORDERS), fixed here so that importing
# secfl.dp does not import dp_accounting (about 2 s: scipy and its PLD machinery).
GAUSSIAN_ORDERS = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024],
                           dtype=np.float64)
INTEGER_ORDERS = np.arange(2, 257, dtype=np.int64)


class _DropNonConvergence(logging.Filter):
    """dp_accounting logs (via absl) when its series for a fractional order below ~1.5 does not
    converge; it then drops that order (a valid, more conservative bound). Keep those benign,
    repeated lines out of the run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@lru_cache(maxsize=1)
def _lib() -> Any:
    """Import dp_accounting on first use."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant  # noqa: F401
    from dp_accounting.rdp import rdp_privacy_accountant  # noqa: F401

    logging.getLogger("absl").addFilter(_DropNonConvergence())
    return dp_accounting


def _check_rate(q: float) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
        raise ConfigError(f"sampling_rate must be a number in (0, 1], got {q!r}")
    return float(q)


def _check_rounds(r: int, allow_zero: bool = False) -> int:
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < (0 if allow_zero else 1):
        raise ConfigError(f"rounds must be an integer >= {0 if allow_zero else 1}, got {r!r}")
    return int(r)


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def subsampled_rdp(rdp: Callable[[np.ndarray], np.ndarray], q: float, orders: np.ndarray) -> np.ndarray:
    """RDP at integer ``orders`` ≥ 2 of a mechanism with curve ``rdp`` under Poisson sampling q.

    Zhu & Wang 2019 (general upper bound, any mechanism, add/remove neighbours):
    ε'(α) ≤ 1/(α-1)·log{ (1-q)^(α-1)(αq - q + 1) + C(α,2) q² (1-q)^(α-2) e^{ε(2)}
                          + 3 Σ_{ℓ=3}^{α} C(α,ℓ) q^ℓ (1-q)^(α-ℓ) e^{(ℓ-1)ε(ℓ)} },
    then min(ε'(α), ε(α)) (sampling never hurts: joint convexity of e^{(α-1)D_α}).
    """
    q = _check_rate(q)
    orders = np.asarray(orders)
    if orders.ndim != 1 or np.any(orders < 2) or np.any(orders != np.round(orders)):
        raise ConfigError("subsampled RDP needs integer orders >= 2")
    alphas = orders.astype(np.int64)
    base = np.asarray(rdp(alphas.astype(np.float64)), dtype=np.float64)
    if q == 1.0:
        return base
    top = int(alphas.max())
    ell = np.arange(2, top + 1)
    eps_ell = np.asarray(rdp(ell.astype(np.float64)), dtype=np.float64)  # ε(ℓ), ℓ = 2..top
    lgam = np.array([math.lgamma(k + 1.0) for k in range(top + 1)])  # log k!
    a = alphas[:, None].astype(np.float64)
    lf = ell[None, :].astype(np.float64)
    log1mq = math.log1p(-q)
    with np.errstate(invalid="ignore"):
        log_comb = lgam[alphas][:, None] - lgam[ell][None, :] - lgam[np.clip(alphas[:, None] - ell[None, :], 0, None)]
        terms = log_comb + lf * math.log(q) + (a - lf) * log1mq + (lf - 1.0) * eps_ell[None, :]
    terms = terms + np.where(ell[None, :] >= 3, math.log(3.0), 0.0)
    terms = np.where(ell[None, :] <= alphas[:, None], terms, -np.inf)
    first = (alphas - 1.0) * log1mq + np.log(alphas * q - q + 1.0)
    total = _logsumexp(np.concatenate([first[:, None], terms], axis=1), axis=1)
    return np.minimum(total / (alphas - 1.0), base)


def rdp_to_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """(ε, δ) from an RDP curve: dp_accounting's conversion (Canonne–Kamath–Steinke 2020,
    Prop. 12; Asoodeh et al. 2020, eq. 20)."""
    compute = _lib().rdp.rdp_privacy_accountant.compute_epsilon
    eps, _ = compute(list(orders), list(rdp), _check_delta(delta))
    return float(eps)


@lru_cache(maxsize=1024)
def _one_round_curve(mechanism: NoiseMechanism, q: float) -> np.ndarray:
    """RDP of one round of ``mechanism`` at sampling rate q (cached: mechanisms are frozen)."""
    if mechanism.dp_event() is not None:
        lib = _lib().rdp.RdpAccountant(list(GAUSSIAN_ORDERS))
        lib.compose(_event(mechanism, q), 1)
        out = np.asarray(lib.rdp, dtype=np.float64)
    else:
        out = subsampled_rdp(mechanism.rdp, q, INTEGER_ORDERS)
    out.setflags(write=False)
    return out


def _event(mechanism: NoiseMechanism, q: float) -> Any:
    base = mechanism.dp_event()
    return base if q == 1.0 else _lib().dp_event.PoissonSampledDpEvent(q, base)


class Accountant(ABC):
    """Tracks rounds of one mechanism and reports the cumulative ε at a given δ."""

    name: ClassVar[str]

    def __init__(self, mechanism: NoiseMechanism) -> None:
        self.mechanism = mechanism
        self.history: list[tuple[float, int]] = []  # (sampling rate, rounds)

    def step(self, sampling_rate: float = 1.0, rounds: int = 1) -> None:
        """Record ``rounds`` rounds in which each client took part with probability ``sampling_rate``."""
        q, r = _check_rate(sampling_rate), _check_rounds(rounds)
        if self.history and self.history[-1][0] == q:
            self.history[-1] = (q, self.history[-1][1] + r)
        else:
            self.history.append((q, r))

    @property
    def rounds(self) -> int:
        return sum(r for _, r in self.history)

    @abstractmethod
    def get_epsilon(self, delta: float) -> float:
        """Cumulative ε over every recorded round, at ``delta``."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "history": [[q, r] for q, r in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(f"accountant state is for {state.get('name')!r}, not {self.name!r}")
        self.history = []
        for q, r in state["history"]:
            self.step(float(q), int(r))


class RdpAccountant(Accountant):
    """Rényi-DP accountant (all mechanisms); see the module docstring for the bounds."""

    name = "rdp"

    def curve(self, q: float) -> np.ndarray:
        """RDP of one round at sampling rate q, at :meth:`orders`."""
        return _one_round_curve(self.mechanism, _check_rate(q))

    def orders(self) -> np.ndarray:
        return GAUSSIAN_ORDERS if self.mechanism.dp_event() is not None else INTEGER_ORDERS.astype(np.float64)

    def rdp_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(orders, cumulative RDP) of the recorded rounds: RDP composes by addition."""
        total = np.zeros(self.orders().size)
        for q, r in self.history:
            total += r * self.curve(q)
        return self.orders(), total

    def get_epsilon(self, delta: float) -> float:
        if not self.history:
            return 0.0
        orders, rdp = self.rdp_curve()
        return rdp_to_epsilon(orders, rdp, delta)


class PldAccountant(Accountant):
    """Privacy-loss-distribution accountant (``dp_accounting``), Gaussian mechanism only."""

    name = "pld"

    def __init__(self, mechanism: NoiseMechanism, value_discretization_interval: float = 1e-4) -> None:
        if mechanism.dp_event() is None:
            raise ConfigError(f"the pld accountant supports only the gaussian mechanism, got {mechanism.kind.value!r}")
        super().__init__(mechanism)
        self._interval = value_discretization_interval

    def get_epsilon(self, delta: float) -> float:
        if not self.history:
            return 0.0
        lib = _lib().pld.pld_privacy_accountant.PLDAccountant(value_discretization_interval=self._interval)
        for q, r in self.history:
            lib.compose(_event(self.mechanism, q), r)
        return float(lib.get_epsilon(_check_delta(delta)))


ACCOUNTANTS: dict[str, type[Accountant]] = {RdpAccountant.name: RdpAccountant, PldAccountant.name: PldAccountant}
if tuple(ACCOUNTANTS) != ACCOUNTANT_NAMES:  # pragma: no cover - a programming error, not input
    raise ImportError("secfl.dp.config.ACCOUNTANT_NAMES is out of sync with the accountant registry")


def make_accountant(name: str, mechanism: NoiseMechanism) -> Accountant:
    """A fresh accountant by registry name (``"rdp"`` or ``"pld"``)."""
    try:
        cls = ACCOUNTANTS[name]
    except KeyError:
        raise ConfigError(f"unknown accountant {name!r}; choose one of {sorted(ACCOUNTANTS)}") from None
    return cls(mechanism)


def epsilon_after(mechanism: NoiseMechanism, rounds: int, delta: float, sampling_rate: float = 1.0,
                  accountant: str = "rdp") -> float:
    """ε after ``rounds`` rounds at sampling rate q (0 rounds: 0)."""
    acc = make_accountant(accountant, mechanism)
    if _check_rounds(rounds, allow_zero=True):
        acc.step(sampling_rate, rounds)
    return acc.get_epsilon(delta)


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rounds: int,
    make: Callable[[float], NoiseMechanism],
    sampling_rate: float = 1.0,
    accountant: str = "rdp",
    rtol: float = 1e-4,
) -> float:
    """Smallest z (to a relative ``rtol``, from above) with ε(make(z), rounds) ≤ target.

    Stops when the bracket on z is narrower than ``rtol`` or ε(z) is within ``rtol`` below the
    target. ``make`` builds the mechanism for a given z (a mechanism that refuses z, e.g. a
    discrete Gaussian share below 1/2, counts as ε = ∞). The returned z always meets the target.
    """
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, (int, float)) \
            or not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"target epsilon must be a finite number > 0, got {target_epsilon!r}")
    _check_delta(delta)
    _check_rounds(rounds)
    _check_rate(sampling_rate)

    def eps(z: float) -> float:
        try:
            return epsilon_after(make(z), rounds, delta, sampling_rate, accountant)
        except InsecureParametersError:
            return math.inf

    # Bracket [lo, hi] with eps(lo) > target ≥ eps(hi), by doubling / halving from z = 1.
    z_min, z_max = 1e-3, 1e5
    hi, e_hi = 1.0, eps(1.0)
    if e_hi > target_epsilon:
        lo, e_lo = hi, e_hi
        while e_hi > target_epsilon:
            lo, e_lo = hi, e_hi
            hi *= 2.0
            if hi > z_max:
                raise ConfigError(f"epsilon={target_epsilon} at delta={delta} over {rounds} rounds is not "
                                  f"reachable with noise_multiplier <= {z_max:g}")
            e_hi = eps(hi)
    else:
        lo, e_lo = hi / 2.0, eps(hi / 2.0)
        while e_lo <= target_epsilon:
            hi, e_hi = lo, e_lo
            lo /= 2.0
            if lo < z_min:
                return hi
            e_lo = eps(lo)
    # Illinois (regula falsi) on log ε against log z, keeping the bracket; returns the upper end.
    log_t = math.log(target_epsilon)

    def f(e: float) -> float:
        return (math.log(e) if 0 < e < math.inf else (math.inf if e == math.inf else -math.inf)) - log_t

    f_lo, f_hi = f(e_lo), f(e_hi)
    side = 0
    while hi / lo - 1.0 > rtol and e_hi < target_epsilon * (1.0 - rtol):
        a, b = math.log(lo), math.log(hi)
        if math.isfinite(f_lo) and math.isfinite(f_hi) and f_lo != f_hi:
            x = b - f_hi * (b - a) / (f_hi - f_lo)
            x = min(max(x, a + 0.01 * (b - a)), b - 0.01 * (b - a))  # stay strictly inside
        else:
            x = 0.5 * (a + b)
        mid = math.exp(x)
        e_mid = eps(mid)
        f_mid = f(e_mid)
        if e_mid <= target_epsilon:
            hi, e_hi, f_hi = mid, e_mid, f_mid
            if side == 1:
                f_lo /= 2.0
            side = 1
        else:
            lo, e_lo, f_lo = mid, e_mid, f_mid
            if side == -1:
                f_hi /= 2.0
            side = -1
    return hi
