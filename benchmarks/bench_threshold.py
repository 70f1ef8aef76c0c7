"""Threshold-CKKS benchmark, with ``ckks`` and ``plaintext`` beside it in the same run.

Through the real ``ckks-threshold`` protocol objects and real serialized messages it measures:

* **key generation** for n = 3, 5, 10 members (t = n//2 + 1): the whole exchange of the spec's
  messages 0a–0e (X25519 keys, CRP, SEAL key shares, Shamir sharing over every ciphertext prime,
  AES-GCM relay, collective key), all parties simulated one after the other in this process —
  wall seconds and bytes on the wire;
* per vector length (10^4, 10^5, 10^6 parameters) and K clients (default 10), t = 3 of n = 5:
  - **client** ``protect`` (SEAL CKKSEncoder + Encryptor under the collective key, bit packing,
    framing) — seconds, parameters per second, bytes per parameter of the ``THR_UPDATE`` frame;
  - **server** ``receive`` of the K uploads (parse, range checks, add);
  - **member** handling of ``THR_ACTIVE_SET`` (parse, digests, refusal checks, flooded partial
    decryption, packing, framing) — seconds per member and bytes of its ``THR_PARTIAL_DECRYPTION``;
    the target is member time <= client encrypt time for the same vector;
  - **combine** (add c_0 and the t partials, decode with SEAL's CKKSEncoder) and the whole reveal;
  - the measured error of the revealed mean against its stated bound;
* beside it, ``ckks`` (default preset) client protect time and bytes per parameter, and the
  end-to-end ``secure_mean`` round time of ``plaintext`` / ``ckks`` / ``ckks-threshold`` (the
  threshold round includes its key generation: the first round of a run does);
* optionally (``--accuracy``) final accuracy of ``secfl run`` on digits/cnn under plaintext and
  ckks-threshold at the same seed.

Timings are medians over ``--repeats`` (wall clock, and thread CPU time beside it: the machine is
shared). Results: ``benchmarks/results/threshold-<timestamp>.{json,md}``.

Usage: ``python benchmarks/bench_threshold.py [--quick] [--repeats R] [--sizes 10000,100000]
[--clients 10] [--members 3,5,10] [--accuracy]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import secfl  # noqa: E402
from secfl.crypto.threshold import ThresholdParams  # noqa: E402
from secfl.protocols import RoundSpec, make_protocol  # noqa: E402
from secfl.protocols.base import Upload  # noqa: E402
from secfl.protocols.ckks_threshold import ThrUpdate  # noqa: E402
from secfl.protocols.network import Network, server_id  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(median wall seconds, median thread-CPU seconds, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        out = fn()
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), statistics.median(cpus), out


def bench_keygen(members: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in members:
        t = n // 2 + 1
        walls, cpus, sent = [], [], 0
        for _ in range(repeats):
            proto = make_protocol("ckks-threshold", quorum=(t, n))
            net = Network()
            w0, c0 = time.perf_counter(), time.thread_time()
            proto.keygen(0, net)
            cpus.append(time.thread_time() - c0)
            walls.append(time.perf_counter() - w0)
            sent = sum(net.sent.values())
            member_sent = [net.sent[m.party] for m in proto.members]
        row = {"members": n, "threshold": t, "keygen_s": statistics.median(walls),
               "keygen_cpu_s": statistics.median(cpus), "keygen_per_member_s": statistics.median(walls) / n,
               "bytes_total": sent, "bytes_sent_per_member": int(statistics.median(member_sent))}
        rows.append(row)
        print(f"keygen n={n:>2} t={t}: {row['keygen_s']:.2f} s (all parties), {sent / 1e6:.1f} MB on the wire,"
              f" {row['bytes_sent_per_member'] / 1e6:.2f} MB sent per member", flush=True)
    return rows


def bench_size(dim: int, clients: int, repeats: int, quorum: tuple[int, int]) -> dict[str, Any]:
    t, n = quorum
    proto = make_protocol("ckks-threshold", quorum=quorum, clip_range=1.0, max_weight=1000.0)
    params: ThresholdParams = proto.params
    net = Network()
    rng = np.random.default_rng(dim)
    xs = rng.uniform(-1.0, 1.0, size=(3, dim))
    weights = np.array([300.0, 500.0, 700.0])
    # key generation (round 0's setup) and three distinct uploads reused by clients 1..K-1
    r0 = proto.open_round(RoundSpec(0, tuple(range(clients)), dim), net)
    r0.setup()
    distinct = [ThrUpdate.from_bytes(r0.protect(i, xs[i], weights[i]).parts[0][1]) for i in range(3)]
    enc_walls, enc_cpus, agg_walls, agg_cpus, reveal_walls = [], [], [], [], []
    member_walls, combine_walls, errors, bounds = [], [], [], []
    upload_bytes = partial_bytes = 0
    for rnd in range(1, repeats + 1):
        # client 0 encrypts afresh every round: a new aggregate (members never decrypt one twice)
        # and one timing sample of a client's whole protect()
        r = proto.open_round(RoundSpec(rnd, tuple(range(clients)), dim), net)
        r.setup()
        x0 = rng.uniform(-1.0, 1.0, dim)
        w0, c0 = time.perf_counter(), time.thread_time()
        up0 = r.protect(0, x0, 400.0)
        enc_cpus.append(time.thread_time() - c0)
        enc_walls.append(time.perf_counter() - w0)
        upload_bytes = len(up0.parts[0][1])
        uploads = [up0] + [Upload(((server_id(0), ThrUpdate(rnd, c, d.key_id, d.count, d.ciphertexts).to_bytes()),))
                           for c in range(1, clients) for d in [distinct[(c - 1) % 3]]]
        w0, c0 = time.perf_counter(), time.thread_time()
        for c, up in enumerate(uploads):
            r.receive(c, up)
        agg_cpus.append(time.thread_time() - c0)
        agg_walls.append(time.perf_counter() - w0)
        w0 = time.perf_counter()
        out = r.reveal()
        reveal_walls.append(time.perf_counter() - w0)
        member_walls.extend(r.timings["member_s"].values())
        combine_walls.append(r.timings["combine"])
        partial_bytes = r.timings["partial_bytes"]
        counts = [(c - 1) % 3 for c in range(1, clients)]
        num = 400.0 * x0 + sum(weights[i] * xs[i] for i in counts)
        den = 400.0 + sum(weights[i] for i in counts)
        errors.append(float(np.max(np.abs(out.mean - num / den))))
        bounds.append(float(r.error_bound or 0.0))
    enc = statistics.median(enc_walls)
    member = statistics.median(member_walls)
    row = {
        "dim": dim, "clients": clients, "quorum": list(quorum), "params": params.describe(),
        "security_bits": params.security_level, "ciphertexts": params.ciphertexts_for(dim + 1),
        "upload_bytes": upload_bytes, "bytes_per_param": upload_bytes / dim, "ratio_to_float32": upload_bytes / dim / 4,
        "encrypt_s": enc, "encrypt_cpu_s": statistics.median(enc_cpus), "encrypt_params_per_s": dim / enc,
        f"aggregate_{clients}_s": statistics.median(agg_walls),
        f"aggregate_{clients}_cpu_s": statistics.median(agg_cpus),
        "member_partial_s": member, "member_partial_max_s": max(member_walls),
        "member_to_client_ratio": member / enc,
        "partial_bytes": partial_bytes, "partial_bytes_per_param": partial_bytes / dim,
        "combine_s": statistics.median(combine_walls), "reveal_s": statistics.median(reveal_walls),
        "max_error": max(errors), "error_bound": min(bounds),
        "flooding_sigma_log2": float(np.log2(params.flooding_sigma(clients, n))),
        "keygen_s": proto.keygen_seconds,
    }
    print(f"threshold dim={dim:>8}: {row['bytes_per_param']:.2f} B/param, client protect {enc:.3f} s"
          f" ({dim / enc / 1e6:.2f} M/s), member partial {member:.3f} s (ratio {member / enc:.2f},"
          f" {partial_bytes / 1e6:.2f} MB), combine {row['combine_s']:.3f} s, aggregate {clients}:"
          f" {row[f'aggregate_{clients}_s']:.3f} s, error {row['max_error']:.2e} <= {row['error_bound']:.2e}",
          flush=True)
    return row


def bench_ckks_beside(dim: int, repeats: int) -> dict[str, Any]:
    """The ``ckks`` protocol's client protect (default preset) on the same vector length."""
    proto = make_protocol("ckks", clip_range=1.0)
    try:
        r = proto.open_round(RoundSpec(0, (0,), dim), Network())
        r.setup()
        x = np.random.default_rng(dim).uniform(-1.0, 1.0, dim)
        r.protect(0, x, 100.0)  # warm-up
        wall, cpu, up = _timed(lambda: r.protect(0, x, 100.0), repeats)
        nbytes = len(up.parts[0][1])
    finally:
        proto.close()
    row = {"dim": dim, "preset": getattr(proto.options, "preset", "?").value, "encrypt_s": wall, "encrypt_cpu_s": cpu,
           "encrypt_params_per_s": dim / wall, "bytes_per_param": nbytes / dim}
    print(f"     ckks dim={dim:>8}: {row['bytes_per_param']:.2f} B/param, client protect {wall:.3f} s", flush=True)
    return row


