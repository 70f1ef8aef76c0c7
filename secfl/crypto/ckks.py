"""CKKS for secure aggregation on Microsoft SEAL: parameters, key material, encryption,
aggregation, decryption.

Every cryptographic operation is SEAL's own (SEAL 4.3 inside TenSEAL, through
``tenseal.sealapi``); this module chooses parameters, moves data between SEAL and numpy, and
adds ciphertexts:

* **Keys** (key holder): SEAL's ``KeyGenerator`` -- secret key s (uniform ternary) and public key
  (b, a) = (-a*s + e, a) at the key level, in NTT form. A key pair whose canonical embedding is
  unusually large is discarded and drawn again (see :attr:`CkksParams.key_norm_factor`): that is
  what makes the documented error bound hold in every slot for every key.
* **Encoding**: SEAL's ``CKKSEncoder``, N/2 complex slots per ciphertext. With
  ``complex_packing`` two reals share a slot (real and imaginary part), so a ciphertext carries
  N reals; otherwise N/2. Values are multiplied by the scale Delta = 2^scale_bits and rounded.
* **Encryption**: SEAL's ``Encryptor``. With the public key (:class:`CkksPublicContext`, e.g. a
  threshold protocol's collective key): c = (b*u + e0 + m, a*u + e1) with u ternary and e0, e1
  from SEAL's error distribution. With the secret key (:class:`CkksSecretContext`, the ``ckks``
  clients, who all hold it): SEAL's symmetric encryption c = (-a*s + e + m, a) with a uniform --
  about twice as fast and with less noise. All randomness is drawn by SEAL's PRNG (Blake2xb,
  freshly seeded from the operating system for every encryption). With a special prime P
  (several primes), SEAL encrypts modulo Q*P and divides by P.
* **Wire form**: each ciphertext's two NTT-form polynomials with every residue bit-packed to the
  length of its prime (:class:`CkksCiphertexts`), read out of SEAL's own serialization.
* **Aggregation** (server, no key): coefficient-wise addition mod each prime of the parsed
  ciphertexts (:class:`CkksAccumulator`) -- bit for bit SEAL's ``Evaluator.add`` (tested).
* **Decryption** (key holder): SEAL's ``Decryptor`` and ``CKKSEncoder.decode``.

SEAL's objects only save to and load from file paths; :mod:`secfl.crypto.seal_bridge` parses
their bytes (a per-process scratch file on ``/dev/shm`` for ciphertexts; key material goes
through files removed at once).

**Security.** 128-bit (or better, see :attr:`CkksParams.security_level`) RLWE security per the
HomomorphicEncryption.org standard table for ternary secrets, which every parameter set is
checked against (and SEAL checks again). Ciphertexts are IND-CPA under RLWE; they are *not*
authenticated and the scheme is malleable (anyone can add to a ciphertext); the server, holding
only a :class:`CkksPublicContext`, learns nothing about the encrypted values. Whoever holds the
secret key decrypts everything. CKKS decryption results leak information about the secret key
(Li-Micciancio 2021) -- here only the key holder ever sees them.

**Overflow and error.** See :meth:`CkksParams.check_overflow` and :meth:`CkksParams.sum_error_std`;
the analysis is written out in ``protocols/ckks.md``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto import seal_bridge
from secfl.errors import ConfigError, DecryptionRefusedError, InsecureParametersError, MalformedMessageError

__all__ = [
    "HE_STD_MAX_BITS",
    "NOISE_SIGMA",
    "NOISE_VARIANCE",
    "NOISE_MAX",
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
#: SEAL's error distribution (as built in TenSEAL 0.3.18, SEAL's default): the centred binomial
#: distribution with parameter 21 -- a sum of 42 coin flips of +-1/2 -- variance 21/2, so
#: standard deviation 3.24 (the HE standard's 3.2), support [-21, 21]. It is sub-Gaussian with
#: variance proxy equal to its variance (Hoeffding on the 42 bounded terms), which is what the
#: error analysis uses. ``tests/test_ckks_seal.py`` checks SEAL's samples against it.
NOISE_VARIANCE = 10.5
NOISE_SIGMA = math.sqrt(NOISE_VARIANCE)
NOISE_MAX = 21
#: Error bounds are stated at this many sub-Gaussian standard deviations (tail below
#: 2 exp(-32) = 2.5e-14 per value).
ERROR_TAIL_SIGMAS = 8.0
_CHUNK = 32  # ciphertexts per batch (one scratch buffer of ~1 MB at N=2048)
_MAX_KEY_DRAWS = 200  # a draw is accepted with probability ~0.9: 200 failures never happen


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


def largest_accepted(check: Callable[[int], None], cap: int) -> int:
    """The largest ``k`` in [0, cap] for which ``check(k)`` raises no InsecureParametersError
    (``check`` must be monotone: accepted up to some k, refused above)."""
    lo, hi = 0, 1
    while hi < cap:
        try:
            check(hi)
        except InsecureParametersError:
            break
        lo, hi = hi, hi * 2
    else:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            check(mid)
            lo = mid
        except InsecureParametersError:
            hi = mid
    return lo


class SlotGeometry:
    """What a CKKS parameter set implies for packing and security (shared by ``ckks`` and
    ``ckks-threshold`` parameter sets, which provide the four attributes below)."""

    poly_degree: int
    scale_bits: int
    complex_packing: bool

    @property
    def total_bits(self) -> int:
        raise NotImplementedError

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


@dataclass(frozen=True)
class CkksParams(SlotGeometry):
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
    def special_prime(self) -> int | None:
        """SEAL's key-switching prime P (the last one), or None for a single-prime set. Public-key
        encryption happens modulo Q*P and is divided by P, which shrinks its noise."""
        p = self.primes
        return p[-1] if len(p) > 1 else None

    @property
    def data_bits(self) -> float:
        """log2 of the ciphertext modulus Q."""
        return sum(math.log2(q) for q in self.data_primes)

    @property
    def total_bits(self) -> int:
        """Total bit count of all primes (what the security standard bounds)."""
        return sum(q.bit_length() for q in self.primes)

    @property
    def ciphertext_bytes(self) -> int:
        """Bytes of one ciphertext on the wire: 2 polynomials x N coefficients, each packed to the
        bit length of its prime."""
        return 2 * self.poly_degree * sum(q.bit_length() for q in self.data_primes) // 8

    # -- error and overflow analysis ----------------------------------------------------------

    @property
    def key_norm_factor(self) -> float:
        """T = ln(N/2) + 3: key generation discards a key pair whose public-key error e or secret
        s has a slot value |e(zeta)|^2 > T * N * sigma^2 or |s(zeta)|^2 > T * 2N/3 (canonical
        embedding; about 1 draw in 10 is discarded, which costs under 0.2 bits of security). It
        is what makes the error bound below hold for every key, in every slot."""
        return math.log(self.poly_degree / 2) + 3.0

    def _key_level_proxy(self) -> float:
        """Coefficient proxy of the noise e*u + e0 + e1*s of an encryption of zero under the
        public key: ||e||^2 at 1.25 N sigma^2 (its mean is N sigma^2), ||s||^2 <= N, ternary u."""
        n, var = self.poly_degree, NOISE_VARIANCE
        return 1.25 * n * var + var * n + var

    def coefficient_noise_proxy(self) -> float:
        """Sub-Gaussian variance proxy of one coefficient of the decryption noise of one fresh
        ciphertext. Single prime: v = e*u + e0 + e1*s + r (r: encoding rounding, |r| <= 1/2).
        With a special prime P SEAL encrypts modulo Q*P and rounds the division by P:
        v = (e*u + e0 + e1*s)/P + r0 + r1*s + r, |r0|, |r1| <= 1/2."""
        n = self.poly_degree
        if self.special_prime is None:
            return self._key_level_proxy() + 0.25
        return self._key_level_proxy() / float(self.special_prime) ** 2 + 0.25 + n * 0.25 + 0.25

    def sum_error_std(self, num_clients: int, *, symmetric: bool = False) -> float:
        """Sub-Gaussian scale of the error of each decoded real of a sum of ``num_clients``
        fresh encryptions (a bound on its standard deviation, in every slot, for every key
        :meth:`CkksSecretContext.generate` accepts). Public-key encryption, single prime:

            sqrt(K * N/2 * (T N sigma^2 + T (2N/3) sigma^2 + sigma^2 + 1/4)) / Delta

        -- the real part of slot k of e*U + E0 + E1*s + R is a sum of N independent bounded or
        sub-Gaussian terms with weights |e(zeta_k)|, |s(zeta_k)| (see :attr:`key_norm_factor`).
        With a special prime P the first three terms are divided by P^2 and the rounding of the
        division adds N/2 * (1/4 + T (2N/3) / 4) per client. ``symmetric``: SEAL's secret-key
        encryption, which leaves only E + R at the data level: sqrt(K * N/2 * (sigma^2 + 1/4)) / Delta
        (no key dependence; measured at 0.99 of it for every preset).
        """
        k = max(1, int(num_clients))
        n, t, var = self.poly_degree, self.key_norm_factor, NOISE_VARIANCE
        if symmetric:
            return math.sqrt(k * n / 2.0 * (var + 0.25)) / self.scale
        key_level = t * n * var + t * (2.0 * n / 3.0) * var + var
        if self.special_prime is None:
            per_slot = key_level + 0.25
        else:
            per_slot = key_level / float(self.special_prime) ** 2 + 0.25 + t * (2.0 * n / 3.0) * 0.25 + 0.25
        return math.sqrt(k * n / 2.0 * per_slot) / self.scale

    def sum_error_bound(self, num_clients: int, max_abs: float = 0.0, *, symmetric: bool = False) -> float:
        """Bound on |decoded - exact| for each real of a sum of ``num_clients`` encryptions of
        values within +-``max_abs``: ERROR_TAIL_SIGMAS x :meth:`sum_error_std` (exceeded with
        probability below 2 exp(-32) = 2.5e-14 per value), plus the float64 error of SEAL's
        encoding and decoding (relative 2^-45, far below the noise)."""
        k = max(1, int(num_clients))
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        return ERROR_TAIL_SIGMAS * self.sum_error_std(k, symmetric=symmetric) + k * packing * max_abs * 2.0**-45

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
        return largest_accepted(lambda k: self.check_overflow(k, max_abs), 1 << 62)

    def describe(self) -> str:
        bits = "+".join(str(b) for b in self.coeff_bits)
        return (f"N={self.poly_degree}, primes {bits} bits, scale 2^{self.scale_bits}, "
                f"{'two reals' if self.complex_packing else 'one real'} per slot")


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
    if count < 0 or 8 * raw.size != count * width:
        raise MalformedMessageError(f"packed values: {raw.size} bytes, expected {count} x {width} bits")
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


_PACK_VALUES = 32768  # values per packing step: temporaries stay in cache and on the heap


def _pack_into(values: np.ndarray, width: int, dest: np.ndarray) -> None:
    """:func:`_pack_bits` of every row: ``values`` (R, S, M) uint64 < 2^width (rows may be
    strided; the last axis contiguous, M a multiple of 8) -> ``dest`` (R, S, M * width / 8) uint8
    (may be a strided view), without large temporaries: rows go through in small steps."""
    g = 8 // math.gcd(width, 8)
    nbytes = g * width // 8
    nwords = -(-nbytes // 8)
    r_all, s_all, m = values.shape
    groups = m // g
    step = max(1, _PACK_VALUES // (s_all * m))
    words = np.empty((min(step, r_all), s_all, groups, nwords), dtype=np.uint64)
    tmp = np.empty((min(step, r_all), s_all, groups), dtype=np.uint64)
    for r0 in range(0, r_all, step):
        rc = min(step, r_all - r0)
        v = values[r0 : r0 + rc].reshape(rc, s_all, groups, g)
        w, t = words[:rc], tmp[:rc]
        w.fill(0)
        for i in range(g):
            bit = i * width
            k, sh = bit >> 6, bit & 63
            np.left_shift(v[..., i], np.uint64(sh), out=t)
            np.bitwise_or(w[..., k], t, out=w[..., k])
            if sh + width > 64:
                np.right_shift(v[..., i], np.uint64(64 - sh), out=t)
                np.bitwise_or(w[..., k + 1], t, out=w[..., k + 1])
        raw = w.view(np.uint8).reshape(rc, s_all, groups, 8 * nwords)
        dest[r0 : r0 + rc].reshape(rc, s_all, groups, nbytes)[...] = raw[..., :nbytes]


def _pack_polys(polys: np.ndarray, primes: Sequence[int]) -> bytes:
    """(C, P, L, N) residues -> bytes, layout [c][p][prime i: N coefficients at bitlen(q_i) bits].
    ``polys`` may be a strided view (contiguous along N)."""
    c, p, nl, n = polys.shape
    out = np.empty(c * p * n * sum(int(q).bit_length() for q in primes) // 8, dtype=np.uint8)
    _pack_polys_into(polys, primes, out)
    return out.tobytes()


def _pack_polys_into(polys: np.ndarray, primes: Sequence[int], dest: np.ndarray) -> None:
    """:func:`_pack_polys` into ``dest`` (contiguous uint8 of exactly the packed size)."""
    c, p, nl, n = polys.shape
    widths = [int(q).bit_length() for q in primes]
    out = dest.reshape(c, p, n * sum(widths) // 8)
    start = 0
    for i, width in enumerate(widths):
        size = n * width // 8
        _pack_into(polys[:, :, i, :], width, out[:, :, start : start + size])
        start += size


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
# SEAL objects


def _sealapi() -> Any:
    import tenseal.sealapi as sealapi

    return sealapi


# A ciphertext body as SEAL saves it (after the 16-byte object header): parms_id (4 x u64), NTT
# flag (u8), size, N, L (u64), scale (f64), correction factor (u64) = 73 bytes; then the nested
# coefficient array: 16-byte header + count (u64) = 24 bytes; then the coefficients.
_CT_BODY_META = 73 + 24
# A seeded ciphertext body: the same 73 bytes of metadata, then the 16-byte header and count (u64) of
# a coefficient array holding c0 only, the coefficients, then SEAL's UniformRandomGeneratorInfo:
# its own 16-byte header, the PRNG type (1 byte) and the 64-byte seed.
_SEEDED_META = 73 + 24
HEADER_LEN = 16
SEED_BYTES_WIRE = 1 + 64
_SEED_INFO_BYTES = HEADER_LEN + SEED_BYTES_WIRE
_PRNG_TYPES = (1, 2)  # SEAL's prng_type: blake2xb, shake256


def _seed_info_header() -> np.ndarray:
    head = seal_bridge.SealHeader(seal_bridge.SEAL_VERSION_MAJOR, seal_bridge.SEAL_VERSION_MINOR, 0,
                                  _SEED_INFO_BYTES).to_bytes()
    return np.frombuffer(head, dtype=np.uint8)


# SEAL's body is decompressed at this offset into each buffer row, which puts the coefficients
# (at 7 + 97 = 104) on an 8-byte boundary.
_ROW_PAD = 7


class _SealState:
    """This process's SEAL objects for one public context: SEAL context, encoder and (lazily)
    encryptor, plus the layout of the ciphertexts SEAL saves. Never pickled: a worker process
    builds its own from the context's bytes."""

    __slots__ = ("params", "context", "encoder", "parms_id", "_public_key", "_secret_key", "_encryptor",
                 "_reference", "body_len", "data_len", "stride")

    def __init__(self, params: CkksParams, public_key: Any, secret_key: Any = None) -> None:
        api = _sealapi()
        self.params = params
        self.context = seal_bridge.seal_context(params.poly_degree, params.primes)
        self.encoder = api.CKKSEncoder(self.context)
        self.parms_id = seal_bridge.parms_id_of(self.context.first_parms_id())
        self._public_key = public_key
        self._secret_key = secret_key  # set: encrypt with SEAL's symmetric (secret-key) encryption
        self._encryptor: Any = None
        self._reference: np.ndarray | None = None
        self.data_len = 8 * 2 * len(params.data_primes) * params.poly_degree
        self.body_len = _CT_BODY_META + self.data_len
        self.stride = -(-(_ROW_PAD + self.body_len) // 8) * 8

    def encryptor(self) -> Any:
        if self._encryptor is None:
            self._encryptor = _sealapi().Encryptor(self.context, self._public_key)
            if self._secret_key is not None:
                self._encryptor.set_secret_key(self._secret_key)
        return self._encryptor

    def encrypt_block(self, slots: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """(B, N/2) complex or real slot rows -> (B, 2, L, N) uint64: SEAL's ciphertexts (NTT
        form, first data level), read out of SEAL's own serialization into ``buf`` (B, stride)
        uint8; the result is a view of it."""
        api = _sealapi()
        p = self.params
        b = slots.shape[0]
        encryptor = self.encryptor()
        encrypt = encryptor.encrypt if self._secret_key is None else encryptor.encrypt_symmetric
        save = seal_bridge.seal_scratch().save_body_into
        pt, ct = api.Plaintext(), api.Ciphertext()
        for i in range(b):
            self._encode(slots[i], pt)
            encrypt(pt, ct)
            if save(ct, buf[i, _ROW_PAD:], "SEAL ciphertext") != self.body_len:
                raise MalformedMessageError("SEAL saved a ciphertext of unexpected size")
        self._check_layout(buf)
        start = _ROW_PAD + _CT_BODY_META
        coeffs = buf[:, start : start + self.data_len].view(np.uint64)
        return coeffs.reshape(b, 2, len(p.data_primes), p.poly_degree)

    def _encode(self, row: np.ndarray, pt: Any) -> None:
        """SEAL's ``CKKSEncoder.encode`` of one slot row at the scale, into ``pt``."""
        try:
            self.encoder.encode(row.tolist(), self.params.scale, pt)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ConfigError(f"ckks: SEAL's encoder refused the values ({exc}); value x scale must stay"
                              " inside the modulus (check_overflow)") from None

    def encrypt_seeded_block(self, slots: np.ndarray, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, N/2) slot rows -> SEAL's *seeded* symmetric ciphertexts: ``c0`` as (B, L, N) uint64
        NTT-form residues and, per ciphertext, the 65 bytes from which SEAL regenerates ``c1``
        (PRNG type and 64-byte seed), as (B, 65) uint8 -- read out of SEAL's own serialization of
        ``Encryptor.encrypt_symmetric(plain)`` into ``buf`` (B, stride) uint8. Needs the secret key."""
        if self._secret_key is None:
            raise ConfigError("seeded ciphertexts need symmetric encryption (a secret context)")
        p = self.params
        b = slots.shape[0]
        nl = len(p.data_primes) * p.poly_degree
        body_len = _SEEDED_META + 8 * nl + _SEED_INFO_BYTES
        encrypt = self.encryptor().encrypt_symmetric
        save = seal_bridge.seal_scratch().save_body_into
        pt = _sealapi().Plaintext()
        for i in range(b):
            self._encode(slots[i], pt)
            if save(encrypt(pt), buf[i, _ROW_PAD:], "SEAL seeded ciphertext") != body_len:
                raise MalformedMessageError("SEAL saved a seeded ciphertext of unexpected size")
        rows = buf[:, _ROW_PAD : _ROW_PAD + body_len]
        if not bool(np.all(rows[:, :_SEEDED_META] == self.seeded_meta())):
            raise MalformedMessageError("SEAL produced a seeded ciphertext with unexpected metadata")
        tails = rows[:, _SEEDED_META + 8 * nl :]
        if not bool(np.all(tails[:, :HEADER_LEN] == _seed_info_header())):
            raise MalformedMessageError("SEAL produced a seeded ciphertext with an unexpected seed record")
        c0 = buf[:, _ROW_PAD + _SEEDED_META : _ROW_PAD + _SEEDED_META + 8 * nl].view(np.uint64)
        return c0.reshape(b, len(p.data_primes), p.poly_degree), tails[:, HEADER_LEN:]

    def seeded_meta(self) -> np.ndarray:
        """The first bytes of every seeded ciphertext body SEAL writes for these parameters:
        parms_id, NTT flag, size 2, N, L, scale, correction factor 1, then the header and count
        of a coefficient array holding ``c0`` only."""
        p = self.params
        nl = len(p.data_primes) * p.poly_degree
        meta = struct.pack("<4QBQQQdQ", *self.parms_id, 1, 2, p.poly_degree, len(p.data_primes), p.scale, 1)
        inner = seal_bridge.SealHeader(seal_bridge.SEAL_VERSION_MAJOR, seal_bridge.SEAL_VERSION_MINOR, 0,
                                       HEADER_LEN + 8 + 8 * nl).to_bytes()
        return np.frombuffer(meta + inner + struct.pack("<Q", nl), dtype=np.uint8)

    def load_seeded(self, ct: Any, c0: np.ndarray, seed: bytes) -> Any:
        """(L, N) ``c0`` residues + 65 seed bytes -> the SEAL ``Ciphertext`` ``ct``: SEAL parses the
        rebuilt seeded serialization, validates it and regenerates ``c1`` from the seed."""
        body = self.seeded_meta().tobytes() + np.ascontiguousarray(c0, dtype="<u8").tobytes() + \
            _seed_info_header().tobytes() + seed
        head = seal_bridge.SealHeader(seal_bridge.SEAL_VERSION_MAJOR, seal_bridge.SEAL_VERSION_MINOR, 0,
                                      HEADER_LEN + len(body))
        return seal_bridge.seal_scratch().load(ct, self.context, head.to_bytes() + body)

    def _check_layout(self, buf: np.ndarray) -> None:
        """Every saved ciphertext must carry the metadata of the first one, which is parsed in
        full (parms_id, NTT form, size 2, N, L, scale, coefficients below their primes)."""
        meta = buf[:, _ROW_PAD : _ROW_PAD + _CT_BODY_META]
        if self._reference is None:
            p = self.params
            body = buf[0, _ROW_PAD : _ROW_PAD + self.body_len].tobytes()
            head = seal_bridge.SealHeader(seal_bridge.SEAL_VERSION_MAJOR, seal_bridge.SEAL_VERSION_MINOR, 0,
                                         seal_bridge.HEADER_BYTES + len(body))
            first = seal_bridge.SealCiphertext.from_bytes(head.to_bytes() + body, moduli=p.data_primes)
            if (first.parms_id != self.parms_id or not first.is_ntt_form or first.data.shape[0] != 2
                    or first.scale != p.scale or first.correction_factor != 1):
                raise MalformedMessageError("SEAL produced a ciphertext with unexpected metadata")
            self._reference = meta[0].copy()
        if not bool(np.all(meta == self._reference)):
            raise MalformedMessageError("SEAL produced a ciphertext with unexpected metadata")

    def load_ciphertext(self, ct: Any, data: np.ndarray, scale: float) -> Any:
        """(2, L, N) NTT-form residues -> the SEAL ``Ciphertext`` ``ct`` (SEAL validates)."""
        blob = seal_bridge.SealCiphertext(self.parms_id, True, scale, data).to_bytes()
        return seal_bridge.seal_scratch().load(ct, self.context, blob)

    def decode(self, pt: Any) -> np.ndarray:
        """SEAL's ``CKKSEncoder`` decode of a plaintext -> float64 reals (two per slot with
        complex packing)."""
        if self.params.complex_packing:
            return np.array(self.encoder.decode_complex(pt), dtype=np.complex128).view(np.float64)
        return np.array(self.encoder.decode_double(pt), dtype=np.float64)


def _key_norms(state: _SealState, decryptor: Any, public_key: np.ndarray) -> tuple[float, float]:
    """(max |s(zeta)|^2 / (2N/3), max |e(zeta)|^2 / (N sigma^2)) over the slots, computed by SEAL:
    decrypting the ciphertext (0, 1) gives the secret s, decrypting the public key (b, a) gives
    its error e; decoding at scale 1 evaluates them at the roots (the other half of the roots
    are the conjugates)."""
    api = _sealapi()
    p = state.params
    n, nl = p.poly_degree, len(p.data_primes)
    probe = np.zeros((2, nl, n), dtype=np.uint64)
    probe[1] = 1  # NTT form of the constant polynomial 1
    peaks = []
    for polys in (probe, np.ascontiguousarray(public_key[:, :nl, :])):
        ct = state.load_ciphertext(api.Ciphertext(), polys, 1.0)
        pt = api.Plaintext()
        decryptor.decrypt(ct, pt)
        peaks.append(float(np.max(np.abs(np.asarray(state.encoder.decode_complex(pt))) ** 2)))
    return peaks[0] / (2.0 * n / 3.0), peaks[1] / (n * NOISE_VARIANCE)


def _is_ternary(secret: np.ndarray, primes: Sequence[int]) -> bool:
    """Whether the NTT-form residues ``secret`` (L, N) are one polynomial with coefficients in
    {-1, 0, 1} modulo every prime (SEAL's inverse NTT; through files that are removed at once)."""
    coeffs = seal_bridge.seal_ntt(secret, primes, inverse=True)
    q = np.asarray(primes, dtype=np.uint64)[:, None]
    minus_one = coeffs == q - np.uint64(1)
    if not bool(np.all((coeffs <= 1) | minus_one)):
        return False
    signs = np.where(minus_one, -1, coeffs.astype(np.int64))
    return bool(np.all(signs == signs[0]))


def _as_values(values: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ConfigError(f"ckks encrypts 1-D vectors, got shape {arr.shape}")
    if not bool(np.all(np.isfinite(arr))):
        raise ConfigError("ckks cannot encrypt NaN or infinite values")
    return arr


# --------------------------------------------------------------------------------------------
# contexts


_CTX_MAGIC = b"SFCKKS"
_CTX_VERSION = 2  # 2: keys in SEAL's NTT form (version 1 held coefficient-form keys)
_KIND_PUBLIC = 1
_KIND_SECRET = 2
_CTX_HEAD = struct.Struct("<6sBBIBB")  # magic, version, kind, N, scale_bits, complex packing


def _params_bytes(params: CkksParams, kind: int) -> bytes:
    head = _CTX_HEAD.pack(_CTX_MAGIC, _CTX_VERSION, kind, params.poly_degree, params.scale_bits,
                          int(params.complex_packing))
    return head + bytes([len(params.coeff_bits), *params.coeff_bits]) + b"".join(
        struct.pack("<Q", q) for q in params.primes)


class CkksPublicContext:
    """Public CKKS material: parameters and public key. Encrypts, adds, validates -- and
    cannot decrypt: it holds no secret key and nothing from which one could be reached.

    Build it from a :class:`CkksSecretContext` (:meth:`CkksSecretContext.public`), from bytes
    (:meth:`from_bytes`), or from a public key in SEAL's layout (``(2, L_key, N)`` uint64,
    NTT form, all primes -- e.g. a collective key). SEAL validates the key on construction.
    ``context_id`` (16 bytes, SHA-256 of the serialized public context) binds ciphertexts to the
    key they were made under. Pickles as its bytes.
    """

    __slots__ = ("params", "_pk", "_seal_pk", "_state", "_context_id")

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
        ctx = seal_bridge.seal_context(params.poly_degree, params.primes)
        key = seal_bridge.SealPublicKey(seal_bridge.parms_id_of(ctx.key_parms_id()), pk)
        self._seal_pk = seal_bridge.seal_scratch().load(_sealapi().PublicKey(), ctx, key.to_bytes())
        self._state: _SealState | None = None
        self._context_id = hashlib.sha256(self.to_bytes()).digest()[:16]

    def __repr__(self) -> str:
        return f"CkksPublicContext({self.params.describe()}, id={self._context_id.hex()[:12]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CkksPublicContext) and other._context_id == self._context_id

    def __hash__(self) -> int:
        return hash(self._context_id)

    def __reduce__(self) -> Any:
        return (CkksPublicContext.from_bytes, (self.to_bytes(),))

    @property
    def context_id(self) -> bytes:
        return self._context_id

    @property
    def public_key(self) -> np.ndarray:
        """(2, L_key, N) uint64 public key (b, a) in SEAL's NTT form, all primes, read-only."""
        return self._pk

    def _seal(self) -> _SealState:
        if self._state is None:
            self._state = _SealState(self.params, self._seal_pk)
        return self._state

    def decrypt(self, *_: Any, **__: Any) -> Any:
        """Always refuses: a public context has no secret key."""
        raise DecryptionRefusedError("a public CKKS context holds no secret key and cannot decrypt")

    # -- serialization -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Parameters and public key (never a secret key)."""
        return _params_bytes(self.params, _KIND_PUBLIC) + _pack_polys(self._pk[None], self.params.primes)

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

    def encrypt(self, values: np.ndarray, state: _SealState | None = None) -> CkksCiphertexts:
        """Encrypt a real vector (any length; padded with zeros to whole ciphertexts) with SEAL's
        public-key encryption; SEAL draws the randomness."""
        vals = _as_values(values)
        data = np.empty((self.params.ciphertexts_for(vals.size), 2, len(self.params.data_primes),
                         self.params.poly_degree), dtype=np.uint64)
        for start, block in self._encrypt_blocks(vals, state):
            data[start : start + block.shape[0]] = block
        return CkksCiphertexts(self, data, 1)

    def _encrypt_packed(self, values: np.ndarray, head: bytes = b"", state: _SealState | None = None) -> bytes:
        """``head`` followed by the encrypted, bit-packed ``values`` (what
        :meth:`CkksCiphertexts.to_bytes` writes after its header), packed batch by batch into
        one buffer. ``state``: SEAL objects to encrypt with (default: this public key's)."""
        p = self.params
        per_ct = p.ciphertext_bytes
        out = np.empty(len(head) + p.ciphertexts_for(values.size) * per_ct, dtype=np.uint8)
        out[: len(head)] = np.frombuffer(head, dtype=np.uint8)
        body = out[len(head) :]
        for start, block in self._encrypt_blocks(values, state):
            dest = body[start * per_ct : (start + block.shape[0]) * per_ct]
            _pack_polys_into(block, p.data_primes, dest)
        return out.tobytes()

    def _encrypt_blocks(self, values: np.ndarray, state: _SealState | None = None, *, seeded: bool = False
                        ) -> Iterator[tuple[int, Any]]:
        """(first ciphertext index, (B, 2, L, N) ciphertexts) per batch -- with ``seeded``,
        (first index, ((B, L, N) c0, (B, 65) seeds)); every batch is a view of one reused buffer,
        valid until the next one is produced."""
        p = self.params
        state = self._seal() if state is None else state
        encrypt = state.encrypt_seeded_block if seeded else state.encrypt_block
        count = p.ciphertexts_for(values.size)
        per = p.values_per_ciphertext
        buf = np.empty((min(count, _CHUNK), state.stride), dtype=np.uint8)
        for start in range(0, count, _CHUNK):
            stop = min(count, start + _CHUNK)
            piece = values[start * per : stop * per]
            if piece.size != (stop - start) * per:
                padded = np.zeros((stop - start) * per, dtype=np.float64)
                padded[: piece.size] = piece
                piece = padded
            rows = piece.view(np.complex128) if p.complex_packing else piece
            yield start, encrypt(rows.reshape(stop - start, p.slots), buf[: stop - start])

    # -- ciphertext parsing ----------------------------------------------------------------------

    def ciphertexts_from_seeded_bytes(self, data: bytes, *, expect_count: int | None = None) -> CkksCiphertexts:
        """Seeded ciphertexts (:meth:`CkksSecretContext.encrypt_seeded_to_bytes`) in full form:
        parsed as strictly as :meth:`CkksAccumulator.add_seeded`, ``c1`` regenerated by SEAL.
        The header (context id, count) and the exact length are checked before anything sized by
        the count is allocated."""
        what = "CKKS seeded ciphertexts"
        data, count = _parse_head(data, self, expect_count, what)
        if len(data) != seeded_nbytes(self.params, count):
            raise MalformedMessageError(f"{what}: {len(data)} bytes, but the header's count {count} needs"
                                        f" {seeded_nbytes(self.params, count)}")
        acc = CkksAccumulator(self, count)
        acc.add_seeded(data)
        return acc.result()

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
    """Secret CKKS material: a :class:`CkksPublicContext` plus the secret key. Decrypts (SEAL's
    ``Decryptor``).

    The secret key never leaves the object except through
    ``to_bytes(include_secret_key=True)`` and :meth:`seal_secret_key`; ``repr`` hides it and
    pickling is refused (use the explicit serializer). :meth:`public` returns a new public-only
    object.
    """

    __slots__ = ("_public", "_secret", "_seal_secret", "_decryptor", "_sym_state")

    def __init__(self, public: CkksPublicContext, secret: seal_bridge.SealSecretKey, *,
                 _seal_secret: Any = None) -> None:
        p = public.params
        if not isinstance(secret, seal_bridge.SealSecretKey):
            raise ConfigError(f"secret key must be a SealSecretKey, got {type(secret).__name__}")
        ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
        if secret.parms_id != seal_bridge.parms_id_of(ctx.key_parms_id()) or \
                secret.data.shape != (len(p.primes), p.poly_degree):
            raise ConfigError("secret key does not belong to these parameters (key level, all primes)")
        if _seal_secret is None:  # load through a file that is removed at once
            _seal_secret = seal_bridge.load_seal_object(_sealapi().SecretKey(), ctx, secret.to_bytes())
        self._public = public
        self._secret = secret
        self._seal_secret = _seal_secret
        self._decryptor = _sealapi().Decryptor(ctx, _seal_secret)
        self._sym_state: _SealState | None = None

    @classmethod
    def generate(cls, params: CkksParams | CkksPreset | str = CkksPreset.COMPACT) -> CkksSecretContext:
        """Fresh keys from SEAL's ``KeyGenerator``; a pair beyond the embedding norms of
        :attr:`CkksParams.key_norm_factor` is discarded and drawn again."""
        if not isinstance(params, CkksParams):
            params = CkksParams.from_preset(params)
        api = _sealapi()
        ctx = seal_bridge.seal_context(params.poly_degree, params.primes)  # SEAL double-checks the set
        scratch = seal_bridge.seal_scratch()
        limit = params.key_norm_factor
        for _ in range(_MAX_KEY_DRAWS):
            keygen = api.KeyGenerator(ctx)
            sk = keygen.secret_key()
            pk = api.PublicKey()
            keygen.create_public_key(pk)
            pk_data = seal_bridge.SealPublicKey.from_bytes(scratch.save(pk), moduli=params.primes).data
            public = CkksPublicContext(params, pk_data)
            decryptor = api.Decryptor(ctx, sk)
            s_norm, e_norm = _key_norms(public._seal(), decryptor, pk_data)
            if s_norm <= limit and e_norm <= limit:
                secret = seal_bridge.SealSecretKey.from_bytes(
                    seal_bridge.save_seal_object(sk), poly_degree=params.poly_degree, moduli=params.primes)
                return cls(public, secret, _seal_secret=sk)
        raise ConfigError(f"no SEAL key pair within the embedding norms after {_MAX_KEY_DRAWS} draws")

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
        context's bytes; with it, kind 2 and the secret key (SEAL's NTT form, all primes,
        bit-packed) appended."""
        pub = self._public.to_bytes()
        if not include_secret_key:
            return pub
        out = bytearray(pub)
        out[7] = _KIND_SECRET
        return bytes(out) + _pack_polys(self._secret.data[None, None], self.params.primes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksSecretContext:
        """Parse strictly; the secret key must be one ternary polynomial modulo every prime and
        match the public key (checked through SEAL: decrypting the public key must give an error
        within key generation's norms)."""
        params, kind, rest = _parse_params(data, "CKKS secret context")
        if kind != _KIND_SECRET:
            raise MalformedMessageError("CKKS secret context: these bytes hold no secret key")
        n, primes = params.poly_degree, params.primes
        poly_len = n * sum(q.bit_length() for q in primes) // 8
        if len(rest) != 3 * poly_len:
            raise MalformedMessageError(f"CKKS secret context: {len(rest)} bytes of keys, expected {3 * poly_len}")
        pk = _unpack_polys(rest[: 2 * poly_len], 1, 2, primes, n, "CKKS public key")[0]
        sk = _unpack_polys(rest[2 * poly_len :], 1, 1, primes, n, "CKKS secret key")[0, 0]
        public = CkksPublicContext(params, pk)
        ctx = seal_bridge.seal_context(n, primes)
        out = cls(public, seal_bridge.SealSecretKey(seal_bridge.parms_id_of(ctx.key_parms_id()), sk))
        if not _is_ternary(sk, primes):
            raise MalformedMessageError("CKKS secret context: the secret key is not one ternary polynomial")
        s_norm, e_norm = _key_norms(public._seal(), out._decryptor, pk)
        if not (s_norm <= params.key_norm_factor and e_norm <= params.key_norm_factor):
            raise MalformedMessageError("CKKS secret context: the secret key does not match the public key")
        return out

    def _seal(self) -> _SealState:
        """SEAL objects that encrypt with the secret key (symmetric encryption)."""
        if self._sym_state is None:
            self._sym_state = _SealState(self.params, self._public._seal_pk, self._seal_secret)
        return self._sym_state

    def encrypt(self, values: np.ndarray) -> CkksCiphertexts:
        """SEAL's symmetric (secret-key) encryption: same ciphertext form and parameters as the
        public context's, about twice as fast, with less noise (the public-key error bound
        covers it)."""
        return self._public.encrypt(values, self._seal())

    def _encrypt_packed(self, values: np.ndarray, head: bytes = b"") -> bytes:
        return self._public._encrypt_packed(values, head, self._seal())

    def encrypt_seeded_to_bytes(self, values: np.ndarray) -> bytes:
        """SEAL's seeded symmetric encryption, serialized: context id (16 B) and count (u32), then
        every ciphertext's ``c0`` bit-packed like :meth:`CkksCiphertexts.to_bytes`, then per
        ciphertext the PRNG type (1 B) and the 64-byte seed from which SEAL regenerates ``c1``
        (:meth:`CkksAccumulator.add_seeded`). About half the bytes of the full form."""
        vals = _as_values(values)
        c0, seeds = self._encrypt_seeded_parts(vals)
        return _CT_HEAD.pack(self.context_id, self.params.ciphertexts_for(vals.size)) + c0 + seeds

    def _encrypt_seeded_parts(self, vals: np.ndarray) -> tuple[bytes, bytes]:
        """(packed ``c0`` of every ciphertext, their seed records) for whole or zero-padded ciphertexts."""
        p = self.params
        count = p.ciphertexts_for(vals.size)
        per_c0 = p.ciphertext_bytes // 2
        c0_area = np.empty(count * per_c0, dtype=np.uint8)
        seeds = np.empty((count, SEED_BYTES_WIRE), dtype=np.uint8)
        for start, (c0, tails) in self._public._encrypt_blocks(vals, self._seal(), seeded=True):
            b = c0.shape[0]
            _pack_polys_into(c0[:, None], p.data_primes, c0_area[start * per_c0 : (start + b) * per_c0])
            seeds[start : start + b] = tails
        return c0_area.tobytes(), seeds.tobytes()

    # -- decryption ------------------------------------------------------------------------------

    def decrypt(self, ciphertexts: CkksCiphertexts, n_values: int | None = None) -> np.ndarray:
        """Decrypt (SEAL's ``Decryptor``) and decode (SEAL's ``CKKSEncoder``) to a float64 vector
        (the first ``n_values`` reals)."""
        if not isinstance(ciphertexts, CkksCiphertexts):
            raise ConfigError(f"decrypt expects CkksCiphertexts, got {type(ciphertexts).__name__}")
        if ciphertexts.context_id != self.context_id:
            raise MalformedMessageError("ciphertexts were made under another CKKS context")
        api = _sealapi()
        p, state = self.params, self._public._seal()
        data = ciphertexts.data
        stop = data.shape[0] if n_values is None else min(data.shape[0], p.ciphertexts_for(n_values))
        out = np.empty((stop, p.values_per_ciphertext), dtype=np.float64)
        ct, pt = api.Ciphertext(), api.Plaintext()
        for c in range(stop):
            state.load_ciphertext(ct, data[c], p.scale)
            try:
                self._decryptor.decrypt(ct, pt)
            except (ValueError, RuntimeError) as exc:
                raise MalformedMessageError(f"SEAL refused to decrypt ciphertext {c}: {exc}") from None
            out[c] = state.decode(pt)
        values = out.reshape(-1)
        return values if n_values is None else values[:n_values].copy()

    def seal_secret_key(self) -> seal_bridge.SealSecretKey:
        """The secret key in SEAL's form (NTT, key level), e.g. for SEAL's ``Decryptor``."""
        return self._secret

    def seal_public_key(self) -> seal_bridge.SealPublicKey:
        """The public key in SEAL's form (NTT, key level)."""
        p = self.params
        ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
        return seal_bridge.SealPublicKey(seal_bridge.parms_id_of(ctx.key_parms_id()), self._public.public_key)


# --------------------------------------------------------------------------------------------
# ciphertexts, aggregation


_CT_HEAD = struct.Struct("<16sI")  # context id, ciphertext count


def _parse_head(data: Any, context: CkksPublicContext, expect_count: int | None, what: str) -> tuple[bytes, int]:
    """Bytes, context id and ciphertext count of a ciphertext blob, checked: ``(data, count)``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _CT_HEAD.size:
        raise MalformedMessageError(f"{what}: truncated ({len(data)} bytes)")
    cid, count = _CT_HEAD.unpack_from(data, 0)
    if cid != context.context_id:
        raise MalformedMessageError(f"{what}: made under another key / parameter set")
    if count < 1 or (expect_count is not None and count != expect_count):
        want = "at least 1" if expect_count is None else str(expect_count)
        raise MalformedMessageError(f"{what}: count {count}, expected {want}")
    return data, count


def seeded_nbytes(params: CkksParams, count: int) -> int:
    """Bytes of ``count`` seeded ciphertexts (:meth:`CkksSecretContext.encrypt_seeded_to_bytes`)."""
    return _CT_HEAD.size + count * (params.ciphertext_bytes // 2 + SEED_BYTES_WIRE)


class CkksCiphertexts:
    """A batch of SEAL ciphertexts under one context: ``data[c, j, i, n]`` is coefficient n of
    polynomial j of ciphertext c modulo data prime i, in SEAL's NTT form at the first data level
    (exactly what SEAL's ``Ciphertext`` holds). ``summands`` counts the encryptions added into
    it (1 for a fresh batch).

    Wire form (:meth:`to_bytes`): context id (16 B), count (u32), then per ciphertext its two
    polynomials with every residue packed to the bit length of its prime.
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
        data, count = _parse_head(data, context, expect_count, "CKKS ciphertexts")
        p = context.params
        arr = _unpack_polys(memoryview(data)[_CT_HEAD.size :], count, 2, p.data_primes, p.poly_degree,
                            "CKKS ciphertexts")
        return cls(context, arr, 1)

    def to_seal(self) -> list[Any]:
        """SEAL ``Ciphertext`` objects (loaded and validated by SEAL)."""
        api = _sealapi()
        state = self.context._seal()
        scale = self.context.params.scale
        return [state.load_ciphertext(api.Ciphertext(), self.data[c], scale) for c in range(len(self))]

    @classmethod
    def from_seal(cls, context: CkksPublicContext, ciphertexts: Sequence[Any]) -> CkksCiphertexts:
        """Import SEAL ``Ciphertext`` objects (first data level, NTT form, the context's scale)."""
        p = context.params
        state = context._seal()
        rows = []
        for ct in ciphertexts:
            sc = seal_bridge.SealCiphertext.from_bytes(seal_bridge.seal_scratch().save(ct), moduli=p.data_primes)
            if sc.data.shape[0] != 2 or sc.scale != p.scale or not sc.is_ntt_form or sc.parms_id != state.parms_id:
                raise MalformedMessageError("SEAL ciphertext: expected size 2, NTT form, first data level,"
                                            " the context's scale")
            rows.append(sc.data)
        return cls(context, np.stack(rows), 1)


class CkksAccumulator:
    """Server side: a running sum of ciphertext batches, modulo each prime, in place -- SEAL's
    ``Evaluator.add`` on the parsed residues (bit for bit, tested), without a SEAL round trip.

    Holds one batch worth of ciphertexts however many are added.
    """

    __slots__ = ("context", "_sum", "_q", "summands", "_seal_sum", "_evaluator")

    def __init__(self, context: CkksPublicContext, count: int) -> None:
        p = context.params
        self.context = context
        self._sum = np.zeros((count, 2, len(p.data_primes), p.poly_degree), dtype=np.uint64)
        self._q = np.asarray(p.data_primes, dtype=np.uint64)[:, None]
        self.summands = 0
        self._seal_sum: list[Any] | None = None  # seeded uploads, summed by SEAL's Evaluator
        self._evaluator: Any = None

    def add_seeded(self, data: bytes) -> None:
        """Fold in one upload of seeded ciphertexts. Strict parse first (context id, count, exact
        length, every ``c0`` coefficient below its prime, known PRNG type); then SEAL loads each
        ciphertext (validating it and regenerating ``c1`` from its seed) and adds it with
        ``Evaluator.add_inplace``. Nothing is added unless the whole upload loads."""
        ctx, p = self.context, self.context.params
        count = self._sum.shape[0]
        data, _ = _parse_head(data, ctx, count, "CKKS seeded ciphertexts")
        if len(data) != seeded_nbytes(p, count):
            raise MalformedMessageError(f"CKKS seeded ciphertexts: {len(data)} bytes, expected "
                                        f"{seeded_nbytes(p, count)}")
        per_c0 = p.ciphertext_bytes // 2
        c0 = _unpack_polys(memoryview(data)[_CT_HEAD.size : _CT_HEAD.size + count * per_c0], count, 1,
                           p.data_primes, p.poly_degree, "CKKS seeded ciphertexts")[:, 0]
        seeds = np.frombuffer(data, dtype=np.uint8, offset=_CT_HEAD.size + count * per_c0).reshape(
            count, SEED_BYTES_WIRE)
        if not bool(np.isin(seeds[:, 0], _PRNG_TYPES).all()):
            raise MalformedMessageError("CKKS seeded ciphertexts: unknown PRNG type")
        api, state = _sealapi(), ctx._seal()
        loaded = [state.load_seeded(api.Ciphertext(), c0[c], seeds[c].tobytes()) for c in range(count)]
        if self._seal_sum is None:
            self._seal_sum = loaded
        else:
            if self._evaluator is None:
                self._evaluator = api.Evaluator(state.context)
            for acc, ct in zip(self._seal_sum, loaded, strict=True):
                self._evaluator.add_inplace(acc, ct)
        self.summands += 1

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
        out = CkksCiphertexts(self.context, self._sum.copy(), self.summands)
        if self._seal_sum is not None:  # SEAL's sum of the seeded uploads joins the parsed one
            seeded = CkksCiphertexts.from_seal(self.context, self._seal_sum)
            total = out.data
            for start in range(0, total.shape[0], _CHUNK):
                t = total[start : start + _CHUNK]
                t += seeded.data[start : start + _CHUNK]
                np.minimum(t, t - self._q, out=t)
        return out


# --------------------------------------------------------------------------------------------
# encryption with a process pool


_WORKER_CTX: CkksPublicContext | CkksSecretContext | None = None


def _worker_init(ctx_bytes: bytes, secret: bool) -> None:
    global _WORKER_CTX
    _WORKER_CTX = CkksSecretContext.from_bytes(ctx_bytes) if secret else CkksPublicContext.from_bytes(ctx_bytes)
    _WORKER_CTX._seal().encryptor()  # SEAL context, encoder and encryptor built once per worker


def _worker_encrypt(values: np.ndarray) -> bytes:
    if _WORKER_CTX is None:  # pragma: no cover - initializer always runs first
        raise ConfigError("encryption worker has no context")
    return _WORKER_CTX._encrypt_packed(values)


def _worker_encrypt_seeded(values: np.ndarray) -> tuple[bytes, bytes]:
    if not isinstance(_WORKER_CTX, CkksSecretContext):  # pragma: no cover - the encryptor checks first
        raise ConfigError("seeded encryption worker has no secret context")
    return _WORKER_CTX._encrypt_seeded_parts(values)


class CkksEncryptor:
    """Encrypts and serializes vectors, optionally in ``workers`` processes: this one and
    ``workers - 1`` pool processes (spawned on first use, each loading the context and SEAL's
    objects once). :meth:`close` ends the pool.

    With a :class:`CkksPublicContext` it uses public-key encryption; with a
    :class:`CkksSecretContext` SEAL's symmetric encryption, and the pool processes (the same
    party's own workers) receive the secret context through its explicit serializer.
    SEAL's Python binding holds the GIL, so processes, not threads, run encryption in parallel.
    """

    def __init__(self, context: CkksPublicContext | CkksSecretContext, workers: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        self.context = context
        self.workers = workers
        self._pool: Any = None

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from secfl.crypto._procs import worker_initializer

            ctx = self.context
            secret = isinstance(ctx, CkksSecretContext)
            blob = ctx.to_bytes(include_secret_key=True) if isinstance(ctx, CkksSecretContext) else ctx.to_bytes()
            # workers exit when this process dies, and leave Ctrl-C to it
            self._pool = ProcessPoolExecutor(self.workers - 1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=worker_initializer, initargs=(_worker_init, blob, secret))
        return self._pool

    def encrypt_seeded_to_bytes(self, values: np.ndarray) -> bytes:
        """:meth:`CkksSecretContext.encrypt_seeded_to_bytes`, split over the pool like
        :meth:`encrypt_to_bytes` (needs a secret context)."""
        ctx = self.context
        if not isinstance(ctx, CkksSecretContext):
            raise ConfigError("seeded ciphertexts need the secret context (symmetric encryption)")
        vals = _as_values(values)
        p = ctx.params
        count = p.ciphertexts_for(vals.size)
        head = _CT_HEAD.pack(ctx.context_id, count)
        if self.workers == 1 or count < 2 * self.workers:
            c0, seeds = ctx._encrypt_seeded_parts(vals)
            return head + c0 + seeds
        per = p.values_per_ciphertext
        bounds = [count * t // self.workers for t in range(self.workers + 1)]
        pool = self._executor()
        futures = [pool.submit(_worker_encrypt_seeded, vals[bounds[t] * per : bounds[t + 1] * per])
                   for t in range(1, self.workers)]
        parts = [ctx._encrypt_seeded_parts(vals[: bounds[1] * per]), *(f.result() for f in futures)]
        return b"".join([head, *(c for c, _ in parts), *(sd for _, sd in parts)])

    def encrypt_to_bytes(self, values: np.ndarray) -> bytes:
        """``CkksCiphertexts.to_bytes()`` of the encryption of ``values``."""
        vals = _as_values(values)
        p = self.context.params
        count = p.ciphertexts_for(vals.size)
        head = _CT_HEAD.pack(self.context.context_id, count)
        if self.workers == 1 or count < 2 * self.workers:
            return self.context._encrypt_packed(vals, head)
        per = p.values_per_ciphertext
        bounds = [count * t // self.workers for t in range(self.workers + 1)]
        pool = self._executor()
        # every slice but the last is whole ciphertexts; the last is zero-padded by its worker
        futures = [pool.submit(_worker_encrypt, vals[bounds[t] * per : bounds[t + 1] * per])
                   for t in range(1, self.workers)]
        first = self.context._encrypt_packed(vals[: bounds[1] * per], head)
        return b"".join([first, *(f.result() for f in futures)])

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
    30 bytes of framing and one slot for the weight), ratio_to_float32, seeded_bytes_per_param (the
    same in the seeded form ``ckks`` uploads by default; absent for public-key-only presets), max_clients_at_clip_1
    (the overflow bound for values in [-1, 1]), error_bound_10_clients (bound on each real of a
    sum of 10 encryptions), measured_values.
    """
    rows = []
    for preset in CkksPreset:
        p = CkksParams.from_preset(preset)
        sk = CkksSecretContext.generate(p)
        blob = sk.public().encrypt(np.zeros(measure_values)).to_bytes()
        bpp = len(blob) / measure_values
        seeded = len(sk.encrypt_seeded_to_bytes(np.zeros(measure_values))) / measure_values
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
            "seeded_bytes_per_param": round(seeded, 3),
            "max_clients_at_clip_1": p.max_clients(1.0),
            "error_bound_10_clients": float(f"{p.sum_error_bound(10, 1.0):.3g}"),
            "measured_values": measure_values,
        })
    return rows
