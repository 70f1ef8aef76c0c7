"""Vectorized arithmetic modulo SEAL's primes (up to 61 bits) in numpy, without Python integers.

numpy has no 128-bit integers, so ``a * b mod q`` for residues of up to 61 bits cannot be
computed directly. Every product here has one operand fixed in advance (a root of unity, a
key share, a Lagrange coefficient, a Shamir evaluation point), which allows a precomputation in
the spirit of Shoup's method, with the quotient estimated in float64 ("float-assisted
reduction"):

* **direct path** (``q < 2**50``): ``k = trunc(a * (w / q))`` in float64, where ``w / q`` is
  precomputed. For ``0 <= a < 2**51`` the estimate is within 1/2 of ``a·w/q`` (two roundings,
  each at most ``2**-53`` relative, on a value below ``2**51``), so ``r = a·w − k·q``, computed in
  wrapping int64 arithmetic, is exact and lies in ``[−q, 2q)``; one correction each way
  reduces it to ``[0, q)``.
* **split path** (``q < 2**61``): ``a = a1·2**31 + a0`` with ``a1, a0 < 2**31`` and the
  precomputed ``w' = w·2**31 mod q``; ``a·w ≡ a1·w' + a0·w``, and
  ``k = trunc(a1·(w'/q) + a0·(w/q))`` is within ``2**-19`` of the true quotient of that sum
  (a value below ``2**32``), so the wrapping int64 remainder is again exact in ``[−q, 2q)``.

Both paths are checked against Python's exact integers by the property tests
(``tests/test_modarith.py``). Arrays hold residues as ``int64`` (every prime is below
``2**61``); :func:`to_residues` turns signed integers into residues.

**NTT.** :func:`ntt` is SEAL's negacyclic number-theoretic transform (the form in which SEAL
keeps keys, CKKS ciphertexts and CKKS plaintexts), vectorized over a batch of polynomials:
output ``k`` is ``a(ψ^(2·rev(k)+1)) mod q`` with ``ψ`` SEAL's own primitive ``2N``-th root of
unity (``NTTTables.get_root()``) and ``rev`` the bit reversal on ``log2 N`` bits. The transform is
a fixed linear map, so any correct algorithm for it returns exactly SEAL's values; the tests
compare against SEAL's ``ntt_negacyclic_harvey`` bit for bit. :func:`intt` inverts it.

**Bit packing.** :func:`pack_bits` / :func:`unpack_bits` store residues of a ``w``-bit prime in
exactly ``w`` bits each (least significant bit first) -- the wire form of every polynomial the
threshold protocol sends.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secfl.errors import ConfigError, MalformedMessageError

__all__ = [
    "MAX_PRIME_BITS",
    "DIRECT_PRIME_BITS",
    "MulConst",
    "mul_const",
    "mulmod",
    "addmod",
    "submod",
    "negmod",
    "to_residues",
    "centered",
    "NttTables",
    "ntt_tables",
    "ntt",
    "intt",
    "pack_bits",
    "unpack_bits",
    "packed_size",
]

#: Largest prime size handled (SEAL's primes are at most 60 bits).
MAX_PRIME_BITS = 61
#: Primes below 2**DIRECT_PRIME_BITS take the faster single-product path.
DIRECT_PRIME_BITS = 50
_SPLIT = 31
_LOW = np.int64((1 << _SPLIT) - 1)


def _check_prime(q: int) -> int:
    q = int(q)
    if not 2 <= q < 1 << MAX_PRIME_BITS:
        raise ConfigError(f"modulus must be in [2, 2**{MAX_PRIME_BITS}), got {q}")
    return q


def _reduce_once(r: np.ndarray, q: int) -> np.ndarray:
    """int64 ``r`` in ``[−q, 2q)`` -> ``[0, q)``, in place."""
    qq = np.int64(q)
    t = r >> 63  # −1 where negative
    t &= qq
    r += t
    np.subtract(r, qq, out=t)  # r − q, negative exactly when r < q
    t >>= 63
    np.invert(t, out=t)  # −1 where r >= q
    t &= qq
    r -= t
    return r


@dataclass(frozen=True, eq=False)
class MulConst:
    """A fixed multiplier ``w`` (scalar or array of residues) modulo ``q``, precomputed for
    :func:`mul_const`. Build it with :meth:`make`."""

    q: int
    w: np.ndarray  # int64, in [0, q)
    w_over_q: np.ndarray  # float64 w / q
    w_hi: np.ndarray | None  # int64 w·2**31 mod q (split path only)
    w_hi_over_q: np.ndarray | None

    @classmethod
    def make(cls, w: int | np.ndarray, q: int) -> MulConst:
        q = _check_prime(q)
        if isinstance(w, (int, np.integer)):
            wi = int(w) % q
            arr = np.asarray(wi, dtype=np.int64)
            hi = np.asarray((wi << _SPLIT) % q, dtype=np.int64)
        else:
            arr = np.ascontiguousarray(w).astype(np.int64, copy=True)
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= q):
                raise ConfigError("MulConst: array multiplier must hold residues in [0, q)")
            hi = None
        if q.bit_length() <= DIRECT_PRIME_BITS:
            return cls(q, arr, arr / float(q), None, None)
        if hi is None:
            hi = mul_const(arr, cls.make(1 << _SPLIT, q))
        return cls(q, arr, arr / float(q), hi, hi / float(q))


def mul_const(a: np.ndarray, m: MulConst, out: np.ndarray | None = None) -> np.ndarray:
    """``a · w mod q`` in ``[0, q)`` for int64 residues ``0 <= a < 2**61`` (``a < 2**51`` on the
    direct path) broadcast against the multiplier ``w``."""
    q = m.q
    a = np.asarray(a)
    if a.dtype != np.int64:
        a = a.astype(np.int64)
    w_hi, w_hi_over_q = m.w_hi, m.w_hi_over_q
    if w_hi is None or w_hi_over_q is None:
        f = a.astype(np.float64)
        f *= m.w_over_q
        k = f.astype(np.int64)  # a >= 0: truncation is floor
        r = np.multiply(a, m.w, out=out)  # wraps modulo 2**64: only the final difference matters
        k *= np.int64(q)
        r -= k
        return _reduce_once(r, q)
    a1 = a >> _SPLIT
    a0 = a & _LOW
    f = a1.astype(np.float64)
    f *= w_hi_over_q
    f0 = a0.astype(np.float64)
    f0 *= m.w_over_q
    f += f0
    k = f.astype(np.int64)
    a1 *= w_hi
    a0 *= m.w
    r = np.add(a1, a0, out=out)
    k *= np.int64(q)
    r -= k
    return _reduce_once(r, q)


def mulmod(a: np.ndarray, b: np.ndarray, q: int) -> np.ndarray:
    """``a · b mod q`` elementwise for two arrays of residues (both vary; builds the
    precomputation for ``b`` first -- prefer :class:`MulConst` when ``b`` is reused)."""
    return mul_const(a, MulConst.make(np.asarray(b), q))


def addmod(a: np.ndarray, b: np.ndarray, q: int | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(a + b) mod q`` for residues in ``[0, q)`` (int64; ``q`` broadcastable)."""
    r = np.add(a, b, out=out)
    t = r - q
    return np.minimum(r.view(np.uint64), t.view(np.uint64), out=r.view(np.uint64)).view(np.int64)


