"""Model <-> flat float32 vector, the form in which updates are masked, encrypted and summed.

Layout: every entry of ``module.state_dict()`` in its order, parameters *and* buffers
(BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``, ...), each flattened
row-major into one slice. Buffers travel in the vector and are averaged like parameters;
integer buffers are rounded to the nearest integer (clamped to the dtype's range) and boolean
ones thresholded at 0.5 when loaded back. Nothing is silently dropped: a module whose state
holds something a float vector cannot carry (complex tensors, non-tensor ``extra_state``) is
rejected with :class:`ConfigError` by :meth:`ModelCodec.from_module`.

Precision: the vector is float32, so float64 tensors lose precision and integer counters are
exact only up to 2**24.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from secfl.errors import ConfigError, InvalidUpdateError

__all__ = ["TensorSpec", "ModelCodec"]


@dataclass(frozen=True)
class TensorSpec:
    """Where one state-dict entry lives in the flat vector.

    ``dtype`` is the torch dtype's name without the ``torch.`` prefix (e.g. ``"float32"``,
    ``"int64"``); ``is_buffer`` is False for parameters (the entries FedProx regularises).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    size: int
    is_buffer: bool

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype named by :attr:`dtype`."""
        return _DTYPES[self.dtype]


_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
              torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)
}

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ModelCodec:
    """Maps every entry of a module's state_dict (parameters and buffers) to a slice of one
    flat float32 vector of length :attr:`dim`, in a fixed order. Build with :meth:`from_module`.
    """

    specs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        offset = 0
        names = set()
        for spec in self.specs:
            if spec.offset != offset or spec.size != math.prod(spec.shape):
                raise ConfigError(f"specs: entry {spec.name!r} is not contiguous with the previous one"
                                  f" or its size does not match its shape")
            if spec.dtype not in _DTYPES:
                raise ConfigError(f"specs: entry {spec.name!r} has dtype {spec.dtype!r}; allowed: "
                                  f"{', '.join(_DTYPES)}")
            if spec.name in names:
                raise ConfigError(f"specs: duplicate entry {spec.name!r}")
            names.add(spec.name)
            offset += spec.size

    @property
    def dim(self) -> int:
        """Length of the flat vector."""
        if not self.specs:
            return 0
        last = self.specs[-1]
        return last.offset + last.size

    @classmethod
    def from_module(cls, module: nn.Module) -> ModelCodec:
        """The layout of ``module.state_dict()``; raises :class:`ConfigError` if an entry is
        not a real or integer tensor."""
        param_names = {name for name, _ in module.named_parameters(remove_duplicate=False)}
        specs = []
        offset = 0
        for name, value in module.state_dict().items():
            if not isinstance(value, torch.Tensor):
                raise ConfigError(f"module state entry {name!r} is a {type(value).__name__}, not a tensor;"
                                  f" it cannot travel in a flat vector")
            dtype = str(value.dtype).removeprefix("torch.")
            if dtype not in _DTYPES:
                raise ConfigError(f"module state entry {name!r} has dtype {dtype}; allowed: "
                                  f"{', '.join(_DTYPES)}")
            size = value.numel()
            specs.append(TensorSpec(name=name, shape=tuple(value.shape), dtype=dtype, offset=offset,
                                    size=size, is_buffer=name not in param_names))
            offset += size
        return cls(specs=tuple(specs))

    def to_vector(self, module_or_state_dict: nn.Module | StateDict) -> np.ndarray:
        """The flat float32 vector (a new CPU array) of a module or state dict with this layout."""
        state = self._state_of(module_or_state_dict)
        out = torch.empty(self.dim, dtype=torch.float32)
        with torch.no_grad():
            for spec in self.specs:
                tensor = state[spec.name]
                out[spec.offset:spec.offset + spec.size] = (
                    tensor.detach().reshape(-1).to(device="cpu", dtype=torch.float32))
        return out.numpy()

    def state_dict_from_vector(self, vector: Any) -> dict[str, torch.Tensor]:
        """CPU tensors with each entry's shape and dtype; validates the vector first."""
        arr = self._check_vector(vector)
        flat = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        state: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            piece = flat[spec.offset:spec.offset + spec.size].reshape(spec.shape)
            state[spec.name] = _cast(piece, spec.torch_dtype)
        return state

    def load_vector(self, module: nn.Module, vector: Any) -> None:
        """Write ``vector`` into ``module`` in place, keeping each tensor's shape, dtype and device.

        Raises :class:`InvalidUpdateError` on a wrong length or non-finite values and
        :class:`ConfigError` if the module's layout differs from this codec's.
        """
        state = self.state_dict_from_vector(vector)
        self._state_of(module)  # layout check before any write
        module.load_state_dict(state, strict=True)

    def _check_vector(self, vector: Any) -> np.ndarray:
        if isinstance(vector, torch.Tensor):
            vector = vector.detach().cpu().numpy()
        arr = np.asarray(vector)
        if arr.ndim != 1 or arr.shape[0] != self.dim:
            raise InvalidUpdateError(f"vector: expected shape ({self.dim},), got {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InvalidUpdateError(f"vector: expected a real numeric dtype, got {arr.dtype}")
        with np.errstate(over="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InvalidUpdateError("vector: contains NaN or infinite values (after float32 cast)")
        return arr

    def _state_of(self, module_or_state_dict: nn.Module | StateDict) -> StateDict:
        if isinstance(module_or_state_dict, nn.Module):
            state: StateDict = module_or_state_dict.state_dict()
        elif isinstance(module_or_state_dict, Mapping):
            state = module_or_state_dict
        else:
            raise ConfigError(f"expected an nn.Module or a state dict, got "
                              f"{type(module_or_state_dict).__name__}")
        if len(state) != len(self.specs) or any(s.name not in state for s in self.specs):
            expected = [s.name for s in self.specs]
            raise ConfigError(f"state entries {list(state)} do not match the codec's {expected}")
        for spec in self.specs:
            tensor = state[spec.name]
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != spec.shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ConfigError(f"state entry {spec.name!r}: expected shape {spec.shape}, got {got}")
        return state


def _cast(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float32 -> ``dtype``: integers rounded (half to even) and clamped, bools thresholded."""
    if dtype == torch.bool:
        return values >= 0.5
    if dtype.is_floating_point:
        return values.to(dtype, copy=True)  # never alias the caller's vector
    info = torch.iinfo(dtype)
    low, high = float(info.min), float(info.max)
    if int(high) > info.max:  # int64: float(2**63 - 1) rounds up to 2**63, which overflows
        high = math.nextafter(high, 0.0)
    return torch.round(values.to(torch.float64)).clamp(low, high).to(dtype)
