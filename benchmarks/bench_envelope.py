"""What signing every message costs: the same federation with and without signed envelopes.

Across sites every request the server sends is signed with its identity key and every reply
with the answering site's (:mod:`secfl.protocols.envelope`, Ed25519 through pycryptodome). This
runs one experiment per (protocol, number of sites) in one process, every site its own object
(:func:`secfl.runtime.federation.local_federation`), alternately *signed* and *unsigned*
(A B A B ..., ``--repeats`` pairs; ``secagg+check`` is ``secagg`` with its consistency check,
whose cost is the difference between its row and ``secagg``'s), and reports per row: the median
seconds of a round (total and the protocol's phases setup + protect + aggregate + reveal), the
messages of a round, the bytes
per client up and down, and the differences. Training is one epoch of a small MLP on synthetic
data, so the protocol's share of a round is large and the envelope's cost is not hidden.

Usage (writes JSON and a Markdown table to ``--out``, prints the table)::

    python benchmarks/bench_envelope.py                          # 10 and 100 sites
    python benchmarks/bench_envelope.py --sites 10 --repeats 1 --protocols secagg
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secfl.protocols.network import Network  # noqa: E402
from secfl.runtime.config import ExperimentConfig  # noqa: E402
from secfl.runtime.federation import FederationServer, local_federation  # noqa: E402

PROTOCOL_PHASES = ("setup", "protect", "aggregate", "reveal")


def config(protocol: str, sites: int) -> ExperimentConfig:
    opts: dict[str, Any] = {}
    if protocol == "secagg+check":  # secagg with the consistency check (one more exchange)
        protocol, opts = "secagg", {"consistency_check": True}
    if protocol == "ckks-threshold":
        n = min(sites, 5)
        opts = {"quorum": [n // 2 + 1, n]}
    return ExperimentConfig.from_dict({
        "clients": sites, "rounds": 1, "protocol": protocol, "protocol_options": opts, "seed": 0,
        "data": {"name": "synthetic", "synthetic_samples": 40 * sites},
        "train": {"epochs": 1, "batch_size": 32}})


def one_run(cfg: ExperimentConfig, sign: bool) -> dict[str, float]:
    fed = local_federation(cfg, envelopes=sign)
    net = Network()
    server = FederationServer(cfg)
    try:
        t0 = time.perf_counter()
        result = server.run(fed.transport(net), net)
        wall = time.perf_counter() - t0
    finally:
        server.close()
        fed.close()
    rec = result.rounds[-1]
    if rec.dropped:
        raise RuntimeError(f"{cfg.protocol}: sites {rec.dropped} dropped: {rec.dropped_reasons}")
    return {"wall": wall, "total": rec.seconds.get("total", wall),
            "protocol": sum(rec.seconds.get(p, 0.0) for p in PROTOCOL_PHASES),
            "messages": float(net.messages), "up": rec.bytes_up_per_client, "down": rec.bytes_down_per_client}


def row(protocol: str, sites: int, repeats: int) -> dict[str, Any]:
    cfg = config(protocol, sites)
    runs: dict[str, list[dict[str, float]]] = {"signed": [], "unsigned": []}
    one_run(cfg, True)  # warm-up (imports, data, SEAL contexts), not counted
    for _ in range(repeats):
        for mode in ("signed", "unsigned"):
            runs[mode].append(one_run(cfg, mode == "signed"))
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()}
    s, u = med["signed"], med["unsigned"]
    return {"protocol": protocol, "sites": sites, "repeats": repeats, "signed": s, "unsigned": u,
            "extra_seconds_per_round": s["total"] - u["total"],
            "extra_protocol_seconds": s["protocol"] - u["protocol"],
            "extra_bytes_up_per_client": s["up"] - u["up"], "extra_bytes_down_per_client": s["down"] - u["down"],
            "runs": runs}


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| protocol | sites | messages/round | s/round unsigned | s/round signed | + s | protocol s unsigned"
           " | protocol s signed | + B up/client | + B down/client |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['protocol']} | {r['sites']} | error: {r['error']} |||||||| ")
            continue
        s, u = r["signed"], r["unsigned"]
        out.append(f"| {r['protocol']} | {r['sites']} | {s['messages']:.0f} | {u['total']:.3f} | {s['total']:.3f}"
                   f" | {r['extra_seconds_per_round']:+.3f} | {u['protocol']:.3f} | {s['protocol']:.3f}"
                   f" | {r['extra_bytes_up_per_client']:+.0f} | {r['extra_bytes_down_per_client']:+.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--protocols", nargs="+", default=["plaintext", "additive", "secagg", "secagg+check", "ckks",
                                                          "ckks-threshold"])
    ap.add_argument("--repeats", type=int, default=3, help="signed/unsigned pairs per row (medians)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_envelope.json"))
    args = ap.parse_args()
    rows = []
    for sites in args.sites:
        for protocol in args.protocols:
            try:
                rows.append(row(protocol, sites, args.repeats))
            except Exception as exc:  # a failing row is recorded, the benchmark goes on
                rows.append({"protocol": protocol, "sites": sites, "error": f"{type(exc).__name__}: {exc}"})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    md = table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"# Signed envelopes: cost per round\n\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
