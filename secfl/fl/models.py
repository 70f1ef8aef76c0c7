"""Small reference models for federated training: logistic regression, an MLP and a CNN.

Every model outputs logits (train with cross-entropy, also for binary problems with
``num_classes=2``) and accepts its input either flat, ``(N, prod(input_shape))``, or already in
``(N, *input_shape)``. Initialisation is a pure function of ``seed``: the weights are drawn
inside :func:`torch.random.fork_rng`, so the caller's global RNG state is left unchanged.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import nn

from secfl.errors import ConfigError

__all__ = ["ModelName", "build_model", "MLP_HIDDEN"]

MLP_HIDDEN = 64
_CNN_POOLED = 4  # spatial side after adaptive pooling: 8x8 digits -> 4x4 after maxpool2 already


class ModelName(str, Enum):
    """Which reference architecture :func:`build_model` builds."""

    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"


class _Reshape(nn.Module):
    """Reshapes ``(N, ...)`` to ``(N, *shape)``; accepts flat or already shaped input."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _coerce_name(name: ModelName | str) -> ModelName:
    try:
        return ModelName(name)
    except ValueError:
        allowed = ", ".join(m.value for m in ModelName)
        raise ConfigError(f"model name: unknown {name!r}; allowed: {allowed}") from None


def _check_args(input_shape: tuple[int, ...], num_classes: int, seed: int) -> tuple[int, ...]:
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) == 0:
        raise ConfigError(f"input_shape: must be a non-empty tuple of positive ints, got {input_shape!r}")
    shape = tuple(input_shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(f"input_shape: must be a non-empty tuple of positive ints, got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes: must be an int >= 2 (use 2 for binary), got {num_classes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed: must be an int in [0, 2**63), got {seed!r}")
    return shape


def _logreg(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))


def _mlp(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(shape), MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, num_classes),
    )


def _cnn(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
        raise ConfigError(
            f"input_shape: model 'cnn' needs an image shape (channels, height, width) with "
            f"height, width >= 2, got {shape!r}")
    channels = shape[0]
    return nn.Sequential(
        _Reshape(shape),
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(_CNN_POOLED),
        nn.Flatten(),
        nn.Linear(32 * _CNN_POOLED * _CNN_POOLED, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def _init_weights(model: nn.Module) -> None:
    """He (Kaiming) init for layers followed by ReLU, Xavier for the logits layer, zero biases.

    PyTorch's default (Kaiming-uniform with a=sqrt(5)) leaves the conv net's signal too small
    for plain SGD to leave its initial plateau within a few federated rounds.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, layer in enumerate(layers):
        if i == len(layers) - 1:
            nn.init.xavier_uniform_(layer.weight)
        else:
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


_BUILDERS = {ModelName.LOGREG: _logreg, ModelName.MLP: _mlp, ModelName.CNN: _cnn}


def build_model(name: ModelName | str, input_shape: tuple[int, ...], num_classes: int,
                seed: int) -> nn.Module:
    """Build a float32 CPU model whose initial weights depend only on ``seed``.

    ``logreg``: flatten + linear. ``mlp``: flatten + linear(64) + ReLU + linear.
    ``cnn``: two 3x3 convolutions (16, 32 channels) + ReLU, 2x2 max-pool, adaptive average
    pool to 4x4 (so 1x8x8 and 1x28x28 both work), linear(64) + ReLU + linear; it needs
    ``input_shape = (channels, height, width)``. Raises :class:`ConfigError` on an unknown
    name or invalid shape, class count or seed.
    """
    model_name = _coerce_name(name)
    shape = _check_args(input_shape, num_classes, seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only; fork_rng restores it
        model = _BUILDERS[model_name](shape, num_classes)
        _init_weights(model)
    return model.to(dtype=torch.float32)
