"""Side-by-side reports for ``secfl compare``: Markdown + JSON table and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from statistics import median
from typing import Any

from secfl.runtime.results import ExperimentResult

__all__ = ["comparison_rows", "write_comparison"]


def comparison_rows(results: Mapping[str, ExperimentResult]) -> list[dict[str, Any]]:
    """One row per protocol: final accuracy, medians of per-round bytes and seconds."""
    rows = []
    base = next(iter(results.values())).final["accuracy"] if results else 0.0
    for name, res in results.items():
        rs = res.rounds

        def med(key: str, rs: list[Any] = rs) -> float:
            return float(median(r.seconds.get(key, 0.0) for r in rs))

        rows.append({
            "protocol": name,
            "final_accuracy": res.final["accuracy"],
            "delta_accuracy_pp": 100.0 * (res.final["accuracy"] - base),
            "final_loss": res.final["loss"],
            "bytes_up_per_client": float(median(r.bytes_up_per_client for r in rs)),
            "bytes_down_per_client": float(median(r.bytes_down_per_client for r in rs)),
            "seconds_train": med("train"),
            "seconds_protect": med("setup") + med("protect"),
            "seconds_aggregate": med("aggregate"),
            "seconds_reveal": med("reveal"),
            "seconds_round": med("total"),
            "dropped_total": sum(len(r.dropped) for r in rs),
        })
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| protocol | final acc | Δ acc (pp) | up B/client | down B/client | train s | protect s | "
            "aggregate s | reveal s | round s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['final_accuracy']:.4f} | {r['delta_accuracy_pp']:+.2f} | "
            f"{r['bytes_up_per_client']:,.0f} | {r['bytes_down_per_client']:,.0f} | {r['seconds_train']:.3f} | "
            f"{r['seconds_protect']:.3f} | {r['seconds_aggregate']:.3f} | {r['seconds_reveal']:.3f} | "
            f"{r['seconds_round']:.3f} |")
    return "\n".join(lines) + "\n\nPer-round medians; Δ acc relative to the first protocol listed.\n"


def write_comparison(results: Mapping[str, ExperimentResult], out: Path) -> list[Path]:
    """Write ``compare.md``, ``compare.json`` and ``compare.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(results)
    md = out / "compare.md"
    md.write_text(_markdown(rows))
    js = out / "compare.json"
    js.write_text(json.dumps({"rows": rows, "runs": {k: v.to_dict() for k, v in results.items()}}, indent=2) + "\n")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, res in results.items():
        axes[0].plot([r.round for r in res.rounds], [r.accuracy for r in res.rounds], marker="o", ms=3, label=name)
    axes[0].set(xlabel="round", ylabel="test accuracy", title="Accuracy per round")
    axes[0].legend()
    names = [r["protocol"] for r in rows]
    xs = list(range(len(names)))
    axes[1].bar([x - 0.2 for x in xs], [r["bytes_up_per_client"] / 1e3 for r in rows], width=0.4, label="up")
    axes[1].bar([x + 0.2 for x in xs], [r["bytes_down_per_client"] / 1e3 for r in rows], width=0.4, label="down")
    axes[1].set_xticks(xs, names)
    axes[1].set(ylabel="kB per client per round", title="Communication (median round)")
    axes[1].legend()
    bottom = [0.0] * len(rows)
    for key, label in (("seconds_train", "train"), ("seconds_protect", "protect"),
                       ("seconds_aggregate", "aggregate"), ("seconds_reveal", "reveal")):
        vals = [r[key] for r in rows]
        axes[2].bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[2].set(ylabel="seconds per round", title="Time per phase (median round)")
    axes[2].legend()
    for ax in axes[1:]:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    png = out / "compare.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, js, png]


def write_epsilon_sweep(sweep: Mapping[str, Mapping[float | None, ExperimentResult]], out: Path) -> list[Path]:
    """Accuracy against ε per protocol: ``epsilon.md``, ``epsilon.json``, ``epsilon.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for proto, runs in sweep.items():
        for eps, res in runs.items():
            rows.append({"protocol": proto, "epsilon_target": eps, "epsilon_reported": res.final["epsilon"],
                         "delta": res.final["delta"], "final_accuracy": res.final["accuracy"],
                         "mode": res.config.get("dp", {}).get("mode", "distributed") if eps is not None else None})
    md = out / "epsilon.md"
    lines = ["| protocol | ε target | ε reported | δ | mode | final acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        eps_txt = "∞" if r["epsilon_target"] is None else f"{r['epsilon_target']:g}"
        rep = "∞" if r["epsilon_reported"] is None else f"{r['epsilon_reported']:.3f}"
        delta = "–" if r["delta"] is None else f"{r['delta']:g}"
        mode = r["mode"] or "–"
        lines.append(f"| {r['protocol']} | {eps_txt} | {rep} | {delta} | {mode} | {r['final_accuracy']:.4f} |")
    md.write_text("\n".join(lines) + "\n")
    js = out / "epsilon.json"
    js.write_text(json.dumps(rows, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    finite = [r["epsilon_target"] for r in rows if r["epsilon_target"] is not None]
    inf_x = (max(finite) * 2.0) if finite else 1.0
    for proto in sweep:
        pts = sorted(((r["epsilon_target"] or inf_x), r["final_accuracy"]) for r in rows if r["protocol"] == proto)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=proto)
    ax.set(xscale="log", xlabel="ε (rightmost point: no DP)", ylabel="final test accuracy", title="Accuracy vs ε")
    ax.legend()
    fig.tight_layout()
    png = out / "epsilon.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, js, png]
