"""Linear regression over 10 sites of 10, 20, ..., 100 examples, under every protocol, against
least squares on the pooled data.

    python examples/linear-regression-10-sites/run.py [--protocols a,b,...] [--rounds N] [--out DIR]

Runs ``config.toml`` once per protocol, then fits ordinary least squares (numpy) on the union of
the sites' training data — what a single site holding everyone's data would get — and prints
the test MSE of each next to it (times after one untimed warm-up round). Writes ``results.md``,
``summary.json`` and each protocol's ``results.json`` / model under ``--out`` (default:
``runs/`` next to this file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import secfl
from secfl.fl.data import load_dataset
from secfl.fl.partition import partition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import load_config  # noqa: E402

PROTOCOLS = ("plaintext", "ckks", "ckks-threshold", "additive", "secagg")


def pooled_least_squares(cfg: secfl.ExperimentConfig) -> float:
    """Test MSE of ordinary least squares (with intercept) on the union of the sites' training data."""
    data = load_dataset(cfg.data, cfg.seed, cfg.task)
    idx = np.concatenate(partition(data.y_train, cfg.clients, cfg.partition, cfg.seed))
    design = np.c_[data.x_train[idx].astype(np.float64), np.ones(idx.size)]
    w, *_ = np.linalg.lstsq(design, data.y_train[idx].astype(np.float64), rcond=None)
    pred = np.c_[data.x_test.astype(np.float64), np.ones(len(data.y_test))] @ w
    return float(np.mean((pred - data.y_test.astype(np.float64)) ** 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated (default: all five)")
    ap.add_argument("--rounds", type=int, help="override config.toml's rounds")
    ap.add_argument("--out", type=Path, default=HERE / "runs")
    args = ap.parse_args(argv)

    base = load_config(HERE, rounds=args.rounds or None)
    rows, weights = [], {}
    # one untimed round first, so that no protocol's time includes the one-time start-up (imports, data)
    secfl.Experiment(secfl.ExperimentConfig.from_dict({**base, "protocol": "plaintext", "rounds": 1})).run()
    for protocol in [p.strip() for p in args.protocols.split(",") if p.strip()]:
        cfg = secfl.ExperimentConfig.from_dict({**base, "protocol": protocol})
        start = time.perf_counter()
        result = secfl.Experiment(cfg).run()
        seconds = time.perf_counter() - start
        result.write(args.out / protocol)
        weights[protocol] = np.asarray(result.model_vector, dtype=np.float64)
        last = result.rounds[-1]
        rows.append({"protocol": protocol, "mse": result.final["metrics"]["mse"], "r2": result.final["metrics"]["r2"],
                     "seconds": seconds, "bytes_up_per_client": last.bytes_up_per_client,
                     "client_sizes": result.meta["client_sizes"]})
        print(f"{protocol:15s} test MSE {rows[-1]['mse']:.6f}  R² {rows[-1]['r2']:.4f}  {seconds:6.1f} s", flush=True)

    ref = pooled_least_squares(cfg)
    plain = weights.get("plaintext")
    for r in rows:  # how far each protocol's final model is from the plaintext one
        w = weights[r["protocol"]]
        r["max_abs_diff_vs_plaintext"] = None if plain is None else float(np.max(np.abs(w - plain)))
    diff = {r["protocol"]: "–" if r["max_abs_diff_vs_plaintext"] is None else f"{r['max_abs_diff_vs_plaintext']:.1e}"
            for r in rows}
    lines = [f"Pooled least squares (numpy, union of the sites' {sum(rows[0]['client_sizes'])} training examples):"
             f" test MSE **{ref:.6f}**", "",
             "| protocol | test MSE | × pooled | R² | largest weight difference from plaintext"
             " | bytes up / client / round | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['protocol']} | {r['mse']:.6f} | {r['mse'] / ref:.4f} | {r['r2']:.4f} "
              f"| {diff[r['protocol']]} "
              f"| {r['bytes_up_per_client']:,.0f} | {r['seconds']:.1f} |" for r in rows]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table)
    (args.out / "summary.json").write_text(json.dumps(
        {"pooled_least_squares_mse": ref, "rounds": cfg.rounds, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
