"""secfl — secure federated learning with measured cost and leakage.

Public API: :func:`secure_mean` (one protocol round over real messages), :class:`Experiment`
and :class:`ExperimentConfig` (full federated training runs; :class:`StopRun` ends one early
from its ``on_round`` callback), :func:`load_model` (the trained model a run saved), the protocol registry in
:mod:`secfl.protocols`, and the typed errors in :mod:`secfl.errors`.
"""

from __future__ import annotations

from typing import Any

from secfl._version import __version__
from secfl.errors import (
    ConfigError,
    InsecureParametersError,
    InsufficientQuorumError,
    InvalidUpdateError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.facade import SecureMeanResult, secure_mean

__all__ = [
    "__version__",
    "secure_mean",
    "SecureMeanResult",
    "Experiment",
    "ExperimentConfig",
    "StopRun",
    "load_model",
    "SecFLError",
    "ConfigError",
    "InsecureParametersError",
    "InsufficientQuorumError",
    "InvalidUpdateError",
    "MalformedMessageError",
    "ProtocolAbort",
]


def __getattr__(name: str) -> Any:
    # The experiment runner pulls in torch; import it only when asked for.
    if name in ("Experiment", "ExperimentConfig", "StopRun", "load_model"):
        from secfl.runtime import artifacts, config, simulator, stopping

        return {"Experiment": simulator.Experiment, "ExperimentConfig": config.ExperimentConfig,
                "StopRun": stopping.StopRun, "load_model": artifacts.load_model}[name]
    raise AttributeError(f"module 'secfl' has no attribute {name!r}")
