"""Threat-model experiments measured by real attacks (digits / cnn, small fixed setting).

One module-scoped run: 4 clients, batch size 1, a small Inverting-Gradients budget, every protocol
that imports here, three adversaries (the server; the server with the other n − 1 clients; the same
with DP noise). The full budget (10 clients, batch sizes 1 and 8) is the slow test at the end.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from secfl.errors import ConfigError
from secfl.protocols import PROTOCOLS, get_protocol
from secfl.threats import ThreatConfig, run_threats
from secfl.threats.attacks import auc, label_accuracy, psnr, ssim

AVAILABLE = tuple(PROTOCOLS)  # a protocol that fails to load fails these tests; it never drops out
PROTECTED = tuple(p for p in AVAILABLE if p != "plaintext")


@pytest.fixture(scope="module")
def report():  # type: ignore[no-untyped-def]
    cfg = ThreatConfig(protocols=AVAILABLE, threat_models=("server", "server+n-1", "server+n-1+dp"),
                       batch_sizes=(1,), clients=4, attack_steps=80, nonmembers=40, seed=0)
    return run_threats(cfg)


def test_ckks_threshold_is_covered() -> None:
    assert "ckks-threshold" in AVAILABLE  # the issue names it; fails loudly if it stops importing


def test_plaintext_server_reconstructs_and_reads_labels(report) -> None:  # type: ignore[no-untyped-def]
    c = report.cell("plaintext", "server", 1)
    base = report.baselines[1]
    assert c.recovered and c.exposed_declared
    assert c.label_accuracy == 1.0
    chance = max(base["random_image_psnr"], base["random_vector_inversion_psnr"], base["mean_image_psnr"])
    assert c.psnr > chance + 8.0, (c.psnr, base)
    assert c.ssim > 0.7
    assert c.mia_auc > 0.8


@pytest.mark.parametrize("protocol", PROTECTED)
def test_protected_protocols_leave_the_server_at_chance(report, protocol: str) -> None:  # type: ignore[no-untyped-def]
    c = report.cell(protocol, "server", 1)
    plain = report.cell("plaintext", "server", 1)
    base = report.baselines[1]
    assert not c.recovered and not c.exposed_declared
    assert c.estimate_individual  # the attack ran on the ciphertext / share / masked input as given
    assert abs(c.update_cosine) < 0.2
    assert c.psnr < base["random_vector_inversion_psnr"] + 3.0 and c.psnr < base["mean_image_psnr"]
    assert c.psnr < plain.psnr - 10.0
    assert c.ssim < 0.3


def test_protected_label_recovery_is_at_chance(report) -> None:  # type: ignore[no-untyped-def]
    # one label per protocol, each right with probability 1/10 by chance: all right would be a leak
    hits = [report.cell(p, "server", 1).label_accuracy for p in PROTECTED]
    assert sum(hits) < len(hits)


@pytest.mark.parametrize("protocol", AVAILABLE)
def test_collusion_of_all_but_one_recovers_the_update_and_dp_blunts_it(report, protocol: str) -> None:  # type: ignore[no-untyped-def]
    c = report.cell(protocol, "server+n-1", 1)
    assert c.exposed_declared and c.recovered
    assert c.update_cosine > 0.999 and c.update_rel_error < 1e-2
    assert c.label_accuracy == 1.0
    assert c.psnr > report.baselines[1]["mean_image_psnr"] + 8.0
    d = report.cell(protocol, "server+n-1+dp", 1)
    assert d.dp and not d.recovered
    assert abs(d.update_cosine) < 0.2 and d.update_rel_error > 1.0
    assert d.psnr < c.psnr - 10.0


def test_report_files(report, tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = report.write(tmp_path)
    names = sorted(f.name for f in files)
    assert names == ["threats-b1.png", "threats.json", "threats.md"]
    data = json.loads((tmp_path / "threats.json").read_text())
    assert len(data["cells"]) == len(AVAILABLE) * 3
    cell = next(c for c in data["cells"] if c["protocol"] == "plaintext" and c["threat_model"] == "server")
    for key in ("psnr", "ssim", "label_accuracy", "mia_auc", "exposed_declared", "recovered", "seconds_attack"):
        assert key in cell
    md = (tmp_path / "threats.md").read_text()
    assert "| `plaintext` |" in md and "**exposed**" in md
    assert (tmp_path / "threats-b1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# the measures themselves


def test_ssim_and_psnr() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((3, 1, 8, 8), generator=gen, dtype=torch.float64)
    assert np.allclose(ssim(x, x), 1.0)
    assert np.all(psnr(x, x) >= 99.0)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    z = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    assert np.all(ssim(x, y) > ssim(x, z))
    assert np.all(psnr(x, y) > psnr(x, z))
    # PSNR: MSE 0.01 -> 20 dB
    assert np.allclose(psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1)), 20.0, atol=1e-4)


def test_ssim_matches_the_formula_on_constant_images() -> None:
    # constant images a, b: SSIM = (2ab + C1) / (a² + b² + C1)
    a, b = 0.2, 0.6
    got = ssim(torch.full((1, 1, 8, 8), a), torch.full((1, 1, 8, 8), b))
    c1 = 0.01 ** 2
    assert math.isclose(float(got[0]), (2 * a * b + c1) / (a * a + b * b + c1), rel_tol=1e-6)


def test_auc_and_label_accuracy() -> None:
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([2.0])) == 0.0
    assert label_accuracy([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)


def test_batch_labels_are_read_from_the_last_layer() -> None:
    from secfl.fl.codec import ModelCodec
    from secfl.fl.data import DataConfig, load_dataset
    from secfl.fl.models import build_model
    from secfl.fl.training import TrainConfig, local_train
    from secfl.threats.attacks import ParamLayout, recover_labels

    data = load_dataset(DataConfig(name="digits"), seed=0)
    model = build_model("cnn", data.input_shape, data.num_classes, seed=0)
    codec = ModelCodec.from_module(model)
    layout = ParamLayout.of(model, codec, data.num_classes)
    theta = codec.to_vector(model)
    x, y = data.x_train[:6], data.y_train[:6]
    upd = local_train(model, codec, theta, x, y, TrainConfig(epochs=1, batch_size=6, lr=0.1), seed=0,
                      device=torch.device("cpu")).update
    codec.load_vector(model, theta)
    got = recover_labels(model, layout, upd, 0.1, 6, data.input_shape, (-1.0, 2.0))
    assert label_accuracy(got, y) >= 5 / 6
    one = local_train(model, codec, theta, x[:1], y[:1], TrainConfig(epochs=1, batch_size=1, lr=0.1), seed=0,
                      device=torch.device("cpu")).update
    codec.load_vector(model, theta)
    assert list(recover_labels(model, layout, one, 0.1, 1, data.input_shape, (-1.0, 2.0))) == [int(y[0])]


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        ThreatConfig(protocols=("nope",))
    with pytest.raises(ConfigError):
        ThreatConfig(threat_models=("nobody",))
    with pytest.raises(ConfigError):
        ThreatConfig(clients=4, target=4)
    with pytest.raises(ConfigError):
        ThreatConfig(batch_sizes=(0,))


def test_cli_threats(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from secfl.cli import main

    rc = main(["threats", "--protocols", "plaintext", "--threat-models", "server,client", "--batch-sizes", "1",
               "--clients", "3", "--attack-steps", "5", "--nonmembers", "10", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert "| `plaintext` |" in capsys.readouterr().out
    assert (tmp_path / "threats.json").exists() and (tmp_path / "threats-b1.png").exists()


@pytest.mark.slow
def test_full_budget_digits_cnn_ten_clients(tmp_path) -> None:
    """The issue's setting: digits / cnn, 10 clients, batch sizes 1 and 8, every threat model."""
    rep = run_threats(ThreatConfig(protocols=AVAILABLE, clients=10, batch_sizes=(1, 8), attack_steps=300))
    rep.write(tmp_path)
    for b in (1, 8):
        plain = rep.cell("plaintext", "server", b)
        assert plain.recovered and plain.psnr > rep.baselines[b]["mean_image_psnr"] + 5.0
        assert plain.label_accuracy >= (1.0 if b == 1 else 0.85)
        for p in PROTECTED:
            c = rep.cell(p, "server", b)
            assert not c.recovered and c.psnr < plain.psnr - 8.0
        for p in AVAILABLE:
            assert rep.cell(p, "server+n-1", b).recovered
            assert not rep.cell(p, "server+n-1+dp", b).recovered
    for c in rep.cells:  # never a recovery the declarations did not predict
        assert not c.recovered or c.exposed_declared


def test_every_registered_protocol_loads() -> None:
    for name in PROTOCOLS:
        assert get_protocol(name).name == name
