"""Precision by construction (issue 14 item 1): the encoding's scale comes from the weights actually
given, the revealed mean stays within the bound each protocol reports, and nothing overflows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secfl

PROTOCOLS = ["ckks", "ckks-threshold", "additive", "secagg"]
QUICK = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _inputs(n: int, d: int, skew: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only
    x = rng.uniform(-1, 1, (n, d))
    w = np.exp(rng.uniform(0, np.log(skew), n)) if skew > 1 else np.ones(n)
    return x, w


@pytest.mark.parametrize("protocol", PROTOCOLS)
@QUICK
@given(n=st.integers(2, 40), skew=st.sampled_from([1.0, 10.0, 1e4]), seed=st.integers(0, 2**16))
def test_the_revealed_mean_stays_within_the_reported_bound(protocol, n, skew, seed):
    if protocol == "secagg":  # its setup grows as n·k key agreements: larger n in the slow tier
        n = min(max(n, 3), 16)
    x, w = _inputs(n, 16, skew, seed)
    res = secfl.secure_mean(x, w, protocol=protocol, clip_range=1.0)
    exact = (w[:, None] * x).sum(0) / w.sum()
    assert res.error_bound is not None and np.isfinite(res.mean).all()
    assert np.abs(res.mean - exact).max() <= res.error_bound  # also: no range wrapped around


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_uniform_weights_without_max_weight_are_as_precise_as_the_tight_bound(protocol):
    x, w = _inputs(20, 200, 1.0, 7)
    auto = secfl.secure_mean(x, protocol=protocol, seed=1, clip_range=1.0)
    tight = secfl.secure_mean(x, protocol=protocol, seed=1, clip_range=1.0, max_weight=1.0)
    loose = secfl.secure_mean(x, protocol=protocol, seed=1, clip_range=1.0, max_weight=4096.0)
    assert auto.error_bound == pytest.approx(tight.error_bound, rel=1e-9)
    err = {k: float(np.abs(r.mean - x.mean(0)).max()) for k, r in (("auto", auto), ("loose", loose))}
    assert loose.error_bound > 100 * auto.error_bound  # 12 bits thrown away by the loose bound
    assert err["auto"] <= auto.error_bound and err["loose"] <= loose.error_bound


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["secagg", "additive"])
def test_a_thousand_clients_within_the_bound(protocol):
    x, w = _inputs(1000, 8, 1e4, 3)
    res = secfl.secure_mean(x, w, protocol=protocol, clip_range=1.0)
    exact = (w[:, None] * x).sum(0) / w.sum()
    assert np.abs(res.mean - exact).max() <= res.error_bound


def test_a_loose_max_weight_says_how_many_bits_it_gives_up(caplog):
    from secfl.protocols.base import weight_precision

    assert weight_precision(4096, 4096) == {"max_weight": 4096.0, "largest_weight": 4096.0, "bits_given_up": 0.0}
    assert weight_precision(1024, 1)["bits_given_up"] == 10.0
    x, w = _inputs(4, 8, 1.0, 0)
    with caplog.at_level("WARNING", logger="secfl"):
        loose = secfl.secure_mean(x, w, protocol="additive", max_weight=1024.0)
    assert "gives up 10.0 bits of precision" in caplog.text
    tight = secfl.secure_mean(x, w, protocol="additive")
    assert loose.error_bound > 500 * tight.error_bound  # the bound says what was given up: 2^10 ≈ 1024×


def test_the_runtime_reports_the_bits_a_hand_set_max_weight_gives_up(caplog):
    base = {"protocol": "additive", "clients": 4, "rounds": 1, "data": {"name": "synthetic", "synthetic_samples": 200}}
    tight = secfl.Experiment(secfl.ExperimentConfig.from_dict(base)).run()
    largest = max(tight.meta["client_sizes"])
    assert tight.meta["precision"] == {"max_weight": largest, "largest_weight": largest, "bits_given_up": 0.0}
    with caplog.at_level("WARNING", logger="secfl"):
        loose = secfl.Experiment(secfl.ExperimentConfig.from_dict(
            {**base, "protocol_options": {"max_weight": 64.0 * largest}})).run()
    assert loose.meta["precision"]["bits_given_up"] == 6.0
    assert "gives up 6.0 bits of precision" in caplog.text
    dp = secfl.Experiment(secfl.ExperimentConfig.from_dict({**base, "dp": {"epsilon": 8.0}, "clip": 1.0})).run()
    assert dp.meta["precision"] == {"max_weight": 1.0, "largest_weight": 1.0, "bits_given_up": 0.0}
