"""User model factories for the tests of ``model = "pkg.module:Factory"`` (importable from tests/)."""

from __future__ import annotations

import math

from torch import nn


def tiny_mlp(input_shape, num_outputs, width=8):
    """Takes the data's shape and output count, plus an option."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Tanh(),
                         nn.Linear(width, num_outputs))


class FixedNet(nn.Module):
    """Takes nothing from the data: 20 inputs, 3 outputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))
