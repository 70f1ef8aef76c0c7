"""Benchmark the MPC protocols ``additive`` and ``secagg``: bytes per parameter, client and server seconds.

One simulated round per cell, driven like :func:`secfl.secure_mean` (setup → protect/receive per
client → reveal) over real serialized messages, with updates generated on the fly so that 1000
clients × 10**6 parameters fit in memory. Every figure is a median over ``--repeats`` runs.

Usage::

    python benchmarks/bench_mpc.py --quick       # n ∈ {10, 100}, d = 10**4: a minute or two
    python benchmarks/bench_mpc.py               # n ∈ {10, 100, 1000} × d ∈ {10**4, 10**5, 10**6}
    python benchmarks/bench_mpc.py --headline    # only SecAgg+ 1000 clients × 10**5 × 10 % dropout

Columns: ``up``/``down`` — bytes sent / received per participating client divided by d (every
message: keys, shares, masked vector, unmask traffic, framing); ``client s`` — client-side compute
seconds per client (key generation, sharing, quantization, masking, unmask answers); ``server s``
— server-side seconds for the whole round (all servers together for ``additive``); ``round s`` —
wall seconds of the whole simulated round; ``cpu s`` — CPU seconds of the driving process (the
server's side, and the clients' too when they run in it; with ``processes`` > 1 the clients
compute in worker processes and their seconds are in ``client s``); ``err /
bound`` — the revealed mean's largest error against the float weighted mean, over its documented
bound (must be ≤ 1); ``probe ms`` — :func:`speed_probe` before and after each run, averaged (the
machine's single-core speed at the time: the same code runs up to 2× slower when it is high).
Dropouts: that fraction of clients (every k-th) goes silent after setup and
before its masked input / shares arrive (``--stage`` picks another SecAgg+ stage). Load averages
are recorded: this machine is shared, so compare medians taken under similar load.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe import speed_probe  # noqa: E402

from secfl.crypto.prg import Prg  # noqa: E402
from secfl.errors import SecFLError  # noqa: E402
from secfl.protocols import RoundSpec, make_protocol  # noqa: E402
from secfl.protocols.network import Network, is_client  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HEADLINE = {"protocol": "secagg", "clients": 1000, "dim": 100_000, "dropout": 0.1}


MAX_WEIGHT = 100  # client weights are 1..MAX_WEIGHT


class Updates:
    """Client updates generated on demand: a shared base direction, scaled per client (float32)."""

    def __init__(self, dim: int, seed: int = 7) -> None:
        self.base = (Prg(seed.to_bytes(32, "little")).normal(dim) * 0.05).astype(np.float32)

    def __call__(self, client: int) -> np.ndarray:
        return self.base * np.float32(1.0 + 0.25 * (client % 7) - 0.5)

    @staticmethod
    def weight(client: int) -> float:
        return float(1 + (client * 37) % MAX_WEIGHT)

    def reference(self, included: tuple[int, ...]) -> np.ndarray:
        w = np.asarray([self.weight(c) for c in included])
        s = np.asarray([1.0 + 0.25 * (c % 7) - 0.5 for c in included], dtype=np.float64)
        scale = float((w * s.astype(np.float32).astype(np.float64)).sum() / w.sum())
        return self.base.astype(np.float64) * scale


def dropped_clients(n: int, fraction: float) -> set[int]:
    """Every ``1/fraction``-th client (deterministic, spread over the id range)."""
    if fraction <= 0:
        return set()
    step = max(1, round(1 / fraction))
    return {c for c in range(n) if c % step == step - 1}


def one_round(protocol: str, n: int, d: int, dropout: float, stage: str, options: dict[str, Any]) -> dict[str, Any]:
    updates = Updates(d)
    silent = dropped_clients(n, dropout)
    dropouts: dict[str, frozenset[int]] = {}
    if protocol == "secagg" and silent:  # declared, so the simulation does not precompute their masks
        dropouts = {stage: frozenset(silent)}
    net = Network()
    # the tightest public bound on the weights used (1..100), as the runtime and secure_mean set it
    proto = make_protocol(protocol, **{"max_weight": float(MAX_WEIGHT), **options})
    load0 = os.getloadavg()[0]
    probe = speed_probe()
    t0, c0 = time.perf_counter(), time.process_time()
    protect_s = receive_s = 0.0
    try:
        rnd = proto.open_round(RoundSpec(0, tuple(range(n)), d, seed=b"\x01" * 32, dropouts=dropouts), net)
        t = time.perf_counter()
        rnd.setup()
        setup_s = time.perf_counter() - t
        for c in range(n):
            if c in silent and not dropouts:
                continue
            t = time.perf_counter()
            try:
                up = rnd.protect(c, updates(c), updates.weight(c))
            except SecFLError:
                continue
            finally:
                protect_s += time.perf_counter() - t
            t = time.perf_counter()
            rnd.receive(c, up)
            receive_s += time.perf_counter() - t
        t = time.perf_counter()
        out = rnd.reveal()
        reveal_s = time.perf_counter() - t
    finally:
        proto.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    inner = rnd.seconds
    clients = [c for c in range(n) if net.sent.get(c, 0) or net.received.get(c, 0)]
    up_b = [net.sent.get(c, 0) for c in out.included]
    down_b = [net.received.get(c, 0) for c in out.included]
    server_to_server = sum(v for k, v in net.sent.items() if not is_client(k)) - sum(
        net.received.get(c, 0) for c in clients
    )
    err = float(np.abs(out.mean - updates.reference(out.included)).max())
    bound = float(getattr(rnd, "error_bound", float("nan")))
    return {
        "protocol": protocol,
        "clients": n,
        "dim": d,
        "dropout": dropout,
        "stage": stage if protocol == "secagg" else "upload",
        "options": options,
        "processes": getattr(rnd, "processes", 1),
        "included": len(out.included),
        "up_bytes_per_param": statistics.mean(up_b) / d,
        "down_bytes_per_param": statistics.mean(down_b) / d,
        "server_to_server_bytes": max(0, server_to_server),
        "client_seconds_per_client": (inner["client"] + protect_s) / max(1, len(clients)),
        "client_seconds_total": inner["client"] + protect_s,
        "server_seconds": inner["server"] + receive_s,
        "phase_seconds": {"setup": setup_s, "protect": protect_s, "aggregate": receive_s, "reveal": reveal_s},
        "round_seconds": wall,
        "cpu_seconds": cpu,
        "max_error": err,
        "error_bound": bound,
        "loadavg_1m": [load0, os.getloadavg()[0]],
        "speed_probe_ms": [probe, speed_probe()],
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[-1])
    for key in ("up_bytes_per_param", "down_bytes_per_param", "client_seconds_per_client", "client_seconds_total",
                "server_seconds", "round_seconds", "cpu_seconds", "max_error"):
        out[key] = statistics.median(r[key] for r in runs)
    out["phase_seconds"] = {k: statistics.median(r["phase_seconds"][k] for r in runs) for k in runs[0]["phase_seconds"]}
    out["round_seconds_all"] = [r["round_seconds"] for r in runs]
    out["loadavg_1m"] = [r["loadavg_1m"] for r in runs]
    out["speed_probe_ms"] = [r["speed_probe_ms"] for r in runs]
    out["repeats"] = len(runs)
    return out


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    when = _dt.datetime.now().isoformat(timespec="seconds")
    head = (f"# {title}\n\n{when} · {platform.processor() or platform.machine()}"
            f" · {os.cpu_count()} CPUs · Python {platform.python_version()} · medians\n\n"
            "| protocol | n | d | dropout | up B/param | down B/param | client s/client | server s | round s | cpu s "
            "| err/bound | load | probe ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
    lines = []
    for r in rows:
        shown = {**r["options"], **({"processes": r["processes"]} if r.get("processes", 1) > 1 else {})}
        opts = ",".join(f"{k}={v}" for k, v in shown.items())
        name = r["protocol"] + (f" ({opts})" if opts else "")
        loads = "/".join(f"{a[0]:.1f}" for a in r["loadavg_1m"])
        probes = "/".join(f"{statistics.mean(p):.0f}" for p in r.get("speed_probe_ms", [])) or "–"
        lines.append(
            f"| {name} | {r['clients']} | {r['dim']:.0e} | {r['dropout']:.0%} | {r['up_bytes_per_param']:.3f} | "
            f"{r['down_bytes_per_param']:.3f} | {r['client_seconds_per_client']:.4f} | {r['server_seconds']:.2f} | "
            f"{r['round_seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['max_error'] / r['error_bound']:.3f} | {loads} "
            f"| {probes} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n ∈ {10, 100}, d = 10**4")
    ap.add_argument("--headline", action="store_true", help="only SecAgg+ 1000 × 10**5 × 10%% dropout")
    ap.add_argument("--protocols", default="additive,secagg")
    ap.add_argument("--clients", default=None, help="comma-separated, default 10,100,1000")
    ap.add_argument("--dims", default=None, help="comma-separated, default 10000,100000,1000000")
    ap.add_argument("--dropouts", default="0,0.1")
    ap.add_argument("--stage", default="masked_input", help="SecAgg+ stage the dropouts happen before")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--heavy-repeats", type=int, default=1, help="repeats for grid cells with n·d ≥ 10**8")
    ap.add_argument("--processes", type=int, default=None,
                    help="secagg simulation processes (default: automatic, one per core from 100 clients)")
    ap.add_argument("--servers", type=int, default=2, help="additive servers")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default=None, help="file name stem (default bench_mpc / bench_mpc_headline)")
    args = ap.parse_args(argv)

    if args.headline:
        cells = [(HEADLINE["protocol"], HEADLINE["clients"], HEADLINE["dim"], HEADLINE["dropout"])]
        stem = args.tag or "bench_mpc_headline"
    else:
        clients = [10, 100] if args.quick else [10, 100, 1000]
        dims = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
        if args.clients:
            clients = [int(v) for v in args.clients.split(",")]
        if args.dims:
            dims = [int(float(v)) for v in args.dims.split(",")]
        drops = [float(v) for v in args.dropouts.split(",")]
        cells = [(p, n, d, q) for p in args.protocols.split(",") for d in dims for n in clients for q in drops]
        stem = args.tag or ("bench_mpc_quick" if args.quick else "bench_mpc")
    rows = []
    for protocol, n, d, q in cells:
        options: dict[str, Any] = {"servers": args.servers}
        if protocol == "secagg":
            options = {} if args.processes is None else {"processes": args.processes}
        reps = args.heavy_repeats if n * d >= 10**8 and not args.headline else args.repeats
        runs = [one_round(protocol, n, d, q, args.stage, options) for _ in range(reps)]
        row = median_of(runs)
        rows.append(row)
        print(markdown([row], "").splitlines()[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"when": _dt.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "argv": sys.argv[1:] if argv is None else argv}
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    title = "SecAgg+ headline: 1000 clients × 100,000 parameters × 10 % dropout" if args.headline else "MPC protocols"
    (out / f"{stem}.md").write_text(markdown(rows, title))
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
