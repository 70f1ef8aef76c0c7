"""Attacks on an update vector, and the measures that score them (torch + numpy).

An *update* here is what a client sends after one local SGD step on a batch: ``Δ = −lr·∇L``, laid
out as :class:`~secfl.fl.codec.ModelCodec` lays out the model. Every attack takes the adversary's
estimate of Δ (whatever :func:`secfl.threats.views.estimate_update` produced) and the global model
the adversary sent out, and nothing else from the client.

- :func:`recover_labels` — iDLG (Zhao et al. 2020) for one sample: the label is the one negative
  entry of the last layer's bias gradient ``softmax − onehot``. For a batch of B it estimates label
  counts from the same gradient (LLG-style, Wainakh et al. 2022): ``count_c ≈ B·(p̄_c − g_c)``
  with ``p̄`` the model's mean softmax on dummy inputs, rounded by largest remainder to B.
- :func:`invert_gradients` — Inverting Gradients (Geiping et al. 2020): optimise dummy images so
  their gradient (with the recovered labels) has maximal cosine similarity with the observed one,
  plus a total-variation prior, with Adam and step decay, clamping to the data's box after every
  step; the attacker keeps the restart with the lowest objective.
- :func:`psnr`, :func:`ssim` (Gaussian window, implemented here), :func:`match_images` (pairs each
  reconstruction with a true image, Hungarian on MSE: a batch's order is not in its gradient).
- :func:`membership_scores` / :func:`auc` — loss-threshold membership inference on a model the
  adversary holds, calibrated by the global model it also holds (the score is how much the loss of
  an example dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from secfl.errors import ConfigError
from secfl.fl.codec import ModelCodec

__all__ = [
    "ParamLayout",
    "recover_labels",
    "label_accuracy",
    "invert_gradients",
    "Inversion",
    "psnr",
    "ssim",
    "match_images",
    "membership_scores",
    "auc",
]


@dataclass(frozen=True)
class ParamLayout:
    """Where each trainable parameter of a model sits in the flat update vector."""

    names: tuple[str, ...]
    slices: tuple[slice, ...]
    shapes: tuple[tuple[int, ...], ...]
    bias_slice: slice  # the last layer's bias (one entry per class)
    weight_slice: slice | None = None  # the last layer's weight (classes × features), when it precedes the bias
    weight_shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, model: nn.Module, codec: ModelCodec, num_classes: int) -> ParamLayout:
        specs = {s.name: s for s in codec.specs}
        names, slices, shapes = [], [], []
        for name, p in model.named_parameters():
            spec = specs[name]
            names.append(name)
            slices.append(slice(spec.offset, spec.offset + spec.size))
            shapes.append(tuple(p.shape))
        biases = [i for i, (n, s) in enumerate(zip(names, shapes, strict=True))
                  if n.endswith("bias") and s == (num_classes,)]
        if not biases:
            raise ConfigError("label recovery needs a last layer with a bias of one entry per class")
        i = biases[-1]
        w = i - 1 if i > 0 and len(shapes[i - 1]) == 2 and shapes[i - 1][0] == num_classes else None
        return cls(tuple(names), tuple(slices), tuple(shapes), slices[i],
                   None if w is None else slices[w], () if w is None else shapes[w])

    def gradient(self, update: np.ndarray, lr: float) -> list[torch.Tensor]:
        """The per-parameter gradient ``−update / lr``."""
        vec = torch.as_tensor(np.asarray(update, dtype=np.float32)) * (-1.0 / lr)
        return [vec[s].reshape(shape) for s, shape in zip(self.slices, self.shapes, strict=True)]


#: A class counts as present when its weight-gradient row dips below −PRESENCE_TOL × the largest
#: entry: far below what a present class shows, far above the error of decryption or quantization.
PRESENCE_TOL = 1e-3


def _dummy_inputs(shape: tuple[int, ...], box: tuple[float, float], n: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = box
    return torch.rand((n, *shape), generator=gen) * (hi - lo) + lo


def recover_labels(model: nn.Module, layout: ParamLayout, update: np.ndarray, lr: float, batch_size: int,
                   input_shape: tuple[int, ...], box: tuple[float, float], seed: int = 0) -> np.ndarray:
    """The batch's labels as the adversary reads them from the update (sorted, length B).

    B = 1: iDLG, the argmin of the last bias's gradient. B > 1: when the last layer reads
    non-negative features (ReLU), a class is in the batch exactly when its weight-gradient row has
    a negative entry (absent classes' rows are positive combinations of the features); each
    present class gets one label and any remaining ones go by the count estimate
    ``B·(p̄ − g)`` (p̄: mean softmax on dummy inputs). Without a usable presence test (no ReLU
    features, or more classes flagged than B) the count estimate decides alone.
    """
    vec = np.asarray(update, dtype=np.float64)
    g = torch.as_tensor(vec[layout.bias_slice]) * (-1.0 / lr)
    if batch_size == 1:
        return np.asarray([int(torch.argmin(g))])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pbar = F.softmax(model(_dummy_inputs(input_shape, box, 256, gen)), dim=1).mean(0).double()
    counts = (batch_size * (pbar - g)).clamp(min=0.0).numpy()
    if layout.weight_slice is not None:
        rows = -vec[layout.weight_slice].reshape(layout.weight_shape) / lr
        scale = float(np.max(np.abs(rows))) or 1.0
        present = np.flatnonzero(rows.min(axis=1) < -PRESENCE_TOL * scale)
        if 1 <= present.size <= batch_size:
            out = np.zeros(counts.size, dtype=int)
            out[present] = 1 + _largest_remainder(counts[present] - 1.0, batch_size - present.size)
            return np.repeat(np.arange(out.size), out)
    return np.repeat(np.arange(counts.size), _largest_remainder(counts, batch_size))


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to ``total``, proportional to ``weights`` (clamped at 0)."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if total <= 0:
        return np.zeros(w.size, dtype=int)
    if w.sum() <= 0:
        w = np.ones(w.size)
    share = w * (total / w.sum())
    out = np.floor(share).astype(int)
    out[np.argsort(-(share - out), kind="stable")[: total - int(out.sum())]] += 1
    return out


def label_accuracy(recovered: Sequence[int] | np.ndarray, true: Sequence[int] | np.ndarray) -> float:
    """Share of the true labels (as a multiset) the recovered ones match."""
    a = np.bincount(np.asarray(recovered, dtype=int), minlength=1)
    b = np.bincount(np.asarray(true, dtype=int), minlength=1)
    m = max(a.size, b.size)
    a, b = np.pad(a, (0, m - a.size)), np.pad(b, (0, m - b.size))
    return float(np.minimum(a, b).sum()) / max(1, len(true))


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


@dataclass(frozen=True)
class Inversion:
    """Reconstructed inputs (in the model's input space) and the attacker's final objective."""

    images: torch.Tensor
    objective: float
    cosine_distance: float


def invert_gradients(model: nn.Module, layout: ParamLayout, update: np.ndarray, lr: float, labels: np.ndarray,
                     input_shape: tuple[int, ...], box: tuple[float, float], *, steps: int = 300,
                     restarts: int = 1, step_size: float = 0.1, tv_weight: float = 3e-3,
                     seed: int = 0) -> Inversion:
    """Inverting Gradients: cosine loss + TV prior, Adam with step decay, box constraint."""
    if steps < 1 or restarts < 1:
        raise ConfigError(f"attack steps and restarts must be >= 1, got {steps} and {restarts}")
    target = layout.gradient(update, lr)
    tnorm = torch.sqrt(_dot(target, target))
    params = [p for _, p in model.named_parameters()]
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    lo, hi = box
    gen = torch.Generator().manual_seed(seed)
    milestones = [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    best: Inversion | None = None
    for _ in range(restarts):
        x = _dummy_inputs(input_shape, box, len(y), gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=step_size)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            cos = 1.0 - _dot(grads, target) / (torch.sqrt(_dot(grads, grads)) * tnorm + 1e-12)
            obj = cos + tv_weight * _tv(x)
            (x.grad,) = torch.autograd.grad(obj, [x])  # only x: no gradient piles up on the model
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(lo, hi)
        x = x.detach()
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        with torch.no_grad():
            distance = float(1.0 - _dot(grads, target) / (torch.sqrt(_dot(grads, grads)) * tnorm + 1e-12))
            final = distance + tv_weight * float(_tv(x))
        if best is None or final < best.objective:
            best = Inversion(x.clone(), final, distance)
    if best is None:  # pragma: no cover - restarts >= 1 is checked above
        raise ConfigError("no restart ran")
    return best


# ------------------------------------------------------------------------------------------
# image measures (inputs in [0, 1], shape (N, C, H, W))


def psnr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image PSNR = 10·log10(1 / MSE) for images in [0, 1] (capped at 100 dB)."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return (10.0 * torch.log10(1.0 / mse)).numpy()


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(ax ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004) with a Gaussian window, data range 1, K1=0.01, K2=0.03.

    The window is ``min(window, H, W)`` (odd) so small images (8×8 digits) get a valid map;
    statistics use the window's weights (no padding), averaged over the map and channels.
    """
    x, y = a.double(), b.double()
    if x.shape != y.shape or x.ndim != 4:
        raise ConfigError(f"ssim needs two (N, C, H, W) batches of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    size = min(window, x.shape[2], x.shape[3])
    size -= 1 - size % 2
    c = x.shape[1]
    w = _gaussian_window(size, sigma).expand(c, 1, size, size).contiguous()

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1).numpy()


def match_images(rec: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """``perm`` with ``rec[perm[i]]`` the reconstruction paired with ``true[i]`` (min total MSE)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(true.flatten(1).double(), rec.flatten(1).double()).numpy() ** 2
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=int)
    perm[rows] = cols
    return perm


# ------------------------------------------------------------------------------------------
# membership inference


def membership_scores(model: nn.Module, codec: ModelCodec, reference: np.ndarray, attacked: np.ndarray,
                      x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Loss-threshold score of each example: loss under ``reference`` − loss under ``attacked``
    (a member's loss drops when the model trained on it). Higher means "member"."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    losses = []
    with torch.no_grad():
        for vec in (reference, attacked):
            codec.load_vector(model, np.asarray(vec, dtype=np.float32))
            losses.append(F.cross_entropy(model(xt), yt, reduction="none").double().numpy())
    codec.load_vector(model, np.asarray(reference, dtype=np.float32))
    out = losses[0] - losses[1]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Area under the ROC curve of scores (members positive): 0.5 is chance."""
    from sklearn.metrics import roc_auc_score

    m, n = np.asarray(members, dtype=np.float64), np.asarray(nonmembers, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        return math.nan
    labels = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    return float(roc_auc_score(labels, np.concatenate([m, n])))
