"""Train a CNN until convergence on a synthetic two-class chest-image task (NOT real X-rays),
four hospitals, SecAgg+; report the round it stopped at and why.

    python examples/lung-cnn-until-convergence/run.py [--protocol P] [--rounds N]
        [--patience P] [--min-delta D] [--target-accuracy A] [--out DIR]

Makes ``data/chest32.npz`` first if it is missing (make_data.py, offline), runs ``config.toml``
through the public API (``secfl.Experiment``): ``[stop]`` ends the run when the test loss stops
improving, ``rounds`` is the upper bound. ``--target-accuracy A`` also stops it from Python, as
soon as the test accuracy reaches A, by raising ``secfl.StopRun`` in the per-round callback.
Writes ``results.json`` (``final.stopped_at``, ``final.stop_reason``), ``rounds.csv``, the model
and ``summary.json`` to ``--out`` (default ``runs/<protocol>`` next to this file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import secfl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import REPO, load_config, run_timed  # noqa: E402
from make_data import DEFAULT as DATA  # noqa: E402
from make_data import make  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", help="override config.toml's protocol (secagg)")
    ap.add_argument("--rounds", type=int, help="override the upper bound on rounds (40)")
    ap.add_argument("--patience", type=int, help="override [stop] patience (3)")
    ap.add_argument("--min-delta", type=float, help="override [stop] min_delta (0.002)")
    ap.add_argument("--target-accuracy", type=float, help="also stop once the test accuracy reaches this")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    if not DATA.exists():
        print(f"making {make(DATA).relative_to(REPO)}")
    values = load_config(HERE, protocol=args.protocol, rounds=args.rounds)
    for key, value in (("patience", args.patience), ("min_delta", args.min_delta)):
        if value is not None:
            values["stop"][key] = value
    cfg = secfl.ExperimentConfig.from_dict(values)
    out = args.out or HERE / "runs" / cfg.protocol

    def show(rec):
        print(f"round {rec.round:2d}  accuracy {rec.accuracy:.4f}  loss {rec.loss:.4f}"
              f"  {rec.seconds['total']:.1f} s", flush=True)
        if args.target_accuracy is not None and rec.accuracy >= args.target_accuracy:
            raise secfl.StopRun(f"test accuracy {rec.accuracy:.4f} reached the target {args.target_accuracy:g}")

    result, seconds = run_timed(cfg, out, show)
    final = result.final
    best = min(result.rounds, key=lambda r: r.loss)
    where = f"stopped after round {final['stopped_at']}" if final["stopped_at"] else "did not stop early"
    print(f"\n{cfg.protocol}: {where} of at most {cfg.rounds}: {final['stop_reason']}")
    print(f"final test accuracy {final['accuracy']:.4f}, loss {final['loss']:.4f}; lowest loss {best.loss:.4f}"
          f" at round {best.round} (accuracy {best.accuracy:.4f}); {seconds:.0f} s")
    summary = {"protocol": cfg.protocol, "max_rounds": cfg.rounds, "rounds": len(result.rounds),
               "stopped_at": final["stopped_at"], "stop_reason": final["stop_reason"],
               "accuracy": final["accuracy"], "loss": final["loss"],
               "best_round": best.round, "best_loss": best.loss, "best_accuracy": best.accuracy,
               "seconds": seconds, "parameters": result.meta["model"]["parameters"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
