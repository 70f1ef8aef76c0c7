"""Clients' local training (FedAvg / FedProx) and evaluation on flat model vectors.

A client receives the global model as a flat vector (:class:`~secfl.fl.codec.ModelCodec`),
trains ``epochs`` passes of minibatch SGD or Adam on its own data — cross-entropy for
classification, mean squared error for regression (:class:`~secfl.fl.data.Task`) — and
returns its update ``local - global`` as a float32 vector. Each call builds a fresh optimizer
(clients keep no optimizer state between rounds).

Determinism: minibatch order comes from a local ``torch.Generator`` seeded with ``seed``, and
any randomness inside the model (e.g. dropout) runs under :func:`torch.random.fork_rng`
seeded from ``seed`` too, so the caller's global RNG state is left as it was. On CPU the same
inputs, seed and thread count give a bit-identical update.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from secfl.errors import ConfigError
from secfl.fl.codec import ModelCodec
from secfl.fl.data import Task

__all__ = [
    "OptimizerName",
    "DeviceChoice",
    "TrainConfig",
    "LocalResult",
    "select_device",
    "local_train",
    "evaluate",
    "evaluate_metrics",
]


class OptimizerName(str, Enum):
    """Local optimizer."""

    SGD = "sgd"
    ADAM = "adam"


class DeviceChoice(str, Enum):
    """Where to train; ``AUTO`` picks CUDA, then MPS, then CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def _enum(cls: type[Enum], field: str, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise ConfigError(f"{field}: unknown {value!r}; allowed: {allowed}") from None


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{field}: must be an int >= {minimum}, got {value!r}")
    return int(value)


def _float(field: str, value: Any, low: float, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = True) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if math.isinf(high):
            raise ConfigError(f"{field}: must be a finite number {'>' if low_open else '>='} {low:g}, got {value!r}")
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{field}: must be a finite number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters, validated on construction.

    ``prox_mu > 0`` adds the FedProx term ``mu/2 * ||w - w_global||^2`` over the parameters
    (not the buffers). ``momentum`` applies to SGD only; a non-zero value with Adam is rejected
    rather than ignored.
    """

    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.1
    optimizer: OptimizerName = OptimizerName.SGD
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "epochs", _int("epochs", self.epochs, 1))
        set_(self, "batch_size", _int("batch_size", self.batch_size, 1))
        set_(self, "lr", _float("lr", self.lr, 0.0, low_open=True))
        set_(self, "optimizer", _enum(OptimizerName, "optimizer", self.optimizer))
        set_(self, "momentum", _float("momentum", self.momentum, 0.0, 1.0))
        set_(self, "weight_decay", _float("weight_decay", self.weight_decay, 0.0))
        set_(self, "prox_mu", _float("prox_mu", self.prox_mu, 0.0))
        if self.optimizer is OptimizerName.ADAM and self.momentum != 0.0:
            raise ConfigError("momentum: only applies to optimizer 'sgd'; must be 0.0 with 'adam'")


@dataclass(frozen=True)
class LocalResult:
    """One client's round: ``update = local - global`` (float32, length ``codec.dim``),
    how many examples it trained on, the mean loss over its last epoch, and wall time."""

    update: np.ndarray
    num_examples: int
    train_loss: float
    seconds: float


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(choice: DeviceChoice | str = DeviceChoice.AUTO) -> torch.device:
    """The torch device for ``choice``; forcing an unavailable one raises :class:`ConfigError`."""
    device = _enum(DeviceChoice, "device", choice)
    if device is DeviceChoice.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device is DeviceChoice.CUDA and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but torch.cuda.is_available() is False; "
                          "allowed here: auto, cpu")
    if device is DeviceChoice.MPS and not _mps_available():
        raise ConfigError("device: 'mps' requested but torch.backends.mps.is_available() is False;"
                          " allowed here: auto, cpu")
    return torch.device(device.value)


def _check_data(x: np.ndarray, y: np.ndarray, task: Task = Task.CLASSIFICATION) -> tuple[np.ndarray, np.ndarray]:
    x_arr, y_arr = np.asarray(x), np.asarray(y)
    if x_arr.ndim < 1 or y_arr.ndim != 1 or x_arr.shape[0] != y_arr.shape[0]:
        raise ConfigError(f"x, y: need x of shape (N, ...) and y of shape (N,), got {x_arr.shape} "
                          f"and {y_arr.shape}")
    if y_arr.shape[0] == 0:
        raise ConfigError("x, y: the dataset is empty")
    if task is Task.REGRESSION:
        if not np.issubdtype(y_arr.dtype, np.number) or not np.isfinite(y_arr).all():
            raise ConfigError("y: regression targets must be finite real numbers")
    elif not np.issubdtype(y_arr.dtype, np.integer) or y_arr.min() < 0:
        raise ConfigError(f"y: must hold non-negative integer class labels (task = 'classification'), got dtype"
                          f" {y_arr.dtype}; float targets need task = 'regression'")
    if not np.issubdtype(x_arr.dtype, np.number) or not np.isfinite(x_arr).all():
        raise ConfigError("x: must be finite real numbers")
    return x_arr, y_arr


def _to_device(x: np.ndarray, y: np.ndarray, device: torch.device,
               task: Task = Task.CLASSIFICATION) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(x, dtype=torch.float32).to(device)
    yt = torch.as_tensor(y, dtype=torch.float32 if task is Task.REGRESSION else torch.int64).to(device)
    return xt, yt


def _loss(task: Task, out: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on logits, or squared error of the model's single output."""
    if task is Task.REGRESSION:
        return F.mse_loss(out.reshape(-1), target, reduction=reduction)
    return F.cross_entropy(out, target, reduction=reduction)


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


@contextlib.contextmanager
def _forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the CPU (and this device's) global generator for the block, then restore it."""
    index = 0
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        fork = torch.random.fork_rng(devices=[index], device_type="cuda")
    else:  # CPU; on MPS only the CPU generator is forked (MPS kernels are not bit-exact anyway)
        fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def local_train(model: nn.Module, codec: ModelCodec, global_vector: np.ndarray, x: np.ndarray,
                y: np.ndarray, cfg: TrainConfig, seed: int, device: torch.device,
                task: Task = Task.CLASSIFICATION) -> LocalResult:
    """Load ``global_vector`` into ``model`` (moved to ``device`` in place), train ``cfg.epochs``
    over ``(x, y)`` and return ``update = codec.to_vector(model) - global_vector``. A batch size
    at least the client's size is full-batch gradient descent.

    Minibatches are reshuffled each epoch by a ``torch.Generator`` seeded with ``seed``; the
    model's training mode is restored afterwards.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed: must be an int in [0, 2**63), got {seed!r}")
    task = Task(task)
    x_arr, y_arr = _check_data(x, y, task)
    start = time.perf_counter()
    model.to(device)
    codec.load_vector(model, global_vector)
    base = np.asarray(global_vector, dtype=np.float32)
    xt, yt = _to_device(x_arr, y_arr, device, task)
    n = yt.shape[0]

    named = dict(model.named_parameters())
    params = [p for p in named.values() if p.requires_grad]
    prox_terms: list[tuple[nn.Parameter, torch.Tensor]] = []
    if cfg.prox_mu > 0.0:
        flat = torch.tensor(base)  # a copy: the caller's array may be read-only
        for spec in codec.specs:
            param = named.get(spec.name)
            if spec.is_buffer or param is None or not param.requires_grad:
                continue  # tied duplicates appear once in named_parameters()
            anchor = flat[spec.offset:spec.offset + spec.size].reshape(spec.shape)
            prox_terms.append((param, anchor.to(device=device, dtype=param.dtype)))
    optimizer = _make_optimizer(params, cfg)
    shuffler = torch.Generator(device="cpu").manual_seed(int(seed))

    was_training = model.training
    model.train()
    loss_sum = torch.zeros((), dtype=_acc_dtype(device), device=device)
    try:
        with _forked_rng(device, int(seed)):
            for _ in range(cfg.epochs):
                loss_sum.zero_()
                order = torch.randperm(n, generator=shuffler).to(device)
                for begin in range(0, n, cfg.batch_size):
                    idx = order[begin:begin + cfg.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = _loss(task, model(xt[idx]), yt[idx])
                    loss_sum += loss.detach().to(loss_sum.dtype) * idx.shape[0]
                    if prox_terms:
                        prox = sum(((p - g) ** 2).sum() for p, g in prox_terms)
                        loss = loss + 0.5 * cfg.prox_mu * prox
                    loss.backward()
                    optimizer.step()
    finally:
        model.train(was_training)

    update = codec.to_vector(model) - base
    return LocalResult(update=update.astype(np.float32, copy=False), num_examples=int(n),
                       train_loss=float(loss_sum.item()) / n, seconds=time.perf_counter() - start)


def evaluate(model: nn.Module, codec: ModelCodec, vector: np.ndarray, x: np.ndarray, y: np.ndarray,
             device: torch.device, batch_size: int = 1024) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of the classifier given by ``vector`` on ``(x, y)``
    (:func:`evaluate_metrics` for either task)."""
    m = evaluate_metrics(model, codec, vector, x, y, device, Task.CLASSIFICATION, batch_size)
    return m["accuracy"], m["loss"]


def evaluate_metrics(model: nn.Module, codec: ModelCodec, vector: np.ndarray, x: np.ndarray, y: np.ndarray,
                     device: torch.device, task: Task = Task.CLASSIFICATION,
                     batch_size: int = 1024) -> dict[str, float]:
    """Metrics of the model given by ``vector`` on ``(x, y)``: ``accuracy`` and ``loss`` (mean
    cross-entropy) for classification; ``mse`` (= ``loss``), ``mae`` and ``r2`` (1 − SSE / SST,
    SST around the mean of ``y``; 0 when ``y`` is constant) for regression.

    Loads ``vector`` into ``model`` (moved to ``device``), runs it in eval mode without
    gradients, and restores its training mode.
    """
    task = Task(task)
    batch = _int("batch_size", batch_size, 1)
    x_arr, y_arr = _check_data(x, y, task)
    model.to(device)
    codec.load_vector(model, vector)
    xt, yt = _to_device(x_arr, y_arr, device, task)
    n = yt.shape[0]
    acc = _acc_dtype(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=acc, device=device)
    abs_sum = torch.zeros((), dtype=acc, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, n, batch):
                out = model(xt[begin:begin + batch])
                target = yt[begin:begin + batch]
                loss_sum += _loss(task, out, target, "sum").to(acc)
                if task is Task.REGRESSION:
                    abs_sum += (out.reshape(-1) - target).abs().sum().to(acc)
                else:
                    correct += (out.argmax(dim=1) == target).sum()
    finally:
        model.train(was_training)
    if task is Task.CLASSIFICATION:
        return {"accuracy": int(correct.item()) / n, "loss": float(loss_sum.item()) / n}
    mse = float(loss_sum.item()) / n
    y64 = y_arr.astype(np.float64)
    sst = float(np.square(y64 - y64.mean()).sum())
    sse = mse * n
    r2 = 1.0 - sse / sst if sst > 0 else 0.0
    return {"mse": mse, "mae": float(abs_sum.item()) / n, "r2": r2, "loss": mse}
