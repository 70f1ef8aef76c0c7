"""The machine's single-core speed probe, shared by the benchmarks (``bench_mpc.py``, ``peers.py``)."""

from __future__ import annotations

import time


def speed_probe() -> float:
    """Milliseconds for a fixed slice of the round's own work (20 X25519 agreements + HKDFs, 20
    AES-CTR expansions of 10**5 words): this shared machine's single-core speed swings by up to 2×
    over minutes, so every row records it (≈ 11 ms when the machine runs at full speed)."""
    from secfl.crypto.keys import PrivateKey, hkdf, shared_secret
    from secfl.crypto.prg import Prg

    a, b = PrivateKey.generate(), PrivateKey.generate().public_key
    t = time.perf_counter()
    for _ in range(20):
        hkdf(shared_secret(a, b))
        Prg(b"\x07" * 32).uint32(100_000)
    return (time.perf_counter() - t) * 1e3
