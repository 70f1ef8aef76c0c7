"""Experiment configuration: one frozen dataclass tree, loadable from TOML and overridable.

TOML layout (every key optional; defaults below)::

    protocol = "ckks"          # plaintext | ckks | ckks-threshold | additive | secagg
    task = "auto"              # auto (from the labels) | classification | regression
    model = "logreg"           # logreg | linear | mlp | cnn | "pkg.module:Factory", or a table:
                               # [model] name = "mlp", hidden = [64, 64]  (secfl.fl.models.ModelSpec)
    clients = 10
    rounds = 20
    seed = 0
    sample_fraction = 1.0      # fraction of clients sampled per round, in (0, 1]
    dropout = 0.0              # probability that a sampled client goes silent before uploading
    clip = 0.0                 # L2 clip norm of each update before protection (0: no clipping)
    server_lr = 1.0
    device = "auto"            # auto | cpu | cuda | mps
    workers = 1                # processes for client training

    [data]        # secfl.fl.data.DataConfig: name, path, test_fraction, standardize, ...
    [partition]   # secfl.fl.partition.PartitionConfig: kind, alpha, shards_per_client, size_skew, min_size
    [train]       # secfl.fl.training.TrainConfig: epochs, batch_size, lr, optimizer, momentum, weight_decay, prox_mu
    [personalize] # local fine-tuning per site: epochs (0 = off), lr, optimizer, batch_size, every, holdout,
                  # save_models
    [membership]  # initial = [client ids] (default all); schedule = [{round = 5, join = [..], leave = [..]}]
    [stop]        # metric ("" = run all rounds) | accuracy | loss | mse | mae | r2, patience, min_delta
    [dp]          # epsilon (0 = off), delta, noise_multiplier, mode = distributed | central,
                  # mechanism = auto | gaussian | discrete-gaussian | skellam, min_honest (0 = auto)
    [protocol_options]   # options of the chosen protocol (see `secfl info`)

Unknown keys are refused with the list of allowed ones.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from secfl.errors import ConfigError
from secfl.fl.data import DataConfig, Task
from secfl.fl.models import ModelSpec
from secfl.fl.partition import PartitionConfig
from secfl.fl.training import DeviceChoice, TrainConfig
from secfl.protocols import PROTOCOLS
from secfl.runtime.membership import MembershipConfig
from secfl.runtime.personalize import PersonalizeConfig
from secfl.runtime.privacy import DPSettings
from secfl.runtime.stopping import StopConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["ExperimentConfig", "load_toml", "dump_toml", "apply_overrides"]

_SECTIONS: dict[str, type[Any]] = {
    "data": DataConfig, "partition": PartitionConfig, "train": TrainConfig, "dp": DPSettings, "stop": StopConfig,
    "personalize": PersonalizeConfig, "membership": MembershipConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole federated experiment. Validated on construction; strings coerced to Enums."""

    protocol: str = "ckks"
    model: ModelSpec = field(default_factory=ModelSpec)
    task: Task = Task.AUTO
    clients: int = 10
    rounds: int = 20
    seed: int = 0
    sample_fraction: float = 1.0
    dropout: float = 0.0
    clip: float = 0.0
    server_lr: float = 1.0
    device: DeviceChoice = DeviceChoice.AUTO
    workers: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dp: DPSettings = field(default_factory=DPSettings)
    stop: StopConfig = field(default_factory=StopConfig)
    personalize: PersonalizeConfig = field(default_factory=PersonalizeConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    protocol_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: unknown {self.protocol!r}; allowed: {', '.join(PROTOCOLS)}")
        s(self, "model", ModelSpec.of(self.model))
        s(self, "task", _enum(Task, "task", self.task))
        s(self, "device", _enum(DeviceChoice, "device", self.device))
        for name, low in (("clients", 1), ("rounds", 1), ("workers", 1), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name}: must be an integer >= {low}, got {v!r}")
        _real("sample_fraction", self.sample_fraction, 0.0, 1.0, low_open=True)
        _real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _real("clip", self.clip, 0.0, math.inf)
        _real("server_lr", self.server_lr, 0.0, math.inf, low_open=True)
        for name, cls in _SECTIONS.items():
            v = getattr(self, name)
            if isinstance(v, Mapping):
                s(self, name, _section(cls, name, v))
            elif not isinstance(v, cls):
                raise ConfigError(f"{name}: expected a table / {cls.__name__}, got {type(v).__name__}")
        if not isinstance(self.protocol_options, Mapping):
            raise ConfigError("protocol_options: expected a table of the protocol's options")
        s(self, "protocol_options", MappingProxyType(dict(self.protocol_options)))

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        return _section(cls, "config", values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready dict (Enums as their values, None dropped; the model as its
        name when it has no options, else as a table of the options that differ)."""
        out = _plain(self)
        out["model"] = _model_plain(self.model)
        return out

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)


def _model_plain(spec: ModelSpec) -> str | dict[str, Any]:
    base = ModelSpec(name=spec.name)
    changed = {f.name: _plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)
               if f.name != "name" and getattr(spec, f.name) != getattr(base, f.name)}
    return spec.name if not changed else {"name": spec.name, **changed}


def _enum(cls: type[Enum], name: str, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(f"{name}: unknown {value!r}; allowed: {', '.join(str(m.value) for m in cls)}") from None


def _real(name: str, v: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = "> " if low_open else ">= "
        if math.isinf(high):  # no upper bound: say "finite", not a range that seems to include inf
            raise ConfigError(f"{name}: must be a finite number {lo}{low:g}, got {v!r}")
        l_br, h_br = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name}: must be a finite number in {l_br}{low:g}, {high:g}{h_br}, got {v!r}")


def _section(cls: type[Any], name: str, values: Mapping[str, Any]) -> Any:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except ConfigError as exc:  # name the section: "[data] test_fraction must be ..."
        msg = str(exc)
        if name == "config" or msg.startswith((f"{name}.", f"{name}:", f"[{name}]")):
            raise
        raise ConfigError(f"[{name}] {msg}") from None


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            v = _plain(getattr(obj, f.name))
            if v is not None:
                out[f.name] = v
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict (validated later by :class:`ExperimentConfig`)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge dotted-key overrides (``"train.lr": 0.1``) into a nested dict, returning a copy."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if isinstance(nxt, str) and node is out and p == "model":  # model = "mlp" gains options
                nxt = {"name": nxt}
                node[p] = nxt
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table (a table inside a table)
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(values: Mapping[str, Any]) -> str:
    """Write a config dict (scalars, lists, one level of tables) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, Mapping)]
    for k, v in values.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


