"""Differential privacy inside federated runs: ε reported, noise where the mode says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secfl.cli import main
from secfl.errors import ConfigError
from secfl.fl.codec import ModelCodec
from secfl.fl.data import load_dataset
from secfl.fl.models import build_model
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.simulator import Experiment

BASE = {"clients": 6, "rounds": 2, "clip": 1.0, "data": {"name": "synthetic", "synthetic_samples": 300}}

ALL_PROTOCOLS = ["plaintext", "ckks", "ckks-threshold", "additive", "secagg"]


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
@pytest.mark.parametrize("mode", ["distributed", "central"])
def test_dp_run_reports_epsilon(tmp_path, protocol, mode):
    out = tmp_path / "o"
    rc = main(["run", "--protocol", protocol, "--dataset", "synthetic", "--clients", "6", "--rounds", "3",
               "--clip", "1", "--dp-epsilon", "8", "--dp-mode", mode, "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    eps = [r["epsilon"] for r in res["rounds"]]
    assert all(e is not None and e > 0 for e in eps) and eps == sorted(eps)
    assert eps[-1] == pytest.approx(8.0, rel=1e-3) and eps[-1] <= 8.0 + 1e-9
    assert res["final"]["epsilon"] == eps[-1] and res["final"]["delta"] == 1e-5
    assert res["meta"]["dp"]["mode"] == mode


def _noise_variance(mode: str, z: float, min_honest: int, protocol: str = "plaintext") -> tuple[float, float]:
    """Run one round where every update is zero; the model change is pure DP noise / m."""
    cfg = ExperimentConfig.from_dict({
        **BASE, "protocol": protocol, "rounds": 1,
        "data": {"name": "synthetic", "synthetic_samples": 300, "synthetic_features": 1500},
        "dp": {"noise_multiplier": z, "mode": mode, "min_honest": min_honest},
        "protocol_options": {"wire_dtype": "float64"} if protocol == "plaintext" else {}})
    res = Experiment(cfg, update_hook=lambda r, c, u: np.zeros_like(u)).run()
    data = load_dataset(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed)
    w0 = ModelCodec.from_module(model).to_vector(model).astype(np.float64)
    delta = res.model_vector.astype(np.float64) - w0
    m = cfg.clients
    sigma2 = (z * cfg.clip) ** 2
    expected = sigma2 / m**2 if mode == "central" else m * (sigma2 / min_honest) / m**2
    return float(delta.var()), expected


@pytest.mark.parametrize("mode,min_honest", [("central", 1), ("distributed", 3), ("distributed", 5)])
def test_aggregate_noise_variance_matches_target(mode, min_honest):
    var, expected = _noise_variance(mode, z=2.0, min_honest=min_honest)
    # 3002 coordinates: the sample variance is within ±5 standard errors (√(2/n) ≈ 2.6 %)
    assert abs(var / expected - 1) < 5 * np.sqrt(2 / 3002)


@pytest.mark.parametrize("protocol", ["ckks", "additive", "secagg"])
def test_distributed_noise_is_added_before_protection(protocol):
    """Float shares before CKKS encryption; integer shares inside the masked / shared encoding."""
    var, expected = _noise_variance("distributed", z=1.0, min_honest=5, protocol=protocol)
    assert abs(var / expected - 1) < 5 * np.sqrt(2 / 3002)


def test_dp_requires_clip_and_a_fitting_mechanism():
    with pytest.raises(ConfigError, match="clip"):
        Experiment(ExperimentConfig.from_dict({**BASE, "clip": 0.0, "protocol": "plaintext",
                                               "dp": {"epsilon": 1.0}})).run()
    with pytest.raises(ConfigError, match="mechanism"):
        Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext",
                                               "dp": {"epsilon": 1.0, "mechanism": "skellam"}})).run()
    with pytest.raises(ConfigError, match="min_honest"):
        Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext",
                                               "dp": {"epsilon": 1.0, "min_honest": 6}})).run()
    with pytest.raises(ConfigError, match="dp.mode"):
        ExperimentConfig.from_dict({**BASE, "dp": {"epsilon": 1.0, "mode": "sideways"}})


def test_compare_sweeps_epsilon(tmp_path):
    out = tmp_path / "sweep"
    rc = main(["compare", "--protocols", "plaintext", "--dataset", "synthetic", "--clients", "4", "--rounds", "2",
               "--clip", "1", "--dp-epsilon", "2,inf", "--out", str(out), "--quiet"])
    assert rc == 0
    rows = json.loads((out / "epsilon.json").read_text())
    assert [(r["protocol"], r["epsilon_target"]) for r in rows] == [("plaintext", 2.0), ("plaintext", None)]
    assert rows[0]["epsilon_reported"] == pytest.approx(2.0, rel=1e-3) and rows[1]["epsilon_reported"] is None
    assert (out / "epsilon.png").stat().st_size > 0


@pytest.mark.parametrize("protocol", ["additive", "secagg"])
def test_clipped_updates_are_never_refused_by_the_integer_mechanism(protocol):
    """Updates far above the clip norm are clipped, quantized and accepted (no client dropped)."""
    cfg = ExperimentConfig.from_dict({**BASE, "protocol": protocol, "rounds": 2, "clip": 0.05,
                                      "train": {"lr": 0.5, "epochs": 3}, "dp": {"epsilon": 8.0}})
    res = Experiment(cfg).run()
    assert all(r.dropped == [] for r in res.rounds), [r.dropped_reasons for r in res.rounds]


def _weighted_run(z: float, mode: str, hook, max_weight_of=np.median):
    probe = Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "rounds": 1})).run()
    sizes = np.asarray(probe.meta["client_sizes"], dtype=np.float64)
    w_max = float(max_weight_of(sizes))
    cfg = ExperimentConfig.from_dict({
        **BASE, "protocol": "plaintext", "rounds": 1, "protocol_options": {"wire_dtype": "float64"},
        "data": {"name": "synthetic", "synthetic_samples": 300, "synthetic_features": 1500},
        "dp": {"noise_multiplier": z, "mode": mode, "weighted": True, "max_weight": w_max}})
    res = Experiment(cfg, update_hook=hook).run()
    data = load_dataset(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed)
    w0 = ModelCodec.from_module(model).to_vector(model).astype(np.float64)
    return res.model_vector.astype(np.float64) - w0, np.minimum(sizes / w_max, 1.0)


def test_weighted_dp_means_weight_by_size_capped_at_the_public_bound():
    dim = 1500 * 2 + 2
    unit = np.ones(dim) / np.sqrt(dim)
    delta, w = _weighted_run(1e-9, "central", lambda r, c, u: unit * (c + 1) * 0.1)  # norms 0.1..0.6 <= C = 1
    assert w.min() < 1.0 and w.max() == 1.0  # some clients capped at W, some below
    expected = sum(w[c] * (c + 1) * 0.1 for c in range(6)) / w.sum()
    np.testing.assert_allclose(delta, unit * expected, rtol=1e-6, atol=1e-9)


def test_weighted_dp_keeps_each_contribution_within_the_clip_and_the_noise_as_stated():
    # a client twice the bound still counts once: its scaled, clipped update has norm <= C
    from secfl.runtime.privacy import DPSettings, RunPrivacy

    settings = DPSettings(noise_multiplier=1.0, weighted=True, max_weight=50)
    priv = RunPrivacy.create(settings, clip=1.0, rounds=1, per_round=4, dim=10, integer_protocol=False)
    assert priv.dp_weight(settings, 100) == 1.0 and priv.dp_weight(settings, 25) == 0.5
    delta, w = _weighted_run(2.0, "central", lambda r, c, u: np.zeros_like(u))
    var_expected = (2.0 * 1.0) ** 2 / w.sum() ** 2  # sigma^2 / (sum of weights)^2
    assert abs(delta.var() / var_expected - 1) < 5 * np.sqrt(2 / delta.size)


def test_weighted_dp_without_a_public_bound_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="public bound W"):
        ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "dp": {"epsilon": 4.0, "weighted": True}})
