"""Stopping rules: end a run early when a metric stops improving, or when the caller asks.

``[stop]``: ``metric`` (empty: run every round), ``patience`` (rounds without an improvement of
more than ``min_delta`` before stopping) and ``min_delta``. ``rounds`` stays the upper bound.
``accuracy`` and ``r2`` should rise; ``loss``, ``mse`` and ``mae`` should fall. The round and the
reason are recorded in results.json (``final.stopped_at``, ``final.stop_reason``).

A Python callback stops the run cleanly by raising :class:`StopRun` from ``on_round`` (or
returning ``True``): the rounds so far are kept and the result is built as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from secfl.errors import ConfigError

__all__ = ["StopConfig", "StopRun", "EarlyStopping", "METRICS"]

#: metric -> +1 when larger is better, -1 when smaller is better
METRICS = {"accuracy": 1, "r2": 1, "loss": -1, "mse": -1, "mae": -1}


class StopRun(Exception):  # noqa: N818 - a signal, not an error
    """Raised (or ``True`` returned) by an ``on_round`` callback: stop after this round, keep the result."""

    def __init__(self, reason: str = "stopped by the on_round callback") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StopConfig:
    """Early stopping on a test metric (``metric = ""``: off)."""

    metric: str = ""
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in ("", *METRICS):
            raise ConfigError(f"stop.metric: unknown {self.metric!r}; allowed: {', '.join(METRICS)} (or \"\": off)")
        p = self.patience
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ConfigError(f"stop.patience: must be an integer >= 1, got {p!r}")
        d = self.min_delta
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
            raise ConfigError(f"stop.min_delta: must be a finite number >= 0, got {d!r}")
        object.__setattr__(self, "min_delta", float(d))

    @property
    def enabled(self) -> bool:
        return bool(self.metric)


@dataclass
class EarlyStopping:
    """Tracks the best value of the configured metric; :meth:`update` says why to stop, or None."""

    config: StopConfig
    best: float | None = None
    best_round: int = 0
    waited: int = 0
    history: list[float] = field(default_factory=list)

    def update(self, rnd: int, metrics: dict[str, float]) -> str | None:
        cfg = self.config
        if not cfg.enabled:
            return None
        if cfg.metric not in metrics:
            raise ConfigError(f"stop.metric = {cfg.metric!r} is not measured for this task (measured: "
                              f"{', '.join(sorted(metrics))})")
        value = float(metrics[cfg.metric])
        self.history.append(value)
        sign = METRICS[cfg.metric]
        if self.best is None or sign * (value - self.best) > cfg.min_delta:
            self.best, self.best_round, self.waited = value, rnd, 0
            return None
        self.waited += 1
        if self.waited >= cfg.patience:
            return (f"{cfg.metric} did not improve by more than {cfg.min_delta:g} for {cfg.patience} rounds"
                    f" (best {self.best:.6g} at round {self.best_round})")
        return None
