"""The threat-model comparison: protocol × threat model → leakage, measured by attacks.

For each batch size B, every client takes one local SGD step on its own B images from the global
model (so its update is ``−lr·∇L``); the round runs under each protocol over a recording network;
for each threat model the coalition's view is assembled, the adversary's estimate of one target
client's update is extracted from it (:mod:`secfl.threats.views`), and the attacks of
:mod:`secfl.threats.attacks` run on that estimate. Everything reported is measured: label
accuracy, PSNR and SSIM of the reconstruction against the true images, membership AUC, whether the
estimate *is* the update (cosine ≥ 0.99), next to what the protocol declares
(:mod:`secfl.protocols.exposure`), and the seconds each step took.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from secfl._version import __version__
from secfl.errors import ConfigError, SecFLError
from secfl.protocols import PROTOCOLS, get_protocol
from secfl.protocols.exposure import exposing_breach, exposure
from secfl.threats.adversary import DEFAULT_THREAT_MODELS, ThreatModel, threat_model
from secfl.threats.attacks import (
    ParamLayout,
    auc,
    invert_gradients,
    label_accuracy,
    match_images,
    membership_scores,
    psnr,
    recover_labels,
    ssim,
)
from secfl.threats.views import RoundRecord, adversary_view, corrupt_parties, estimate_update, run_round

__all__ = ["ThreatConfig", "Cell", "ThreatReport", "run_threats", "RECOVERED_COSINE"]

#: An estimate counts as the update itself ("recovered") at this cosine similarity or above.
RECOVERED_COSINE = 0.99


@dataclass(frozen=True)
class ThreatConfig:
    """One threat-model comparison.

    ``protocols``: names (those that cannot be imported here are skipped, with the reason).
    ``threat_models``: preset names (:data:`~secfl.threats.adversary.THREAT_MODELS`) or
    :class:`ThreatModel` objects. ``batch_sizes``: images per client update (one local step).
    ``clients`` n; ``target``: the attacked client. ``lr``: the clients' local learning rate.
    ``attack_steps`` / ``attack_restarts`` / ``attack_lr`` / ``tv_weight``: Inverting Gradients'
    budget. ``nonmembers``: held-out examples for membership inference. ``dp_epsilon`` /
    ``dp_delta`` / ``dp_clip``: the Gaussian mechanism of the ``dp`` threat models (one round).
    ``protocol_options``: protocol name → options (override the defaults chosen here: a value
    range and weight bound that fit the updates).
    """

    protocols: tuple[str, ...] = tuple(PROTOCOLS)
    threat_models: tuple[str | ThreatModel, ...] = DEFAULT_THREAT_MODELS
    batch_sizes: tuple[int, ...] = (1, 8)
    clients: int = 10
    target: int = 0
    dataset: str = "digits"
    data_path: str | None = None
    model: str = "cnn"
    lr: float = 0.1
    attack_steps: int = 300
    attack_restarts: int = 1
    attack_lr: float = 0.1
    tv_weight: float = 3e-3
    nonmembers: int = 100
    dp_epsilon: float = 8.0
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    seed: int = 0
    protocol_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "protocols", tuple(self.protocols))
        set_(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        models = tuple(m if isinstance(m, ThreatModel) else threat_model(str(m)) for m in self.threat_models)
        set_(self, "threat_models", models)
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ConfigError(f"threats.protocols must be distinct names, got {self.protocols}")
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ConfigError(f"threats.protocols: unknown {unknown}; known: {sorted(PROTOCOLS)}")
        if not models or len({m.name for m in models}) != len(models):
            raise ConfigError("threats.threat_models must be distinct and non-empty")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"threats.batch_sizes must be integers >= 1, got {self.batch_sizes}")
        for name, low in (("clients", 2), ("attack_steps", 1), ("attack_restarts", 1), ("nonmembers", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"threats.{name} must be an integer >= {low}, got {v!r}")
        if not 0 <= self.target < self.clients:
            raise ConfigError(f"threats.target must be a client index in [0, {self.clients}), got {self.target}")
        for name in ("lr", "attack_lr", "dp_epsilon", "dp_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"threats.{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.tv_weight, (int, float)) and self.tv_weight >= 0):
            raise ConfigError(f"threats.tv_weight must be >= 0, got {self.tv_weight!r}")
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"threats.dp_delta must be in (0, 1), got {self.dp_delta!r}")
        extra = sorted(set(self.protocol_options) - set(self.protocols))
        if extra:
            raise ConfigError(f"threats.protocol_options names protocols not being run: {extra}")

    @property
    def models(self) -> tuple[ThreatModel, ...]:
        """The threat models, resolved (presets looked up)."""
        return cast(tuple[ThreatModel, ...], self.threat_models)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["threat_models"] = [{"name": m.name, "coalition": asdict(m.coalition), "dp": m.dp,
                               "description": m.description} for m in self.models]
        d["protocol_options"] = {k: dict(v) for k, v in self.protocol_options.items()}
        return d


@dataclass
class Cell:
    """The measured leakage of one (protocol, threat model, batch size)."""

    protocol: str
    threat_model: str
    batch_size: int
    dp: bool
    parties: dict[str, list[int]]
    exposed_declared: bool
    breach: str | None
    recovered: bool
    estimate_source: str
    estimate_individual: bool
    update_cosine: float
    update_rel_error: float
    labels_true: list[int]
    labels_recovered: list[int]
    label_accuracy: float
    psnr: float
    psnr_max: float
    ssim: float
    attack_cosine_distance: float
    mia_auc: float
    mia_auc_aggregate: float
    view_messages: int
    view_bytes: int
    seconds_attack: float
    seconds_round: float
    same_as: str | None = None


@dataclass
class ThreatReport:
    """Everything ``secfl threats`` writes: cells, baselines, images, timings."""

    config: ThreatConfig
    cells: list[Cell]
    baselines: dict[int, dict[str, float]]
    skipped: dict[str, str]
    seconds: float
    setting: dict[str, Any]
    originals: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    images: dict[tuple[str, str, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def cell(self, protocol: str, threat: str, batch_size: int) -> Cell:
        for c in self.cells:
            if (c.protocol, c.threat_model, c.batch_size) == (protocol, threat, batch_size):
                return c
        raise KeyError((protocol, threat, batch_size))

    def to_dict(self) -> dict[str, Any]:
        return {
            "secfl_version": __version__,
            "config": self.config.to_dict(),
            "setting": self.setting,
            "seconds_total": self.seconds,
            "skipped": self.skipped,
            "baselines": {str(b): v for b, v in self.baselines.items()},
            "cells": [_finite(asdict(c)) for c in self.cells],
        }

    def markdown(self) -> str:
        from secfl.threats.report import markdown

        return markdown(self)

    def write(self, out: str | Path) -> list[Path]:
        """``threats.md``, ``threats.json`` and one ``threats-b{B}.png`` per batch size into ``out``."""
        from secfl.threats.report import write_png

        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        files = [path / "threats.md", path / "threats.json"]
        files[0].write_text(self.markdown())
        files[1].write_text(json.dumps(self.to_dict(), indent=2))
        for b in self.config.batch_sizes:
            png = path / f"threats-b{b}.png"
            write_png(self, b, png)
            files.append(png)
        return files


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------
# the experiment


@dataclass
class _Setting:
    model: torch.nn.Module
    codec: Any
    layout: ParamLayout
    theta0: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    box: tuple[float, float]
    to_unit: Callable[[torch.Tensor], torch.Tensor]
    x_train: np.ndarray
    y_train: np.ndarray
    x_out: np.ndarray
    y_out: np.ndarray


def _prepare(cfg: ThreatConfig) -> _Setting:
    from secfl.fl.codec import ModelCodec
    from secfl.fl.data import DataConfig, load_dataset
    from secfl.fl.models import build_model

    data = load_dataset(DataConfig(name=cast(Any, cfg.dataset), path=cfg.data_path), seed=cfg.seed)
    if len(data.input_shape) != 3:
        raise ConfigError(f"threats: gradient inversion needs image data (C, H, W); {cfg.dataset!r} has inputs of "
                          f"shape {data.input_shape}")
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=cfg.seed)
    codec = ModelCodec.from_module(model)
    if any(s.is_buffer for s in codec.specs):
        raise ConfigError("threats: models with buffers (BatchNorm) are not supported by the gradient attacks")
    layout = ParamLayout.of(model, codec, data.num_classes)
    mean, std = 0.0, 1.0
    if data.standardizer is not None:
        if np.asarray(data.standardizer.mean).ndim != 0:
            raise ConfigError("threats: expected one global standardization for images")
        mean, std = float(data.standardizer.mean), float(data.standardizer.std)
    box = ((0.0 - mean) / std, (1.0 - mean) / std)
    need = cfg.clients * max(cfg.batch_sizes)
    if need > len(data.y_train):
        raise ConfigError(f"threats: {cfg.clients} clients × {max(cfg.batch_sizes)} images need {need} training "
                          f"examples, the dataset has {len(data.y_train)}")
    rng = np.random.default_rng(cfg.seed)  # which examples each client holds: not a security parameter
    order = rng.permutation(len(data.y_train))[:need]
    out_idx = rng.permutation(len(data.y_test))[: cfg.nonmembers]
    return _Setting(model, codec, layout, codec.to_vector(model), data.input_shape, data.num_classes, box,
                    lambda z: (z * std + mean).clamp(0.0, 1.0),
                    data.x_train[order], data.y_train[order], data.x_test[out_idx], data.y_test[out_idx])


Batch = tuple[np.ndarray, np.ndarray]


def _client_updates(st: _Setting, cfg: ThreatConfig, b: int) -> tuple[list[np.ndarray], list[Batch]]:
    from secfl.fl.training import TrainConfig, local_train

    train = TrainConfig(epochs=1, batch_size=b, lr=cfg.lr)
    updates, batches = [], []
    for k in range(cfg.clients):
        x, y = st.x_train[k * b:(k + 1) * b], st.y_train[k * b:(k + 1) * b]
        res = local_train(st.model, st.codec, st.theta0, x, y, train, seed=cfg.seed + k, device=torch.device("cpu"))
        updates.append(res.update.astype(np.float64))
        batches.append((x, y))
    st.codec.load_vector(st.model, st.theta0)
    return updates, batches


def _dp_inputs(cfg: ThreatConfig, updates: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Clip to C and add each client's Gaussian share (min_honest = 1: every share carries σ)."""
    from secfl.crypto.prg import Prg
    from secfl.dp import DPConfig, DPMode, MechanismKind, clip_l2, plan_privacy

    dp = DPConfig(clip=cfg.dp_clip, epsilon=cfg.dp_epsilon, delta=cfg.dp_delta, mode=DPMode.DISTRIBUTED,
                  mechanism=MechanismKind.GAUSSIAN, min_honest=1)
    plan = plan_privacy(dp, rounds=1)
    mech = plan.mechanism
    noisy = [np.asarray(clip_l2(u, cfg.dp_clip)[0], dtype=np.float64) + mech.client_share(u.size, Prg())
             for u in updates]
    return noisy, {**plan.summary(), "per_client_noise_std": math.sqrt(mech.share_variance)}


