"""Make a synthetic two-class "chest image" task offline. It is NOT X-ray data.

Each 32×32 image is a stylised chest: a bright body with two dark elliptical lung fields
(position, size and brightness jittered per image), faint horizontal "ribs" and Gaussian noise.
Half the images (label 1) carry one faint blurred bright spot — an "opacity" — somewhere inside
a lung field; the others (label 0) do not. The spot is faint against the noise, so the task is
learnable but not trivial, and a model keeps improving for a number of rounds before it levels
off: what a "train until convergence" run needs. It stands in for a lung-opacity screen only in
shape (small grey images, two classes, a local finding); nothing here comes from patients.

Writes ``data/chest32.npz`` next to this file: ``x`` (n, 1, 32, 32) uint8, ``y`` (n,) int64.

    python examples/lung-cnn-until-convergence/make_data.py [OUT.npz] [--samples N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parent / "data" / "chest32.npz"
SIDE = 32


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    x = np.empty((n, SIDE, SIDE))
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    for i in range(n):
        img = np.full((SIDE, SIDE), 0.65 + 0.05 * rng.standard_normal())
        cy, ry, rx = 16 + rng.normal(0, 1), 10 + rng.normal(0, 0.8), 5 + rng.normal(0, 0.5)
        lungs = []
        for cx in (9.5 + rng.normal(0, 0.8), 22.5 + rng.normal(0, 0.8)):
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[inside] = 0.3 + 0.05 * rng.standard_normal()
            lungs.append((cx, inside))
        img += 0.04 * np.sin(yy * 2 * np.pi / (4 + rng.uniform(-0.3, 0.3)) + rng.uniform(0, 2 * np.pi))
        if y[i] == 1:
            cx, inside = lungs[rng.integers(2)]
            pts = np.argwhere(inside)
            py, px = pts[rng.integers(len(pts))]
            s = rng.uniform(2.5, 4.0)
            img += 0.45 * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * s * s))
        img += 0.12 * rng.standard_normal((SIDE, SIDE))
        x[i] = img
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)[:, None], y


def make(path: Path = DEFAULT, samples: int = 2000, seed: int = 0) -> Path:
    x, y = make_images(samples, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x, y=y)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    print(f"wrote {make(args.out, args.samples)}")
