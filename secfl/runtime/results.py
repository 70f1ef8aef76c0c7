"""Experiment results: per-round records, ``results.json`` and ``rounds.csv``.

``results.json`` schema (a public contract, fields are only ever added)::

    {"secfl_version", "config", "rounds": [{"round", "accuracy", "loss", "clients", "dropped",
     "bytes_up_per_client", "bytes_down_per_client", "seconds": {"train", "protect",
     "aggregate", "reveal", "total", ...}, "epsilon", ...}],
     "final": {"accuracy", "loss", "epsilon", "delta"}, ...}

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
    accuracy: float
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


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    rounds: list[RoundRecord]
    final: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    #: the final global model as a flat float32 vector (not written to results.json)
    model_vector: Any = field(default=None, repr=False)

    @classmethod
    def build(cls, cfg: Any, rounds: list[RoundRecord], model_vector: Any = None, **meta: Any) -> ExperimentResult:
        last = rounds[-1]
        final = {"accuracy": last.accuracy, "loss": last.loss, "epsilon": last.epsilon, "delta": None,
                 "rounds": len(rounds)}
        meta = {**meta, "python": platform.python_version()}
        return cls(cfg.to_dict(), rounds, final, meta, model_vector)

    def to_dict(self) -> dict[str, Any]:
        return {"secfl_version": __version__, "config": self.config, "rounds": [asdict(r) for r in self.rounds],
                "final": self.final, "meta": self.meta}

    def write(self, out: str | Path) -> list[Path]:
        """Write ``results.json``, ``rounds.csv`` and (when known) ``model.npy``, the final global
        model as a flat float32 vector in the model's parameter order; returns the paths."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        rj = d / "results.json"
        rj.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        rc = d / "rounds.csv"
        with rc.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["round", "accuracy", "loss", "train_loss", "clients", "dropped", "bytes_up_per_client",
                        "bytes_down_per_client", *(f"seconds_{p}" for p in PHASES), "epsilon"])
            for r in self.rounds:
                w.writerow([r.round, f"{r.accuracy:.6f}", f"{r.loss:.6f}", f"{r.train_loss:.6f}", len(r.clients),
                            len(r.dropped), f"{r.bytes_up_per_client:.0f}", f"{r.bytes_down_per_client:.0f}",
                            *(f"{r.seconds.get(p, 0.0):.6f}" for p in PHASES),
                            "" if r.epsilon is None else f"{r.epsilon:.6f}"])
        if self.model_vector is None:
            return [rj, rc]
        mp = d / "model.npy"
        np.save(mp, np.asarray(self.model_vector, dtype=np.float32))
        return [rj, rc, mp]
