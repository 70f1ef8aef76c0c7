"""The study examples (examples/*/run.py) run end to end and write what their READMEs claim.

Each test runs one example in a subprocess with a short setting (fewer rounds) and checks its
output files. Slow tier: ``pytest -m slow tests/test_examples.py``. The examples make their
offline data under ``examples/<name>/data/`` (git-ignored) when it is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.slow


def _run(example: str, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / example / "run.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_hospitals_cnn_with_fedprox_dp_and_fine_tuning(tmp_path):
    out = _run("hospitals-cnn-28x28", "--rounds", "2", "--out", str(tmp_path))
    res, summary = _json(tmp_path / "results.json"), _json(tmp_path / "summary.json")
    cfg = res["config"]
    assert cfg["protocol"] == "ckks" and cfg["clients"] == 3 and cfg["train"]["optimizer"] == "adam"
    assert cfg["train"]["lr"] == 0.001 and cfg["train"]["prox_mu"] > 0 and cfg["dp"]["epsilon"] == 8.0
    spec = res["meta"]["model"]["spec"]
    assert spec == {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "pool": "each", "fc": 128}
    arch = res["meta"]["model"]["architecture"]
    assert "Conv2d(1, 32" in arch and "Conv2d(32, 64" in arch and "out_features=128" in arch
    assert 0 < res["final"]["epsilon"] <= 8.0 + 1e-6  # the budget is calibrated over the rounds run
    sites = res["final"]["personalized"]["sites"]
    assert len(sites) == 3 and all({"before", "after"} <= set(s) for s in sites)
    assert summary["personalized"]["after"] == pytest.approx(res["final"]["personalized"]["mean_after"]["accuracy"])
    assert "after fine-tuning" in out and (tmp_path / "model.safetensors").exists()


def test_linear_regression_under_every_protocol_matches_pooled_least_squares(tmp_path):
    _run("linear-regression-10-sites", "--rounds", "25", "--out", str(tmp_path), timeout=600)
    summary = _json(tmp_path / "summary.json")
    ref = summary["pooled_least_squares_mse"]
    runs = {r["protocol"]: r for r in summary["runs"]}
    assert set(runs) == {"plaintext", "ckks", "ckks-threshold", "additive", "secagg"}
    for protocol, r in runs.items():
        assert r["client_sizes"] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], protocol
        assert r["mse"] <= 1.1 * ref, (protocol, r["mse"], ref)  # the README: within a few % of pooled
        assert r["mse"] == pytest.approx(runs["plaintext"]["mse"], rel=0.02), protocol
        cfg = _json(tmp_path / protocol / "results.json")["config"]
        assert cfg["model"] == "linear" and cfg["train"]["lr"] == 0.01 and cfg["train"]["batch_size"] >= 100
    table = (tmp_path / "results.md").read_text()
    assert "Pooled least squares" in table and all(f"| {p} |" in table for p in runs)


def test_lung_cnn_stops_when_the_loss_stops_improving(tmp_path):
    # min_delta far above any possible gain: the rule must end the run after patience + 1 rounds
    _run("lung-cnn-until-convergence", "--rounds", "5", "--patience", "1", "--min-delta", "0.5",
         "--out", str(tmp_path))
    res, summary = _json(tmp_path / "results.json"), _json(tmp_path / "summary.json")
    assert res["config"]["protocol"] == "secagg" and res["config"]["stop"]["metric"] == "loss"
    assert res["final"]["stopped_at"] == 2 and len(res["rounds"]) == 2
    assert "loss did not improve by more than 0.5 for 1 rounds" in res["final"]["stop_reason"]
    assert summary["stopped_at"] == 2 and summary["stop_reason"] == res["final"]["stop_reason"]


def test_lung_cnn_stops_from_the_callback(tmp_path):
    out = _run("lung-cnn-until-convergence", "--rounds", "4", "--target-accuracy", "0.0", "--out", str(tmp_path))
    res = _json(tmp_path / "results.json")
    assert res["final"]["stopped_at"] == 1 and "reached the target 0" in res["final"]["stop_reason"]
    assert "stopped after round 1 of at most 4" in out


def test_personalized_medicine_reports_each_site_before_and_after(tmp_path):
    out = _run("personalized-medicine", "--rounds", "2", "--out", str(tmp_path))
    res, summary = _json(tmp_path / "results.json"), _json(tmp_path / "summary.json")
    cfg = res["config"]
    assert cfg["protocol"] == "ckks-threshold" and cfg["partition"]["kind"] == "dirichlet"
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["lr"] == 0.01 and cfg["dp"]["epsilon"] == 8.0
    assert res["meta"]["model"]["spec"] == {"name": "mlp", "hidden": [64]}
    assert res["meta"]["model"]["parameters"] == 784 * 64 + 64 + 64 * 10 + 10
    sites = summary["personalized"]["sites"]
    assert len(sites) == 5 and all(0 <= s["before"] <= 1 and 0 <= s["after"] <= 1 for s in sites)
    assert all((tmp_path / f"model-site-{k}.safetensors").exists() for k in range(5))
    assert "fine-tuned" in out


def test_mlp_disease_classifier(tmp_path):
    out = _run("mlp-disease-classifier", "--rounds", "3", "--out", str(tmp_path))
    res, summary = _json(tmp_path / "results.json"), _json(tmp_path / "summary.json")
    assert res["config"]["protocol"] == "additive" and res["config"]["train"]["optimizer"] == "adam"
    assert res["meta"]["model"]["spec"] == {"name": "mlp", "hidden": [64, 64]}
    assert res["meta"]["model"]["parameters"] == 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    assert summary["accuracy"] >= 0.9 and summary["predicted"] == summary["true"] == [0, 1]
    assert "saved model on raw records" in out
