"""Shared test settings: one torch thread (2-core CI machines oversubscribe otherwise)."""

import torch

torch.set_num_threads(1)
