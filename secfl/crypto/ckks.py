"""CKKS for secure aggregation: parameters, key material, encryption, aggregation, decryption.

Aggregation only ever adds ciphertexts, so this module implements the part of CKKS
(Cheon-Kim-Kim-Song) that addition needs, over R_Q = Z_Q[X]/(X^N + 1) with Q a product of
SEAL-generated primes, and keeps it byte-compatible with Microsoft SEAL (tests decrypt our
ciphertexts with SEAL's ``Decryptor`` and SEAL's ciphertexts with ours):

* **Encoding** (SEAL's ``CKKSEncoder`` slot order): N/2 complex slots per ciphertext. With
  ``complex_packing`` two reals share a slot (real and imaginary part), so a ciphertext carries
  N reals; otherwise N/2. Values are multiplied by the scale Delta = 2^scale_bits and rounded.
* **Keys** (key holder): secret s uniform ternary; public key (b, a) = (-a*s + e, a), a uniform
  mod Q, e discrete Gaussian (sigma = 3.2, |e| <= 19, the HE-standard error distribution). All
  randomness comes from :class:`secfl.crypto.prg.Prg` seeded by ``secrets``.
* **Encryption** (client, public key only): c = (b*u + e0 + m, a*u + e1) with fresh ternary u and
  Gaussian e0, e1 -- SEAL's public-key encryption. Ciphertexts stay in coefficient form.
* **Aggregation** (server, no key): coefficient-wise addition mod each prime.
* **Decryption** (key holder): m + noise = c0 + c1*s, centred, decoded.

The polynomial products (public key times ternary u, ciphertext times ternary s) are computed
exactly with double-precision FFTs over the negacyclic ring on limbs of at most 30 bits, each
limb product provably below the float64 rounding limit, then recombined modulo each prime in
int64 arithmetic -- vectorised numpy over whole batches of ciphertexts, which is what makes
encryption fast (SEAL's binding cannot be called from Python without per-object overhead and
holds the GIL).

**Security.** 128-bit (or better, see :attr:`CkksParams.security_level`) RLWE security per the
HomomorphicEncryption.org standard table for ternary secrets, which every parameter set is
checked against. Ciphertexts are IND-CPA under RLWE; they are *not* authenticated and the
scheme is malleable (anyone can add to a ciphertext); the server, holding only a
:class:`CkksPublicContext`, learns nothing about the encrypted values. Whoever holds the secret
key decrypts everything. CKKS decryption results leak information about the secret key
(Li-Micciancio 2021) -- here only the key holder ever sees them.

**Overflow and error.** See :meth:`CkksParams.check_overflow` and :meth:`CkksParams.sum_error_std`;
the analysis is written out in ``protocols/ckks.md``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto import seal_bridge
from secfl.crypto.prg import Prg, fresh_seed
from secfl.errors import ConfigError, DecryptionRefusedError, InsecureParametersError, MalformedMessageError

__all__ = [
    "HE_STD_MAX_BITS",
    "NOISE_SIGMA",
    "ERROR_TAIL_SIGMAS",
    "CkksPreset",
    "CkksParams",
    "CkksPublicContext",
    "CkksSecretContext",
    "CkksCiphertexts",
    "CkksAccumulator",
    "CkksEncryptor",
    "preset_table",
]

#: HomomorphicEncryption.org standard (ternary secret, classical attacks): maximum total bits of
#: the coefficient modulus per ring degree N, for 128/192/256-bit security (SEAL's own tables).
HE_STD_MAX_BITS: dict[int, dict[int, int]] = {
    128: {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
#: Standard deviation of the error distribution (SEAL and the HE standard use 3.2 ~ 8/sqrt(2*pi)).
NOISE_SIGMA = 3.2
#: Errors are cut at 6 sigma (as SEAL's clipped normal): |e| <= 19.
NOISE_MAX = 19
#: Error bounds are stated at this many sub-Gaussian standard deviations (tail below
#: 2 exp(-32) = 2.5e-14 per value).
ERROR_TAIL_SIGMAS = 8.0
_MAX_ENCODED = float(1 << 61)  # an encoded coefficient must fit int64 arithmetic with headroom
_MAX_LIMB_BITS = 30
_CHUNK = 32  # ciphertexts per vectorised batch (keeps the working set in cache)


# --------------------------------------------------------------------------------------------
# parameters


class CkksPreset(str, Enum):
    """Named parameter sets (see :meth:`CkksParams.from_preset`)."""

    #: N=2048, one 54-bit prime, scale 2^35, complex packing: the smallest 128-bit set; 13.5 B/param.
    COMPACT = "compact"
    #: N=4096, one 60-bit prime, scale 2^40, complex packing: 64x more headroom; 15 B/param.
    WIDE = "wide"
    #: N=8192, primes [60, 40, 40], scale 2^40, one real per slot: the common HE-FL setting
    #: (NVIDIA FLARE's default TenSEAL context), for comparison.
    NVFLARE = "nvflare"


_PRESETS: dict[CkksPreset, tuple[int, tuple[int, ...], int, bool]] = {
    CkksPreset.COMPACT: (2048, (54,), 35, True),
    CkksPreset.WIDE: (4096, (60,), 40, True),
    CkksPreset.NVFLARE: (8192, (60, 40, 40), 40, False),
}


def _noise_distribution() -> tuple[np.ndarray, float]:
    """64-bit cumulative table of the discrete Gaussian on [-NOISE_MAX, NOISE_MAX] and its variance."""
    with localcontext() as ctx:
        ctx.prec = 60
        two_s2 = 2 * Decimal(str(NOISE_SIGMA)) ** 2
        weights = [(-(Decimal(k * k)) / two_s2).exp() for k in range(-NOISE_MAX, NOISE_MAX + 1)]
        total = sum(weights)
        cdf, acc = [], Decimal(0)
        for w in weights[:-1]:
            acc += w
            cdf.append(int(acc / total * (1 << 64)))
        var = sum(w * k * k for w, k in zip(weights, range(-NOISE_MAX, NOISE_MAX + 1), strict=True)) / total
    return np.array(cdf, dtype=np.uint64), float(var)


_NOISE_CDF, NOISE_VARIANCE = _noise_distribution()


@dataclass(frozen=True)
class CkksParams:
    """A CKKS parameter set, validated on construction.

    ``coeff_bits`` are SEAL's coefficient-modulus prime sizes: with one prime, ciphertexts live
    modulo it; with several, SEAL's convention applies -- the last is the key-switching
    ("special") prime and ciphertexts live modulo the others. The security bound counts all of
    them. ``scale_bits``: values are scaled by 2^scale_bits before rounding.
    ``complex_packing``: two reals per slot (N reals per ciphertext) instead of one (N/2).

    Raises :class:`InsecureParametersError` for a set beyond the HE-standard 128-bit bound,
    :class:`ConfigError` for malformed values.
    """

    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    complex_packing: bool = True

    def __post_init__(self) -> None:
        n = self.poly_degree
        if not isinstance(n, int) or isinstance(n, bool) or n not in HE_STD_MAX_BITS[128]:
            raise ConfigError(f"ckks poly_degree must be one of {sorted(HE_STD_MAX_BITS[128])}, got {n!r}")
        try:
            bits = tuple(int(b) for b in self.coeff_bits)
        except (TypeError, ValueError):
            raise ConfigError(f"ckks coeff_bits must be a sequence of integers, got {self.coeff_bits!r}") from None
        if not 1 <= len(bits) <= 16 or any(not 20 <= b <= 60 for b in bits):
            raise ConfigError(f"ckks coeff_bits must be 1 to 16 prime sizes in [20, 60] bits, got {list(bits)}")
        object.__setattr__(self, "coeff_bits", bits)
        limit = HE_STD_MAX_BITS[128][n]
        if sum(bits) > limit:
            raise InsecureParametersError(
                f"128-bit security bound (HE standard, ternary secret): N={n} allows at most {limit} bits of"
                f" coefficient modulus in total, got {sum(bits)} ({list(bits)})"
            )
        if not isinstance(self.complex_packing, bool):
            raise ConfigError(f"ckks complex_packing must be a bool, got {self.complex_packing!r}")
        if not isinstance(self.scale_bits, int) or isinstance(self.scale_bits, bool) or self.scale_bits < 1:
            raise ConfigError(f"ckks scale_bits must be an integer >= 1, got {self.scale_bits!r}")
        if self.scale_bits > self.data_bits - 2:
            raise InsecureParametersError(
                f"overflow bound: scale 2^{self.scale_bits} leaves no room below q/2 = 2^{self.data_bits - 1:.1f}"
                f" (ciphertext modulus of {self.data_bits:.1f} bits)"
            )
        if math.ldexp(1.0, self.scale_bits) >= _MAX_ENCODED:
            raise ConfigError(f"ckks scale_bits must be below 61, got {self.scale_bits}")
        self.primes  # noqa: B018 - SEAL must be able to generate the primes (raises ConfigError)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset: CkksPreset | str) -> CkksParams:
        try:
            p = CkksPreset(preset)
        except ValueError:
            raise ConfigError(f"unknown ckks preset {preset!r}; known: {[x.value for x in CkksPreset]}") from None
        n, bits, scale, cplx = _PRESETS[p]
        return cls(n, bits, scale, cplx)

    # -- derived quantities -------------------------------------------------------------------

    @property
    def primes(self) -> tuple[int, ...]:
        """All of SEAL's primes (key level), in order."""
        return seal_bridge.seal_primes(self.poly_degree, self.coeff_bits)

    @property
    def data_primes(self) -> tuple[int, ...]:
        """The primes ciphertexts live modulo."""
        p = self.primes
        return p if len(p) == 1 else p[:-1]

    @property
    def data_bits(self) -> float:
        """log2 of the ciphertext modulus Q."""
        return sum(math.log2(q) for q in self.data_primes)

    @property
    def total_bits(self) -> int:
        """Total bit count of all primes (what the security standard bounds)."""
        return sum(q.bit_length() for q in self.primes)

    @property
    def security_level(self) -> int:
        """The highest of 128/192/256 bits whose HE-standard bound this set meets."""
        return max(lvl for lvl, table in HE_STD_MAX_BITS.items() if self.total_bits <= table[self.poly_degree])

    @property
    def scale(self) -> float:
        return math.ldexp(1.0, self.scale_bits)

    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def values_per_ciphertext(self) -> int:
        return self.poly_degree if self.complex_packing else self.poly_degree // 2

    def ciphertexts_for(self, n_values: int) -> int:
        """How many ciphertexts ``n_values`` reals need."""
        return max(1, -(-int(n_values) // self.values_per_ciphertext))

    @property
    def ciphertext_bytes(self) -> int:
        """Bytes of one ciphertext on the wire: 2 polynomials x N coefficients, each packed to the
        bit length of its prime."""
        return 2 * self.poly_degree * sum(q.bit_length() for q in self.data_primes) // 8

    # -- error and overflow analysis ----------------------------------------------------------

    @property
    def key_norm_factor(self) -> float:
        """T = ln(N/2) + 3: key generation rejects a key whose error e or secret s has a slot
        value |e(zeta)|^2 > T * N * sigma^2 or |s(zeta)|^2 > T * 2N/3 (canonical embedding;
        about 1 in 10 draws is redrawn, which costs under 0.2 bits of security). It is what
        makes the error bound below hold for every key, in every slot."""
        return math.log(self.poly_degree / 2) + 3.0

    def coefficient_noise_proxy(self) -> float:
        """Sub-Gaussian variance proxy of one coefficient of the decryption noise of one fresh
        ciphertext, v = e*u + e0 + e1*s + r (r: encoding rounding): ||e||^2 at 1.25 N sigma^2
        (its mean is N sigma^2), ||s||^2 <= N, ternary u and |r| <= 1/2 bounded."""
        n = self.poly_degree
        return 1.25 * n * NOISE_VARIANCE + NOISE_VARIANCE * n + NOISE_VARIANCE + 0.25

    def sum_error_std(self, num_clients: int) -> float:
        """Sub-Gaussian scale of the error of each decoded real of a sum of ``num_clients``
        fresh encryptions (a bound on its standard deviation, in every slot, for every key
        :meth:`CkksSecretContext.generate` accepts):

            sqrt(K * N/2 * (T N sigma^2 + T (2N/3) sigma^2 + sigma^2 + 1/4)) / Delta

        -- the real part of slot k of e*U + E0 + E1*s + R is a sum of N independent bounded or
        Gaussian terms with weights |e(zeta_k)|, |s(zeta_k)| (see :attr:`key_norm_factor`).
        """
        k = max(1, int(num_clients))
        n, t, var = self.poly_degree, self.key_norm_factor, NOISE_VARIANCE
        per_client = n / 2.0 * (t * n * var + t * (2.0 * n / 3.0) * var + var + 0.25)
        return math.sqrt(k * per_client) / self.scale

    def sum_error_bound(self, num_clients: int, max_abs: float = 0.0) -> float:
        """Bound on |decoded - exact| for each real of a sum of ``num_clients`` encryptions of
        values within +-``max_abs``: ERROR_TAIL_SIGMAS x :meth:`sum_error_std` (exceeded with
        probability below 2 exp(-32) = 2.5e-14 per value), plus the float64 error of encoding and
        decoding (relative 2^-45, far below the noise)."""
        k = max(1, int(num_clients))
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        return ERROR_TAIL_SIGMAS * self.sum_error_std(k) + k * packing * max_abs * 2.0**-45

    def coefficient_bound(self, num_clients: int, max_abs: float) -> float:
        """High-probability bound on |coefficient| of the decrypted sum: every client's encoded
        coefficient is at most Delta * max|slot| (<= Delta * sqrt(2) * max_abs with complex
        packing), plus the noise at ERROR_TAIL_SIGMAS standard deviations."""
        k = max(1, int(num_clients))
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        per_client = self.scale * packing * float(max_abs) + 1.0
        return k * per_client + ERROR_TAIL_SIGMAS * math.sqrt(k * self.coefficient_noise_proxy())

    def check_overflow(self, num_clients: int, max_abs: float) -> None:
        """Refuse (``InsecureParametersError``) when ``num_clients`` values of magnitude
        ``max_abs`` could wrap around the modulus: the decrypted sum's coefficients must stay
        below q/2."""
        if not (isinstance(max_abs, (int, float)) and math.isfinite(max_abs) and max_abs >= 0):
            raise ConfigError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
        k = int(num_clients)
        if k < 1:
            raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        per_client = self.scale * packing * float(max_abs)
        if per_client >= _MAX_ENCODED:
            raise InsecureParametersError(
                f"overflow bound (encoder range): max|value| {max_abs:g} x scale 2^{self.scale_bits}"
                f" = 2^{math.log2(per_client):.1f} exceeds 2^61"
            )
        need = self.coefficient_bound(k, max_abs)
        half_q = self.data_bits - 1.0
        if math.log2(need) >= half_q:
            raise InsecureParametersError(
                f"overflow bound: {k} clients x max|value| {max_abs:g} x scale 2^{self.scale_bits}"
                + (" x sqrt(2) (complex packing)" if self.complex_packing else "")
                + f" + noise = 2^{math.log2(need):.2f} must stay below q/2 = 2^{half_q:.2f}; lower the clipping"
                " range, the maximum weight, the scale or the number of clients, or use a preset with a larger"
                " modulus"
            )

    def max_clients(self, max_abs: float) -> int:
        """The largest number of clients :meth:`check_overflow` accepts for ``max_abs``."""
        lo, hi = 0, 1
        while hi < 1 << 62:
            try:
                self.check_overflow(hi, max_abs)
            except InsecureParametersError:
                break
            lo, hi = hi, hi * 2
        else:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                self.check_overflow(mid, max_abs)
                lo = mid
            except InsecureParametersError:
                hi = mid
        return lo

    def describe(self) -> str:
        bits = "+".join(str(b) for b in self.coeff_bits)
        return (f"N={self.poly_degree}, primes {bits} bits, scale 2^{self.scale_bits}, "
                f"{'two reals' if self.complex_packing else 'one real'} per slot")


# --------------------------------------------------------------------------------------------
# ring arithmetic (numpy, vectorised over batches of polynomials)


class _Ring:
    """Exact arithmetic in Z_q[X]/(X^N+1) for the few operations aggregation needs.

    Folded negacyclic FFT: a real polynomial a of degree < N is represented by its values at
    zeta^(4k+1), k < N/2 (zeta = exp(i pi / N)), computed with one complex FFT of size N/2 on
    (a[:N/2] + i a[N/2:]) * zeta^n. The other N/2 evaluation points are the conjugates.
    """

    def __init__(self, params: CkksParams) -> None:
        n = params.poly_degree
        self.n = n
        self.h = n // 2
        self.primes = params.data_primes
        self.key_primes = params.primes
        idx = np.arange(self.h, dtype=np.float64)
        self.twist = np.exp(1j * np.pi * idx / n)
        self.untwist = np.conj(self.twist)
        # limbs: |limb product| <= N * 2^B stays far below the float64 FFT rounding limit
        max_bits = max(q.bit_length() for q in self.key_primes)
        cap = min(_MAX_LIMB_BITS, 44 - int(math.log2(n)))
        self.n_limbs = -(-max_bits // cap)
        self.limb_bits = -(-max_bits // self.n_limbs)
        # SEAL's CKKSEncoder slot order: slot j <-> root zeta^(3^j mod 2N); in the folded order
        # a root zeta^e with e = 1 (mod 4) is position (e-1)/4, otherwise its conjugate is.
        m = 2 * n
        e = np.empty(self.h, dtype=np.int64)
        pos = 1
        for j in range(self.h):
            e[j] = pos
            pos = (pos * 3) % m
        conj = (e % 4) == 3
        e = np.where(conj, m - e, e)
        self.slot_pos = (e - 1) // 4  # folded position of slot j
        self.inv_pos = np.argsort(self.slot_pos)  # slot held at folded position k
        self.conj_folded = np.flatnonzero(conj[self.inv_pos])
        self.conj_slots = np.flatnonzero(conj)
        self._consts: dict[tuple[int, ...], Any] = {}

    # folded FFT
    def fold(self, a: np.ndarray) -> np.ndarray:
        """(..., N) real -> (..., N/2) complex evaluations."""
        b = np.empty(a.shape[:-1] + (self.h,), dtype=np.complex128)
        b.real = a[..., : self.h]
        b.imag = a[..., self.h :]
        b *= self.twist
        return np.fft.ifft(b, norm="forward")

    def unfold(self, values: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`fold` (real parts; the caller rounds). May overwrite ``values``."""
        c = np.fft.fft(values, norm="forward")
        c *= self.untwist
        out = np.empty(values.shape[:-1] + (self.n,), dtype=np.float64)
        out[..., : self.h] = c.real
        out[..., self.h :] = c.imag
        return out

    def limbs_hat(self, polys: np.ndarray) -> np.ndarray:
        """(..., L, N) residues -> (n_limbs, ..., L, N/2) folded FFTs of their limbs."""
        mask = np.uint64((1 << self.limb_bits) - 1)
        out = []
        for limb in range(self.n_limbs):
            part = (polys >> np.uint64(limb * self.limb_bits)) & mask
            out.append(self.fold(part.astype(np.float64)))
        return np.stack(out)

    def _limb_constants(self, primes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray],
                                                                 list[np.ndarray]]:
        cached = self._consts.get(primes)
        if cached is not None:
            return cached
        q = np.asarray(primes, dtype=np.int64)[:, None]
        qinv = 1.0 / q.astype(np.float64)
        w = [np.array([pow(2, limb * self.limb_bits, p) for p in primes], dtype=np.int64)[:, None]
             for limb in range(self.n_limbs)]
        wq = [wl.astype(np.float64) / q.astype(np.float64) for wl in w]
        self._consts[primes] = (q, qinv, w, wq)
        return q, qinv, w, wq

    def mul_small(self, big_hat: np.ndarray, small_hat: np.ndarray, primes: tuple[int, ...],
                  extra: np.ndarray | None = None) -> np.ndarray:
        """(big * small + extra) mod q, exactly, as int64 in [0, q).

        ``big_hat``: :meth:`limbs_hat` of polynomials with residues < q (n_limbs, ..., L, N/2);
        ``small_hat``: folded small polynomials (|coefficients| <= 1), broadcastable against it;
        ``extra``: int64 with |extra| < 2^61, broadcastable to the (..., L, N) result.

        Each limb product is an exact integer below N * 2^limb_bits <= 2^44 in magnitude, far
        inside float64's exact range, so rounding the FFT result recovers it. The limbs are
        recombined as base + sum_l r_l * (2^(l*B) mod q) - k*q in wrapping int64 arithmetic,
        with the quotient k estimated in float64 (off by at most one: corrected after).
        """
        q, qinv, w, wq = self._limb_constants(primes)
        r = self.unfold(big_hat[0] * small_hat)
        np.rint(r, out=r)
        acc = r.astype(np.int64)
        if extra is not None:
            acc += extra
        kf = np.multiply(acc, qinv, out=r)  # reuse r's buffer for the quotient estimate
        for limb in range(1, self.n_limbs):
            r = self.unfold(big_hat[limb] * small_hat)
            np.rint(r, out=r)
            ri = r.astype(np.int64)
            ri *= w[limb]
            acc += ri  # may wrap: only the final value must fit
            r *= wq[limb]
            kf += r
        np.floor(kf, out=kf)
        k = kf.astype(np.int64)
        k *= q
        acc -= k  # true value now in [-q, 2q)
        np.right_shift(acc, 63, out=k)
        k &= q
        acc += k
        np.subtract(acc, q, out=k)
        np.right_shift(k, 63, out=k)
        np.invert(k, out=k)
        k &= q
        acc -= k
        return acc

    # CKKS encoding in SEAL's slot order
    def encode(self, slots: np.ndarray, scale: float) -> np.ndarray:
        """(C, N/2) complex slot values -> (C, N) int64 coefficients round(scale * m)."""
        folded = np.take(slots, self.inv_pos, axis=1) * scale
        folded.imag[:, self.conj_folded] *= -1.0
        return np.rint(self.unfold(folded)).astype(np.int64)

    def decode(self, coeffs: np.ndarray, scale: float) -> np.ndarray:
        """(C, N) float coefficients -> (C, N/2) complex slot values / scale."""
        folded = self.fold(coeffs)
        slots = np.take(folded, self.slot_pos, axis=1)
        slots.imag[:, self.conj_slots] *= -1.0
        slots /= scale
        return slots


def _mulmod_const(a: np.ndarray, w: int, q: int) -> np.ndarray:
    """a * w mod q for int64 0 <= a < 2^62 and constants 0 <= w < q < 2^61: a split into 31-bit
    halves, each product's quotient estimated in float64 (error < 2^-19, so the estimate is off
    by at most one), remainder exact in wrapping int64, corrected into [0, q)."""
    hi, lo = a >> 31, a & ((1 << 31) - 1)
    w_hi = (w << 31) % q
    qf = float(q)
    k = np.floor(hi * (w_hi / qf) + lo * (w / qf)).astype(np.int64)
    r = hi * np.int64(w_hi) + lo * np.int64(w) - k * np.int64(q)  # true value in [-q, 2q)
    qq = np.int64(q)
    r += qq & (r >> 63)
    r -= qq & ~((r - qq) >> 63)
    return r


def _reduce(v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """int64 |v| < 2^62 -> v mod q in [0, q) (float-estimated quotient, exact correction)."""
    k = np.floor(v * (1.0 / q)).astype(np.int64)
    r = v - k * q
    r += q & (r >> 63)
    r -= q & ~((r - q) >> 63)
    return r


# --------------------------------------------------------------------------------------------
# sampling (all from the AES-CTR CSPRNG)


def _ternary(prg: Prg, n: int) -> np.ndarray:
    """n values uniform in {-1, 0, 1} (int8): bytes below 255 taken mod 3 (255 = 3 x 85)."""
    parts, have = [], 0
    while have < n:
        need = n - have
        b = prg.uint8(need + need // 64 + 16)
        b = b[b < 255][:need]
        parts.append(b)
        have += b.size
    return _TERNARY_LUT[np.concatenate(parts) if len(parts) > 1 else parts[0]]


def _ternary_float(prg: Prg, n: int) -> np.ndarray:
    return _ternary(prg, n).astype(np.float64)


_TERNARY_LUT = (np.arange(256) % 3 - 1).astype(np.int8)


_AMBIGUOUS = np.int8(127)


@functools.lru_cache(maxsize=1)
def _gauss_lut() -> np.ndarray:
    """Table on the top 16 bits of a 64-bit uniform: the sample when every 64-bit extension of
    the prefix falls in one CDF interval, else 127 (finish with 48 more bits). Exact: the same
    result as inverting the full 64-bit CDF."""
    top = np.arange(1 << 16, dtype=np.uint64) << np.uint64(48)
    lo = np.searchsorted(_NOISE_CDF, top, side="right")
    hi = np.searchsorted(_NOISE_CDF, top | np.uint64((1 << 48) - 1), side="right")
    return np.where(lo == hi, lo - NOISE_MAX, _AMBIGUOUS).astype(np.int8)


def _gaussian(prg: Prg, n: int) -> np.ndarray:
    """n samples (int64) of the discrete Gaussian (sigma 3.2, |e| <= 19) by inversion of its
    64-bit CDF: 16 random bits decide all but ~0.05% of samples, which draw 48 bits more."""
    top = np.frombuffer(prg.bytes(2 * n), dtype="<u2")
    out = _gauss_lut()[top].astype(np.int64)
    amb = np.flatnonzero(out == _AMBIGUOUS)
    if amb.size:
        full = (top[amb].astype(np.uint64) << np.uint64(48)) | (prg.uint64(amb.size) >> np.uint64(16))
        out[amb] = np.searchsorted(_NOISE_CDF, full, side="right").astype(np.int64) - NOISE_MAX
    return out


# --------------------------------------------------------------------------------------------
# bit packing (the wire form of ciphertexts and keys)


def _pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """uint64 values < 2^width (count a multiple of 8) -> their bits, least significant first,
    concatenated into bytes (uint8 array of count * width / 8).

    Vectorised over groups of g = 8 / gcd(width, 8) values, which fill g * width / 8 whole bytes.
    """
    g = 8 // math.gcd(width, 8)
    nbytes = g * width // 8
    nwords = -(-nbytes // 8)
    v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1, g)
    out = np.zeros((v.shape[0], nwords), dtype=np.uint64)
    for i in range(g):
        bit = i * width
        k, s = bit >> 6, bit & 63
        out[:, k] |= v[:, i] << np.uint64(s)
        if s + width > 64:
            out[:, k + 1] |= v[:, i] >> np.uint64(64 - s)
    raw = out.astype("<u8", copy=False).view(np.uint8).reshape(v.shape[0], 8 * nwords)
    return raw[:, :nbytes].reshape(-1) if nbytes != 8 * nwords else raw.reshape(-1)


def _unpack_bits(raw: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`_pack_bits` (``raw``: uint8 array of exactly count * width / 8 bytes)."""
    buf = np.zeros(raw.size + 8, dtype=np.uint8)
    buf[: raw.size] = raw
    return _unpack_records(buf, 0, raw.size, 1, width, count).reshape(-1)


def _unpack_records(buf: np.ndarray, offset: int, stride: int, records: int, width: int, count: int) -> np.ndarray:
    """Values packed by :func:`_pack_bits`, ``count`` per record, ``records`` records of which
    the i-th starts at byte ``offset + i * stride`` of ``buf`` (uint8, with at least 8 bytes
    after the last value). Returns (records, count) uint64 without copying the input first."""
    g = 8 // math.gcd(width, 8)
    nbytes = g * width // 8
    groups = count // g
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    out = np.empty((records, groups, g), dtype=np.uint64)
    if width + 8 - math.gcd(width, 8) <= 64:
        # every value lies inside the 8-byte window at its first byte: strided unaligned loads
        for i in range(g):
            bit = i * width
            window = np.ndarray((records, groups), dtype="<u8", buffer=buf, offset=offset + (bit >> 3),
                                strides=(stride, nbytes))
            np.bitwise_and(window >> np.uint64(bit & 7), mask, out=out[:, :, i])
        return out.reshape(records, count)
    nwords = -(-nbytes // 8)
    raw = np.ndarray((records, groups, nbytes), dtype=np.uint8, buffer=buf, offset=offset,
                     strides=(stride, nbytes, 1))
    padded = np.zeros((records, groups, 8 * nwords), dtype=np.uint8)
    padded[:, :, :nbytes] = raw
    words = padded.view("<u8").astype(np.uint64, copy=False)
    for i in range(g):
        bit = i * width
        k, s = bit >> 6, bit & 63
        x = words[:, :, k] >> np.uint64(s)
        if s + width > 64:
            x |= words[:, :, k + 1] << np.uint64(64 - s)
        np.bitwise_and(x, mask, out=out[:, :, i])
    return out.reshape(records, count)


def _pack_polys(polys: np.ndarray, primes: Sequence[int]) -> bytes:
    """(C, P, L, N) residues -> bytes, layout [c][p][prime i: N coefficients at bitlen(q_i) bits]."""
    c, p, nl, n = polys.shape
    if nl == 1:
        return _pack_bits(polys, int(primes[0]).bit_length()).tobytes()
    parts = [_pack_bits(polys[:, :, i, :], int(q).bit_length()).reshape(c, p, -1) for i, q in enumerate(primes)]
    return np.concatenate(parts, axis=2).tobytes()


def _unpack_polys(data: bytes | memoryview, count: int, npoly: int, primes: Sequence[int], n: int,
                  what: str) -> np.ndarray:
    """Inverse of :func:`_pack_polys`, with strict length and range checks."""
    widths = [int(q).bit_length() for q in primes]
    per = n * sum(widths) // 8  # bytes per polynomial (all primes)
    if len(data) != count * npoly * per:
        raise MalformedMessageError(f"{what}: {len(data)} bytes of polynomial data, expected {count} x"
                                    f" {npoly * per}")
    buf = np.empty(len(data) + 8, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    buf[len(data) :] = 0
    out = np.empty((count, npoly, len(primes), n), dtype=np.uint64)
    start = 0
    for i, (q, width) in enumerate(zip(primes, widths, strict=True)):
        vals = _unpack_records(buf, start, per, count * npoly, width, n)
        start += n * width // 8
        if not bool(np.all(vals < np.uint64(q))):
            raise MalformedMessageError(f"{what}: a coefficient is not reduced modulo prime {i}")
        out[:, :, i, :] = vals.reshape(count, npoly, n)
    return out


# --------------------------------------------------------------------------------------------
# contexts


_CTX_MAGIC = b"SFCKKS"
_CTX_VERSION = 1
_KIND_PUBLIC = 1
_KIND_SECRET = 2
_CTX_HEAD = struct.Struct("<6sBBIBB")  # magic, version, kind, N, scale_bits, complex packing


def _params_bytes(params: CkksParams) -> bytes:
    head = _CTX_HEAD.pack(_CTX_MAGIC, _CTX_VERSION, 0, params.poly_degree, params.scale_bits,
                          int(params.complex_packing))
    return head + bytes([len(params.coeff_bits), *params.coeff_bits]) + b"".join(
        struct.pack("<Q", q) for q in params.primes)


class CkksPublicContext:
    """Public CKKS material: parameters and public key. Encrypts, adds, validates -- and
    cannot decrypt: it holds no secret key and nothing from which one could be reached.

    Build it from a :class:`CkksSecretContext` (:meth:`CkksSecretContext.public`) or from
    bytes (:meth:`from_bytes`). ``context_id`` (16 bytes, SHA-256 of the serialized public
    context) binds ciphertexts to the key they were made under.
    """

    __slots__ = ("params", "_pk", "_ring", "_pk_hat", "_context_id")

    def __init__(self, params: CkksParams, public_key: np.ndarray) -> None:
        pk = np.array(public_key, dtype=np.uint64, copy=True)
        if pk.shape != (2, len(params.primes), params.poly_degree):
            raise ConfigError(f"public key must have shape (2, {len(params.primes)}, {params.poly_degree}),"
                              f" got {pk.shape}")
        if not bool(np.all(pk < np.asarray(params.primes, dtype=np.uint64)[:, None])):
            raise ConfigError("public key coefficients must be reduced modulo their primes")
        pk.flags.writeable = False
        self.params = params
        self._pk = pk
        self._ring: _Ring | None = None
        self._pk_hat: np.ndarray | None = None
        self._context_id = hashlib.sha256(self.to_bytes()).digest()[:16]

    def __repr__(self) -> str:
        return f"CkksPublicContext({self.params.describe()}, id={self._context_id.hex()[:12]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CkksPublicContext) and other._context_id == self._context_id

    def __hash__(self) -> int:
        return hash(self._context_id)

    @property
    def context_id(self) -> bytes:
        return self._context_id

    @property
    def public_key(self) -> np.ndarray:
        """(2, L_key, N) uint64 coefficient-form public key (b, a), read-only."""
        return self._pk

    @property
    def ring(self) -> _Ring:
        if self._ring is None:
            self._ring = _Ring(self.params)
        return self._ring

    def _public_hat(self) -> np.ndarray:
        if self._pk_hat is None:
            ld = len(self.params.data_primes)
            self._pk_hat = self.ring.limbs_hat(self._pk[:, :ld, :])  # (limbs, 2, L, N/2)
        return self._pk_hat

    def decrypt(self, *_: Any, **__: Any) -> Any:
        """Always refuses: a public context has no secret key."""
        raise DecryptionRefusedError("a public CKKS context holds no secret key and cannot decrypt")

    # -- serialization -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Parameters and public key (never a secret key)."""
        head = bytearray(_params_bytes(self.params))
        head[7] = _KIND_PUBLIC
        return bytes(head) + _pack_polys(self._pk[None], self.params.primes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksPublicContext:
        """Parse a public context strictly. Bytes that carry a secret key are refused, so the
        server can never end up holding one by loading the wrong blob."""
        params, kind, rest = _parse_params(data, "CKKS public context")
        if kind != _KIND_PUBLIC:
            raise MalformedMessageError("CKKS public context: these bytes carry a secret key; a public context"
                                        " refuses to load them")
        pk = _unpack_polys(rest, 1, 2, params.primes, params.poly_degree, "CKKS public key")[0]
        return cls(params, pk)

    # -- encryption ----------------------------------------------------------------------------

    def encrypt(self, values: np.ndarray, *, seed: bytes | None = None) -> CkksCiphertexts:
        """Encrypt a real vector (any length; padded with zeros to whole ciphertexts).

        ``seed`` (32 bytes) makes the encryption randomness reproducible -- for tests only;
        by default a fresh seed comes from ``secrets``.
        """
        data = self._encrypt_array(_as_values(values), seed)
        return CkksCiphertexts(self, data, 1)

    def _encrypt_array(self, values: np.ndarray, seed: bytes | None) -> np.ndarray:
        chunks = list(self._encrypt_chunks(values, seed))
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)

    def _encrypt_packed(self, values: np.ndarray, seed: bytes | None) -> bytes:
        """Encrypt and bit-pack chunk by chunk (the working set stays in cache)."""
        primes = self.params.data_primes
        return b"".join(_pack_polys(chunk, primes) for chunk in self._encrypt_chunks(values, seed))

    def _encrypt_chunks(self, values: np.ndarray, seed: bytes | None) -> Iterator[np.ndarray]:
        p = self.params
        count = p.ciphertexts_for(values.size)
        per = p.values_per_ciphertext
        padded = np.zeros(count * per, dtype=np.float64)
        padded[: values.size] = values
        prg = Prg(fresh_seed() if seed is None else seed)
        for start in range(0, count, _CHUNK):
            stop = min(count, start + _CHUNK)
            yield self._encrypt_chunk(padded[start * per : stop * per].reshape(stop - start, per), prg)

    def _encrypt_chunk(self, vals: np.ndarray, prg: Prg) -> np.ndarray:
        """(C, values_per_ciphertext) -> (C, 2, L, N) uint64 ciphertexts (b*u + e0 + m, a*u + e1)."""
        p, ring = self.params, self.ring
        c, n = vals.shape[0], p.poly_degree
        if p.complex_packing:
            slots = np.ascontiguousarray(vals).view(np.complex128)
        else:
            slots = vals.astype(np.complex128)
        if float(np.max(np.abs(slots))) * p.scale >= _MAX_ENCODED:
            raise ConfigError("ckks: value x scale beyond the encoder range 2^61 (check_overflow refuses this)")
        extra = _gaussian(prg, 2 * c * n).reshape(c, 2, 1, n)
        extra[:, 0, 0] += ring.encode(slots, p.scale)
        u_hat = ring.fold(_ternary_float(prg, c * n).reshape(c, n))[:, None, None, :]  # (C, 1, 1, N/2)
        out = ring.mul_small(self._public_hat(), u_hat, p.data_primes, extra)
        return out.astype(np.uint64)

    # -- ciphertext parsing ----------------------------------------------------------------------

    def ciphertexts_from_bytes(self, data: bytes, *, expect_count: int | None = None) -> CkksCiphertexts:
        """Parse a :meth:`CkksCiphertexts.to_bytes` blob made under this context, strictly."""
        return CkksCiphertexts.from_bytes(self, data, expect_count=expect_count)


def _parse_params(data: bytes, what: str) -> tuple[CkksParams, int, bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _CTX_HEAD.size + 1:
        raise MalformedMessageError(f"{what}: truncated ({len(data)} bytes)")
    magic, version, kind, n, scale_bits, cplx = _CTX_HEAD.unpack_from(data, 0)
    if magic != _CTX_MAGIC or version != _CTX_VERSION:
        raise MalformedMessageError(f"{what}: not a secfl CKKS context (or unsupported version {version})")
    if kind not in (_KIND_PUBLIC, _KIND_SECRET) or cplx not in (0, 1):
        raise MalformedMessageError(f"{what}: bad kind {kind} or packing flag {cplx}")
    pos = _CTX_HEAD.size
    nbits = data[pos]
    pos += 1
    if len(data) < pos + nbits:
        raise MalformedMessageError(f"{what}: truncated parameter list")
    bits = tuple(data[pos : pos + nbits])
    pos += nbits
    try:
        params = CkksParams(n, bits, scale_bits, bool(cplx))
    except ConfigError as exc:  # includes InsecureParametersError
        raise MalformedMessageError(f"{what}: parameters refused: {exc}") from None
    primes = params.primes
    if len(data) < pos + 8 * len(primes):
        raise MalformedMessageError(f"{what}: truncated prime list")
    got = struct.unpack_from(f"<{len(primes)}Q", data, pos)
    if tuple(got) != primes:
        raise MalformedMessageError(f"{what}: primes {list(got)} are not SEAL's for these parameters")
    pos += 8 * len(primes)
    return params, kind, data[pos:]


class CkksSecretContext:
    """Secret CKKS material: a :class:`CkksPublicContext` plus the secret key. Decrypts.

    The secret key never leaves the object except through
    ``to_bytes(include_secret_key=True)``; ``repr`` hides it and pickling is refused (use the
    explicit serializer). :meth:`public` returns a new public-only object.
    """

    __slots__ = ("_public", "_secret", "_s_hat")

    def __init__(self, public: CkksPublicContext, secret: np.ndarray) -> None:
        s = np.array(secret, dtype=np.int8, copy=True)
        if s.shape != (public.params.poly_degree,) or not bool(np.all(np.abs(s) <= 1)):
            raise ConfigError("secret key must be a ternary vector of length N")
        s.flags.writeable = False
        self._public = public
        self._secret = s
        self._s_hat: np.ndarray | None = None

    @classmethod
    def generate(cls, params: CkksParams | CkksPreset | str = CkksPreset.COMPACT) -> CkksSecretContext:
        """Fresh keys: s ternary, a uniform, e Gaussian, all from a fresh CSPRNG seed."""
        if not isinstance(params, CkksParams):
            params = CkksParams.from_preset(params)
        seal_bridge.seal_context(params.poly_degree, params.primes)  # SEAL double-checks the set
        prg = Prg(fresh_seed())
        n, primes = params.poly_degree, params.primes
        ring = _Ring(params)
        limit = params.key_norm_factor
        while True:  # rejection on the canonical embedding (see CkksParams.key_norm_factor)
            s = _ternary(prg, n)
            e = _gaussian(prg, n)
            s_can = float(np.max(np.abs(ring.fold(s.astype(np.float64))) ** 2)) / (2.0 * n / 3.0)
            e_can = float(np.max(np.abs(ring.fold(e.astype(np.float64))) ** 2)) / (n * NOISE_VARIANCE)
            if s_can <= limit and e_can <= limit:
                break
        a = np.stack([prg.uniform_below(n, q) for q in primes])  # (L_key, N)
        q = np.asarray(primes, dtype=np.int64)
        a_s = ring.mul_small(ring.limbs_hat(a), ring.fold(s.astype(np.float64))[None, :], primes)
        b = _reduce(e.astype(np.int64)[None, :] - a_s, q[:, None]).astype(np.uint64)
        return cls(CkksPublicContext(params, np.stack([b, a])), s)

    def __repr__(self) -> str:
        return f"CkksSecretContext({self._public.params.describe()}, <secret key>)"

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle a CKKS secret context; use to_bytes(include_secret_key=True)")

    @property
    def params(self) -> CkksParams:
        return self._public.params

    @property
    def context_id(self) -> bytes:
        return self._public.context_id

    def public(self) -> CkksPublicContext:
        """A new public-only context (parameters and public key; no secret key inside)."""
        return CkksPublicContext(self._public.params, self._public.public_key)

    def to_bytes(self, *, include_secret_key: bool = False) -> bytes:
        """Serialized context. Without ``include_secret_key=True`` this is exactly the public
        context's bytes."""
        pub = self._public.to_bytes()
        if not include_secret_key:
            return pub
        out = bytearray(pub)
        out[7] = _KIND_SECRET
        return bytes(out) + self._secret.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksSecretContext:
        params, kind, rest = _parse_params(data, "CKKS secret context")
        if kind != _KIND_SECRET:
            raise MalformedMessageError("CKKS secret context: these bytes hold no secret key")
        n = params.poly_degree
        pk_len = 2 * n * sum(q.bit_length() for q in params.primes) // 8
        if len(rest) != pk_len + n:
            raise MalformedMessageError(f"CKKS secret context: {len(rest)} bytes of keys, expected {pk_len + n}")
        pk = _unpack_polys(rest[:pk_len], 1, 2, params.primes, n, "CKKS public key")[0]
        s = np.frombuffer(rest[pk_len:], dtype=np.int8)
        if not bool(np.all(np.abs(s) <= 1)):
            raise MalformedMessageError("CKKS secret context: the secret key is not ternary")
        return cls(CkksPublicContext(params, pk), s)

    def encrypt(self, values: np.ndarray, *, seed: bytes | None = None) -> CkksCiphertexts:
        """Public-key encryption (same as the public context's)."""
        return self._public.encrypt(values, seed=seed)

    # -- decryption ------------------------------------------------------------------------------

    def decrypt(self, ciphertexts: CkksCiphertexts, n_values: int | None = None) -> np.ndarray:
        """Decrypt and decode to a float64 vector (the first ``n_values`` reals)."""
        if not isinstance(ciphertexts, CkksCiphertexts):
            raise ConfigError(f"decrypt expects CkksCiphertexts, got {type(ciphertexts).__name__}")
        if ciphertexts.context_id != self.context_id:
            raise MalformedMessageError("ciphertexts were made under another CKKS context")
        p, ring = self.params, self._public.ring
        if self._s_hat is None:
            self._s_hat = ring.fold(self._secret.astype(np.float64))
        data = ciphertexts.data
        out = []
        for start in range(0, data.shape[0], _CHUNK):
            ct = data[start : start + _CHUNK]
            c1_hat = ring.limbs_hat(ct[:, 1])  # (limbs, C, L, N/2)
            m = ring.mul_small(c1_hat, self._s_hat, p.data_primes, ct[:, 0].astype(np.int64))
            coeffs = _centered_float(m, p.data_primes)  # (C, N)
            slots = ring.decode(coeffs, p.scale)
            out.append(slots.view(np.float64) if p.complex_packing else slots.real.copy())
        values = np.concatenate(out, axis=0).reshape(-1)
        return values if n_values is None else values[:n_values].copy()

    def seal_secret_key(self) -> seal_bridge.SealSecretKey:
        """The secret key in SEAL's form (NTT, key level), e.g. for SEAL's ``Decryptor``."""
        p = self.params
        s = self._secret.astype(np.int64)
        res = np.stack([np.where(s < 0, s + q, s) for q in p.primes]).astype(np.uint64)
        ntt = seal_bridge.seal_ntt(res, p.primes)
        ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
        return seal_bridge.SealSecretKey(seal_bridge.parms_id_of(ctx.key_parms_id()), ntt)

    def seal_public_key(self) -> seal_bridge.SealPublicKey:
        """The public key in SEAL's form (NTT, key level)."""
        p = self.params
        ntt = seal_bridge.seal_ntt(self._public.public_key, p.primes)
        ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
        return seal_bridge.SealPublicKey(seal_bridge.parms_id_of(ctx.key_parms_id()), ntt)


def _centered_float(m: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """(C, L, N) residues in [0, q_i) -> float64 centred representative of the CRT value in
    (-Q/2, Q/2]: mixed-radix (Garner) digits, each centred, summed as d_0 + q_0 (d_1 + q_1 ...).
    Exact while |value| < 2^53, relative error 2^-52 beyond."""
    q0 = int(primes[0])
    v = m[:, 0].astype(np.int64)
    v = np.where(v > q0 // 2, v - q0, v)
    if len(primes) == 1:
        return v.astype(np.float64)
    digits = [v]
    total = v.astype(np.float64)
    radix = float(q0)
    for i in range(1, len(primes)):
        qi = int(primes[i])
        qa = np.int64(qi)
        partial = np.zeros_like(v)  # sum_j digit_j * prod_{t<j} q_t  (mod q_i)
        mult = 1
        for j, d in enumerate(digits):
            term = _reduce(d, qa)
            if mult % qi != 1:
                term = _mulmod_const(term, mult % qi, qi)
            partial = _reduce(partial + term, qa)
            mult *= int(primes[j])
        diff = m[:, i].astype(np.int64) - partial
        diff += qa & (diff >> 63)
        d = _mulmod_const(diff, pow(mult % qi, -1, qi), qi)
        d = np.where(d > qi // 2, d - qi, d)
        digits.append(d)
        total += d.astype(np.float64) * radix
        radix *= qi
    return total


def _as_values(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ConfigError(f"ckks encrypts 1-D vectors, got shape {arr.shape}")
    if not bool(np.all(np.isfinite(arr))):
        raise ConfigError("ckks cannot encrypt NaN or infinite values")
    return arr


# --------------------------------------------------------------------------------------------
# ciphertexts, aggregation


_CT_HEAD = struct.Struct("<16sI")  # context id, ciphertext count


class CkksCiphertexts:
    """A batch of ciphertexts under one context: ``data[c, j, i, n]`` is coefficient n of
    polynomial j of ciphertext c modulo data prime i (coefficient form). ``summands`` counts
    the encryptions added into it (1 for a fresh batch).

    Wire form (:meth:`to_bytes`): context id (16 B), count (u32), then per ciphertext its two
    polynomials with every coefficient packed to the bit length of its prime.
    """

    __slots__ = ("context", "data", "summands")

    def __init__(self, context: CkksPublicContext, data: np.ndarray, summands: int = 1) -> None:
        p = context.params
        if data.dtype != np.uint64 or data.ndim != 4 or data.shape[1:] != (2, len(p.data_primes), p.poly_degree):
            raise ConfigError(f"ciphertext data must be uint64 (C, 2, {len(p.data_primes)}, {p.poly_degree}),"
                              f" got {data.dtype} {data.shape}")
        self.context = context
        self.data = data
        self.summands = summands

    def __repr__(self) -> str:
        return f"CkksCiphertexts({len(self)} ciphertexts, {self.summands} summand(s))"

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def context_id(self) -> bytes:
        return self.context.context_id

    @property
    def nbytes(self) -> int:
        return _CT_HEAD.size + len(self) * self.context.params.ciphertext_bytes

    def to_bytes(self) -> bytes:
        return _CT_HEAD.pack(self.context_id, len(self)) + _pack_polys(self.data, self.context.params.data_primes)

    @classmethod
    def from_bytes(cls, context: CkksPublicContext, data: bytes, *, expect_count: int | None = None) -> CkksCiphertexts:
        """Strict parse: context id, count (``expect_count`` pins it), exact length, every
        coefficient below its prime. Raises :class:`MalformedMessageError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessageError(f"CKKS ciphertexts: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _CT_HEAD.size:
            raise MalformedMessageError(f"CKKS ciphertexts: truncated ({len(data)} bytes)")
        cid, count = _CT_HEAD.unpack_from(data, 0)
        if cid != context.context_id:
            raise MalformedMessageError("CKKS ciphertexts: made under another key / parameter set")
        if count < 1 or (expect_count is not None and count != expect_count):
            raise MalformedMessageError(f"CKKS ciphertexts: count {count}, expected {expect_count}")
        p = context.params
        arr = _unpack_polys(memoryview(data)[_CT_HEAD.size :], count, 2, p.data_primes, p.poly_degree,
                            "CKKS ciphertexts")
        return cls(context, arr, 1)

    def to_seal(self) -> list[Any]:
        """SEAL ``Ciphertext`` objects (NTT form, SEAL's first data level) -- for interop/tests."""
        import tenseal.sealapi as sealapi

        p = self.context.params
        ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
        pid = seal_bridge.parms_id_of(ctx.first_parms_id())
        ntt = seal_bridge.seal_ntt(self.data, p.data_primes)
        out = []
        for c in range(len(self)):
            blob = seal_bridge.SealCiphertext(pid, True, p.scale, ntt[c]).to_bytes()
            out.append(seal_bridge.load_seal_object(sealapi.Ciphertext(), ctx, blob))
        return out

    @classmethod
    def from_seal(cls, context: CkksPublicContext, ciphertexts: Sequence[Any]) -> CkksCiphertexts:
        """Import SEAL ``Ciphertext`` objects (first data level, scale = the context's)."""
        p = context.params
        rows = []
        for ct in ciphertexts:
            sc = seal_bridge.SealCiphertext.from_bytes(seal_bridge.save_seal_object(ct), moduli=p.data_primes)
            if sc.data.shape[0] != 2 or sc.scale != p.scale:
                raise MalformedMessageError("SEAL ciphertext: expected size 2 at the context's scale")
            rows.append(seal_bridge.seal_ntt(sc.data, p.data_primes, inverse=True) if sc.is_ntt_form else sc.data)
        return cls(context, np.stack(rows), 1)


class CkksAccumulator:
    """Server side: a running sum of ciphertext batches, modulo each prime, in place.

    Holds one batch worth of ciphertexts however many are added.
    """

    __slots__ = ("context", "_sum", "_q", "summands")

    def __init__(self, context: CkksPublicContext, count: int) -> None:
        p = context.params
        self.context = context
        self._sum = np.zeros((count, 2, len(p.data_primes), p.poly_degree), dtype=np.uint64)
        self._q = np.asarray(p.data_primes, dtype=np.uint64)[:, None]
        self.summands = 0

    def add(self, batch: CkksCiphertexts) -> None:
        if batch.context_id != self.context.context_id:
            raise MalformedMessageError("ciphertexts were made under another CKKS context")
        if batch.data.shape != self._sum.shape:
            raise MalformedMessageError(f"ciphertext batch of shape {batch.data.shape}, expected {self._sum.shape}")
        for start in range(0, self._sum.shape[0], _CHUNK):  # chunks keep the temporary in cache
            s = self._sum[start : start + _CHUNK]
            s += batch.data[start : start + _CHUNK]  # both < q < 2^61: no wrap-around
            np.minimum(s, s - self._q, out=s)  # s - q wraps to > 2^63 exactly when s < q
        self.summands += batch.summands

    def result(self) -> CkksCiphertexts:
        return CkksCiphertexts(self.context, self._sum.copy(), self.summands)


# --------------------------------------------------------------------------------------------
# encryption with a process pool


_WORKER_CTX: CkksPublicContext | None = None


def _worker_init(ctx_bytes: bytes) -> None:
    global _WORKER_CTX
    _WORKER_CTX = CkksPublicContext.from_bytes(ctx_bytes)


def _worker_encrypt(values: np.ndarray, seed: bytes) -> bytes:
    if _WORKER_CTX is None:  # pragma: no cover - initializer always runs first
        raise ConfigError("encryption worker has no context")
    return _WORKER_CTX._encrypt_packed(values, seed)


class CkksEncryptor:
    """Encrypts and serializes vectors under a public context, optionally across a process
    pool (``workers`` > 1; each worker loads the context once). :meth:`close` ends the pool.

    Encryption is numpy code driven from Python; processes, not threads, run it in parallel.
    """

    def __init__(self, context: CkksPublicContext, workers: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        self.context = context
        self.workers = workers
        self._pool: Any = None

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=(self.context.to_bytes(),))
        return self._pool

    def encrypt_to_bytes(self, values: np.ndarray) -> bytes:
        """``CkksCiphertexts.to_bytes()`` of the encryption of ``values``."""
        vals = _as_values(values)
        p = self.context.params
        count = p.ciphertexts_for(vals.size)
        head = _CT_HEAD.pack(self.context.context_id, count)
        if self.workers == 1 or count < 2 * self.workers:
            return head + self.context._encrypt_packed(vals, None)
        per = p.values_per_ciphertext
        tasks = min(count, 2 * self.workers)
        bounds = [count * t // tasks for t in range(tasks + 1)]
        pool = self._executor()
        futures = [pool.submit(_worker_encrypt, vals[bounds[t] * per : bounds[t + 1] * per], fresh_seed())
                   for t in range(tasks)]
        # a slice shorter than its ciphertexts is zero-padded by the worker; sizes match by construction
        return head + b"".join(f.result() for f in futures)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> CkksEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# presets for `secfl info`


def preset_table(measure_values: int = 100_000) -> list[dict[str, Any]]:
    """One row per preset: parameters, security level, and bytes per parameter measured by
    encrypting and serializing a ``measure_values``-long vector under a fresh key.

    Keys: name, poly_degree, coeff_bits, data_primes_bits, scale_bits, complex_packing,
    values_per_ciphertext, security_bits, ciphertext_bytes, bytes_per_param (the serialized
    ciphertexts of ``measure_values`` reals, their 20-byte header included; a protocol message adds
    30 bytes of framing and one slot for the weight), ratio_to_float32, max_clients_at_clip_1
    (the overflow bound for values in [-1, 1]), error_bound_10_clients (bound on each real of a
    sum of 10 encryptions), measured_values.
    """
    rows = []
    for preset in CkksPreset:
        p = CkksParams.from_preset(preset)
        sk = CkksSecretContext.generate(p)
        blob = sk.public().encrypt(np.zeros(measure_values)).to_bytes()
        bpp = len(blob) / measure_values
        rows.append({
            "name": preset.value,
            "poly_degree": p.poly_degree,
            "coeff_bits": list(p.coeff_bits),
            "data_primes_bits": [q.bit_length() for q in p.data_primes],
            "scale_bits": p.scale_bits,
            "complex_packing": p.complex_packing,
            "values_per_ciphertext": p.values_per_ciphertext,
            "security_bits": p.security_level,
            "ciphertext_bytes": p.ciphertext_bytes,
            "bytes_per_param": round(bpp, 3),
            "ratio_to_float32": round(bpp / 4.0, 3),
            "max_clients_at_clip_1": p.max_clients(1.0),
            "error_bound_10_clients": float(f"{p.sum_error_bound(10, 1.0):.3g}"),
            "measured_values": measure_values,
        })
    return rows
