"""Noise mechanisms: aggregate variance with exactly n_h shares, integer outputs, quantization,
the modular bit-width rule (refusal and no-wrap), RDP curves and their limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.crypto.prg import Prg, derive_seed
from secfl.dp import (
    DiscreteGaussianMechanism,
    DPConfig,
    DPMode,
    GaussianMechanism,
    MechanismKind,
    SkellamMechanism,
    clip_l2,
    from_modular,
    gaussian_tail,
    make_mechanism,
    skellam_tail,
    to_modular,
)
from secfl.errors import ConfigError, InsecureParametersError, InvalidUpdateError, ProtocolAbort

SEED = b"\x22" * 32
ORDERS = np.array([1.5, 2.0, 4.0, 16.0, 64.0])


def _shares_sum(mech, n: int, dim: int) -> np.ndarray:
    return sum(mech.client_share(dim, Prg(derive_seed(SEED, "client", k))) for k in range(n))


def _assert_variance(x: np.ndarray, target: float, kurtosis_excess: float = 0.0) -> None:
    se = target * math.sqrt((2.0 + kurtosis_excess) / x.size)
    assert abs(float(np.var(x)) - target) < 5 * se, (float(np.var(x)), target)


# --------------------------------------------------------------------------- aggregate noise
@pytest.mark.parametrize("n_h", [1, 5])
def test_gaussian_aggregate_variance_with_exactly_n_h_shares(n_h):
    mech = GaussianMechanism(noise_multiplier=1.3, clip=0.7, min_honest=n_h)
    total = _shares_sum(mech, n_h, 80_000)
    assert total.dtype == np.float64
    _assert_variance(total, (1.3 * 0.7) ** 2)
    assert mech.aggregate_variance == pytest.approx((1.3 * 0.7) ** 2)


@pytest.mark.parametrize("cls", [DiscreteGaussianMechanism, SkellamMechanism])
def test_integer_aggregate_variance_with_exactly_n_h_shares(cls):
    n_h = 4
    mech = cls(noise_multiplier=0.8, clip=2.0, min_honest=n_h, levels=50, dim=80_000)
    shares = [mech.client_share(80_000, Prg(derive_seed(SEED, "c", k))) for k in range(n_h)]
    assert all(s.dtype == np.int64 for s in shares)
    target = (0.8 * 50) ** 2  # σ = z·L in quantization steps
    _assert_variance(sum(shares), target, kurtosis_excess=1.0 / target)
    # one share alone carries σ²/n_h
    _assert_variance(shares[0], target / n_h, kurtosis_excess=n_h / target)


def test_fewer_than_n_h_shares_carry_less_noise():
    mech = GaussianMechanism(noise_multiplier=1.0, clip=1.0, min_honest=4)
    with pytest.raises(AssertionError):
        _assert_variance(_shares_sum(mech, 3, 80_000), 1.0)
    with pytest.raises(ProtocolAbort):
        mech.require_survivors(3)
    mech.require_survivors(4)


def test_central_mode():
    mech = SkellamMechanism(noise_multiplier=1.0, clip=1.0, levels=30, dim=50_000, mode=DPMode.CENTRAL, min_honest=7)
    with pytest.raises(ConfigError):
        mech.client_share(10, Prg(SEED))
    noise = mech.central(50_000, Prg(SEED))
    assert noise.dtype == np.int64
    _assert_variance(noise, 900.0, 1 / 900)
    mech.require_survivors(0)  # nothing to check: the server adds the noise
    g = GaussianMechanism(noise_multiplier=2.0, clip=0.5, mode=DPMode.CENTRAL)
    _assert_variance(g.central(50_000, Prg(SEED)), 1.0)


# --------------------------------------------------------------------------- quantization
def test_encode_decode_roundtrip_and_bounds():
    d = 1000
    mech = DiscreteGaussianMechanism(noise_multiplier=1.0, clip=1.5, levels=1 << 12, dim=d)
    x = np.linspace(-1, 1, d)
    x, _ = clip_l2(x, 1.5)
    q = mech.encode(x, Prg(SEED))
    assert q.dtype == np.int64 and np.all(np.abs(q) <= mech.levels)
    assert np.max(np.abs(mech.decode(q) - x)) < mech.gamma
    assert np.linalg.norm(q) <= mech.l2_sensitivity
    # unbiased rounding: the average of many encodings approaches x
    avg = np.mean([mech.encode(x, Prg(derive_seed(SEED, "r", i))) for i in range(200)], axis=0)
    assert np.max(np.abs(mech.decode(avg) - x)) < 0.4 * mech.gamma


def test_encode_refuses_unclipped_or_malformed():
    mech = SkellamMechanism(noise_multiplier=1.0, clip=1.0, levels=100, dim=3)
    with pytest.raises(InvalidUpdateError, match="exceeds the clip"):
        mech.encode(np.array([1.0, 1.0, 0.0]), Prg(SEED))
    with pytest.raises(InvalidUpdateError):
        mech.encode(np.array([0.1, np.nan, 0.0]), Prg(SEED))
    with pytest.raises(InvalidUpdateError):
        mech.encode(np.zeros(4), Prg(SEED))


# --------------------------------------------------------------------------- bit width
def test_bit_width_check_refuses_a_wrapping_configuration():
    mech = SkellamMechanism(noise_multiplier=1.0, clip=1.0, levels=1000, dim=100, min_honest=2)
    with pytest.raises(InsecureParametersError, match="modular sum can wrap.*modulus_bits=16"):
        mech.check_bits(16, n_clients=50, failure_prob=1e-9)
    need = mech.required_bits(50, 1e-9)
    mech.check_bits(need, 50, 1e-9)
    with pytest.raises(InsecureParametersError):
        mech.check_bits(need - 1, 50, 1e-9)


@pytest.mark.parametrize("cls", [DiscreteGaussianMechanism, SkellamMechanism])
def test_noisy_modular_sum_does_not_wrap_at_the_required_width(cls):
    n, d = 12, 4000
    mech = cls(noise_multiplier=1.5, clip=1.0, levels=200, dim=d, min_honest=3)
    bits = mech.required_bits(n, 2.0 ** -40)
    rng = np.random.default_rng(0)  # data only
    exact = np.zeros(d, dtype=np.int64)
    ring = np.zeros(d, dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    for k in range(n):
        x = np.zeros(d)
        x[k % d] = 1.0 if k % 2 else -1.0  # worst case: the whole norm on one coordinate
        x += rng.normal(0, 1e-3, d)
        x, _ = clip_l2(x, 1.0)
        v = mech.encode(x, Prg(derive_seed(SEED, "x", k))) + mech.client_share(d, Prg(derive_seed(SEED, "n", k)))
        exact += v
        ring = (ring + to_modular(v, bits)) & mask
    assert np.array_equal(from_modular(ring, bits), exact)
    assert np.max(np.abs(exact)) <= mech.sum_bound(n, 2.0 ** -40) < 2 ** (bits - 1)
    # one bit fewer and the worst-case bound no longer fits
    with pytest.raises(InsecureParametersError):
        mech.check_bits(bits - 1, n, 2.0 ** -40)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=64), st.data())
def test_modular_roundtrip(bits, data):
    half = 1 << (bits - 1)
    vals = data.draw(st.lists(st.integers(min_value=-half, max_value=half - 1), min_size=1, max_size=20))
    v = np.array(vals, dtype=np.int64)
    assert np.array_equal(from_modular(to_modular(v, bits), bits), v)


def test_tail_bounds():
    # Gaussian: closed form; Skellam tail ≥ the Gaussian one (heavier tail), close for large μ
    assert gaussian_tail(4.0, 1, 0.01) == pytest.approx(2 * math.sqrt(2 * math.log(200)))
    for mu in (1.0, 100.0, 1e8):
        g, s = gaussian_tail(mu, 1000, 1e-9), skellam_tail(mu, 1000, 1e-9)
        assert s >= g * 0.999
    assert skellam_tail(1e8, 1000, 1e-9) / gaussian_tail(1e8, 1000, 1e-9) < 1.01
    # empirical: max over coordinates stays below the bound (failure prob 1e-3)
    x = make_mechanism(DPConfig(clip=1.0, noise_multiplier=1.0, mechanism="skellam"), levels=3, dim=100_000)
    noise = x.central(100_000, Prg(SEED))
    assert np.max(np.abs(noise)) <= x.noise_tail(100_000, 1e-3)


# --------------------------------------------------------------------------- RDP curves
def test_gaussian_rdp():
    m = GaussianMechanism(noise_multiplier=2.0, clip=3.0, min_honest=5)
    assert np.allclose(m.rdp(ORDERS), ORDERS / 8.0)
    assert m.dp_event().noise_multiplier == 2.0


@pytest.mark.parametrize("cls", [DiscreteGaussianMechanism, SkellamMechanism])
def test_integer_rdp_tends_to_gaussian(cls):
    """Fine quantization and large noise: the discrete bounds approach α/(2z²) from above."""
    z = 1.2
    gauss = GaussianMechanism(noise_multiplier=z, clip=1.0).rdp(ORDERS)
    prev = None
    for levels in (100, 10_000, 1_000_000):
        r = cls(noise_multiplier=z, clip=1.0, levels=levels, dim=100, min_honest=3).rdp(ORDERS)
        assert np.all(r >= gauss)
        gap = float(np.max(r / gauss - 1))
        assert prev is None or gap < prev
        prev = gap
    assert prev < 1e-3


def test_discrete_gaussian_tau_term():
    # s = 0.6 per share: τ is not negligible, and it vanishes for one share or large s
    small = DiscreteGaussianMechanism(noise_multiplier=0.6 * math.sqrt(10) / 20, clip=1.0, levels=20, dim=10,
                                      min_honest=10)
    assert small.share_variance == pytest.approx(0.36)
    assert small.tau() > 1e-4
    k = np.arange(1, 10)
    assert small.tau() == pytest.approx(10 * np.sum(np.exp(-2 * math.pi ** 2 * 0.36 * k / (k + 1))))
    one = DiscreteGaussianMechanism(noise_multiplier=0.03, clip=1.0, levels=20, dim=10, min_honest=1)
    assert one.tau() == 0.0
    assert DiscreteGaussianMechanism(noise_multiplier=1.0, clip=1.0, levels=1000, dim=10, min_honest=10).tau() < 1e-100
    # KLS21 eq. (17), first branch, computed by hand for these numbers
    sig = math.sqrt(10 * small.share_variance)
    d2 = small.l2_sensitivity
    assert small.rdp(np.array([2.0]))[0] <= 2 / 2 * (d2 / sig) ** 2 + small.tau() * 10 + 1e-12


def test_skellam_rdp_by_hand():
    m = SkellamMechanism(noise_multiplier=2.0, clip=1.0, levels=10, dim=4, min_honest=1)
    mu = 400.0
    d2 = 10 * (1 + 1e-9) + 2.0
    d1 = d2 * min(2.0, d2)
    a = 3.0
    want = a * d2 ** 2 / (2 * mu) + min(((2 * a - 1) * d2 ** 2 + 6 * d1) / (4 * mu ** 2), 3 * d1 / (2 * mu))
    assert m.rdp(np.array([a]))[0] == pytest.approx(want, rel=1e-12)


def test_discrete_gaussian_refuses_tiny_shares():
    with pytest.raises(InsecureParametersError, match="1/2"):
        DiscreteGaussianMechanism(noise_multiplier=0.1, clip=1.0, levels=2, dim=10, min_honest=4)


@pytest.mark.parametrize("kwargs", [
    dict(noise_multiplier=0.0, clip=1.0),
    dict(noise_multiplier=1.0, clip=-1.0),
    dict(noise_multiplier=1.0, clip=1.0, min_honest=0),
    dict(noise_multiplier=float("inf"), clip=1.0),
])
def test_mechanism_validation(kwargs):
    with pytest.raises(ConfigError):
        GaussianMechanism(**kwargs)


def test_make_mechanism_from_config():
    cfg = DPConfig(clip=0.5, noise_multiplier=1.1, mechanism=MechanismKind.SKELLAM, min_honest=3)
    with pytest.raises(ConfigError, match="levels and dim"):
        make_mechanism(cfg)
    m = make_mechanism(cfg, levels=8, dim=5)
    assert isinstance(m, SkellamMechanism) and m.gamma == 0.5 / 8 and m.min_honest == 3
    assert isinstance(make_mechanism(DPConfig(clip=1.0, noise_multiplier=1.0)), GaussianMechanism)
