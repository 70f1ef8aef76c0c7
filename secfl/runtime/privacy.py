"""Differential privacy in a federated run: settings, the calibrated plan, per-round noise.

Choices (documented in README and ``protocols/dp.md``):

- Under DP every client's update is L2-clipped to ``clip`` C and enters the sum with weight 1,
  so one client changes the sum by at most C; the revealed mean is the noisy sum divided by
  the number of included clients (a weighted mean would let one client's weight scale its
  influence beyond C).
- ``weighted = true`` (with ``max_weight`` W, a *public* bound on a client's example count):
  FedAvg weights under DP, following McMahan et al. 2018 (DP-FedAvg with bounded weights). Client
  k scales its clipped update by ``w_k = min(n_k / W, 1) ≤ 1`` *before* adding its noise, so its
  contribution to the noised sum still has norm ≤ C and the sensitivity — hence σ and ε — is
  unchanged; the server divides the revealed noisy sum by ``Σ w_k`` over the included clients
  instead of by their count. Assumption, stated: the weights are public (the protocols reveal
  the total weight, and W is configuration), as client sizes are here; a client larger than W
  counts as W. The noise on the mean grows by ``m / Σ w_k`` (m included clients): weights far
  below W cost accuracy, which is why W should be a tight public bound.
- ``distributed`` (default): each client adds its share of the noise *before* protecting its
  update — float Gaussian shares for float protocols (plaintext, ckks, ckks-threshold),
  integer discrete-Gaussian or Skellam shares inside the protocol for additive / secagg. No
  party ever sees an unnoised update through the protocol. ``central``: the server adds all the
  noise to what is revealed (the baseline most frameworks ship).
- Accounting assumes every sampled client participates (q = 1): our client sampling is
  fixed-size without replacement, for which Poisson amplification does not apply, so no
  amplification is claimed.
- Noise always comes from fresh OS-seeded CSPRNG streams (never from the experiment seed):
  a DP run is not bit-reproducible, by design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto.prg import Prg
from secfl.dp import DPConfig, DPMode, MechanismKind, plan_privacy
from secfl.dp.plan import DPPlan
from secfl.errors import ConfigError

__all__ = ["DPSettings", "MechanismChoice", "RunPrivacy"]


class MechanismChoice(str, Enum):
    AUTO = "auto"  # gaussian for float protocols, discrete-gaussian for integer ones
    GAUSSIAN = "gaussian"
    DISCRETE_GAUSSIAN = "discrete-gaussian"
    SKELLAM = "skellam"


@dataclass(frozen=True)
class DPSettings:
    """``[dp]`` table. DP is on when ``epsilon`` > 0 (finite) or ``noise_multiplier`` > 0."""

    epsilon: float = 0.0
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    mode: DPMode = DPMode.DISTRIBUTED
    mechanism: MechanismChoice = MechanismChoice.AUTO
    min_honest: int = 0  # 0: half the clients sampled per round, rounded down (at least 1)
    accountant: str = "rdp"
    weighted: bool = False  # FedAvg weights min(n_k / max_weight, 1) under DP (module docstring)
    max_weight: float = 0.0  # the public bound W on a client's example count; required with weighted

    def __post_init__(self) -> None:
        for name in ("epsilon", "noise_multiplier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or math.isnan(v):
                raise ConfigError(f"dp.{name}: must be a number >= 0 (0 = off), got {v!r}")
        if self.epsilon > 0 and math.isfinite(self.epsilon) and self.noise_multiplier > 0:
            raise ConfigError("dp: give either dp.epsilon (calibrated) or dp.noise_multiplier, not both")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ConfigError(f"dp.delta: must be in (0, 1), got {self.delta!r}")
        try:
            object.__setattr__(self, "mode", DPMode(self.mode))
        except ValueError:
            raise ConfigError(f"dp.mode: unknown {self.mode!r}; allowed: distributed, central") from None
        try:
            object.__setattr__(self, "mechanism", MechanismChoice(self.mechanism))
        except ValueError:
            allowed = ", ".join(m.value for m in MechanismChoice)
            raise ConfigError(f"dp.mechanism: unknown {self.mechanism!r}; allowed: {allowed}") from None
        if not isinstance(self.weighted, bool):
            raise ConfigError(f"dp.weighted: must be true or false, got {self.weighted!r}")
        w = self.max_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"dp.max_weight: must be a number >= 0, got {w!r}")
        if self.weighted and w <= 0:
            raise ConfigError("dp.weighted: needs dp.max_weight > 0, a public bound W on a client's example count:"
                              " each client counts min(n_k / W, 1) so that its weighted, clipped update still moves"
                              " the sum by at most the clip norm (without a bound, one client's weight could scale"
                              " its influence beyond it, and the noise would not cover it)")
        if isinstance(self.min_honest, bool) or not isinstance(self.min_honest, int) or self.min_honest < 0:
            raise ConfigError(f"dp.min_honest: must be an integer >= 0 (0 = auto), got {self.min_honest!r}")

    @property
    def enabled(self) -> bool:
        return (self.epsilon > 0 and math.isfinite(self.epsilon)) or self.noise_multiplier > 0


@dataclass
class RunPrivacy:
    """The calibrated DP plan of one run and its running accountant."""

    plan: DPPlan
    integer: bool
    _accountant: Any = None

    @classmethod
    def create(cls, settings: DPSettings, *, clip: float, rounds: int, per_round: int, dim: int,
               integer_protocol: bool, modulus_bits: int | None = None) -> RunPrivacy:
        if clip <= 0:
            raise ConfigError("dp: differential privacy needs clip > 0 (the L2 sensitivity C); set --clip")
        choice = settings.mechanism
        if choice is MechanismChoice.AUTO:
            choice = MechanismChoice.DISCRETE_GAUSSIAN if integer_protocol else MechanismChoice.GAUSSIAN
        kind = MechanismKind(choice.value)
        if kind.integer != integer_protocol:
            need = "an integer mechanism (discrete-gaussian or skellam)" if integer_protocol else "gaussian"
            raise ConfigError(f"dp.mechanism: {kind.value!r} does not fit this protocol; it needs {need}")
        min_honest = settings.min_honest or max(1, per_round // 2)
        if settings.mode is DPMode.DISTRIBUTED and min_honest >= per_round:
            raise ConfigError(f"dp.min_honest: {min_honest} other honest clients cannot exist among "
                              f"{per_round} sampled per round; use at most {per_round - 1}")
        config = DPConfig(
            clip=clip,
            epsilon=settings.epsilon if settings.noise_multiplier == 0 else None,
            noise_multiplier=settings.noise_multiplier or None,
            delta=settings.delta, mode=settings.mode, mechanism=kind, min_honest=min_honest,
            accountant=settings.accountant)
        plan = plan_privacy(config, rounds=rounds, sampling_rate=1.0, dim=dim if kind.integer else None,
                            n_clients=per_round if kind.integer else None,
                            modulus_bits=modulus_bits if kind.integer else None)
        return cls(plan, kind.integer, plan.new_accountant())

    @property
    def mechanism(self) -> Any:
        return self.plan.mechanism

    @property
    def distributed(self) -> bool:
        return self.plan.config.mode is DPMode.DISTRIBUTED

    def client_noise(self, dim: int) -> np.ndarray:
        """A client's float noise share (distributed mode, float protocols), fresh CSPRNG."""
        return np.asarray(self.mechanism.client_share(dim, Prg()), dtype=np.float64)

    def central_noise_on_mean(self, mean: np.ndarray, included: int) -> np.ndarray:
        """Central mode: the server adds σ-noise to the revealed sum, i.e. noise/m to the mean."""
        noise = np.asarray(self.mechanism.central(mean.size, Prg()), dtype=np.float64)
        if self.integer:
            noise = noise * self.mechanism.gamma  # integer noise is in quantization units
        return mean + noise / included

    def check_survivors(self, included: int) -> None:
        """Distributed mode: every included client needs n_h other included clients' shares."""
        self.mechanism.require_survivors(included - 1)

    def restore(self, steps: int) -> None:
        """Replay ``steps`` accounted rounds (resuming a run from its checkpoint)."""
        for _ in range(steps):
            self._accountant.step(1.0)

    def dp_weight(self, settings: DPSettings, examples: int) -> float:
        """The factor a client scales its clipped update by before its noise: 1, or with
        ``settings.weighted`` ``min(examples / max_weight, 1)``."""
        if not settings.weighted:
            return 1.0
        return min(float(examples) / float(settings.max_weight), 1.0)

    def step(self) -> float:
        """Account one more round; returns the cumulative ε."""
        self._accountant.step(1.0)
        return float(self._accountant.get_epsilon(self.plan.delta))

    def summary(self) -> dict[str, Any]:
        return dict(self.plan.summary())
