"""Secret sharing: additive shares mod ``2**k`` and vectorized Shamir over a prime field.

**Additive** (:func:`additive_split`, :func:`expand_share`): a vector ``x`` over
:class:`~secfl.crypto.ring.Ring` becomes ``S`` shares that sum to ``x`` mod ``2**k``. ``S − 1`` of
them are expanded by the AES-CTR :class:`~secfl.crypto.prg.Prg` from fresh 32-byte seeds, so they
travel as 32 bytes each; the last is ``x − Σ PRG(seed_j)``. Any ``S − 1`` shares are uniformly
distributed and independent of ``x`` (computationally, under AES being a PRF, for the expanded
ones; perfectly for the residual given the others).

**Shamir** (:func:`shamir_split`, :func:`shamir_reconstruct`, :func:`share_bytes`,
:func:`reconstruct_bytes`): ``t``-of-``n`` threshold sharing of many field elements at once over
``GF(p)``, ``p = 2**31 − 1`` (a Mersenne prime). Every product of two field elements is below
``2**62``, so polynomial evaluation (Horner) and Lagrange interpolation run exactly in numpy
``uint64`` with no per-element Python loop. A 32-byte secret is cut into nine 30-bit chunks (each
below ``p``), each shared with its own independent random polynomial of degree ``t − 1``; shares
are evaluations at the public, non-zero, distinct points ``x_i`` (secfl uses ``party id + 1``).
Any ``t`` shares determine the secret by Lagrange interpolation at 0; any ``t − 1`` are uniformly
distributed whatever the secret (information-theoretic). Coefficients come from a fresh
:class:`~secfl.crypto.prg.Prg` (OS randomness), never from numpy's generator.

Why not pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir``: it shares exactly one 16-byte
secret per call over GF(2**128) in pure Python (~0.1 s to split 51-of-100 here); SecAgg+ shares two
32-byte secrets per client to every neighbour, and the server reconstructs one per client, so a
numpy implementation that evaluates all chunks and all points in one pass is ~100× faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secfl.crypto.prg import SEED_BYTES, Prg, fresh_seed
from secfl.crypto.ring import Ring
from secfl.errors import ConfigError, InsufficientQuorumError, MalformedMessageError

__all__ = [
    "SHAMIR_PRIME",
    "CHUNK_BITS",
    "additive_split",
    "expand_share",
    "additive_combine",
    "shamir_split",
    "shamir_reconstruct",
    "lagrange_at_zero",
    "bytes_to_field",
    "field_to_bytes",
    "chunks_for",
    "share_bytes",
    "reconstruct_bytes",
]

SHAMIR_PRIME = (1 << 31) - 1
CHUNK_BITS = 30
_P = np.uint64(SHAMIR_PRIME)


# ---------------------------------------------------------------------------------- additive
def expand_share(seed: bytes, n: int, ring: Ring) -> np.ndarray:
    """The ``n``-element share that a 32-byte ``seed`` stands for (AES-CTR keystream mod 2**k)."""
    return ring.random(Prg(seed), n)


def additive_split(x: np.ndarray, ring: Ring, parties: int) -> tuple[np.ndarray, list[bytes]]:
    """Split ``x`` into ``parties`` additive shares: ``(residual, seeds)``.

    ``seeds`` are ``parties − 1`` fresh 32-byte seeds whose expansions, added to ``residual``,
    give ``x`` mod ``2**k``.
    """
    if not isinstance(parties, int) or parties < 2:
        raise ConfigError(f"additive sharing needs at least 2 parties, got {parties!r}")
    residual = np.array(ring.reduce(np.asarray(x)), dtype=ring.dtype, copy=True)
    seeds = [fresh_seed() for _ in range(parties - 1)]
    for s in seeds:
        ring.sub_(residual, expand_share(s, residual.shape[0], ring))
    return residual, seeds


def additive_combine(shares: Sequence[np.ndarray], ring: Ring) -> np.ndarray:
    """``Σ shares`` mod ``2**k``."""
    if not shares:
        raise ConfigError("additive_combine needs at least one share")
    acc = np.array(shares[0], dtype=ring.dtype, copy=True)
    for s in shares[1:]:
        ring.add_(acc, s)
    return acc


# ---------------------------------------------------------------------------------- Shamir
def _check_points(xs: Sequence[int]) -> np.ndarray:
    pts = [int(x) for x in xs]
    if len(set(pts)) != len(pts):
        raise ConfigError("Shamir evaluation points must be distinct")
    if any(not 0 < x < SHAMIR_PRIME for x in pts):
        raise ConfigError(f"Shamir evaluation points must be in [1, {SHAMIR_PRIME - 1}]")
    return np.asarray(pts, dtype=np.uint64)


def shamir_split(secrets: np.ndarray, xs: Sequence[int], threshold: int, prg: Prg | None = None) -> np.ndarray:
    """Share each of ``m`` field elements ``t``-of-``len(xs)``: returns ``(len(xs), m)`` uint64.

    Row ``i`` is every secret's polynomial evaluated at ``xs[i]``. ``prg`` defaults to a fresh
    OS-seeded one (the coefficients must be secret and never reused).
    """
    sec = np.asarray(secrets, dtype=np.uint64).reshape(-1)
    if sec.size and int(sec.max()) >= SHAMIR_PRIME:
        raise ConfigError(f"Shamir secrets must be field elements below {SHAMIR_PRIME}")
    pts = _check_points(xs)
    if not isinstance(threshold, int) or not 1 <= threshold <= len(pts):
        raise ConfigError(f"threshold must be in [1, {len(pts)}] (the number of shares), got {threshold!r}")
    prg = Prg() if prg is None else prg
    m = sec.size
    coeffs = prg.uniform_below((threshold - 1) * m, SHAMIR_PRIME).reshape(threshold - 1, m)
    x = pts[:, None]
    acc = np.zeros((len(pts), m), dtype=np.uint64)
    # Horner from the highest coefficient: acc < p and x < p, so acc·x < 2**62 and +c < 2**63.
    for j in range(threshold - 2, -1, -1):
        acc = (acc * x + coeffs[j][None, :]) % _P
    return (acc * x + sec[None, :]) % _P


def lagrange_at_zero(xs: Sequence[int]) -> np.ndarray:
    """Lagrange coefficients ``λ_i = Π_{j≠i} x_j / (x_j − x_i) mod p`` (uint64)."""
    pts = [int(x) for x in _check_points(xs)]
    p = SHAMIR_PRIME
    lam = []
    for i, xi in enumerate(pts):
        num, den = 1, 1
        for j, xj in enumerate(pts):
            if j != i:
                num = num * xj % p
                den = den * (xj - xi) % p
        lam.append(num * pow(den, p - 2, p) % p)
    return np.asarray(lam, dtype=np.uint64)


def shamir_reconstruct(xs: Sequence[int], shares: np.ndarray, threshold: int) -> np.ndarray:
    """The ``m`` secrets from ``(len(xs), m)`` shares at points ``xs`` (uses the first ``t``).

    Fewer than ``threshold`` shares raise :class:`~secfl.errors.InsufficientQuorumError`.
    """
    ys = np.asarray(shares, dtype=np.uint64)
    if ys.ndim != 2 or ys.shape[0] != len(xs):
        raise MalformedMessageError(f"expected a ({len(xs)}, m) share matrix, got shape {ys.shape}")
    if len(xs) < threshold:
        raise InsufficientQuorumError(f"{len(xs)} Shamir shares, fewer than the threshold {threshold}")
    if ys.size and int(ys.max()) >= SHAMIR_PRIME:
        raise MalformedMessageError(f"Shamir share values must be below {SHAMIR_PRIME}")
    lam = lagrange_at_zero(list(xs)[:threshold])
    terms = (ys[:threshold] * lam[:, None]) % _P  # each < 2**31; their sum of t < 2**32 terms fits
    return terms.sum(axis=0, dtype=np.uint64) % _P


# ---------------------------------------------------------------------------------- byte secrets
def chunks_for(nbytes: int) -> int:
    """Field elements needed for an ``nbytes`` secret (30 bits each): 9 for 32 bytes."""
    return -(-8 * nbytes // CHUNK_BITS)


def bytes_to_field(secret: bytes) -> np.ndarray:
    """A byte string as ``chunks_for(len)`` 30-bit field elements (little-endian)."""
    v = int.from_bytes(secret, "little")
    mask = (1 << CHUNK_BITS) - 1
    return np.asarray([(v >> (CHUNK_BITS * i)) & mask for i in range(chunks_for(len(secret)))], dtype=np.uint64)


def field_to_bytes(elems: np.ndarray, nbytes: int) -> bytes:
    """Inverse of :func:`bytes_to_field`; refuses elements that do not come from ``nbytes`` bytes."""
    arr = np.asarray(elems, dtype=np.uint64).reshape(-1)
    if arr.size != chunks_for(nbytes):
        raise MalformedMessageError(f"expected {chunks_for(nbytes)} field elements for {nbytes} bytes, got {arr.size}")
    v = 0
    for i, e in enumerate(arr.tolist()):
        if e >> CHUNK_BITS:
            raise MalformedMessageError("reconstructed chunk exceeds 30 bits: inconsistent Shamir shares")
        v |= int(e) << (CHUNK_BITS * i)
    if v >> (8 * nbytes):
        raise MalformedMessageError(f"reconstructed value exceeds {nbytes} bytes: inconsistent Shamir shares")
    return v.to_bytes(nbytes, "little")


def share_bytes(secret: bytes, xs: Sequence[int], threshold: int, prg: Prg | None = None) -> np.ndarray:
    """Shamir-share a byte string: ``(len(xs), chunks_for(len(secret)))`` uint64 field elements."""
    return shamir_split(bytes_to_field(bytes(secret)), xs, threshold, prg)


def reconstruct_bytes(xs: Sequence[int], shares: np.ndarray, threshold: int, nbytes: int = SEED_BYTES) -> bytes:
    """The ``nbytes`` secret from at least ``threshold`` rows of :func:`share_bytes` output."""
    return field_to_bytes(shamir_reconstruct(xs, shares, threshold), nbytes)
