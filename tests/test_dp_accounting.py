"""Accounting: agreement with dp-accounting, a published DP-SGD figure, the exact Gaussian
(ε, δ) curve, a hand-computed RDP conversion, subsampling bounds, calibration round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from secfl.dp import (
    ACCOUNTANTS,
    DiscreteGaussianMechanism,
    DPConfig,
    GaussianMechanism,
    PldAccountant,
    RdpAccountant,
    SkellamMechanism,
    calibrate_noise_multiplier,
    epsilon_after,
    make_accountant,
    plan_privacy,
    subsampled_rdp,
)
from secfl.dp.accounting import GAUSSIAN_ORDERS, INTEGER_ORDERS
from secfl.dp.config import ACCOUNTANT_NAMES
from secfl.errors import ConfigError


def _gauss(z: float) -> GaussianMechanism:
    return GaussianMechanism(noise_multiplier=z, clip=1.0)


# --------------------------------------------------------------------------- against dp-accounting
@pytest.mark.parametrize("z,q,rounds", [(1.1, 0.01, 500), (0.8, 0.2, 30), (3.0, 1.0, 100)])
def test_rdp_matches_dp_accounting(z, q, rounds):
    import dp_accounting as dpa

    lib = dpa.rdp.RdpAccountant()
    event = dpa.GaussianDpEvent(z)
    lib.compose(dpa.PoissonSampledDpEvent(q, event) if q < 1 else event, rounds)
    ours = epsilon_after(_gauss(z), rounds, 1e-5, q)
    assert ours == pytest.approx(lib.get_epsilon(1e-5), rel=1e-12)
    # stepping round by round gives the same as one bulk step
    acc = RdpAccountant(_gauss(z))
    for _ in range(rounds):
        acc.step(q)
    assert acc.get_epsilon(1e-5) == pytest.approx(ours, rel=1e-9)


def test_orders_are_dp_accountings_defaults():
    from dp_accounting.rdp import rdp_privacy_accountant

    assert list(GAUSSIAN_ORDERS) == list(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


# --------------------------------------------------------------------------- published figure
def test_abadi_et_al_2016_moments_accountant_figure():
    """Abadi et al., CCS 2016, §3.1: q = 0.01, σ = 4, δ = 1e-5, T = 10000 → ε ≈ 1.26 with the
    moments accountant (RDP at integer orders with the classic tail bound ε = rdp + log(1/δ)/(α-1)).
    The improved conversion we report is smaller, and the PLD accountant smaller still."""
    acc = RdpAccountant(_gauss(4.0))
    acc.step(0.01, 10_000)
    orders, rdp = acc.rdp_curve()
    integer = (orders == np.round(orders)) & (orders <= 33)  # λ = α - 1 ≤ 32 as in the paper
    classic = float(np.min(rdp[integer] + math.log(1e5) / (orders[integer] - 1)))
    assert round(classic, 2) == 1.26
    ours = acc.get_epsilon(1e-5)
    assert 0.9 < ours < classic
    pld = make_accountant("pld", _gauss(4.0))
    pld.step(0.01, 10_000)
    assert 0.8 < pld.get_epsilon(1e-5) < ours


# --------------------------------------------------------------------------- exact Gaussian
def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """ε of the Gaussian mechanism with sensitivity/σ = μ (Balle & Wang, ICML 2018):
    δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2); T-fold composition has μ = √T/z."""
    def delta_of(eps: float) -> float:
        return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("z,rounds", [(1.0, 10), (2.0, 100), (5.0, 1000)])
def test_full_participation_against_the_exact_gaussian(z, rounds):
    exact = _exact_gaussian_epsilon(math.sqrt(rounds) / z, 1e-5)
    rdp = epsilon_after(_gauss(z), rounds, 1e-5)
    assert exact <= rdp < 1.35 * exact  # RDP is an upper bound, and not a loose one here


@pytest.mark.parametrize("z,rounds", [(2.0, 5), pytest.param(2.0, 100, marks=pytest.mark.slow),
                                      pytest.param(5.0, 1000, marks=pytest.mark.slow)])
def test_pld_matches_the_exact_gaussian(z, rounds):
    exact = _exact_gaussian_epsilon(math.sqrt(rounds) / z, 1e-5)
    assert epsilon_after(_gauss(z), rounds, 1e-5, accountant="pld") == pytest.approx(exact, rel=0.01)


def test_rdp_conversion_by_hand():
    """ε = min_α [T·α/(2z²) + log((α-1)/α) - (log δ + log α)/(α-1)] (Canonne–Kamath–Steinke 2020,
    Prop. 12; Asoodeh et al. 2020), over the same orders; and below Mironov's closed form."""
    z, rounds, delta = 1.7, 40, 1e-6
    a = GAUSSIAN_ORDERS[GAUSSIAN_ORDERS > 1.01]
    by_hand = np.min(rounds * a / (2 * z * z) + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1))
    got = epsilon_after(_gauss(z), rounds, delta)
    assert got == pytest.approx(by_hand, rel=1e-9)
    mironov = rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1 / delta)) / z
    assert got < mironov


