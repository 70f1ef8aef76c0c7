"""Personalization by local fine-tuning: each site adapts the global model to its own data.

``[personalize]`` (``epochs = 0``: off). When on, each site's share of the training data is split
once, at random from the seed, into the part it trains on (federated training and fine-tuning)
and a held-out part of fraction ``holdout`` that it only evaluates on: no held-out example ever
reaches training, at that site or any other. After the federation (and every ``every`` rounds
when ``every > 0``) each site starts from the global model, trains ``epochs`` passes of
``optimizer`` at ``lr`` over its training part, and evaluates on its held-out part, before and
after. results.json gets each site's metrics before and after beside the global test metrics
(``final.personalized``; every evaluation in ``meta.personalization``); ``save_models = true``
also writes each site's fine-tuned model as ``model-site-K.safetensors``
(:func:`secfl.load_model` with ``site=K``).

Security: fine-tuning happens at the site on its own data with the public global model; nothing
of it is sent anywhere (the simulator reports the metrics a site would keep for itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from secfl.errors import ConfigError
from secfl.fl.training import OptimizerName, TrainConfig

__all__ = ["PersonalizeConfig", "split_sites", "summarize"]


@dataclass(frozen=True)
class PersonalizeConfig:
    """Local fine-tuning after federation (``epochs = 0``: off)."""

    epochs: int = 0
    lr: float = 0.01
    optimizer: OptimizerName = OptimizerName.SGD
    batch_size: int = 32
    every: int = 0
    holdout: float = 0.2
    save_models: bool = False

    def __post_init__(self) -> None:
        for name, low in (("epochs", 0), ("batch_size", 1), ("every", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"personalize.{name}: must be an integer >= {low}, got {v!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
                math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"personalize.lr: must be a number > 0, got {self.lr!r}")
        h = self.holdout
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h < 1:
            raise ConfigError(f"personalize.holdout: must be a fraction in (0, 1), got {h!r}")
        try:
            object.__setattr__(self, "optimizer", OptimizerName(self.optimizer))
        except ValueError:
            raise ConfigError(f"personalize.optimizer: unknown {self.optimizer!r}; allowed: sgd, adam") from None
        if not isinstance(self.save_models, bool):
            raise ConfigError(f"personalize.save_models: must be true or false, got {self.save_models!r}")

    @property
    def enabled(self) -> bool:
        return self.epochs > 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=float(self.lr),
                           optimizer=self.optimizer)

    def due(self, rnd: int, last: int) -> bool:
        """Whether sites fine-tune after round ``rnd`` (1-based) of a run ending at ``last``."""
        return self.enabled and (rnd == last or (self.every > 0 and rnd % self.every == 0))


def split_sites(parts: list[np.ndarray], holdout: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each site's indices split at random into (training part, held-out part); the held-out part
    has ``round(n · holdout)`` examples, at least one, and training keeps at least one."""
    train, test = [], []
    for k, idx in enumerate(parts):
        if idx.size < 2:
            raise ConfigError(f"personalize: site {k} has {idx.size} example(s); a held-out split needs at least 2")
        n_test = min(max(1, int(np.floor(idx.size * holdout + 0.5))), idx.size - 1)
        perm = np.random.default_rng(np.random.SeedSequence([seed, k, 0x9E5])).permutation(idx.size)
        test.append(np.sort(idx[perm[:n_test]]))
        train.append(np.sort(idx[perm[n_test:]]))
    return train, test


def summarize(rnd: int, sites: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation: every site, and the mean over sites of each metric before and after."""
    keys = sites[0]["before"].keys()
    mean = {when: {m: float(np.mean([s[when][m] for s in sites])) for m in keys} for when in ("before", "after")}
    return {"round": rnd, "sites": sites, "mean_before": mean["before"], "mean_after": mean["after"]}