def bench_round_overhead(dim: int, clients: int) -> dict[str, Any]:
    """One whole ``secure_mean`` round (setup, K clients, aggregation, reveal) per protocol."""
    rng = np.random.default_rng(dim + 1)
    x = rng.uniform(-1.0, 1.0, size=(clients, dim))
    w = rng.integers(100, 1000, size=clients).astype(np.float64)
    row: dict[str, Any] = {"dim": dim, "clients": clients}
    for name, opts in (("plaintext", {}), ("ckks", {"clip_range": 1.0}),
                       ("ckks-threshold", {"clip_range": 1.0, "quorum": (3, 5), "max_weight": 1000.0})):
        res = secfl.secure_mean(x, w, protocol=name, **opts)
        row[name] = {"total_s": res.seconds["total"], "setup_s": res.seconds["setup"],
                     "bytes_up": res.bytes_up, "bytes_down": res.bytes_down}
    base = row["plaintext"]["total_s"]
    for name in ("ckks", "ckks-threshold"):
        row[name]["overhead_vs_plaintext"] = row[name]["total_s"] / base
        row[name]["overhead_without_setup"] = (row[name]["total_s"] - row[name]["setup_s"]) / base
    print(f"   rounds dim={dim:>8} K={clients}: plaintext {base:.2f} s, ckks {row['ckks']['total_s']:.2f} s,"
          f" ckks-threshold {row['ckks-threshold']['total_s']:.2f} s (setup incl. keygen"
          f" {row['ckks-threshold']['setup_s']:.2f} s)", flush=True)
    return row


