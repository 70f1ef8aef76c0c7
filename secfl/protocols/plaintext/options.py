"""``plaintext`` options (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from secfl.errors import ConfigError

__all__ = ["WireDtype", "PlaintextOptions"]


class WireDtype(str, Enum):
    """Float width of updates on the wire."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"


@dataclass(frozen=True)
class PlaintextOptions:
    """``wire_dtype``: float32 (4 B/parameter, what FedAvg deployments send) or float64.
    ``max_abs``: the server rejects an update with any |value| above this (None: no bound)."""

    wire_dtype: WireDtype = WireDtype.FLOAT32
    max_abs: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "wire_dtype", WireDtype(self.wire_dtype))
        except ValueError:
            raise ConfigError(
                f"plaintext.wire_dtype must be one of {[d.value for d in WireDtype]}, got {self.wire_dtype!r}"
            ) from None
        if self.max_abs is not None and not (np.isfinite(self.max_abs) and self.max_abs > 0):
            raise ConfigError(f"plaintext.max_abs must be a finite number > 0 or None, got {self.max_abs}")
