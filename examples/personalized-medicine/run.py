"""Personalized medicine: a 784-64-10 MLP trained across five label-skewed sites with Adam 0.01
and client-level DP under ckks-threshold, then fine-tuned at each site; each site's accuracy on
its own held-out patients before and after.

    python examples/personalized-medicine/run.py [--protocol P] [--epsilon E] [--clip C] [--rounds N] [--out DIR]

Makes ``data/digits28.npz`` first if it is missing (``examples/digits28.py``: scikit-learn's bundled digits
upscaled to 28×28, offline), runs ``config.toml`` through the public API (``secfl.Experiment``)
and writes ``results.json`` (per-site figures in ``final.personalized``), ``rounds.csv``, the
global model, each site's fine-tuned model and ``summary.json`` to ``--out`` (default
``runs/<protocol>-eps<E>-clip<C>`` next to this file). ``--epsilon 0`` turns DP off (the clip
stays unless ``--clip 0``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import secfl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import REPO, load_config, run_timed  # noqa: E402
from digits28 import make  # noqa: E402

DATA = HERE / "data" / "digits28.npz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", help="override config.toml's protocol (ckks-threshold)")
    ap.add_argument("--epsilon", type=float, help="override [dp] epsilon (0: no DP)")
    ap.add_argument("--clip", type=float, help="override config.toml's clip (0: no clipping; DP needs one)")
    ap.add_argument("--rounds", type=int, help="override config.toml's rounds (10)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    if not DATA.exists():
        print(f"making {make(DATA).relative_to(REPO)}")
    values = load_config(HERE, protocol=args.protocol, rounds=args.rounds, clip=args.clip)
    values["personalize"]["save_models"] = True
    if args.epsilon is not None:
        values["dp"]["epsilon"] = args.epsilon
    cfg = secfl.ExperimentConfig.from_dict(values)
    eps = cfg.dp.epsilon if cfg.dp.enabled else 0
    out = args.out or HERE / "runs" / f"{cfg.protocol}-eps{eps:g}-clip{cfg.clip:g}"

    def show(rec):
        e = "" if rec.epsilon is None else f"  ε so far {rec.epsilon:.2f}"
        print(f"round {rec.round:2d}  accuracy {rec.accuracy:.4f}  loss {rec.loss:.4f}"
              f"  {rec.seconds['total']:.1f} s{e}", flush=True)

    result, seconds = run_timed(cfg, out, show)
    pers = result.final["personalized"]
    print(f"\nglobal model: test accuracy {result.final['accuracy']:.4f} ({cfg.protocol}, "
          f"{'no DP' if not eps else f'ε = {eps:g}, δ = {cfg.dp.delta:g}'}), {seconds:.0f} s")
    print("site  train  held-out  global model  fine-tuned")
    for k, site in enumerate(pers["sites"]):
        print(f"{k:4d}  {site['train']:5d}  {site['test']:8d}  {site['before']['accuracy']:12.4f}"
              f"  {site['after']['accuracy']:.4f}")
    print(f"mean                  {pers['mean_before']['accuracy']:12.4f}  {pers['mean_after']['accuracy']:.4f}")
    summary = {"protocol": cfg.protocol, "epsilon": eps or None, "rounds": len(result.rounds),
               "accuracy": result.final["accuracy"], "seconds": seconds,
               "parameters": result.meta["model"]["parameters"],
               "personalized": {"before": pers["mean_before"]["accuracy"], "after": pers["mean_after"]["accuracy"],
                                "sites": [{"train": s["train"], "test": s["test"],
                                           "before": s["before"]["accuracy"], "after": s["after"]["accuracy"]}
                                          for s in pers["sites"]]}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}  (a site's own model: secfl.load_model(out, site=K))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
