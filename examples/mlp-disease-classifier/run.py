"""A 64-64-2 MLP disease classifier (breast cancer, malignant vs benign), Adam, 10 clinics,
additive secret sharing.

    python examples/mlp-disease-classifier/run.py [--protocol P] [--rounds N] [--out DIR]

Runs ``config.toml`` through the public API (``secfl.Experiment``), prints each round, and
writes ``results.json``, ``rounds.csv``, the model and ``summary.json`` to ``--out`` (default
``runs/<protocol>`` next to this file); then reloads the saved model with ``secfl.load_model``
and classifies two raw patient records with it (the first malignant and the first benign one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import secfl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import load_config, run_timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", help="override config.toml's protocol (additive)")
    ap.add_argument("--rounds", type=int, help="override config.toml's rounds (10)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    values = load_config(HERE, protocol=args.protocol, rounds=args.rounds)
    cfg = secfl.ExperimentConfig.from_dict(values)
    out = args.out or HERE / "runs" / cfg.protocol

    def show(rec):
        print(f"round {rec.round:2d}  accuracy {rec.accuracy:.4f}  loss {rec.loss:.4f}"
              f"  up {rec.bytes_up_per_client:,.0f} B/client  {rec.seconds['total']:.2f} s", flush=True)

    result, seconds = run_timed(cfg, out, show)
    model = result.meta["model"]
    print(f"\n{cfg.protocol}: test accuracy {result.final['accuracy']:.4f} after {len(result.rounds)} rounds,"
          f" {seconds:.1f} s; model {model['spec']} with {model['parameters']:,} parameters")

    # The saved model takes raw (unstandardized) records: classify one patient of each class.
    net = secfl.load_model(out)
    bunch = load_breast_cancer()
    idx = [int(np.flatnonzero(bunch.target == c)[0]) for c in (0, 1)]
    with torch.no_grad():
        pred = net(torch.as_tensor(bunch.data[idx], dtype=torch.float32)).argmax(1).tolist()
    print("saved model on raw records:", ", ".join(
        f"#{i} predicted {bunch.target_names[p]} (true {bunch.target_names[bunch.target[i]]})"
        for i, p in zip(idx, pred, strict=True)))
    summary = {"protocol": cfg.protocol, "rounds": len(result.rounds), "accuracy": result.final["accuracy"],
               "loss": result.final["loss"], "seconds": seconds, "parameters": model["parameters"],
               "bytes_up_per_client": result.rounds[-1].bytes_up_per_client, "records": idx, "predicted": pred,
               "true": [int(bunch.target[i]) for i in idx]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
