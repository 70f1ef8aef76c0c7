"""Differential-privacy configuration: one frozen dataclass, validated on construction.

See ``protocols/dp.md`` for what each field means for the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from secfl.errors import ConfigError

__all__ = ["DPMode", "MechanismKind", "DPConfig", "ACCOUNTANT_NAMES", "DEFAULT_DELTA", "DEFAULT_WRAP_PROBABILITY"]

DEFAULT_DELTA = 1e-5
DEFAULT_WRAP_PROBABILITY = 2.0 ** -40
ACCOUNTANT_NAMES = ("rdp", "pld")


class DPMode(Enum):
    """Who adds the noise."""

    DISTRIBUTED = "distributed"  # every client adds a share before protection; nobody sees un-noised data
    CENTRAL = "central"  # the server adds all the noise to the revealed aggregate (baseline)


class MechanismKind(Enum):
    """Which noise distribution."""

    GAUSSIAN = "gaussian"  # float noise, for CKKS protocols
    DISCRETE_GAUSSIAN = "discrete-gaussian"  # integer noise (KLS21), for additive / secagg
    SKELLAM = "skellam"  # integer noise (AKL21), for additive / secagg

    @property
    def integer(self) -> bool:
        return self is not MechanismKind.GAUSSIAN


def _enum(cls: type[Enum], value: Any, field: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)  # type: ignore[attr-defined]
        raise ConfigError(f"dp {field} must be one of {allowed}, got {value!r}") from None


def _positive(value: Any, field: str, *, below: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"dp {field} must be a finite number > 0, got {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"dp {field} must be < {below}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DPConfig:
    """Client-level differential privacy for one training run.

    ``clip``: L2 norm C every client update is clipped to (the sensitivity of one client).
    ``epsilon``: target ε for the whole run (all rounds), or ``None`` when ``noise_multiplier``
    is given instead; exactly one of the two must be set.
    ``delta``: δ of the (ε, δ) guarantee; default 10⁻⁵. Keep it well below 1/N for N clients
    in the population (:func:`secfl.dp.plan_privacy` refuses δ ≥ 1/N when told N).
    ``noise_multiplier``: z, the aggregate noise standard deviation σ = z·C.
    ``mode``: distributed (each client adds a share) or central (the server adds σ once).
    ``mechanism``: Gaussian (float, CKKS) or discrete Gaussian / Skellam (integers, additive
    and secagg).
    ``min_honest``: n_h ≥ 1, the number of honest clients, *other than the one being
    protected*, whose shares are guaranteed to be in every revealed sum (honest and surviving).
    Each client adds variance σ²/n_h, so these n_h shares alone carry σ². Default 1: every
    client adds the full σ² (safe for any dropouts or collusion, n times the noise when all n
    are honest). Ignored in central mode.
    ``accountant``: ``"rdp"`` (any mechanism) or ``"pld"`` (Gaussian only; tighter).
    ``wrap_probability``: for integer mechanisms, the largest allowed probability per round
    that any coordinate of the noisy modular sum wraps around (default 2⁻⁴⁰).
    """

    clip: float
    epsilon: float | None = None
    delta: float = DEFAULT_DELTA
    noise_multiplier: float | None = None
    mode: DPMode = DPMode.DISTRIBUTED
    mechanism: MechanismKind = MechanismKind.GAUSSIAN
    min_honest: int = 1
    accountant: str = "rdp"
    wrap_probability: float = DEFAULT_WRAP_PROBABILITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip", _positive(self.clip, "clip"))
        object.__setattr__(self, "delta", _positive(self.delta, "delta", below=1.0))
        object.__setattr__(self, "mode", _enum(DPMode, self.mode, "mode"))
        object.__setattr__(self, "mechanism", _enum(MechanismKind, self.mechanism, "mechanism"))
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("dp needs exactly one of epsilon (a target, calibrated) or noise_multiplier, "
                              f"got epsilon={self.epsilon!r}, noise_multiplier={self.noise_multiplier!r}")
        if self.epsilon is not None:
            object.__setattr__(self, "epsilon", _positive(self.epsilon, "epsilon"))
        if self.noise_multiplier is not None:
            object.__setattr__(self, "noise_multiplier", _positive(self.noise_multiplier, "noise_multiplier"))
        if isinstance(self.min_honest, bool) or not isinstance(self.min_honest, int) or self.min_honest < 1:
            raise ConfigError(f"dp min_honest must be an integer >= 1, got {self.min_honest!r}")
        if self.accountant not in ACCOUNTANT_NAMES:
            raise ConfigError(f"dp accountant must be one of {ACCOUNTANT_NAMES}, got {self.accountant!r}")
        if self.accountant == "pld" and self.mechanism is not MechanismKind.GAUSSIAN:
            raise ConfigError(f"dp accountant 'pld' supports only the gaussian mechanism, got "
                              f"{self.mechanism.value!r}; use 'rdp'")
        object.__setattr__(self, "wrap_probability",
                           _positive(self.wrap_probability, "wrap_probability", below=1.0))
