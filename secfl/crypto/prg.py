"""Cryptographic pseudo-random generation: every mask, share, key and DP noise sample.

A :class:`Prg` expands a full 256-bit seed with AES-256 in CTR mode (pycryptodome; AES-NI
makes it ~2 GB/s here). Fresh seeds come from :func:`fresh_seed` (the OS generator through
``secrets``). Deterministic seeds are only derived with :func:`derive_seed` (HKDF-SHA256)
from another seed and a context label, so two uses never share a keystream.

Security: the output is indistinguishable from uniform to anyone who does not know the seed,
under the assumption that AES-256 is a pseudo-random permutation. Never reuse a seed for two
purposes; derive one per purpose instead.
"""

from __future__ import annotations

import secrets

import numpy as np
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from secfl.errors import ConfigError

__all__ = ["SEED_BYTES", "Prg", "fresh_seed", "derive_seed"]

SEED_BYTES = 32
_NONCE = b"\x00" * 8


_ZEROS = [bytes(1 << 16)]


def _zeros(n: int) -> memoryview:
    """A read-only view of ``n`` zero bytes (one shared buffer, grown on demand)."""
    if len(_ZEROS[0]) < n:
        _ZEROS[0] = bytes(max(n, 2 * len(_ZEROS[0])))
    return memoryview(_ZEROS[0])[:n]


def fresh_seed() -> bytes:
    """A new uniformly random 32-byte seed from the operating system's CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def derive_seed(seed: bytes, label: str | bytes, *context: int) -> bytes:
    """HKDF-SHA256(seed, info=label || context integers) -> 32 bytes.

    Use it to split one seed into independent ones (per round, per client, per purpose).
    """
    _check_seed(seed)
    info = label.encode() if isinstance(label, str) else bytes(label)
    for value in context:
        info += b"|" + int(value).to_bytes(8, "little", signed=True)
    out = HKDF(seed, SEED_BYTES, b"secfl-prg-v1", SHA256, context=info)
    return bytes(out)  # type: ignore[arg-type]


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise ConfigError(f"a PRG seed must be exactly {SEED_BYTES} bytes, got {type(seed).__name__}"
                          f" of length {len(seed) if hasattr(seed, '__len__') else '?'}")


class Prg:
    """AES-256-CTR keystream from a 32-byte seed, read as bytes or unsigned integer arrays.

    Successive calls continue the same keystream, so a ``Prg`` is a deterministic stream:
    ``Prg(s).uint32(10)`` followed by ``.uint32(5)`` equals the first 15 words of
    ``Prg(s).uint32(15)``.
    """

    __slots__ = ("_cipher",)

    def __init__(self, seed: bytes | None = None) -> None:
        seed = fresh_seed() if seed is None else seed
        _check_seed(seed)
        self._cipher = AES.new(bytes(seed), AES.MODE_CTR, nonce=_NONCE)

    def __repr__(self) -> str:  # never print key material
        return "Prg(<secret seed>)"

    def bytes(self, n: int) -> bytes:
        """``n`` pseudo-random bytes."""
        if n < 0:
            raise ConfigError(f"byte count must be >= 0, got {n}")
        return self._cipher.encrypt(bytes(n))

    def _array(self, n: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
        width = np.dtype(dtype).itemsize
        buf = np.empty(n * width, dtype=np.uint8)
        if n:  # keystream straight into the result: no zero-filled input or output allocation
            self._cipher.encrypt(_zeros(n * width), output=memoryview(buf))  # type: ignore[arg-type]
        return buf.view(np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)

    def uint8(self, n: int) -> np.ndarray:
        return self._array(n, np.uint8)

    def uint32(self, n: int) -> np.ndarray:
        return self._array(n, np.uint32)

    def uint64(self, n: int) -> np.ndarray:
        return self._array(n, np.uint64)

    def uniform_bits(self, n: int, bits: int) -> np.ndarray:
        """``n`` integers uniform in [0, 2**bits) as uint64 (1 <= bits <= 64)."""
        if not 1 <= bits <= 64:
            raise ConfigError(f"bits must be in [1, 64], got {bits}")
        words = self.uint32(n) if bits <= 32 else self.uint64(n)
        out = words.astype(np.uint64, copy=False)
        if bits not in (32, 64):
            out = out & np.uint64((1 << bits) - 1)
        return out

    def random(self, n: int) -> np.ndarray:
        """``n`` floats uniform in [0, 1) with 53 random bits each."""
        return (self.uint64(n) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def uniform_below(self, n: int, bound: int) -> np.ndarray:
        """``n`` integers uniform in [0, bound) (rejection sampling, no modulo bias)."""
        if not 1 <= bound <= 1 << 63:
            raise ConfigError(f"bound must be in [1, 2**63], got {bound}")
        bits = max(1, (bound - 1).bit_length())
        out = np.empty(n, dtype=np.uint64)
        filled = 0
        while filled < n:
            need = n - filled
            cand = self.uniform_bits(need + need // 2 + 8, bits)
            cand = cand[cand < np.uint64(bound)][:need]
            out[filled:filled + cand.size] = cand
            filled += cand.size
        return out

    def normal(self, n: int) -> np.ndarray:
        """``n`` standard normal floats (Box–Muller on CSPRNG uniforms).

        Floating-point Gaussian built on cryptographic randomness: fine for noise that is
        encrypted afterwards (CKKS). Exact discrete samplers live in :mod:`secfl.dp`.
        """
        m = (n + 1) // 2
        u1 = 1.0 - self.random(m)  # (0, 1]
        u2 = self.random(m)
        r = np.sqrt(-2.0 * np.log(u1))
        theta = 2.0 * np.pi * u2
        return np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:n]
