"""Models for federated training: built-in ones described by configuration, or a user's own.

Built in (:class:`ModelName`): ``logreg`` / ``linear`` (one linear layer: logistic regression
for classification, linear regression with one output), ``mlp`` (``hidden`` widths, ReLU) and
``cnn`` (``channels`` convolutions of ``kernel_size``, max-pooling, a fully connected layer of
``fc`` units; any image size). A user's module comes by import path, ``"pkg.module:Factory"``:
the factory is called with ``input_shape`` and ``num_outputs`` when it takes them (else with
none), plus the spec's ``options``. :class:`ModelSpec` is the configuration of either.

Every model outputs ``num_outputs`` values per example — logits for classification (train with
cross-entropy, also for binary problems with 2 classes), one value for regression — and the
built-in ones accept input either flat, ``(N, prod(input_shape))``, or ``(N, *input_shape)``.
:func:`check_model_fits` runs one forward pass before training, so a model that does not fit
the data fails before round 1, naming both shapes. Initialisation is a pure function of
``seed``: the weights are drawn inside :func:`torch.random.fork_rng`, so the caller's global RNG
state is left unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from secfl.errors import ConfigError

__all__ = ["ModelName", "ModelSpec", "build_model", "check_model_fits", "describe_model", "MLP_HIDDEN"]

MLP_HIDDEN = 64
_CNN_POOLED = 4  # spatial side after adaptive pooling: 8x8 digits -> 4x4 after maxpool2 already


class ModelName(str, Enum):
    """Which reference architecture :func:`build_model` builds."""

    LOGREG = "logreg"
    LINEAR = "linear"
    MLP = "mlp"
    CNN = "cnn"


def _widths(name: str, value: Any, *, allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"model.{name}: must be a list of positive integers, got {value!r}")
    out = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out) or (not out and not allow_empty):
        raise ConfigError(f"model.{name}: must be a list of positive integers, got {list(out)!r}")
    return out


class CnnPool(str, Enum):
    """Where the CNN max-pools (2×2): once after the last convolution, or after each."""

    LAST = "last"
    EACH = "each"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build: a built-in :class:`ModelName` with its options, or a user's
    factory by import path ``"pkg.module:Factory"`` with keyword ``options``.

    ``hidden``: the MLP's hidden widths. ``channels``, ``kernel_size``, ``pool``, ``fc``: the
    CNN's convolution widths, kernel (odd: "same" padding), where it max-pools, and the fully
    connected width (0: none). Options a model does not use must keep their defaults.
    """

    name: str = ModelName.LOGREG.value
    hidden: tuple[int, ...] = (64,)
    channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    pool: CnnPool = CnnPool.LAST
    fc: int = 64
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        if isinstance(self.name, ModelName):
            s(self, "name", self.name.value)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model: expected a name or 'pkg.module:Factory', got {self.name!r}")
        if not self.custom:
            try:
                ModelName(self.name)
            except ValueError:
                allowed = ", ".join(m.value for m in ModelName)
                raise ConfigError(f"model: unknown {self.name!r}; allowed: {allowed}, or a factory as "
                                  "'pkg.module:Factory'") from None
        s(self, "hidden", _widths("hidden", self.hidden, allow_empty=True))
        s(self, "channels", _widths("channels", self.channels))
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ConfigError(f"model.kernel_size: must be an odd integer >= 1, got {k!r}")
        try:
            s(self, "pool", CnnPool(self.pool))
        except ValueError:
            raise ConfigError(f"model.pool: unknown {self.pool!r}; allowed: last, each") from None
        if isinstance(self.fc, bool) or not isinstance(self.fc, int) or self.fc < 0:
            raise ConfigError(f"model.fc: must be an integer >= 0, got {self.fc!r}")
        if not isinstance(self.options, Mapping):
            raise ConfigError("model.options: expected a table of keyword arguments for the factory")
        if self.options and not self.custom:
            raise ConfigError(f"model.options are for a factory given by import path, not for {self.name!r}")
        s(self, "options", MappingProxyType(dict(self.options)))
        default = ModelSpec.__dataclass_fields__
        unused = {"mlp": ("channels", "kernel_size", "pool", "fc"), "cnn": ("hidden",)}.get(
            self.name, ("hidden", "channels", "kernel_size", "pool", "fc"))
        for f in unused:
            if getattr(self, f) != default[f].default:
                raise ConfigError(f"model.{f}: not an option of model {self.name!r}")

    @property
    def custom(self) -> bool:
        return ":" in self.name

    @classmethod
    def of(cls, value: ModelSpec | ModelName | str | Mapping[str, Any]) -> ModelSpec:
        """From a name / import path, a table (``{name = ..., hidden = [...]}``) or a spec."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, (str, ModelName)):
            return cls(name=value.value if isinstance(value, ModelName) else value)
        if isinstance(value, Mapping):
            allowed = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ConfigError(f"model: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
            return cls(**value)
        raise ConfigError(f"model: expected a name, 'pkg.module:Factory' or a table, got {type(value).__name__}")

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


def _logreg(shape: tuple[int, ...], num_classes: int, spec: ModelSpec) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))


def _mlp(shape: tuple[int, ...], num_classes: int, spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in spec.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _cnn(shape: tuple[int, ...], num_classes: int, spec: ModelSpec) -> nn.Module:
    if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
        raise ConfigError(
            f"input_shape: model 'cnn' needs an image shape (channels, height, width) with "
            f"height, width >= 2, got {shape!r}")
    layers: list[nn.Module] = [_Reshape(shape)]
    width, side = shape[0], min(shape[1], shape[2])
    for i, c in enumerate(spec.channels):
        layers += [nn.Conv2d(width, c, kernel_size=spec.kernel_size, padding=spec.kernel_size // 2), nn.ReLU()]
        width = c
        if (spec.pool is CnnPool.EACH or i == len(spec.channels) - 1) and side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    layers += [nn.AdaptiveAvgPool2d(_CNN_POOLED), nn.Flatten()]
    width *= _CNN_POOLED * _CNN_POOLED
    if spec.fc:
        layers += [nn.Linear(width, spec.fc), nn.ReLU()]
        width = spec.fc
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


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


_BUILDERS = {ModelName.LOGREG: _logreg, ModelName.LINEAR: _logreg, ModelName.MLP: _mlp, ModelName.CNN: _cnn}


def _factory(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model: a factory is given as 'pkg.module:Factory', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model: cannot import {module_name!r} for {path!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model: {path!r} is not callable")
    return obj


def _custom(spec: ModelSpec, shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    factory = _factory(spec.name)
    kwargs = dict(spec.options)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("input_shape", shape), ("num_outputs", num_outputs)):
        if takes_any or key in params:
            kwargs.setdefault(key, value)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model: calling {spec.name}({', '.join(kwargs)}) failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {spec.name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(name: ModelSpec | ModelName | str | Mapping[str, Any], input_shape: tuple[int, ...],
                num_classes: int, seed: int) -> nn.Module:
    """Build a float32 CPU model whose initial weights depend only on ``seed``.

    ``name``: a :class:`ModelSpec` or what :meth:`ModelSpec.of` takes. ``num_classes``: the
    number of outputs (classes; 1 for regression). ``logreg`` / ``linear``: flatten + linear.
    ``mlp``: flatten, then linear + ReLU per ``hidden`` width (default one of 64), then linear.
    ``cnn``: per ``channels`` width (default 16, 32) a ``kernel_size`` convolution + ReLU, 2x2
    max-pool after the last (``pool = "each"``: after each), adaptive average pool to 4x4 (so
    1x8x8 and 1x28x28 both work), linear(``fc``) + ReLU, linear; it needs ``input_shape =
    (channels, height, width)``. A factory's model keeps its own initialisation (run under the
    seed). Raises :class:`ConfigError` on an unknown name or invalid shape, output count or seed.
    """
    spec = ModelSpec.of(name)
    if spec.custom:
        shape = _check_args(input_shape, max(num_classes, 2), seed)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = _custom(spec, shape, num_classes)
        return model.to(dtype=torch.float32)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes: must be an int >= 1 (1: regression), got {num_classes!r}")
    shape = _check_args(input_shape, max(num_classes, 2), seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only; fork_rng restores it
        model = _BUILDERS[ModelName(spec.name)](shape, num_classes, spec)
        _init_weights(model)
    return model.to(dtype=torch.float32)


def check_model_fits(model: nn.Module, input_shape: tuple[int, ...], num_outputs: int, *,
                     regression: bool = False) -> None:
    """One forward pass on two zero examples: the model must take ``(N, *input_shape)`` and give
    ``(N, num_outputs)`` (regression: ``(N, 1)`` or ``(N,)``; classification: at least one logit
    per class). Raises :class:`ConfigError` naming both shapes."""
    x = torch.zeros((2, *input_shape), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(iter(model.parameters()), x).device))
    except Exception as exc:  # a shape mismatch surfaces as RuntimeError / ValueError from torch
        raise ConfigError(f"the model does not accept the data's inputs of shape {tuple(input_shape)}"
                          f" (batches {tuple(x.shape)}): {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if regression:
        ok = got in ((2, 1), (2,))
        want = "(N, 1): one value per example (task = 'regression')"
    else:
        ok = got is not None and len(got) == 2 and got[0] == 2 and got[1] >= num_outputs
        want = f"(N, {num_outputs}): one logit per class ({num_outputs} classes)"
    if not ok:
        raise ConfigError(f"the model's output has shape {got if got is not None else type(out).__name__} for"
                          f" inputs {tuple(x.shape)}; the data needs {want}")


def describe_model(spec: ModelSpec, model: nn.Module) -> dict[str, Any]:
    """What results.json records about the model actually used."""
    from dataclasses import fields

    cls = type(model)
    params = sum(int(p.numel()) for p in model.parameters())
    relevant = {"mlp": ("hidden",), "cnn": ("channels", "kernel_size", "pool", "fc")}.get(
        spec.name, ("options",) if spec.custom else ())
    desc: dict[str, Any] = {"name": spec.name}
    for f in fields(spec):
        if f.name in relevant:
            v = getattr(spec, f.name)
            desc[f.name] = (v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple)
                            else dict(v) if isinstance(v, Mapping) else v)
    return {"spec": desc, "class": f"{cls.__module__}.{cls.__qualname__}", "parameters": params,
            "architecture": str(model)}
