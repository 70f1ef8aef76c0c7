"""The trained model as an artefact: saved beside results.json, loaded back for inference.

``model.safetensors`` holds the final global model's state dict (safetensors: plain tensors, no
pickle, so loading a model file cannot run code) and ``model.json`` what rebuilds the module:
the model spec (:class:`~secfl.fl.models.ModelSpec`), the input shape, the number of outputs, the
task, and the input standardizer fitted on the training data. A site's personalized model, when
saved, is ``model-site-K.safetensors`` with the same ``model.json``.

:func:`load_model` returns an ``nn.Module`` in eval mode that takes *raw* inputs (the
standardizer is its first layer) and returns logits (classification) or one value per example
(regression). A model given by import path needs that module importable where it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secfl.errors import ConfigError
from secfl.fl.data import Dataset
from secfl.fl.models import ModelSpec, build_model

__all__ = ["save_model", "load_model", "model_info", "MODEL_FILE", "MODEL_INFO"]

MODEL_FILE = "model.safetensors"
MODEL_INFO = "model.json"


def model_info(spec: ModelSpec, data: Dataset) -> dict[str, Any]:
    """What :func:`load_model` needs besides the weights."""
    from secfl.runtime.config import _model_plain

    std = data.standardizer
    return {"format": "secfl-model/1", "model": _model_plain(spec), "input_shape": list(data.input_shape),
            "num_outputs": data.num_outputs, "task": data.task.value, "classes": data.num_classes,
            "standardizer": None if std is None else {"mean": np.asarray(std.mean).tolist(),
                                                      "std": np.asarray(std.std).tolist()}}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model(out: str | Path, model: nn.Module, info: dict[str, Any], *, name: str = MODEL_FILE) -> Path:
    """Write ``model``'s state dict to ``out/name`` and ``info`` to ``out/model.json`` (atomically)."""
    from safetensors.torch import save

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = d / name
    _atomic_write(path, save(state, metadata={"secfl": "model"}))
    _atomic_write(d / MODEL_INFO, (json.dumps(info, indent=2) + "\n").encode())
    return path


class _Standardize(nn.Module):
    """``(x − mean) / std`` with the training data's statistics, as the model was trained."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return (x.to(torch.float32) - mean) / std


def load_model(out: str | Path, *, site: int | None = None, raw_inputs: bool = True) -> nn.Module:
    """The model a run saved in ``out`` (``site``: that site's personalized model), in eval mode.

    ``raw_inputs``: the standardizer fitted on the training data is the module's first layer, so
    it takes inputs as the dataset provides them; ``False`` returns the bare model (inputs
    already standardized). Raises :class:`ConfigError` when the files are missing or do not match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(out)
    try:
        info = json.loads((d / MODEL_INFO).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{d}: no readable {MODEL_INFO} (was the run finished with secfl >= 0.1?): {exc}") from None
    path = d / (MODEL_FILE if site is None else f"model-site-{site}.safetensors")
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{path}: cannot read the model weights: {exc}") from None
    spec = ModelSpec.of(info["model"])
    model = build_model(spec, tuple(info["input_shape"]), int(info["num_outputs"]), 0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: the weights do not fit model {spec.name!r}: {exc}") from None
    model.eval()
    std = info.get("standardizer")
    if raw_inputs and std is not None:
        model = nn.Sequential(_Standardize(np.asarray(std["mean"]), np.asarray(std["std"])), model).eval()
    return model
