"""Train a custom BatchNorm MLP on data from an .npz file, federatedly."""

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import secfl

# Some data of "your own": two noisy interleaved half-moons, saved as .npz.
rng = np.random.default_rng(1)
t = rng.uniform(0, np.pi, 1200)
label = rng.integers(0, 2, 1200)
x = np.stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label], 1) + rng.normal(0, 0.15, (1200, 2))
path = Path(tempfile.mkdtemp()) / "moons.npz"
np.savez(path, x=x.astype(np.float32), y=label)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
config = secfl.ExperimentConfig.from_dict({
    "protocol": "plaintext", "clients": 5, "rounds": 10,
    "data": {"name": "npz", "path": str(path)},
    "train": {"epochs": 2, "lr": 0.1},
})
result = secfl.Experiment(config, model=model).run()
print(f"final accuracy {result.final['accuracy']:.3f} with a BatchNorm model "
      f"({result.meta['dim']} values per update, buffers included)")