# --------------------------------------------------------------------------- subsampling (discrete)
@pytest.mark.parametrize("z,q", [(0.8, 0.01), (2.0, 0.2), (5.0, 0.01)])
def test_zhu_wang_bound_dominates_exact_subsampled_gaussian(z, q):
    import dp_accounting as dpa

    lib = dpa.rdp.RdpAccountant(list(INTEGER_ORDERS.astype(float)))
    lib.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)))
    bound = subsampled_rdp(_gauss(z).rdp, q, INTEGER_ORDERS)
    assert np.all(bound >= lib.rdp * (1 - 1e-9))
    assert np.all(bound <= _gauss(z).rdp(INTEGER_ORDERS.astype(float)) + 1e-12)
    assert bound[0] == pytest.approx(lib.rdp[0], rel=1e-6)  # α = 2: the bound is tight


@pytest.mark.parametrize("cls", [DiscreteGaussianMechanism, SkellamMechanism])
def test_subsampling_amplifies_discrete_mechanisms(cls):
    m = cls(noise_multiplier=3.0, clip=1.0, levels=10_000, dim=1000, min_honest=2)
    full = epsilon_after(m, 50, 1e-5, 1.0)
    assert epsilon_after(m, 50, 1e-5, 0.1) < full
    assert subsampled_rdp(m.rdp, 1.0, INTEGER_ORDERS) == pytest.approx(m.rdp(INTEGER_ORDERS.astype(float)))
    # at fine quantization the discrete ε is close to (above) the Gaussian one, q = 1
    g = epsilon_after(_gauss(3.0), 50, 1e-5)
    assert g <= full < 1.05 * g


# --------------------------------------------------------------------------- interface
def test_accountant_interface_and_state():
    assert tuple(ACCOUNTANTS) == ACCOUNTANT_NAMES == ("rdp", "pld")
    acc = make_accountant("rdp", _gauss(1.0))
    assert acc.get_epsilon(1e-5) == 0.0 and acc.rounds == 0
    acc.step(0.5, 3)
    acc.step(0.5)
    acc.step(1.0, 2)
    assert acc.rounds == 6 and acc.history == [(0.5, 4), (1.0, 2)]
    state = acc.state_dict()
    other = RdpAccountant(_gauss(1.0))
    other.load_state_dict(state)
    assert other.get_epsilon(1e-5) == acc.get_epsilon(1e-5)
    with pytest.raises(ConfigError):
        PldAccountant(_gauss(1.0)).load_state_dict(state)
    with pytest.raises(ConfigError):
        acc.step(0.0)
    with pytest.raises(ConfigError):
        make_accountant("prv", _gauss(1.0))
    with pytest.raises(ConfigError, match="only the gaussian"):
        PldAccountant(SkellamMechanism(noise_multiplier=1.0, clip=1.0, levels=10, dim=5))
    eps = [epsilon_after(_gauss(1.0), r, 1e-5) for r in (1, 2, 5, 10)]
    assert eps == sorted(eps) and eps[0] > 0


# --------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("target,rounds", [(1.0, 20), (8.0, 200)])
def test_calibrate_then_account_roundtrip_gaussian(target, rounds):
    z = calibrate_noise_multiplier(target, 1e-5, rounds, _gauss)
    eps = epsilon_after(_gauss(z), rounds, 1e-5)
    assert target * (1 - 1e-3) <= eps <= target
    assert epsilon_after(_gauss(z * 0.99), rounds, 1e-5) > target  # z is (nearly) the smallest


def test_calibrate_subsampled_gaussian_roundtrip():
    z = calibrate_noise_multiplier(4.0, 1e-5, 100, _gauss, sampling_rate=0.1)
    assert 4.0 * (1 - 1e-3) <= epsilon_after(_gauss(z), 100, 1e-5, 0.1) <= 4.0


