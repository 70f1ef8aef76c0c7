"""L2 clipping of an update to norm C (the sensitivity of one client's contribution)."""

from __future__ import annotations

import numpy as np

from secfl.errors import ConfigError

__all__ = ["clip_l2"]


def clip_l2(update: np.ndarray, max_norm: float) -> tuple[np.ndarray, float]:
    """Scale ``update`` so its L2 norm is at most ``max_norm``.

    Returns ``(clipped, norm_before)``; the input is not modified. ``min(1, C/‖x‖)·x``.
    """
    if not (np.isfinite(max_norm) and max_norm > 0):
        raise ConfigError(f"clip norm must be a finite number > 0, got {max_norm}")
    x = np.asarray(update)
    norm = float(np.linalg.norm(x.astype(np.float64, copy=False)))
    if norm <= max_norm:
        return x.copy(), norm
    return (x * (max_norm / norm)).astype(x.dtype, copy=False), norm
