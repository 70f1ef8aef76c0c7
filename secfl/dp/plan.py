"""Resolve a :class:`DPConfig` for one run: calibrate z, pick the quantization, check the modulus.

:func:`plan_privacy` is what the runtime calls once per experiment; the returned
:class:`DPPlan` holds the calibrated mechanism (clients and server draw noise from it) and
answers ε questions (per round, cumulative, a fresh accountant to step each round).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from secfl.dp.accounting import Accountant, calibrate_noise_multiplier, epsilon_after, make_accountant
from secfl.dp.config import DPConfig, MechanismKind
from secfl.dp.mechanisms import IntegerMechanism, NoiseMechanism, make_mechanism
from secfl.errors import ConfigError, InsecureParametersError

__all__ = ["DPPlan", "plan_privacy", "max_levels"]

_MAX_FIXED_POINT = 50  # rounds of (levels, z) refinement before giving up


@dataclass(frozen=True)
class DPPlan:
    """A calibrated DP setup for ``rounds`` rounds at client sampling rate ``sampling_rate``."""

    config: DPConfig
    mechanism: NoiseMechanism
    rounds: int
    sampling_rate: float
    n_clients: int | None = None
    modulus_bits: int | None = None

    @property
    def noise_multiplier(self) -> float:
        return self.mechanism.noise_multiplier

    @property
    def delta(self) -> float:
        return self.config.delta

    def new_accountant(self) -> Accountant:
        """A fresh accountant (``config.accountant``); call ``step(q)`` once per round."""
        return make_accountant(self.config.accountant, self.mechanism)

    def epsilon_after(self, rounds: int) -> float:
        """Cumulative ε after ``rounds`` rounds at this plan's δ and sampling rate."""
        return epsilon_after(self.mechanism, rounds, self.delta, self.sampling_rate, self.config.accountant)

    @property
    def epsilon_per_round(self) -> float:
        """ε of one round on its own (same δ)."""
        return self.epsilon_after(1)

    @property
    def epsilon_total(self) -> float:
        """ε after all planned rounds (≤ ``config.epsilon`` when calibrated)."""
        return self.epsilon_after(self.rounds)

    def summary(self) -> dict[str, object]:
        """Plain values for ``results.json``."""
        out = dict(self.mechanism.describe())
        out.update(epsilon_target=self.config.epsilon, delta=self.delta, rounds=self.rounds,
                   sampling_rate=self.sampling_rate, accountant=self.config.accountant,
                   epsilon_total=self.epsilon_total, epsilon_per_round=self.epsilon_per_round)
        if isinstance(self.mechanism, IntegerMechanism) and self.n_clients is not None:
            out.update(modulus_bits=self.modulus_bits, n_clients=self.n_clients,
                       required_bits=self.mechanism.required_bits(self.n_clients, self.config.wrap_probability),
                       wrap_probability=self.config.wrap_probability)
        return out


def _integer(config: DPConfig, z: float, levels: int, dim: int | None) -> IntegerMechanism:
    return cast(IntegerMechanism, make_mechanism(config, z, levels=levels, dim=dim))


def max_levels(config: DPConfig, noise_multiplier: float, *, dim: int, n_clients: int, modulus_bits: int) -> int:
    """Largest L (= C/γ) whose noisy sum of ``n_clients`` updates fits ``modulus_bits`` bits
    (and whose noise the integer samplers can draw).

    Raises :class:`InsecureParametersError` when not even L = 1 fits.
    """
    if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int) or not 2 <= modulus_bits <= 64:
        raise ConfigError(f"modulus_bits must be an integer in [2, 64], got {modulus_bits!r}")

    def fits(levels: int) -> bool:
        try:
            mech = _integer(config, noise_multiplier, levels, dim)
        except InsecureParametersError:
            return True  # too few levels for the sampler's minimum noise: certainly no wrap
        return mech.sampleable and mech.required_bits(n_clients, config.wrap_probability) <= modulus_bits

    if not fits(1):  # raises, naming the bound
        _integer(config, noise_multiplier, 1, dim).check_bits(modulus_bits, n_clients, config.wrap_probability)
    lo, hi = 1, min(1 << (modulus_bits - 1), 1 << 62)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def plan_privacy(
    config: DPConfig,
    *,
    rounds: int,
    sampling_rate: float = 1.0,
    dim: int | None = None,
    n_clients: int | None = None,
    modulus_bits: int | None = None,
    population: int | None = None,
) -> DPPlan:
    """Calibrate and check the DP setup of a run.

    ``rounds``: planned rounds (ε target is for all of them). ``sampling_rate`` q: probability
    that a client takes part in a round (Poisson sampling; 1 = everyone, no amplification).
    Integer mechanisms also need ``dim`` (update length), ``n_clients`` (most clients whose
    updates enter one modular sum) and ``modulus_bits`` (the protocol's ring width); the plan
    picks the largest number of quantization levels L that cannot wrap and calibrates z for it.
    ``population``: number of clients N, to refuse δ ≥ 1/N.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float)) or not 0 < sampling_rate <= 1:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if population is not None and config.delta >= 1.0 / population:
        raise ConfigError(f"dp delta={config.delta:g} must be below 1/population = 1/{population}")
    target = config.epsilon

    def calibrate(levels: int | None) -> float:
        return calibrate_noise_multiplier(
            cast(float, target), config.delta, rounds,
            lambda z: make_mechanism(config, z, levels=levels, dim=dim),
            sampling_rate=float(sampling_rate), accountant=config.accountant)

    if config.mechanism is MechanismKind.GAUSSIAN:
        z = cast(float, config.noise_multiplier) if target is None else calibrate(None)
        return DPPlan(config, make_mechanism(config, z), rounds, float(sampling_rate), n_clients, modulus_bits)

    if dim is None or n_clients is None or modulus_bits is None:
        raise ConfigError(f"the {config.mechanism.value} mechanism needs dim, n_clients and modulus_bits")
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise ConfigError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if target is None:
        z = cast(float, config.noise_multiplier)
        levels = max_levels(config, z, dim=dim, n_clients=n_clients, modulus_bits=modulus_bits)
    else:
        # Fixed point: more noise → fewer levels fit → larger rounding share of Δ₂ → more noise.
        # z only grows and L only shrinks, so this ends; it stops when z's L is the L it was tuned for.
        gaussian = DPConfig(clip=config.clip, epsilon=target, delta=config.delta, mode=config.mode,
                            min_honest=config.min_honest)
        z = calibrate_noise_multiplier(target, config.delta, rounds, lambda v: make_mechanism(gaussian, v),
                                       sampling_rate=float(sampling_rate))
        levels = max_levels(config, z, dim=dim, n_clients=n_clients, modulus_bits=modulus_bits)
        for _ in range(_MAX_FIXED_POINT):
            z = calibrate(levels)
            again = max_levels(config, z, dim=dim, n_clients=n_clients, modulus_bits=modulus_bits)
            if again >= levels:
                break
            levels = again
        else:
            raise InsecureParametersError(
                f"could not fit epsilon={target} into modulus_bits={modulus_bits} for {n_clients} clients: "
                "quantization and noise keep competing for the bits; widen the modulus")
    mech = _integer(config, z, levels, dim)
    mech.check_bits(modulus_bits, n_clients, config.wrap_probability)
    return DPPlan(config, mech, rounds, float(sampling_rate), n_clients, modulus_bits)