@pytest.mark.parametrize("mechanism", ["discrete-gaussian", "skellam"])
def test_plan_integer_mechanism_roundtrip(mechanism):
    cfg = DPConfig(clip=1.0, epsilon=2.0, delta=1e-5, mechanism=mechanism, min_honest=3)
    plan = plan_privacy(cfg, rounds=30, dim=5000, n_clients=10, modulus_bits=24)
    mech = plan.mechanism
    assert isinstance(mech, (DiscreteGaussianMechanism, SkellamMechanism))
    assert 2.0 * (1 - 1e-3) <= plan.epsilon_total <= 2.0
    assert mech.required_bits(10, cfg.wrap_probability) <= 24
    # the levels are the most that fit: one more level would not
    bigger = type(mech)(noise_multiplier=mech.noise_multiplier, clip=1.0, levels=mech.levels + 1, dim=5000,
                        min_honest=3)
    assert bigger.required_bits(10, cfg.wrap_probability) > 24
    assert 0 < plan.epsilon_per_round < plan.epsilon_total
    summary = plan.summary()
    assert summary["required_bits"] <= 24 and summary["mechanism"] == mechanism
    acc = plan.new_accountant()
    for _ in range(30):
        acc.step()
    assert acc.get_epsilon(plan.delta) == pytest.approx(plan.epsilon_total)


def test_plan_gaussian_and_validation():
    plan = plan_privacy(DPConfig(clip=0.5, epsilon=4.0, min_honest=4), rounds=50)
    assert 4.0 * (1 - 1e-3) <= plan.epsilon_total <= 4.0
    assert plan.mechanism.aggregate_std == pytest.approx(plan.noise_multiplier * 0.5)
    fixed = plan_privacy(DPConfig(clip=1.0, noise_multiplier=1.3), rounds=10)
    assert fixed.noise_multiplier == 1.3
    with pytest.raises(ConfigError, match="1/population"):
        plan_privacy(DPConfig(clip=1.0, epsilon=1.0, delta=0.01), rounds=5, population=1000)
    with pytest.raises(ConfigError, match="dim, n_clients and modulus_bits"):
        plan_privacy(DPConfig(clip=1.0, epsilon=1.0, mechanism="skellam"), rounds=5)
    with pytest.raises(ConfigError, match="not reachable"):
        calibrate_noise_multiplier(1e-6, 1e-5, 10_000, _gauss)


@pytest.mark.parametrize("mechanism", ["discrete-gaussian", "skellam"])
def test_plan_wide_modulus_stays_within_sampler_range(mechanism):
    from secfl.crypto.prg import Prg

    cfg = DPConfig(clip=1.0, epsilon=2.0, mechanism=mechanism)
    plan = plan_privacy(cfg, rounds=10, dim=1000, n_clients=4, modulus_bits=64)
    mech = plan.mechanism
    assert mech.sampleable and mech.required_bits(4, cfg.wrap_probability) <= 64
    share = mech.client_share(1000, Prg(b"\x05" * 32))
    assert 0.8 < float(np.std(share)) / math.sqrt(mech.share_variance) < 1.2


def test_plan_refuses_a_modulus_too_small():
    from secfl.errors import InsecureParametersError

    cfg = DPConfig(clip=1.0, noise_multiplier=1.0, mechanism="skellam")
    with pytest.raises(InsecureParametersError, match="modular sum can wrap"):
        plan_privacy(cfg, rounds=1, dim=100, n_clients=1000, modulus_bits=8)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["discrete-gaussian", "skellam"])
@pytest.mark.parametrize("q", [1.0, 0.05])
def test_plan_roundtrip_many_settings(mechanism, q):
    for eps in (1.0, 4.0, 8.0):
        cfg = DPConfig(clip=1.0, epsilon=eps, mechanism=mechanism, min_honest=5)
        plan = plan_privacy(cfg, rounds=100, sampling_rate=q, dim=100_000, n_clients=20, modulus_bits=32)
        assert eps * (1 - 1e-3) <= plan.epsilon_total <= eps


@pytest.mark.slow
def test_pld_calibration_roundtrip():
    plan = plan_privacy(DPConfig(clip=1.0, epsilon=4.0, accountant="pld"), rounds=50, sampling_rate=0.2)
    assert 4.0 * (1 - 1e-3) <= plan.epsilon_total <= 4.0
    rdp = plan_privacy(DPConfig(clip=1.0, epsilon=4.0), rounds=50, sampling_rate=0.2)
    assert plan.noise_multiplier < rdp.noise_multiplier  # the tighter accountant needs less noise
