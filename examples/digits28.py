"""Make the offline 28×28 image data of two examples: scikit-learn's bundled 8×8 digits, upscaled bilinearly.

Writes ``x`` (1797, 1, 28, 28) uint8 and ``y`` (1797,) int64, the format of secfl's ``npz``
loader, to OUT.npz. No network, no torchvision. ``hospitals-cnn-28x28/run.py`` and
``personalized-medicine/run.py`` call :func:`make` for their own ``data/digits28.npz``.

    python examples/digits28.py OUT.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def _weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear interpolation matrix, pixel centres aligned."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    m = np.zeros((dst, src))
    m[np.arange(dst), lo] += 1 - frac
    m[np.arange(dst), hi] += frac
    return m


def upscale(images: np.ndarray, side: int = 28) -> np.ndarray:
    """Bilinear resize of (n, h, w) images to (n, side, side)."""
    rows, cols = _weights(images.shape[1], side), _weights(images.shape[2], side)
    return np.einsum("ih,nhw,jw->nij", rows, images, cols)


def make(path: Path) -> Path:
    digits = load_digits()  # bundled with scikit-learn: no download
    x = upscale(digits.images.astype(np.float64) / 16.0)
    x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)[:, None, :, :]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x, y=digits.target.astype(np.int64))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/digits28.py OUT.npz")
    out = make(Path(sys.argv[1]))
    print(f"wrote {out}")
