"""What the study examples share: their ``config.toml`` with command-line overrides, and one timed run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import secfl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


def load_config(folder: Path, **overrides: Any) -> dict[str, Any]:
    """``folder/config.toml`` as a dict: ``data.path`` (relative to the repository root) made
    absolute, and every top-level override that is not None set."""
    with (folder / "config.toml").open("rb") as fh:
        values = tomllib.load(fh)
    data = values.get("data", {})
    if "path" in data:
        data["path"] = str(REPO / data["path"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def run_timed(cfg: secfl.ExperimentConfig, out: Path,
              show: Callable[[Any], None] | None = None) -> tuple[Any, float]:
    """Run ``cfg`` (``show`` gets each round's record), write the result to ``out``; returns the
    result and the run's wall seconds (writing excluded)."""
    start = time.perf_counter()
    result = secfl.Experiment(cfg).run(on_round=show)
    seconds = time.perf_counter() - start
    result.write(out)
    return result, seconds
