"""Markdown and PNG renderings of a :class:`~secfl.threats.experiment.ThreatReport`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from secfl.threats.experiment import Cell, ThreatReport

__all__ = ["markdown", "write_png"]


def _num(v: float, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _short(c: Cell) -> str:
    head = "**exposed**" if c.recovered else ("declared, not exploited" if c.exposed_declared else "protected")
    if c.dp and c.exposed_declared and not c.recovered:
        head = "DP-blunted"
    return (f"{head} · {_num(c.psnr, '.1f')} dB · SSIM {_num(c.ssim, '.2f')} · labels {c.label_accuracy:.0%} · "
            f"AUC {_num(c.mia_auc, '.2f')}")


def markdown(report: ThreatReport) -> str:
    cfg = report.config
    models = [m.name for m in cfg.models]
    protocols = [p for p in cfg.protocols if any(c.protocol == p for c in report.cells)]
    s = report.setting
    lines = [
        f"# Threat-model comparison: {cfg.dataset}/{cfg.model}, {cfg.clients} clients",
        "",
        f"Target: client {cfg.target}; each client's update is one local SGD step (lr {cfg.lr}) on its own batch, "
        f"{s['dim']:,} parameters. Attacks: iDLG / count-based label recovery, Inverting Gradients "
        f"({cfg.attack_steps} Adam steps × {cfg.attack_restarts} restart(s), TV weight {cfg.tv_weight}), "
        f"loss-threshold membership inference ({cfg.nonmembers} held-out non-members, calibrated by the global "
        f"model). Measured in {report.seconds:.1f} s in total (CPU, 1 torch thread).",
        "",
        "Each cell: whether the adversary's estimate *is* the update (cosine ≥ 0.99 after opening the protection; "
        "**exposed**), else whether the protocol declares this coalition a breach; then the reconstruction's "
        "PSNR and SSIM against the true images, the share of labels recovered, and the membership AUC on the "
        "model the adversary can build from its estimate.",
        "",
    ]
    if "dp" in s:
        dp = s["dp"]
        lines += [f"DP threat models: each client clips to C = {cfg.dp_clip} and adds a Gaussian share of "
                  f"σ = {_num(dp.get('per_client_noise_std', math.nan), '.3g')} per coordinate "
                  f"(ε = {cfg.dp_epsilon}, δ = {cfg.dp_delta} for the round, every share the full σ).", ""]
    lines += ["## Chance baselines", "",
              "| batch | random image PSNR / SSIM | mean image PSNR / SSIM | inversion of a random vector PSNR / SSIM "
              "| label chance | AUC chance |", "|---|---|---|---|---|---|"]
    for b, bl in sorted(report.baselines.items()):
        lines.append(f"| {b} | {bl['random_image_psnr']:.1f} dB / {bl['random_image_ssim']:.2f} | "
                     f"{bl['mean_image_psnr']:.1f} dB / {bl['mean_image_ssim']:.2f} | "
                     f"{bl['random_vector_inversion_psnr']:.1f} dB / {bl['random_vector_inversion_ssim']:.2f} | "
                     f"{bl['label_chance']:.0%} | {bl['auc_chance']:.2f} |")
    lines += ["", "The label column measures one target's batch: at batch size 1 it is a single draw, so an "
              "estimate that carries nothing about the update still scores 100 % as often as the chance column "
              "says (e.g. an unopened ciphertext read as given). Judge it against that column, across cells, "
              "not cell by cell."]
    for b in cfg.batch_sizes:
        lines += ["", f"## Batch size {b}", "", "| protocol | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for p in protocols:
            row = []
            for m in models:
                try:
                    row.append(_short(report.cell(p, m, b)))
                except KeyError:
                    row.append("—")
            lines.append(f"| `{p}` | " + " | ".join(row) + " |")
    lines += ["", "## All measurements", "",
              "| protocol | threat model | B | declared exposed (breach) | recovered | estimate from | cos(update) | "
              "labels | PSNR mean / max | SSIM | MIA AUC update / aggregate | view | attack s | round s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report.cells:
        declared = f"yes ({c.breach})" if c.exposed_declared else "no"
        source = c.estimate_source + (f" (= {c.same_as})" if c.same_as else "")
        lines.append(
            f"| `{c.protocol}` | {c.threat_model} | {c.batch_size} | {declared} | {'yes' if c.recovered else 'no'} | "
            f"{source} | {c.update_cosine:+.3f} | {c.label_accuracy:.0%} | {_num(c.psnr, '.1f')} / "
            f"{_num(c.psnr_max, '.1f')} dB | {_num(c.ssim, '.2f')} | {_num(c.mia_auc, '.2f')} / "
            f"{_num(c.mia_auc_aggregate, '.2f')} | {c.view_messages} msgs, {c.view_bytes:,} B | "
            f"{c.seconds_attack:.1f} | {c.seconds_round:.2f} |")
    lines += ["", "Threat models:", ""]
    for tm in cfg.models:
        lines.append(f"- `{tm.name}`: {tm.description}")
    if report.skipped:
        lines += ["", "Skipped:", ""] + [f"- `{k}`: {v}" for k, v in report.skipped.items()]
    return "\n".join(lines) + "\n"


def _mosaic(images: torch.Tensor) -> Any:
    """(B, C, H, W) in [0, 1] -> one 2-D array: up to 4 images per row."""
    import numpy as np

    imgs = images.detach().cpu().numpy()
    b, _, h, w = imgs.shape
    cols = min(4, b)
    rows = -(-b // cols)
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for i in range(b):
        r, c = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[i].mean(0)
    return out


def write_png(report: ThreatReport, batch_size: int, path: Path) -> None:
    """Originals (first column) and each cell's reconstruction, protocols × threat models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report.config
    models = [m.name for m in cfg.models]
    protocols = [p for p in cfg.protocols if any(c.protocol == p and c.batch_size == batch_size for c in report.cells)]
    rows, cols = max(1, len(protocols)), len(models) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.6), squeeze=False)
    for i, p in enumerate(protocols or ["(none)"]):
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                if batch_size in report.originals:
                    ax.imshow(_mosaic(report.originals[batch_size]), cmap="gray", vmin=0, vmax=1)
                ax.set_ylabel(p, fontsize=9)
                if i == 0:
                    ax.set_title("original", fontsize=8)
                continue
            m = models[j - 1]
            if i == 0:
                ax.set_title(m, fontsize=8)
            img = report.images.get((p, m, batch_size))
            if img is None:
                ax.axis("off")
                continue
            ax.imshow(_mosaic(img), cmap="gray", vmin=0, vmax=1)
            c = report.cell(p, m, batch_size)
            ax.set_xlabel(f"{_num(c.psnr, '.1f')} dB{' *' if c.recovered else ''}", fontsize=8)
    fig.suptitle(f"{cfg.dataset}/{cfg.model}, batch {batch_size}: reconstructions of client {cfg.target}'s images "
                 "(* = update recovered)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
