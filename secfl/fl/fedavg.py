"""Server-side FedAvg pieces: client sampling, the model broadcast message, the update step.

FedAvg (McMahan et al. 2017) weighted by example counts: the protocol reveals
``mean = Σ n_k Δ_k / Σ n_k`` over the clients that made it into the round, and the server sets
``w ← w + η · mean`` (η = ``server_lr``, 1 for plain FedAvg), i.e. ``w + Σ (n_k/n) Δ_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.errors import InvalidUpdateError, MalformedMessageError
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = ["ModelBroadcast", "sample_clients", "apply_mean"]


@dataclass(frozen=True)
class ModelBroadcast(Message):
    """Server → client: the global model as a float32 vector."""

    TYPE = MsgType.MODEL_BROADCAST
    round: int
    sender: int
    vector: np.ndarray

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.vector, dtype=np.float32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ModelBroadcast:
        vec = r.array(dtype="float32")
        if not np.isfinite(vec).all():
            raise MalformedMessageError("MODEL_BROADCAST: non-finite model weights")
        return cls(round, sender, vec)


def sample_clients(
    num_clients: int, fraction: float, dropout: float, seed: int, rnd: int
) -> tuple[list[int], set[int]]:
    """Clients sampled for round ``rnd`` (sorted) and the subset that will drop out.

    ``max(1, round(fraction · K))`` clients without replacement; each sampled client goes
    silent before uploading with probability ``dropout`` (at least one always stays).
    Deterministic in (seed, round): this randomness is experimental design, not security.
    """
    rng = np.random.default_rng([seed, rnd, 0xC11E])
    m = max(1, int(round(fraction * num_clients)))
    chosen = sorted(int(c) for c in rng.choice(num_clients, size=m, replace=False))
    silent: set[int] = set()
    if dropout > 0:
        flags = rng.random(m) < dropout
        if flags.all():
            flags[rng.integers(m)] = False
        silent = {c for c, f in zip(chosen, flags, strict=True) if f}
    return chosen, silent


def apply_mean(global_vector: np.ndarray, mean: np.ndarray, server_lr: float = 1.0) -> np.ndarray:
    """``w + server_lr · mean`` as float32; a non-finite or mis-sized mean is refused."""
    mean = np.asarray(mean)
    if mean.shape != global_vector.shape or not np.isfinite(mean).all():
        raise InvalidUpdateError(f"revealed mean has shape {mean.shape} or non-finite values; model unchanged")
    return (global_vector.astype(np.float64) + server_lr * mean).astype(np.float32)