def _default_options(protocol: str, inputs: Sequence[np.ndarray], weights: Sequence[float]) -> dict[str, Any]:
    """A value range (power of two ≥ every |value|) and weight bound that fit this round's inputs."""
    fields = getattr(get_protocol(protocol).Options, "__dataclass_fields__", {})
    peak = max(float(np.max(np.abs(v))) for v in inputs)
    opts: dict[str, Any] = {}
    if "clip_range" in fields:
        opts["clip_range"] = float(2.0 ** math.ceil(math.log2(max(peak, 1e-3))))
    if "max_weight" in fields:
        opts["max_weight"] = float(max(weights))
    if "processes" in fields:
        opts["processes"] = 1  # the coalitions' client state is read in this process
    return opts


def _available(protocols: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    ok, skipped = [], {}
    for name in protocols:
        try:
            get_protocol(name)
            ok.append(name)
        except (ConfigError, ImportError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return ok, skipped


def _baselines(st: _Setting, cfg: ThreatConfig, b: int, truth: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    noise = torch.rand(truth.shape, generator=gen, dtype=torch.float64)
    mean_img = st.to_unit(torch.as_tensor(st.x_train, dtype=torch.float64)).mean(0, keepdim=True).expand_as(truth)
    rand_vec = torch.randn(st.codec.dim, generator=gen, dtype=torch.float64).numpy()
    inv = invert_gradients(st.model, st.layout, rand_vec, cfg.lr, labels, st.input_shape, st.box,
                           steps=cfg.attack_steps, restarts=cfg.attack_restarts, step_size=cfg.attack_lr,
                           tv_weight=cfg.tv_weight, seed=cfg.seed)
    rec = st.to_unit(inv.images.double())
    rec = rec[match_images(rec, truth)]
    return {
        "random_image_psnr": float(np.mean(psnr(noise, truth))),
        "random_image_ssim": float(np.mean(ssim(noise, truth))),
        "mean_image_psnr": float(np.mean(psnr(mean_img, truth))),
        "mean_image_ssim": float(np.mean(ssim(mean_img, truth))),
        "random_vector_inversion_psnr": float(np.mean(psnr(rec, truth))),
        "random_vector_inversion_ssim": float(np.mean(ssim(rec, truth))),
        "label_chance": _label_chance(st.num_classes, labels, cfg.seed),
        "auc_chance": 0.5,
    }


def _label_chance(num_classes: int, labels: np.ndarray, seed: int, draws: int = 4000) -> float:
    """Expected label accuracy (multiset overlap) of B labels guessed uniformly at random:
    1/C for one label, far more for a batch (8 guesses cover several of 8 true labels)."""
    guesses = np.random.default_rng(seed).integers(0, num_classes, size=(draws, len(labels)))
    return float(np.mean([label_accuracy(g, labels) for g in guesses]))


def _attack(st: _Setting, cfg: ThreatConfig, vector: np.ndarray, b: int, truth: torch.Tensor,
            true_labels: np.ndarray) -> dict[str, Any]:
    labels = recover_labels(st.model, st.layout, vector, cfg.lr, b, st.input_shape, st.box, seed=cfg.seed)
    inv = invert_gradients(st.model, st.layout, vector, cfg.lr, labels, st.input_shape, st.box,
                           steps=cfg.attack_steps, restarts=cfg.attack_restarts, step_size=cfg.attack_lr,
                           tv_weight=cfg.tv_weight, seed=cfg.seed)
    rec = st.to_unit(inv.images.double())
    rec = rec[match_images(rec, truth)]
    p, s = psnr(rec, truth), ssim(rec, truth)
    return {
        "labels_recovered": [int(v) for v in labels],
        "label_accuracy": label_accuracy(labels, true_labels),
        "psnr": float(np.mean(p)),
        "psnr_max": float(np.max(p)),
        "ssim": float(np.mean(s)),
        "attack_cosine_distance": inv.cosine_distance,
        "images": rec.float(),
    }


def _membership(st: _Setting, rec: RoundRecord, m: ThreatModel, target_estimate: np.ndarray,
                batches: Sequence[tuple[np.ndarray, np.ndarray]], tgt: int) -> tuple[float, float]:
    """Membership AUCs: (1) on the model θ0 + estimate, averaged over every client taken in turn as
    the target (the coalition re-placed around it), members its own batch; (2) on the aggregate
    model θ0 + mean, members every client's batch. Non-members: held-out examples."""
    aucs = []
    for k in rec.clients:
        if k == tgt:
            vec = target_estimate
        else:
            vec = estimate_update(adversary_view(rec, corrupt_parties(rec, m.coalition, k), k)).vector
        model = st.theta0 + vec
        pos = membership_scores(st.model, st.codec, st.theta0, model, *batches[k])
        neg = membership_scores(st.model, st.codec, st.theta0, model, st.x_out, st.y_out)
        aucs.append(auc(pos, neg))
    agg = st.theta0 + np.asarray(rec.revealed.mean, dtype=np.float64)
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    pos = membership_scores(st.model, st.codec, st.theta0, agg, xs, ys)
    neg = membership_scores(st.model, st.codec, st.theta0, agg, st.x_out, st.y_out)
    return float(np.mean(aucs)), auc(pos, neg)


def run_threats(cfg: ThreatConfig, progress: Callable[[str], None] | None = None) -> ThreatReport:
    """Run the comparison; ``progress`` receives one line per finished cell."""
    say = progress or (lambda _line: None)
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest and keeps runs reproducible
    try:
        return _run(cfg, say, t_start)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: ThreatConfig, say: Callable[[str], None], t_start: float) -> ThreatReport:
    st = _prepare(cfg)
    protocols, skipped = _available(cfg.protocols)
    models = list(cfg.models)
    cells: list[Cell] = []
    images: dict[tuple[str, str, int], torch.Tensor] = {}
    originals: dict[int, torch.Tensor] = {}
    baselines: dict[int, dict[str, float]] = {}
    setting: dict[str, Any] = {"dim": st.codec.dim, "num_classes": st.num_classes, "input_shape": st.input_shape,
                               "device": "cpu", "torch_threads": 1, "round_seconds": {}}
    tgt = cfg.target
    for b in cfg.batch_sizes:
        t = time.perf_counter()
        updates, batches = _client_updates(st, cfg, b)
        x_t, y_t = batches[tgt]
        truth = st.to_unit(torch.as_tensor(x_t, dtype=torch.float64))
        originals[b] = truth.float()
        true_labels = np.sort(y_t)
        baselines[b] = _baselines(st, cfg, b, truth, true_labels)
        baselines[b]["seconds"] = time.perf_counter() - t
        say(f"B={b}: baselines {_fmt_baseline(baselines[b])}")
        true_update = updates[tgt]
        plain_weights = [float(b)] * cfg.clients
        dp_inputs: list[np.ndarray] | None = None
        if any(m.dp for m in models):
            dp_inputs, setting["dp"] = _dp_inputs(cfg, updates)
        for proto in protocols:
            records: dict[bool, RoundRecord | str] = {}
            for dp in sorted({m.dp for m in models}):
                inputs = dp_inputs if dp and dp_inputs is not None else updates
                weights = [1.0] * cfg.clients if dp else plain_weights
                opts = {**_default_options(proto, inputs, weights), **dict(cfg.protocol_options.get(proto, {}))}
                try:
                    records[dp] = run_round(proto, inputs, weights, options=opts, seed=cfg.seed)
                except (SecFLError, ImportError) as exc:
                    records[dp] = f"{type(exc).__name__}: {exc}"
                    say(f"B={b} {proto}{' (dp)' if dp else ''}: round failed: {records[dp]}")
            done: dict[tuple[bool, frozenset[int]], Cell] = {}
            for m in models:
                rec = records[m.dp]
                if isinstance(rec, str):
                    skipped[f"{proto}/{m.name}/B={b}"] = rec
                    continue
                setting["round_seconds"][f"{proto}/B={b}{'/dp' if m.dp else ''}"] = rec.seconds
                parties = corrupt_parties(rec, m.coalition, tgt)
                key = (m.dp, parties.all)
                if key in done:
                    first = done[key]
                    cell = Cell(**{**asdict(first), "threat_model": m.name, "same_as": first.threat_model})
                    cells.append(cell)
                    images[(proto, m.name, b)] = images[(proto, first.threat_model, b)]
                    say(_fmt_cell(cell))
                    continue
                t = time.perf_counter()
                view = adversary_view(rec, parties, tgt)
                est = estimate_update(view)
                diff = est.vector - true_update
                norm = float(np.linalg.norm(true_update))
                en = float(np.linalg.norm(est.vector))
                cosine = float(np.dot(est.vector, true_update) / (en * norm)) if en > 0 and norm > 0 else 0.0
                res = _attack(st, cfg, est.vector, b, truth, true_labels)
                mia, mia_agg = _membership(st, rec, m, est.vector, batches, tgt)
                breach = exposing_breach(proto, m.coalition, rec.deployment)
                cell = Cell(
                    protocol=proto, threat_model=m.name, batch_size=b, dp=m.dp,
                    parties={"servers": list(parties.servers), "clients": list(parties.clients),
                             "members": list(parties.members)},
                    exposed_declared=breach is not None,
                    breach=None if breach is None else
                    f"{breach.via.value}: {breach.coalition.describe(exposure(proto).roles)}",
                    recovered=bool(est.opened and cosine >= RECOVERED_COSINE),
                    estimate_source=est.source, estimate_individual=est.individual,
                    update_cosine=cosine, update_rel_error=float(np.linalg.norm(diff)) / norm if norm else math.nan,
                    labels_true=[int(v) for v in true_labels], labels_recovered=res["labels_recovered"],
                    label_accuracy=res["label_accuracy"], psnr=res["psnr"], psnr_max=res["psnr_max"],
                    ssim=res["ssim"], attack_cosine_distance=res["attack_cosine_distance"], mia_auc=mia,
                    mia_auc_aggregate=mia_agg, view_messages=len(view.deliveries),
                    view_bytes=view.view_bytes, seconds_attack=time.perf_counter() - t,
                    seconds_round=rec.seconds["total"])
                done[key] = cell
                cells.append(cell)
                images[(proto, m.name, b)] = res["images"]
                say(_fmt_cell(cell))
    return ThreatReport(cfg, cells, baselines, skipped, time.perf_counter() - t_start, setting, originals, images)


def _fmt_baseline(bl: Mapping[str, float]) -> str:
    return (f"random image {bl['random_image_psnr']:.1f} dB, mean image {bl['mean_image_psnr']:.1f} dB, "
            f"inversion of a random vector {bl['random_vector_inversion_psnr']:.1f} dB")


def _fmt_cell(c: Cell) -> str:
    declared = "yes" if c.exposed_declared else "no"
    return (f"B={c.batch_size} {c.protocol:<15} {c.threat_model:<17} declared={declared:<3}"
            f" recovered={'yes' if c.recovered else 'no':<3} cos={c.update_cosine:+.3f} labels={c.label_accuracy:.2f}"
            f" PSNR={c.psnr:5.1f} SSIM={c.ssim:.2f} AUC={c.mia_auc:.2f}/{c.mia_auc_aggregate:.2f}"
            f" {c.seconds_attack:.1f}s")
