"""Vectors of integers modulo ``2**k``: the ring every secret-sharing protocol computes in.

A :class:`Ring` fixes ``k`` (1 ≤ k ≤ 64) and stores elements in the narrowest numpy unsigned
type that holds them (``uint32`` for k ≤ 32, ``uint64`` above), so addition and subtraction are
numpy's native wrap-around arithmetic followed, when ``k`` is not 32 or 64, by a mask. On the
wire an element takes ``ceil(k / 8)`` bytes, little-endian (k = 32: 4 bytes, k = 24: 3 bytes).

Uniform elements (masks, additive shares) come only from a :class:`~secfl.crypto.prg.Prg`:
``2**k`` divides the PRG's word size, so masking the low ``k`` bits of a uniform word is uniform
mod ``2**k`` (no modulo bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secfl.crypto.prg import Prg
from secfl.errors import ConfigError, MalformedMessageError

__all__ = ["Ring"]


@dataclass(frozen=True)
class Ring:
    """Z/2^k Z, vectorized. ``bits`` is k, in [1, 64]."""

    bits: int

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= int(self.bits) <= 64:
            raise ConfigError(f"modulus_bits must be an integer in [1, 64], got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def modulus(self) -> int:
        """``2**k`` as a Python int."""
        return 1 << self.bits

    @property
    def max_value(self) -> int:
        return (1 << self.bits) - 1

    @property
    def nbytes(self) -> int:
        """Bytes per element on the wire: ``ceil(k / 8)``."""
        return (self.bits + 7) // 8

    @property
    def _native(self) -> bool:
        return self.bits in (32, 64)

    # ------------------------------------------------------------------ arithmetic
    def reduce(self, a: np.ndarray) -> np.ndarray:
        """``a mod 2**k`` in this ring's dtype (in place when ``a`` already has it)."""
        arr = np.asarray(a)
        if arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        if not self._native:
            np.bitwise_and(arr, self.dtype.type(self.max_value), out=arr)
        return arr

    def zeros(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=self.dtype)

    def add_(self, acc: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``acc += b (mod 2**k)`` in place; returns ``acc``."""
        np.add(acc, b, out=acc, casting="unsafe")
        return self.reduce(acc)

    def sub_(self, acc: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``acc -= b (mod 2**k)`` in place; returns ``acc``."""
        np.subtract(acc, b, out=acc, casting="unsafe")
        return self.reduce(acc)

    def random(self, prg: Prg, n: int) -> np.ndarray:
        """``n`` elements uniform mod ``2**k`` from ``prg`` (possibly a read-only array)."""
        words = prg.uint32(n) if self.bits <= 32 else prg.uint64(n)
        if self._native:
            return words
        return np.bitwise_and(words, self.dtype.type(self.max_value), dtype=self.dtype)

    # ------------------------------------------------------------------ wire format
    def pack(self, a: np.ndarray) -> bytes:
        """Elements to ``nbytes`` little-endian bytes each (elements must already be reduced)."""
        arr = np.ascontiguousarray(a, dtype=self.dtype)
        width = arr.dtype.itemsize
        if self.nbytes == width:
            return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        return np.ascontiguousarray(le.view(np.uint8).reshape(-1, width)[:, : self.nbytes]).tobytes()

    def unpack(self, data: bytes, n: int, *, what: str = "ring vector") -> np.ndarray:
        """Strict inverse of :meth:`pack`: exactly ``n`` elements, each below ``2**k``."""
        if len(data) != n * self.nbytes:
            raise MalformedMessageError(
                f"{what}: expected {n} elements of {self.nbytes} bytes ({n * self.nbytes} bytes), got {len(data)}"
            )
        width = self.dtype.itemsize
        if self.nbytes == width:
            out = np.frombuffer(data, dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
        else:
            buf = np.zeros((n, width), dtype=np.uint8)
            buf[:, : self.nbytes] = np.frombuffer(data, dtype=np.uint8).reshape(n, self.nbytes)
            out = buf.reshape(-1).view(self.dtype.newbyteorder("<")).astype(self.dtype)
        if not self._native and n and int(out.max()) > self.max_value:
            raise MalformedMessageError(f"{what}: element outside [0, 2**{self.bits})")
        return out
