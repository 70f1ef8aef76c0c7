"""Side-by-side reports for ``secfl compare``: Markdown + JSON table and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from statistics import median
from typing import Any

from secfl.runtime.results import ExperimentResult

__all__ = ["comparison_rows", "write_comparison"]


_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P")]


def _metric(res: ExperimentResult) -> str:
    """The headline metric: accuracy, or the test MSE for regression."""
    return "accuracy" if res.final.get("accuracy") is not None else "mse"


def _value(res: ExperimentResult, metric: str) -> float:
    return float(res.final["accuracy"] if metric == "accuracy" else res.final.get("metrics", {}).get(metric, "nan"))


def comparison_rows(results: Mapping[str, ExperimentResult]) -> list[dict[str, Any]]:
    """One row per protocol: the final metric (accuracy; MSE for regression), medians of per-round
    bytes and seconds."""
    rows = []
    first = next(iter(results.values()), None)
    metric = _metric(first) if first is not None else "accuracy"
    base = _value(first, metric) if first is not None else 0.0
    for name, res in results.items():
        rs = res.rounds

        def med(key: str, rs: list[Any] = rs) -> float:
            return float(median(r.seconds.get(key, 0.0) for r in rs))

        value = _value(res, metric)
        rows.append({
            "protocol": name,
            "metric": metric,
            f"final_{metric}": value,
            "final_accuracy": res.final["accuracy"],
            "delta_accuracy_pp": 100.0 * (value - base) if metric == "accuracy" else None,
            "delta_mse": value - base if metric == "mse" else None,
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
    metric = rows[0]["metric"] if rows else "accuracy"
    short = "acc" if metric == "accuracy" else "mse"
    delta = "Δ acc (pp)" if metric == "accuracy" else "Δ mse"
    head = (f"| protocol | final {short} | {delta} | up B/client | down B/client | train s | protect s | "
            "aggregate s | reveal s | round s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        d = f"{r['delta_accuracy_pp']:+.2f}" if metric == "accuracy" else f"{r['delta_mse']:+.4g}"
        lines.append(
            f"| {r['protocol']} | {r[f'final_{metric}']:.4g} | {d} | "
            f"{r['bytes_up_per_client']:,.0f} | {r['bytes_down_per_client']:,.0f} | {r['seconds_train']:.3f} | "
            f"{r['seconds_protect']:.3f} | {r['seconds_aggregate']:.3f} | {r['seconds_reveal']:.3f} | "
            f"{r['seconds_round']:.3f} |")
    return "\n".join(lines) + ("\n\nPer-round medians; Δ relative to the first protocol listed. The protocols ran"
                                " one after another on the same machine, after one untimed warm-up round: seconds"
                                " include the machine's load at the time.\n")


def _title(results: Mapping[str, ExperimentResult]) -> str:
    cfg = next(iter(results.values())).config if results else {}
    model = cfg.get("model", "?")
    model = model if isinstance(model, str) else model.get("name", "?")
    return (f"{cfg.get('data', {}).get('name', '?')} / {model}, {cfg.get('clients', '?')} clients, "
            f"{cfg.get('rounds', '?')} rounds, seed {cfg.get('seed', '?')}")


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

    metric = rows[0]["metric"] if rows else "accuracy"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    n = max(1, len(results))
    for i, (name, res) in enumerate(results.items()):
        style, marker = _STYLES[i % len(_STYLES)]
        ys = [r.accuracy if metric == "accuracy" else r.metrics.get("mse") for r in res.rounds]
        # identical curves stay visible: each its own line style and marker, later ones thinner on top
        axes[0].plot([r.round for r in res.rounds], ys, linestyle=style, marker=marker, ms=4 + 2 * (n - i - 1) / n,
                     lw=1 + 2.0 * (n - i - 1) / n, alpha=0.85, zorder=2 + i, label=name, markerfacecolor="none")
    axes[0].set(xlabel="round", ylabel=f"test {metric}", title=f"{metric.capitalize()} per round")
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize="small")
    names = [r["protocol"] for r in rows]
    xs = list(range(len(names)))
    axes[1].bar([x - 0.2 for x in xs], [r["bytes_up_per_client"] for r in rows], width=0.4, label="up")
    axes[1].bar([x + 0.2 for x in xs], [r["bytes_down_per_client"] for r in rows], width=0.4, label="down")
    axes[1].set_xticks(xs, names)
    axes[1].set_yscale("log")
    axes[1].set(ylabel="bytes per client per round (log)", title="Communication (median round)")
    axes[1].legend(fontsize="small")
    bottom = [0.0] * len(rows)
    for key, label in (("seconds_train", "train"), ("seconds_protect", "protect"),
                       ("seconds_aggregate", "aggregate"), ("seconds_reveal", "reveal")):
        vals = [r[key] for r in rows]
        axes[2].bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[2].set(ylabel="seconds per round",
                title="Time per phase (median round;\nprotocols measured one after another)")
    axes[2].legend(fontsize="small")
    for ax in axes[1:]:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(_title(results))
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
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    finite = sorted({r["epsilon_target"] for r in rows if r["epsilon_target"] is not None})
    inf_x = (max(finite) * 2.0) if finite else 1.0
    for i, proto in enumerate(sweep):
        style, marker = _STYLES[i % len(_STYLES)]
        pts = sorted(((r["epsilon_target"] or inf_x), r["final_accuracy"]) for r in rows if r["protocol"] == proto)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, marker=marker, markerfacecolor="none",
                label=proto)
    ax.set(xscale="log", xlabel="ε", ylabel="final test accuracy", title="Accuracy vs ε")
    ticks = finite + ([inf_x] if any(r["epsilon_target"] is None for r in rows) else [])
    ax.set_xticks(ticks, [f"{t:g}" for t in finite] + (["no DP"] if len(ticks) > len(finite) else []))
    ax.minorticks_off()  # only the swept values: no overlapping minor labels
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")  # beside the axes, not on the curves
    fig.tight_layout()
    png = out / "epsilon.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, js, png]
