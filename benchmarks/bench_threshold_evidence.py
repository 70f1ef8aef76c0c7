"""What a ``ckks-threshold`` member pays to check that it decrypts a real aggregate (issue 12, item 3).

Each member receives, with the aggregate's ``c_1``, every included client's own ``c_1`` and its
Ed25519 signature, verifies the signatures and re-adds the ``c_1``. Measured per member and
round, in-process (one round, quorum (3, 5), standard preset), for K clients and d parameters:
the bytes of ``THR_ACTIVE_SET`` (and what they were without the evidence), the member's seconds
handling it, and the part spent on the evidence check. Medians over ``--repeats`` rounds.

    python benchmarks/bench_threshold_evidence.py [--clients 10 100] [--dims 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks_threshold.member import QuorumMember
from secfl.protocols.ckks_threshold.messages import ThrActiveSet
from secfl.protocols.network import Network
from secfl.protocols.wire import MsgType


def one(clients: int, dim: int) -> dict[str, Any]:
    spent: list[float] = []
    real = QuorumMember._check_evidence

    def timed(self: QuorumMember, msg: ThrActiveSet, c1: np.ndarray) -> None:
        t = time.perf_counter()
        try:
            real(self, msg, c1)
        finally:
            spent.append(time.perf_counter() - t)

    QuorumMember._check_evidence = timed  # type: ignore[method-assign]
    try:
        proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=1.0)
        net = Network(record_views=True)
        spec = RoundSpec(0, tuple(range(clients)), dim)
        rnd = proto.open_round(spec, net)
        rnd.setup()
        rng = np.random.default_rng(0)
        for c in spec.clients:
            rnd.receive(c, rnd.protect(c, rng.uniform(-1, 1, dim), 1.0))
        rnd.reveal()
        member = proto.members[rnd.active_set[0]]
        data = next(v.data for v in net.views[member.party] if v.data[3] == MsgType.THR_ACTIVE_SET)
        msg = ThrActiveSet.from_bytes(data)
        member_s = rnd.timings["member_s"]
        return {"active_set_bytes": len(data), "without_evidence_bytes": len(data) - len(msg.signatures)
                - len(msg.client_c1), "member_s": statistics.median(member_s.values()),
                "evidence_s": statistics.median(spent)}
    finally:
        QuorumMember._check_evidence = real  # type: ignore[method-assign]
        proto.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--dims", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/threshold_evidence.json")
    args = ap.parse_args()
    rows = []
    for dim in args.dims:
        for k in args.clients:
            runs = [one(k, dim) for _ in range(args.repeats)]
            row: dict[str, Any] = {"clients": k, "dim": dim}
            for key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
            rows.append(row)
            print(f"K={k:4d} d={dim:7d}: THR_ACTIVE_SET {row['active_set_bytes'] / 1e6:8.2f} MB (without evidence"
                  f" {row['without_evidence_bytes'] / 1e6:6.2f} MB); member {row['member_s']:.3f} s, of which"
                  f" evidence {row['evidence_s']:.3f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "repeats": args.repeats}, indent=2) + "\n")


if __name__ == "__main__":
    main()
