"""CKKS aggregation benchmark: every preset side by side, plus TenSEAL's vector API as deployed.

For each preset and vector length (10^4, 10^5, 10^6 parameters) it measures, through the real
``ckks`` protocol objects and real serialized messages:

* client encrypt + serialize (``protect``: validation, SEAL's encoder and symmetric encryption
  under the clients' shared secret key,
  reading SEAL's saved ciphertexts, bit packing, framing with CRC) -- parameters per second on
  one core (one process), and with ``workers=2`` (this process and one pool process);
* the SEAL floor: SEAL's ``CKKSEncoder.encode`` + ``Encryptor.encrypt_symmetric`` alone for the same vector
  (Python list conversion included, nothing saved) -- what no serialization could beat;
* bytes per parameter of the whole ``CKKS_UPDATE`` frame (framing included) and the ratio to
  float32;
* server aggregation -- total time to parse, validate and fold in the uploads of 10 and of
  100 clients (``receive``; seeded uploads: SEAL loads each ciphertext, regenerating ``c1``);

Uploads are seeded (``ckks`` default: ``c0`` plus SEAL's 64-byte seed) unless ``--upload full``.
* decryption -- the key holder's parse + decrypt + decode of the aggregate, and the whole
  ``reveal`` (server serializes the aggregate, key holder decrypts).

Reference row ``tenseal-vector``: the common HE-FL implementation (TenSEAL ``ckks_vector``,
N=8192, primes [60, 40, 40], scale 2^40, one real per slot, public-key encryption, SEAL's own
serialization; what NVIDIA FLARE ships), timed the same way but without secfl framing.

Timings are medians over ``--repeats`` runs, wall clock (``perf_counter``) and, beside it, CPU
time of this thread (``thread_time``) which is less disturbed by other processes on a shared
machine. Results go to ``benchmarks/results/ckks-<timestamp>.{json,md}``.

Usage: ``python benchmarks/bench_ckks.py [--quick] [--repeats R] [--sizes 10000,100000]
[--presets compact,wide] [--no-tenseal] [--full] [--workers 2] [--wait-for-load 1.0]``
(``--wait-for-load``: on a shared machine, start each preset only once the load has dropped)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from secfl.crypto import seal_bridge  # noqa: E402
from secfl.crypto.ckks import CkksParams, CkksPreset, CkksSecretContext  # noqa: E402
from secfl.protocols import RoundSpec, make_protocol  # noqa: E402
from secfl.protocols.base import Upload  # noqa: E402
from secfl.protocols.ckks import CkksUpdate  # noqa: E402
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


def _time_decrypt(proto: Any, rnd: Any, dim: int, repeats: int) -> tuple[float, float]:
    """The key holder's parse + decrypt + decode of the round's aggregate."""
    holder = proto._holder
    blob = rnd._acc.result().to_bytes()
    wall, cpu, _ = _timed(lambda: holder.decrypt(holder.public().ciphertexts_from_bytes(blob), dim + 1), repeats)
    return wall, cpu


def _seal_floor(holder: CkksSecretContext, x: np.ndarray) -> Callable[[], None]:
    """SEAL's encode + symmetric encrypt of ``x`` alone (no serialization), under the holder's
    secret key (which every ``ckks`` client holds) loaded into SEAL objects built here."""
    import tenseal.sealapi as sealapi

    p = holder.params
    ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
    pk = seal_bridge.load_seal_object(sealapi.PublicKey(), ctx, holder.seal_public_key().to_bytes())
    sk = seal_bridge.load_seal_object(sealapi.SecretKey(), ctx, holder.seal_secret_key().to_bytes())
    encryptor, encoder = sealapi.Encryptor(ctx, pk), sealapi.CKKSEncoder(ctx)
    encryptor.set_secret_key(sk)
    padded = np.zeros(p.ciphertexts_for(x.size) * p.values_per_ciphertext)
    padded[: x.size] = x
    rows = (padded.view(np.complex128) if p.complex_packing else padded).reshape(-1, p.slots)

    def run() -> None:
        pt, ct = sealapi.Plaintext(), sealapi.Ciphertext()
        for row in rows:
            encoder.encode(row.tolist(), p.scale, pt)
            encryptor.encrypt_symmetric(pt, ct)

    return run


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Each function once per repeat, in turn, so that all of them see the same machine load:
    name -> (wall seconds, thread-CPU seconds) per repeat."""
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            out[name][1].append(time.thread_time() - c0)
            out[name][0].append(time.perf_counter() - w0)
    return out


