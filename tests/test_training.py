"""Local training and evaluation: config validation, devices, learning, FedProx, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from secfl.errors import ConfigError, InvalidUpdateError
from secfl.fl.codec import ModelCodec
from secfl.fl.models import build_model
from secfl.fl.training import (
    DeviceChoice,
    LocalResult,
    OptimizerName,
    TrainConfig,
    evaluate,
    local_train,
    select_device,
)

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def _blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two linearly separable Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, 4)) + np.where(y[:, None] == 1, 2.0, -2.0)
    return x.astype(np.float32), y.astype(np.int64)


def _setup(name: str = "mlp", seed: int = 0) -> tuple[nn.Module, ModelCodec, np.ndarray]:
    model = build_model(name, (4,), 2, seed=seed)
    codec = ModelCodec.from_module(model)
    return model, codec, codec.to_vector(model)


# --- configuration -------------------------------------------------------------------------

def test_config_defaults_and_coercion() -> None:
    cfg = TrainConfig(optimizer="adam", lr=1)  # type: ignore[arg-type]  # strings are coerced
    assert cfg.optimizer is OptimizerName.ADAM and isinstance(cfg.lr, float)
    assert TrainConfig().optimizer is OptimizerName.SGD
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", 1.0), ("epochs", True), ("batch_size", 0), ("lr", 0.0),
    ("lr", float("nan")), ("lr", -0.1), ("optimizer", "rmsprop"), ("momentum", -0.1),
    ("momentum", 1.0), ("weight_decay", -1e-3), ("prox_mu", -1.0), ("prox_mu", float("inf")),
    ("prox_mu", "1"),
])
def test_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_adam_with_momentum_rejected() -> None:
    with pytest.raises(ConfigError, match="momentum"):
        TrainConfig(optimizer=OptimizerName.ADAM, momentum=0.9)


def test_unknown_optimizer_lists_allowed() -> None:
    with pytest.raises(ConfigError, match="sgd, adam"):
        TrainConfig(optimizer="lbfgs")  # type: ignore[arg-type]


# --- devices -------------------------------------------------------------------------------

def test_select_device() -> None:
    assert select_device("cpu") == CPU
    assert select_device(DeviceChoice.CPU) == CPU
    assert select_device().type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert select_device("auto").type != "cuda"
        with pytest.raises(ConfigError, match="cuda"):
            select_device("cuda")
    with pytest.raises(ConfigError, match="auto, cpu, cuda, mps"):
        select_device("tpu")


# --- training ------------------------------------------------------------------------------

def test_training_reduces_loss_and_update_is_local_minus_global() -> None:
    model, codec, start = _setup()
    x, y = _blobs()
    acc0, loss0 = evaluate(model, codec, start, x, y, CPU)
    result = local_train(model, codec, start, x, y, TrainConfig(epochs=3, lr=0.1), seed=1, device=CPU)
    assert isinstance(result, LocalResult)
    assert result.update.dtype == np.float32 and result.update.shape == (codec.dim,)
    assert result.num_examples == 200 and result.seconds >= 0.0
    np.testing.assert_array_equal(result.update, codec.to_vector(model) - start)
    acc1, loss1 = evaluate(model, codec, start + result.update, x, y, CPU)
    assert loss1 < 0.5 * loss0 and acc1 >= 0.98
    assert np.isfinite(result.train_loss) and result.train_loss < loss0


def test_train_loss_is_mean_over_the_epoch() -> None:
    model, codec, start = _setup()
    x, y = _blobs(50)
    result = local_train(model, codec, start, x, y, TrainConfig(lr=1e-12, batch_size=7), seed=0,
                         device=CPU)
    _, loss = evaluate(model, codec, start, x, y, CPU)
    assert result.train_loss == pytest.approx(loss, rel=1e-5)


def test_adam_and_momentum_train() -> None:
    x, y = _blobs()
    for cfg in (TrainConfig(optimizer=OptimizerName.ADAM, lr=0.01, epochs=2),
                TrainConfig(momentum=0.9, weight_decay=1e-4, epochs=2)):
        model, codec, start = _setup("logreg")
        result = local_train(model, codec, start, x, y, cfg, seed=0, device=CPU)
        assert evaluate(model, codec, start + result.update, x, y, CPU)[0] >= 0.98


def test_fedprox_huge_mu_keeps_update_small() -> None:
    x, y = _blobs()
    norms = {}
    for mu in (0.0, 100.0):
        model, codec, start = _setup()
        cfg = TrainConfig(epochs=3, lr=0.01, prox_mu=mu)  # lr * mu = 1: stable
        norms[mu] = float(np.linalg.norm(
            local_train(model, codec, start, x, y, cfg, seed=0, device=CPU).update))
    assert norms[0.0] > 0.0
    assert norms[100.0] < 0.2 * norms[0.0]


def test_buffers_travel_in_the_update() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    codec = ModelCodec.from_module(model)
    start = codec.to_vector(model)
    x, y = _blobs(64)
    result = local_train(model, codec, start, x, y, TrainConfig(epochs=1, batch_size=16), seed=0, device=CPU)
    by_name = {s.name: s for s in codec.specs}
    assert result.update[by_name["1.num_batches_tracked"].offset] == 4.0
    mean = by_name["1.running_mean"]
    assert np.any(result.update[mean.offset:mean.offset + mean.size] != 0.0)


def test_training_mode_restored_and_global_rng_untouched() -> None:
    model, codec, start = _setup()
    model.eval()
    x, y = _blobs(40)
    before = torch.get_rng_state()
    local_train(model, codec, start, x, y, TrainConfig(), seed=0, device=CPU)
    assert torch.equal(before, torch.get_rng_state())
    assert not model.training
    model.train()
    evaluate(model, codec, start, x, y, CPU)
    assert model.training


def test_global_vector_validated() -> None:
    model, codec, start = _setup()
    x, y = _blobs(20)
    bad = start.copy()
    bad[0] = np.nan
    with pytest.raises(InvalidUpdateError):
        local_train(model, codec, bad, x, y, TrainConfig(), seed=0, device=CPU)
    with pytest.raises(InvalidUpdateError):
        evaluate(model, codec, start[:-1], x, y, CPU)


@pytest.mark.parametrize("x_shape, y_values, match", [
    ((10, 4), np.zeros(9, dtype=np.int64), "x, y"),
    ((0, 4), np.zeros(0, dtype=np.int64), "empty"),
    ((3, 4), np.array([0, -1, 1]), "y"),
    ((3, 4), np.array([0.0, 1.0, 1.0]), "y"),
])
def test_bad_data_rejected(x_shape: tuple[int, int], y_values: np.ndarray, match: str) -> None:
    model, codec, start = _setup()
    x = np.zeros(x_shape, dtype=np.float32)
    with pytest.raises(ConfigError, match=match):
        local_train(model, codec, start, x, y_values, TrainConfig(), seed=0, device=CPU)


def test_evaluate_matches_direct_forward() -> None:
    model, codec, start = _setup(seed=3)
    x, y = _blobs(37)
    acc, loss = evaluate(model, codec, start, x, y, CPU, batch_size=8)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert acc == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, torch.from_numpy(y))),
                                 rel=1e-5)


# --- determinism ---------------------------------------------------------------------------

def _digest(update: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(update, dtype=np.float32).tobytes()).hexdigest()


def _run_once(seed: int) -> np.ndarray:
    model, codec, start = _setup("mlp", seed=1)
    x, y = _blobs(90)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.5, prox_mu=0.1)
    return local_train(model, codec, start, x, y, cfg, seed=seed, device=CPU).update


def test_same_seed_bit_identical_other_seed_differs() -> None:
    torch.manual_seed(123)
    a = _run_once(7)
    torch.manual_seed(456)  # the global RNG must not matter
    b = _run_once(7)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(_run_once(8))


def test_bit_identical_in_fresh_process() -> None:
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_training as t
        print(t._digest(t._run_once(7)))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.strip() == _digest(_run_once(7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU machines only")
def test_cuda_training_keeps_device_and_learns() -> None:
    model, codec, start = _setup()
    x, y = _blobs()
    cuda = select_device("cuda")
    result = local_train(model, codec, start, x, y, TrainConfig(epochs=3, lr=0.1), seed=0, device=cuda)
    assert all(t.is_cuda for t in model.state_dict().values())
    assert evaluate(model, codec, start + result.update, x, y, cuda)[0] >= 0.98
