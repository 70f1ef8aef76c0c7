"""Regenerate ``kat.json``: known answers for secfl's threshold-CKKS primitives.

Run from the repository root: ``python protocols/vectors/ckks_threshold/make_vectors.py``.
The NTT answers come from SEAL's own ``ntt_negacyclic_harvey`` (an independent implementation);
the rest pins secfl's formats and samplers (CRP expansion, Shamir dealing, flooded partial
decryption from seeded AES-CTR generators), so that any change to them is a visible, deliberate
change of these files.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import _sealapi_cpp as sealcpp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from secfl.crypto.modarith import pack_bits  # noqa: E402
from secfl.crypto.prg import Prg  # noqa: E402
from secfl.crypto.seal_bridge import seal_primes  # noqa: E402
from secfl.crypto.threshold import (  # noqa: E402
    KeyShare,
    MemberSecret,
    ThresholdParams,
    crp_seed,
    expand_crp,
    lagrange_coefficients,
)


def main() -> None:
    p = ThresholdParams.from_preset("standard")
    nonces = [bytes([i]) * 32 for i in range(3)]
    context = b"kat-context"
    seed = crp_seed(nonces, context)
    a = expand_crp(p, seed)
    ntt_cases = []
    for n, bits in ((16, 30), (16, 45), (32, 60)):
        q = seal_primes(n, (bits,))[0]
        values = [(i * 7919 + 13) % q for i in range(n)]
        tables = sealcpp.util.CreateNTTTables(n.bit_length() - 1, [sealcpp.Modulus(q)])
        out = [v % q for v in sealcpp.util.ntt_negacyclic_harvey(values, tables.get())]
        ntt_cases.append({"n": n, "q": q, "input": values, "output": out})
    pack_values = [(1 << 45) - 1 - i * 123456789 for i in range(8)]
    secret_seed, prg_seed = bytes(range(32)), bytes(range(32, 64))
    secret = MemberSecret(p, np.stack([Prg(secret_seed).uniform_below(p.poly_degree, q) for q in p.primes])
                          .astype(np.int64))
    dealt = secret.deal([1, 2, 3, 4, 5], 3, Prg(prg_seed))
    share_seed, c1_seed, flood_seed = bytes([7]) * 32, bytes([8]) * 32, bytes([9]) * 32
    share = KeyShare(p, 2, np.stack([Prg(share_seed).uniform_below(p.poly_degree, q) for q in p.data_primes])
                     .astype(np.int64))
    c1 = np.stack([Prg(c1_seed).uniform_below(p.poly_degree, q) for q in p.data_primes]).astype(np.int64)[None]
    d = share.partial_decrypt(c1, [1, 2, 4], 2.0**30, Prg(flood_seed))
    kat = {
        "description": "secfl ckks-threshold known answers; regenerate with make_vectors.py",
        "params": {"preset": "standard", "bytes": p.to_bytes().hex(), "primes": list(p.primes)},
        "crp": {"nonces": [x.hex() for x in nonces], "context": context.hex(), "seed": seed.hex(),
                "first4": [a[i, :4].tolist() for i in range(len(p.primes))]},
        "lagrange": [{"points": pts, "q": q, "lambdas": lagrange_coefficients(pts, q)}
                     for pts in ([1, 2, 3], [2, 4, 5], [1, 7]) for q in p.data_primes],
        "ntt": ntt_cases,
        "pack": {"width": 45, "values": pack_values,
                 "hex": pack_bits(np.array(pack_values, dtype=np.uint64), 45).hex()},
        "shamir": {"secret_seed": secret_seed.hex(), "prg_seed": prg_seed.hex(), "points": [1, 2, 3, 4, 5],
                   "threshold": 3, "sha256": hashlib.sha256(dealt.astype("<i8").tobytes()).hexdigest()},
        "partial": {"share_seed": share_seed.hex(), "c1_seed": c1_seed.hex(), "prg_seed": flood_seed.hex(),
                    "point": 2, "active": [1, 2, 4], "sigma": 2.0**30,
                    "sha256": hashlib.sha256(d.astype("<i8").tobytes()).hexdigest()},
    }
    out = Path(__file__).with_name("kat.json")
    out.write_text(json.dumps(kat, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
