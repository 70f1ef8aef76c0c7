"""Experiment results: per-round records, ``results.json`` and ``rounds.csv``.

``results.json`` schema (a public contract, fields are only ever added)::

    {"secfl_version", "config", "rounds": [{"round", "accuracy", "loss", "clients", "dropped",
     "bytes_up_per_client", "bytes_down_per_client", "seconds": {"train", "protect",
     "aggregate", "reveal", "total", ...}, "epsilon", "metrics": {...}, ...}],
     "final": {"accuracy", "loss", "epsilon", "delta", "metrics", "stopped_at", "stop_reason"},
     "meta": {"task", "model": {"spec", "class", "parameters", "architecture"}, ...}}

``accuracy`` is null for regression; ``metrics`` holds every metric of the task (classification:
accuracy, loss; regression: mse, mae, r2, loss = mse).

Bytes are means over the round's sampled clients, counted from the actual serialized messages
(``bytes_down_per_client`` includes the model broadcast; ``model_bytes_down_per_client`` is
that part alone). Seconds are wall-clock per phase in the simulator.
"""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from secfl._version import __version__

__all__ = ["RoundRecord", "ExperimentResult"]

PHASES = ("train", "setup", "protect", "aggregate", "reveal", "eval", "total")


@dataclass
class RoundRecord:
    round: int
    accuracy: float | None
    loss: float
    train_loss: float
    clients: list[int]
    dropped: list[int]
    dropped_reasons: dict[str, str]
    bytes_up_per_client: float
    bytes_down_per_client: float
    model_bytes_down_per_client: float
    seconds: dict[str, float]
    epsilon: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: clients in the federation this round (dynamic membership; None: not recorded)
    population: int | None = None
    #: the protocol's bound on |revealed mean − exact weighted mean| per coordinate (None: plaintext)
    error_bound: float | None = None


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    rounds: list[RoundRecord]
    final: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    #: the final global model as a flat float32 vector (not written to results.json)
    model_vector: Any = field(default=None, repr=False)
    #: the final global model as a module, and what rebuilds it (written as model.safetensors / model.json)
    model: Any = field(default=None, repr=False)
    model_info: dict[str, Any] | None = field(default=None, repr=False)
    #: each site's personalized model (``[personalize] save_models``), by site
    site_models: dict[int, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, cfg: Any, rounds: list[RoundRecord], model_vector: Any = None, **meta: Any) -> ExperimentResult:
        last = rounds[-1]
        final = {"accuracy": last.accuracy, "loss": last.loss, "epsilon": last.epsilon, "delta": None,
                 "rounds": len(rounds), "metrics": dict(last.metrics)}
        meta = {**meta, "python": platform.python_version()}
        return cls(cfg.to_dict(), rounds, final, meta, model_vector)

    def to_dict(self) -> dict[str, Any]:
        return {"secfl_version": __version__, "config": self.config, "rounds": [asdict(r) for r in self.rounds],
                "final": self.final, "meta": self.meta}

    def write(self, out: str | Path) -> list[Path]:
        """Write ``results.json``, ``rounds.csv`` and (when known) ``model.npy``, the final global
        model as a flat float32 vector in the model's parameter order, and ``model.safetensors``
        + ``model.json`` (:func:`secfl.load_model`); returns the paths. Every file is written to
        a temporary name and renamed, so a reader never sees half a file."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        rj = d / "results.json"
        _atomic_text(rj, json.dumps(self.to_dict(), indent=2) + "\n")
        rc = d / "rounds.csv"
        tmp = rc.with_name(rc.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["round", "accuracy", "loss", "train_loss", "clients", "dropped", "bytes_up_per_client",
                        "bytes_down_per_client", *(f"seconds_{p}" for p in PHASES), "epsilon"])
            for r in self.rounds:
                acc = "" if r.accuracy is None else f"{r.accuracy:.6f}"
                w.writerow([r.round, acc, f"{r.loss:.6f}", f"{r.train_loss:.6f}", len(r.clients),
                            len(r.dropped), f"{r.bytes_up_per_client:.0f}", f"{r.bytes_down_per_client:.0f}",
                            *(f"{r.seconds.get(p, 0.0):.6f}" for p in PHASES),
                            "" if r.epsilon is None else f"{r.epsilon:.6f}"])
        tmp.replace(rc)
        paths = [rj, rc]
        if self.model_vector is not None:
            mp = d / "model.npy"
            mtmp = d / "model.tmp.npy"
            np.save(mtmp, np.asarray(self.model_vector, dtype=np.float32))
            mtmp.replace(mp)
            paths.append(mp)
        if self.model is not None and self.model_info is not None:
            from secfl.runtime.artifacts import save_model

            paths.append(save_model(d, self.model, self.model_info))
            for k, m in sorted(self.site_models.items()):
                paths.append(save_model(d, m, self.model_info, name=f"model-site-{k}.safetensors"))
        return paths


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