def bench_accuracy(rounds: int) -> dict[str, Any]:
    from secfl.cli import main

    out: dict[str, Any] = {"dataset": "digits", "model": "cnn", "clients": 10, "rounds": rounds, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for proto in ("plaintext", "ckks-threshold"):
            t0 = time.perf_counter()
            code = main(["run", "--protocol", proto, "--dataset", "digits", "--model", "cnn", "--clients", "10",
                         "--rounds", str(rounds), "--seed", "0", "--quiet", "--out", os.path.join(tmp, proto)])
            res = json.loads(Path(tmp, proto, "results.json").read_text())
            out[proto] = {"exit": code, "accuracy": res["final"]["accuracy"], "seconds": time.perf_counter() - t0}
    out["difference_pp"] = 100.0 * (out["ckks-threshold"]["accuracy"] - out["plaintext"]["accuracy"])
    print(f" accuracy digits/cnn {rounds} rounds: plaintext {out['plaintext']['accuracy']:.4f},"
          f" ckks-threshold {out['ckks-threshold']['accuracy']:.4f} ({out['difference_pp']:+.2f} pp)", flush=True)
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [f"# ckks-threshold benchmark ({m['timestamp']})", "",
             f"Machine: {m['machine']}, {m['cpus']} CPUs (shared; load average {m['load_at_start']:.2f} at start,"
             f" {m['load_at_end']:.2f} at end). Medians of {m['repeats']} runs (wall clock).", "",
             "## Key generation (all parties, simulated sequentially; t = n//2 + 1, N = 8192)", "",
             "| n | t | seconds (wall) | seconds (thread CPU) | MB on the wire | MB sent per member |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in res["keygen"]:
        lines.append(f"| {r['members']} | {r['threshold']} | {r['keygen_s']:.2f} | {r['keygen_cpu_s']:.2f} |"
                     f" {r['bytes_total'] / 1e6:.1f} | {r['bytes_sent_per_member'] / 1e6:.2f} |")
    k = res["sizes"][0]["clients"] if res["sizes"] else 0
    desc = res["sizes"][0]["params"] if res["sizes"] else ""
    lines += ["", f"## Per round, t = 3 of n = 5, K = {k} clients (`{desc}`)", "",
              "| params | B/param (client upload) | client protect s | member partial decryption s | member / client"
              " | partial MB per member | combine + decode s | server aggregate s | whole reveal s | max error"
              " | stated bound |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["sizes"]:
        lines.append(f"| {r['dim']:,} | {r['bytes_per_param']:.2f} | {r['encrypt_s']:.3f} | {r['member_partial_s']:.3f}"
                     f" | {r['member_to_client_ratio']:.2f} | {r['partial_bytes'] / 1e6:.2f} | {r['combine_s']:.3f}"
                     f" | {r[f'aggregate_{k}_s']:.3f} | {r['reveal_s']:.3f} | {r['max_error']:.1e}"
                     f" | {r['error_bound']:.1e} |")
    if res.get("ckks"):
        lines += ["", "## Beside it: `ckks` (one shared key; default preset)", "",
                  "| params | preset | B/param | client protect s |", "|---:|---|---:|---:|"]
        for r in res["ckks"]:
            lines.append(f"| {r['dim']:,} | {r['preset']} | {r['bytes_per_param']:.2f} | {r['encrypt_s']:.3f} |")
    if res.get("rounds"):
        lines += ["", "## Whole `secure_mean` round (one run each; the threshold round includes key generation)", "",
                  "| params | K | plaintext s | ckks s (× plaintext) | ckks-threshold s (× plaintext) |"
                  " ckks-threshold without setup (× plaintext) |", "|---:|---:|---:|---:|---:|---:|"]
        for r in res["rounds"]:
            c, t = r["ckks"], r["ckks-threshold"]
            lines.append(f"| {r['dim']:,} | {r['clients']} | {r['plaintext']['total_s']:.3f} | {c['total_s']:.2f}"
                         f" ({c['overhead_vs_plaintext']:.0f}×) | {t['total_s']:.2f}"
                         f" ({t['overhead_vs_plaintext']:.0f}×)"
                         f" | {t['overhead_without_setup']:.0f}× |")
    if res.get("accuracy"):
        a = res["accuracy"]
        lines += ["", "## Accuracy (digits / cnn, 10 clients, same seed)", "",
                  f"plaintext {a['plaintext']['accuracy']:.4f}, ckks-threshold {a['ckks-threshold']['accuracy']:.4f}"
                  f" ({a['difference_pp']:+.2f} percentage points) after {a['rounds']} rounds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^4 and 10^5 parameters, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="comma-separated vector lengths")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--members", default="3,5,10")
    ap.add_argument("--no-ckks", action="store_true", help="skip the ckks / plaintext comparison rows")
    ap.add_argument("--accuracy", action="store_true", help="also train digits/cnn under plaintext and ckks-threshold")
    ap.add_argument("--accuracy-rounds", type=int, default=20)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    repeats = args.repeats or (3 if args.quick else 5)
    members = [int(v) for v in args.members.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    res: dict[str, Any] = {"meta": {
        "timestamp": stamp, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__, "repeats": repeats,
        "load_at_start": os.getloadavg()[0], "secfl_version": secfl.__version__}}
    res["keygen"] = bench_keygen(members, repeats)
    res["sizes"] = [bench_size(d, args.clients, repeats if d < 1_000_000 else max(3, repeats // 2), (3, 5))
                    for d in sizes]
    if not args.no_ckks:
        res["ckks"] = [bench_ckks_beside(d, repeats) for d in sizes]
        res["rounds"] = [bench_round_overhead(d, args.clients) for d in sizes]
    if args.accuracy:
        res["accuracy"] = bench_accuracy(args.accuracy_rounds)
    res["meta"]["load_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"threshold-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