def bench_preset(preset: CkksPreset, sizes: list[int], repeats: int, clients: tuple[int, ...],
                 workers: int = 2, upload_form: str = "seeded") -> list[dict[str, Any]]:
    rows = []
    params = CkksParams.from_preset(preset)
    for dim in sizes:
        proto = make_protocol("ckks", preset=preset.value, clip_range=1.0, upload=upload_form)
        net = Network()
        rng = np.random.default_rng(dim)
        rnd_no = 0
        top = max(clients)
        rnd = proto.open_round(RoundSpec(rnd_no, tuple(range(top)), dim), net)
        rnd.setup()  # keys + provisioning once; later rounds reuse them
        x = rng.uniform(-1.0, 1.0, dim)
        upload = rnd.protect(0, x, 100.0)  # warm-up: SEAL's encoder and encryptor are built lazily
        fns: dict[str, Callable[[], Any]] = {
            "one": lambda: rnd.protect(0, x, 100.0),  # noqa: B023
            "floor": _seal_floor(cast(Any, proto)._holder, x),
        }
        pool_proto = None
        if workers > 1:
            pool_proto = make_protocol("ckks", preset=preset.value, clip_range=1.0, workers=workers,
                                       upload=upload_form)
            pool_rnd = pool_proto.open_round(RoundSpec(0, (0,), dim), Network())
            pool_rnd.setup()
            pool_rnd.protect(0, x, 100.0)  # warm-up: spawns the pool, each worker loads the context
            fns["pool"] = lambda: pool_rnd.protect(0, x, 100.0)  # noqa: B023
        try:
            times = _interleaved(fns, repeats)
        finally:
            if pool_proto is not None:
                pool_proto.close()
        wall, cpu = statistics.median(times["one"][0]), statistics.median(times["one"][1])
        floor_wall, floor_cpu = statistics.median(times["floor"][0]), statistics.median(times["floor"][1])
        workers_wall = statistics.median(times["pool"][0]) if "pool" in times else None
        overhead = statistics.median(o / f for o, f in zip(times["one"][0], times["floor"][0], strict=True))
        speedup = (statistics.median(o / q for o, q in zip(times["one"][0], times["pool"][0], strict=True))
                   if "pool" in times else None)
        frame = upload.parts[0][1]
        distinct = [CkksUpdate.from_bytes(rnd.protect(0, rng.uniform(-1, 1, dim), 50.0 + i).parts[0][1]).ciphertexts
                    for i in range(3)]
        row: dict[str, Any] = {
            "preset": preset.value if upload_form == "seeded" else f"{preset.value} (full)",
            "upload": upload_form,
            "params": params.describe(),
            "security_bits": params.security_level,
            "dim": dim,
            "ciphertexts": params.ciphertexts_for(dim + 1),
            "upload_bytes": len(frame),
            "bytes_per_param": len(frame) / dim,
            "ratio_to_float32": len(frame) / dim / 4.0,
            "encrypt_s": wall,
            "encrypt_cpu_s": cpu,
            "encrypt_params_per_s": dim / wall,
            "encrypt_params_per_s_cpu": dim / cpu,
            "workers": workers,
            "encrypt_workers_s": workers_wall,
            "encrypt_workers_params_per_s": dim / workers_wall if workers_wall else None,
            "workers_speedup": speedup,
            "seal_floor_params_per_s": dim / floor_wall,
            "seal_floor_params_per_s_cpu": dim / floor_cpu,
            "time_over_seal_floor": overhead,
        }
        for k in clients:
            reps = repeats if k * dim <= 10_000_000 else 1
            totals, cpu_totals = [], []
            for _ in range(reps):
                rnd_no += 1
                r = proto.open_round(RoundSpec(rnd_no, tuple(range(k)), dim), net)
                r.setup()
                wall_sum = cpu_sum = 0.0
                for c in range(k):
                    up = Upload(((server_id(0), CkksUpdate(rnd_no, c, distinct[c % len(distinct)]).to_bytes()),))
                    w0, c0 = time.perf_counter(), time.thread_time()
                    r.receive(c, up)
                    cpu_sum += time.thread_time() - c0
                    wall_sum += time.perf_counter() - w0
                totals.append(wall_sum)
                cpu_totals.append(cpu_sum)
                if k == min(clients):
                    row["decrypt_s"], row["decrypt_cpu_s"] = _time_decrypt(proto, r, dim, repeats)
                    w0 = time.perf_counter()
                    r.reveal()
                    row["reveal_s"] = time.perf_counter() - w0
            row[f"aggregate_{k}_s"] = statistics.median(totals)
            row[f"aggregate_{k}_cpu_s"] = statistics.median(cpu_totals)
        proto.close()
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def bench_tenseal(sizes: list[int], repeats: int, clients: tuple[int, ...], full: bool) -> list[dict[str, Any]]:
    import tenseal as ts

    rows = []
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    ctx.global_scale = 2.0**40
    pub = ctx.copy()
    pub.make_context_public()
    per = 4096
    for dim in sizes:
        x = np.random.default_rng(dim).uniform(-1.0, 1.0, dim)
        chunks = [x[i : i + per] for i in range(0, dim, per)]

        def encrypt(chunks: list[np.ndarray] = chunks) -> list[bytes]:
            return [ts.ckks_vector(pub, c).serialize() for c in chunks]

        wall, cpu, blobs = _timed(encrypt, repeats)
        nbytes = sum(len(b) for b in blobs)
        row: dict[str, Any] = {
            "preset": "tenseal-vector",
            "params": "N=8192, primes 60+40+40 bits, scale 2^40, one real per slot (TenSEAL ckks_vector)",
            "security_bits": 192,
            "dim": dim,
            "ciphertexts": len(blobs),
            "upload_bytes": nbytes,
            "bytes_per_param": nbytes / dim,
            "ratio_to_float32": nbytes / dim / 4.0,
            "encrypt_s": wall,
            "encrypt_cpu_s": cpu,
            "encrypt_params_per_s": dim / wall,
            "encrypt_params_per_s_cpu": dim / cpu,
        }
        for k in clients:
            if k * dim > 10_000_000 and not full:
                continue  # ~1 minute for 100 x 10^6 through TenSEAL; run with --full

            def aggregate(k: int = k, blobs: list[bytes] = blobs) -> list[Any]:
                total = [ts.ckks_vector_from(pub, b) for b in blobs]
                for _ in range(k - 1):
                    for i, b in enumerate(blobs):
                        total[i] += ts.ckks_vector_from(pub, b)
                return total

            reps = repeats if k * dim <= 10_000_000 else 1
            a_wall, a_cpu, total = _timed(aggregate, reps)
            row[f"aggregate_{k}_s"], row[f"aggregate_{k}_cpu_s"] = a_wall, a_cpu
            if k == min(clients):
                sums = [v.serialize() for v in total]

                def decrypt(sums: list[bytes] = sums) -> np.ndarray:
                    return np.concatenate([ts.ckks_vector_from(ctx, b).decrypt() for b in sums])

                row["decrypt_s"], row["decrypt_cpu_s"], _ = _timed(decrypt, repeats)
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "M":
        return f"{v / 1e6:.2f}"
    if unit == "s":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _line(row: dict[str, Any]) -> str:
    return (f"{row['preset']:>15} dim={row['dim']:>8}  {row['bytes_per_param']:6.2f} B/param  "
            f"enc+ser {row['encrypt_params_per_s'] / 1e6:5.2f} M/s (cpu {row['encrypt_params_per_s_cpu'] / 1e6:5.2f}, "
            f"{row.get('workers', 1)} workers {_fmt(row.get('encrypt_workers_params_per_s'), 'M')}, "
            f"SEAL floor {_fmt(row.get('seal_floor_params_per_s'), 'M')}, x{_fmt(row.get('time_over_seal_floor'))})  "
            f"agg10 {_fmt(row.get('aggregate_10_s'), 's')} s  agg100 {_fmt(row.get('aggregate_100_s'), 's')} s  "
            f"decrypt {_fmt(row.get('decrypt_s'), 's')} s")


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = ("| preset | params | dim | B/param (framed) | × float32 | enc+ser M params/s, 1 core (wall / cpu) "
            "| enc+ser M params/s, 2 workers (wall; speed-up) | SEAL encode+encrypt only, M params/s (wall / cpu) "
            "| enc+ser time / SEAL-only time | aggregate 10 clients s | aggregate 100 clients s | decrypt s |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['preset']} | {r['params']} | {r['dim']:,} | {r['bytes_per_param']:.2f} | {r['ratio_to_float32']:.2f} "
        f"| {_fmt(r['encrypt_params_per_s'], 'M')} / {_fmt(r['encrypt_params_per_s_cpu'], 'M')} "
        f"| {_fmt(r.get('encrypt_workers_params_per_s'), 'M')}; {_fmt(r.get('workers_speedup'))} "
        f"| {_fmt(r.get('seal_floor_params_per_s'), 'M')} / {_fmt(r.get('seal_floor_params_per_s_cpu'), 'M')} "
        f"| {_fmt(r.get('time_over_seal_floor'))} "
        f"| {_fmt(r.get('aggregate_10_s'), 's')} | {_fmt(r.get('aggregate_100_s'), 's')} "
        f"| {_fmt(r.get('decrypt_s'), 's')} |\n"
        for r in rows
    )
    notes = (f"\nMedians of {meta['repeats']} runs (aggregation of 100 clients at 10^6: one run); "
             f"machine: {meta['machine']}, {meta['cpus']} CPUs, load average at start / end "
             f"{meta['load_at_start']:.2f} / {meta.get('load_at_end') or 0:.2f}, TenSEAL {meta.get('tenseal')}, "
             f"peak RSS of the whole run {meta.get('peak_rss_mb', 0):.0f} MB. "
             "Encrypt + serialize is one client's `protect()` on one core (and with `workers=2`: this "
             "process plus one pool process); the SEAL column is SEAL's encode + encrypt alone (no "
             "serialization), the ceiling for any SEAL-based client. The three encryption timings are "
             "interleaved repeat by repeat (same load); speed-up and time / SEAL-only time are medians "
             "of the per-repeat ratios. B/param counts the whole "
             "CKKS_UPDATE frame (TenSEAL row: SEAL's serialized vectors, no framing). Aggregation = the "
             "server's `receive()` of every upload (frame check, parse, range validation, modular add). "
             "Decrypt = the key holder's parse + decrypt + decode of the aggregate.\n")
    return f"# CKKS benchmark ({meta['date']})\n\n" + head + body + notes


