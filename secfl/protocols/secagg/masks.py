"""``secagg`` key derivations and mask arithmetic, shared by the client and the server.

- :func:`pair_seed` — the pairwise mask seed ``s_uv = HKDF(X25519(s_u, s_v))``;
- :func:`share_channel_keys` — the two AES-256-GCM keys of the channel between two neighbours
  that carries their Shamir shares (sealed end to end: the relaying server cannot open them);
- :func:`add_masks` — ``acc += Σ ±PRG(seed)`` mod ``2**k`` (AES-256-CTR expansion);
- :func:`unmask_job` — the masks the server removes (run in its helper processes when it has any).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np

from secfl.crypto.keys import SEAL_OVERHEAD, PrivateKey, PublicKey, hkdf, info_label, shared_secret
from secfl.crypto.prg import SEED_BYTES, Prg, derive_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import chunks_for
from secfl.protocols.wire import WIRE_VERSION

__all__ = ["add_masks", "dither_prg", "pair_seed", "share_channel_keys", "share_ad", "unmask_job", "UnmaskJob",
           "CHUNKS", "SHARE_PLAIN", "PLAIN_BYTES", "SEALED_BYTES"]

CHUNKS = chunks_for(SEED_BYTES)  # 9 field elements per 32-byte secret
#: the plaintext of one sealed share pair: sender, recipient (u32 each), then 2 × 9 field elements
SHARE_PLAIN = struct.Struct("<II")
PLAIN_BYTES = SHARE_PLAIN.size + 2 * CHUNKS * 4
SEALED_BYTES = PLAIN_BYTES + SEAL_OVERHEAD
_MASK_LABEL = "secfl/secagg/mask"
_SHARE_LABEL = "secfl/secagg/share-key"


def add_masks(ring: Ring, acc: np.ndarray, seeds: Iterable[tuple[bytes, int]]) -> np.ndarray:
    """``acc += Σ sign·PRG(seed)`` mod ``2**k`` in place (``sign`` is +1 or −1); returns ``acc``."""
    n = acc.shape[0]
    for seed, sign in seeds:
        mask = ring.random(Prg(seed), n)
        if sign > 0:
            ring.add_(acc, mask)
        else:
            ring.sub_(acc, mask)
    return acc


def dither_prg(seed: bytes | None, rnd: int, client: int) -> Prg:
    """A client's stochastic-rounding dither: from ``RoundSpec.seed`` when set (it is not secret),
    else fresh OS randomness."""
    return Prg() if seed is None else Prg(derive_seed(seed, "secagg/dither", rnd, client))


def pair_seed(sk: PrivateKey, peer: PublicKey, rnd: int, u: int, v: int) -> bytes:
    """``s_uv = HKDF(X25519(s_u, s_v), info = label | round | min | max)``: one seed per pair."""
    return hkdf(shared_secret(sk, peer), info=info_label(_MASK_LABEL, rnd, min(u, v), max(u, v)))


def share_channel_keys(c: PrivateKey, peer_c: PublicKey, rnd: int, me: int, peer: int) -> tuple[bytes, bytes]:
    """``(key me → peer, key peer → me)``: one 64-byte derivation per pair, the first half keying
    ``min → max``, the second ``max → min``."""
    lo, hi = min(me, peer), max(me, peer)
    pair = hkdf(shared_secret(c, peer_c), 64, info=info_label(_SHARE_LABEL, rnd, lo, hi))
    return (pair[:32], pair[32:]) if me == lo else (pair[32:], pair[:32])


def share_ad(rnd: int, src: int, dst: int, binding: bytes = b"") -> bytes:
    """Associated data of a sealed share pair: binds round, sender, recipient and (with a
    federation roster) the roster's digest."""
    return b"secfl/secagg/share" + struct.pack("<BIII", WIRE_VERSION, rnd, src, dst) + binding


#: one helper job of the server's unmasking: (ring, length, round, survivors' self-mask seeds,
#: dropped clients as (id, reconstructed mask-key secret, [(surviving neighbour, its s public key)]))
UnmaskJob = tuple[Ring, int, int, list[bytes], list[tuple[int, bytes, list[tuple[int, bytes]]]]]


def unmask_job(job: UnmaskJob) -> np.ndarray:
    """The masks one helper removes: ``−Σ PRG(b_u)`` and every dropped client's pairwise masks."""
    ring, length, rnd, self_seeds, dropped = job
    acc = ring.zeros(length)
    add_masks(ring, acc, ((b, -1) for b in self_seeds))
    for u, secret, peers in dropped:
        sk = PrivateKey.from_secret(secret)
        # survivor v added +PRG(s_uv) if v < u and −PRG(s_uv) if v > u: undo it
        add_masks(ring, acc, ((pair_seed(sk, PublicKey(pk), rnd, u, v), -1 if v < u else 1) for v, pk in peers))
    return acc