def submod(a: np.ndarray, b: np.ndarray, q: int | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(a − b) mod q`` for residues in ``[0, q)``."""
    r = np.subtract(a, b, out=out)
    t = r + q
    return np.minimum(r.view(np.uint64), t.view(np.uint64), out=r.view(np.uint64)).view(np.int64)


def negmod(a: np.ndarray, q: int | np.ndarray) -> np.ndarray:
    """``−a mod q`` for residues in ``[0, q)`` (zero stays zero)."""
    a = np.asarray(a, dtype=np.int64)
    return np.where(a == 0, np.int64(0), np.subtract(q, a)).astype(np.int64, copy=False)


def to_residues(values: np.ndarray, q: int) -> np.ndarray:
    """Signed int64 values with ``|v| < q`` -> residues in ``[0, q)``."""
    v = np.asarray(values, dtype=np.int64)
    qq = np.int64(q)
    return v + ((v >> 63) & qq)


def centered(residues: np.ndarray, q: int) -> np.ndarray:
    """Residues in ``[0, q)`` -> the representative in ``(−q/2, q/2]`` (int64)."""
    r = np.asarray(residues, dtype=np.int64)
    return np.where(r > q // 2, r - np.int64(q), r)


# --------------------------------------------------------------------------------------------
# NTT


def _bit_reverse(n_bits: int) -> np.ndarray:
    idx = np.arange(1 << n_bits, dtype=np.int64)
    out = np.zeros_like(idx)
    for b in range(n_bits):
        out |= ((idx >> b) & 1) << (n_bits - 1 - b)
    return out


@dataclass(frozen=True, eq=False)
class NttTables:
    """Per-prime constants of the negacyclic NTT of degree ``n`` (SEAL's root and ordering)."""

    n: int
    q: int
    root: int  # SEAL's psi: a primitive 2n-th root of unity mod q
    stages: tuple[MulConst, ...]  # stage s (m = 2**s groups): roots psi^rev(m + i), i < m
    inv_stages: tuple[MulConst, ...]  # inverse transform, stage by stage
    n_inv: MulConst


def _seal_root(n: int, q: int) -> int:
    import _sealapi_cpp as sealcpp

    tables = sealcpp.util.CreateNTTTables(int(math.log2(n)), [sealcpp.Modulus(int(q))])
    return int(tables.get().get_root())


@functools.lru_cache(maxsize=32)
def ntt_tables(n: int, q: int) -> NttTables:
    """The NTT constants for degree ``n`` and prime ``q`` (``q ≡ 1 mod 2n``), with SEAL's root."""
    q = _check_prime(q)
    if n < 2 or n & (n - 1):
        raise ConfigError(f"NTT degree must be a power of two, got {n}")
    if (q - 1) % (2 * n):
        raise ConfigError(f"prime {q} is not 1 mod 2N = {2 * n}: no negacyclic NTT")
    log_n = n.bit_length() - 1
    psi = _seal_root(n, q)
    if pow(psi, n, q) != q - 1:
        raise ConfigError(f"SEAL's root {psi} is not a primitive 2N-th root of unity mod {q}")
    rev = _bit_reverse(log_n)
    # powers psi^j for j < n as Python ints, then placed in bit-reversed order
    pw = [1] * n
    for j in range(1, n):
        pw[j] = pw[j - 1] * psi % q
    fwd = np.empty(n, dtype=np.int64)
    fwd[rev] = np.asarray(pw, dtype=np.int64)  # fwd[k] = psi^rev(k)
    psi_inv = pow(psi, -1, q)
    pw_inv = [1] * n
    for j in range(1, n):
        pw_inv[j] = pw_inv[j - 1] * psi_inv % q
    inv = np.empty(n, dtype=np.int64)
    inv[rev] = np.asarray(pw_inv, dtype=np.int64)  # inv[k] = psi^-rev(k)
    stages = []
    inv_stages = []
    m = 1
    while m < n:
        stages.append(MulConst.make(fwd[m : 2 * m].reshape(m, 1), q))
        inv_stages.append(MulConst.make(inv[m : 2 * m].reshape(m, 1), q))
        m <<= 1
    return NttTables(n, q, psi, tuple(stages), tuple(inv_stages), MulConst.make(pow(n, -1, q), q))


_BLOCK_VALUES = 1 << 16  # residues per block (512 KiB of int64): the working set stays in L2
#: float64 quotient estimates are exact to within 1/2 while |operand| stays below this bound
_LAZY_LIMIT = 1 << 51


def ntt(polys: np.ndarray, q: int) -> np.ndarray:
    """SEAL's forward negacyclic NTT of every polynomial in ``polys`` (``(..., N)`` residues in
    ``[0, q)``); returns int64 residues in ``[0, q)`` of the same shape."""
    return _transform(polys, int(q), inverse=False)


def intt(polys: np.ndarray, q: int) -> np.ndarray:
    """Inverse of :func:`ntt` (SEAL's ``inverse_ntt_negacyclic_harvey``, fully reduced)."""
    return _transform(polys, int(q), inverse=True)


def _transform(polys: np.ndarray, q: int, inverse: bool) -> np.ndarray:
    arr = np.asarray(polys)
    if arr.ndim < 1:
        raise ConfigError("NTT input must have a polynomial axis")
    n = arr.shape[-1]
    tab = ntt_tables(n, q)
    flat = arr.reshape(-1, n)
    out = np.empty(flat.shape, dtype=np.int64)
    step = max(1, _BLOCK_VALUES // n)
    for start in range(0, flat.shape[0], step):
        # coefficient-major layout (N, b): every stage's operands are runs of gap*b contiguous values
        block = np.array(flat[start : start + step].T, dtype=np.int64, order="C", copy=True)
        if inverse:
            _intt_block(block, tab)
        elif q < 1 << DIRECT_PRIME_BITS:
            _ntt_block_lazy(block, tab)
        else:
            _ntt_block_exact(block, tab)
        out[start : start + step] = block.T
    return out.reshape(arr.shape)


def _centre(block: np.ndarray, q: int) -> None:
    """|v| < 2**51 -> v − q·round(v/q), in (−q, q), in place."""
    f = block.astype(np.float64)
    f *= 1.0 / q
    np.rint(f, out=f)
    k = f.astype(np.int64)
    k *= np.int64(q)
    block -= k


_MAGIC = 1.5 * 2.0**52  # x + _MAGIC rounds x (|x| < 2**51) to an integer held in the low mantissa bits
_MAGIC_BITS = np.float64(_MAGIC).view(np.int64)


def _ntt_block_lazy(block: np.ndarray, tab: NttTables) -> None:
    """Cooley–Tukey with bit-reversed roots on signed, lazily reduced values (q < 2**50).

    Stage with m groups: group i pairs x[j], x[j + gap] (gap = N/2m) and maps
    (x, y) -> (x + v, x − v), v = psi^rev(m+i)·y − k·q with k = round(y·psi^rev(m+i)/q) in
    float64 (within 1/2 of the true quotient while |y| < 2**51, so v is exact and in (−q, q);
    the rounding uses the 1.5·2**52 trick: no temporaries). Each stage widens the bound on
    |x| by q; the block is re-centred only when the next stage could pass 2**51 (never for
    primes below 2**47).
    """
    n, b = block.shape
    q = tab.q
    qq = np.int64(q)
    half = n * b // 2
    fbuf = np.empty(half, dtype=np.float64)
    kbuf = fbuf.view(np.int64)
    vbuf = np.empty(half, dtype=np.int64)
    bound = q
    m, gap = 1, n // 2
    for mc in tab.stages:
        if bound >= _LAZY_LIMIT:
            _centre(block, q)
            bound = q
        view = block.reshape(m, 2, gap, b)
        x = view[:, 0]
        y = view[:, 1]
        f = fbuf.reshape(m, gap, b)
        k = kbuf.reshape(m, gap, b)
        v = vbuf.reshape(m, gap, b)
        np.multiply(y, mc.w_over_q.reshape(m, 1, 1), out=f)
        f += _MAGIC
        k -= _MAGIC_BITS  # round(y·w/q)
        np.multiply(y, mc.w.reshape(m, 1, 1), out=v)  # wraps modulo 2**64; the difference is exact
        k *= qq
        v -= k  # in (−q, q)
        np.subtract(x, v, out=y)
        x += v
        bound += q
        m <<= 1
        gap >>= 1
    _centre(block, q)
    block += (block >> 63) & qq


def _ntt_block_exact(block: np.ndarray, tab: NttTables) -> None:
    """The same transform with every value kept in [0, q) (any prime below 2**61)."""
    n, b = block.shape
    q = tab.q
    m, gap = 1, n // 2
    for mc in tab.stages:
        view = block.reshape(m, 2, gap, b)
        x = view[:, 0]
        y = view[:, 1]
        c = MulConst(q, mc.w.reshape(m, 1, 1), mc.w_over_q.reshape(m, 1, 1),
                     None if mc.w_hi is None else mc.w_hi.reshape(m, 1, 1),
                     None if mc.w_hi_over_q is None else mc.w_hi_over_q.reshape(m, 1, 1))
        v = mul_const(y, c)
        np.subtract(x, v, out=y)
        y += (y >> 63) & np.int64(q)
        addmod(x, v, q, out=x)
        m <<= 1
        gap >>= 1


def _intt_block(block: np.ndarray, tab: NttTables) -> None:
    """Gentleman–Sande, the exact inverse of the forward stages, then the factor 1/N."""
    n, b = block.shape
    q = tab.q
    m, gap = n // 2, 1
    for mc in reversed(tab.inv_stages):
        view = block.reshape(m, 2, gap, b)
        x = view[:, 0]
        y = view[:, 1]
        c = MulConst(q, mc.w.reshape(m, 1, 1), mc.w_over_q.reshape(m, 1, 1),
                     None if mc.w_hi is None else mc.w_hi.reshape(m, 1, 1),
                     None if mc.w_hi_over_q is None else mc.w_hi_over_q.reshape(m, 1, 1))
        u = x.copy()
        addmod(u, y, q, out=x)
        submod(u, y, q, out=u)
        mul_const(u, c, out=y)
        m >>= 1
        gap <<= 1
    block[...] = mul_const(block, tab.n_inv)


# --------------------------------------------------------------------------------------------
# bit packing


def packed_size(count: int, width: int) -> int:
    """Bytes of ``count`` values packed at ``width`` bits (``count`` a multiple of 8)."""
    return count * width // 8


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Residues below ``2**width`` -> their low ``width`` bits, concatenated least significant
    bit first (``values.size`` must be a multiple of 8 so the result is whole bytes)."""
    if not 1 <= width <= 64:
        raise ConfigError(f"pack width must be in [1, 64], got {width}")
    v = np.ascontiguousarray(values).reshape(-1).astype(np.uint64, copy=False)
    if v.size % 8:
        raise ConfigError("pack_bits needs a multiple of 8 values")
    g = 8 // math.gcd(width, 8)  # values per group of whole bytes
    nbytes = g * width // 8
    nwords = -(-nbytes // 8)
    grp = v.reshape(-1, g)
    out = np.zeros((grp.shape[0], nwords + 1), dtype=np.uint64)
    for i in range(g):
        bit = i * width
        k, s = bit >> 6, bit & 63
        out[:, k] |= grp[:, i] << np.uint64(s)
        if s and s + width > 64:
            out[:, k + 1] |= grp[:, i] >> np.uint64(64 - s)
    raw = out.astype("<u8", copy=False).view(np.uint8).reshape(grp.shape[0], 8 * (nwords + 1))
    return raw[:, :nbytes].tobytes()


def unpack_bits(data: bytes | memoryview, width: int, count: int, *, what: str = "packed values") -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values (uint64); the byte length must match."""
    if not 1 <= width <= 64 or count % 8:
        raise ConfigError("unpack_bits: width in [1, 64] and a multiple of 8 values")
    need = packed_size(count, width)
    if len(data) != need:
        raise MalformedMessageError(f"{what}: {len(data)} bytes, expected {need}")
    g = 8 // math.gcd(width, 8)
    nbytes = g * width // 8
    nwords = -(-nbytes // 8)
    groups = count // g
    raw = np.zeros((groups, 8 * (nwords + 1)), dtype=np.uint8)
    raw[:, :nbytes] = np.frombuffer(data, dtype=np.uint8).reshape(groups, nbytes)
    words = raw.view("<u8").astype(np.uint64, copy=False)
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    out = np.empty((groups, g), dtype=np.uint64)
    for i in range(g):
        bit = i * width
        k, s = bit >> 6, bit & 63
        x = words[:, k] >> np.uint64(s)
        if s and s + width > 64:
            x |= words[:, k + 1] << np.uint64(64 - s)
        np.bitwise_and(x, mask, out=out[:, i])
    return out.reshape(-1)


def check_below(values: np.ndarray, q: int, what: str) -> None:
    """Raise :class:`MalformedMessageError` unless every value is below ``q``."""
    if values.size and int(values.max()) >= q:
        raise MalformedMessageError(f"{what}: a coefficient is not reduced modulo its prime")


def _as_sequence(primes: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(q) for q in primes)