def _wait_for_load(limit: float, patience_s: float = 900.0) -> None:
    """On a shared machine: wait until the 1-minute load average drops below ``limit``."""
    deadline = time.time() + patience_s
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        time.sleep(10)
    print(f"(load average {os.getloadavg()[0]:.2f})", flush=True)


def _tenseal_version() -> str:
    from importlib.metadata import version

    return version("tenseal")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^4 and 10^5 parameters only, 3 repeats")
    ap.add_argument("--sizes", default=None, help="comma-separated vector lengths")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--presets", default=",".join(p.value for p in CkksPreset), help="comma-separated presets")
    ap.add_argument("--no-tenseal", action="store_true", help="skip the TenSEAL reference row")
    ap.add_argument("--full", action="store_true", help="also 100 clients x 10^6 through TenSEAL (slow)")
    ap.add_argument("--workers", type=int, default=2, help="encryption processes for the pool column (1: skip)")
    ap.add_argument("--wait-for-load", type=float, default=None,
                    help="before each preset wait (up to 15 min) until the 1-minute load average is below this")
    ap.add_argument("--upload", default="seeded", choices=["seeded", "full"],
                    help="ckks upload form (seeded: c0 + SEAL's seed; full: both polynomials)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    repeats = args.repeats or (3 if args.quick else 5)
    clients = (10, 100)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "repeats": repeats,
        "sizes": sizes,
        "tenseal": _tenseal_version(),
    }
    rows: list[dict[str, Any]] = []
    for name in args.presets.split(","):
        if args.wait_for_load is not None:
            _wait_for_load(args.wait_for_load)
        rows += bench_preset(CkksPreset(name.strip()), sizes, repeats, clients, args.workers, args.upload)
    if not args.no_tenseal:
        rows += bench_tenseal(sizes, min(repeats, 3), clients, args.full)
    meta["load_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        import resource

        meta["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - not on Windows
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"ckks-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / f"ckks-{stamp}.md").write_text(markdown(rows, meta))
    print(f"\nwrote {out / f'ckks-{stamp}.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
