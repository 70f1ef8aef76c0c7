"""Threshold CKKS: a collective key no single party holds, t-of-n partial decryption with
flooding noise. Primitives only; the round and its messages live in
:mod:`secfl.protocols.ckks_threshold` (spec: ``protocols/ckks_threshold.md``).

The multiparty construction is Mouchet, Troncoso-Pastoriza, Bossuat and Hubaux (PETS 2021),
made t-of-n with Shamir sharing as in Lattigo's thresholdizer (Mouchet et al., eprint 2022/780).
SEAL does everything it can: each member's secret comes from SEAL's ``KeyGenerator``, clients
encode with SEAL's ``CKKSEncoder`` and encrypt with SEAL's ``Encryptor`` under the collective key
(loaded as a SEAL ``PublicKey``), and the combined decryption is decoded by SEAL's
``CKKSEncoder``. What SEAL lacks is written here, on vectorized 61-bit modular arithmetic
(:mod:`secfl.crypto.modarith`):

1. **Common random polynomial.** ``a`` is expanded from a public 32-byte seed (AES-CTR
   :class:`~secfl.crypto.prg.Prg`, uniform modulo every key-level prime, in NTT form);
   :func:`crp_seed` derives the seed from one nonce per member, so no single party picks it.
2. **Key shares.** Member ``i`` draws ``s_i`` (SEAL, ternary, NTT form, all primes) and an error
   ``e_i`` (rounded Gaussian, σ = 3.2, ``|e| <= 19``, from the CSPRNG) and publishes
   ``b_i = −a·s_i + e_i``. The collective public key is ``(Σ b_i, a)``, a key for ``s = Σ s_i``.
3. **Shamir.** Member ``i`` shares ``s_i`` ``t``-of-``n`` modulo every ciphertext prime (the
   special prime never takes part in a decryption): a random polynomial of degree ``t − 1`` per
   coefficient and prime, evaluated at the points ``x_j = j + 1`` (all below the smallest prime).
   Member ``j`` keeps ``σ_j = Σ_i f_i(x_j)``, a Shamir share of ``s``.
4. **Partial decryption.** For a fixed active set ``A`` of ``t`` members, member ``j`` returns
   ``d_j = c_1·λ_j·σ_j + E_j`` with ``λ_j = Π_{m∈A, m≠j} x_m / (x_m − x_j) mod q`` and fresh
   flooding noise ``E_j`` (rounded Gaussian of standard deviation σ_flood, from the CSPRNG). Only
   the key share is multiplied by ``λ_j``, never the noise.
5. **Combination.** ``c_0 + Σ_{j∈A} d_j = m + v + Σ E_j`` (``v``: the ciphertext noise), handed
   to SEAL as a ``Plaintext`` with the ciphertext's parms_id and scale and decoded by SEAL.

**Flooding.** σ_flood = √(12τ) · 2^(s/2) · B_ct (OpenFHE's rule for CKKS decryption with
``s`` statistical-security bits and ``τ`` decryptions per key; Li, Micciancio, Schultz, Sorrell,
CRYPTO 2022), where ``B_ct`` bounds every coefficient of the aggregate's noise ``v``
(:meth:`ThresholdParams.ciphertext_noise_bound`). Every member adds the full σ_flood on its own,
so the noise of one honest member suffices whoever else colludes. Members count the ciphertexts
they decrypt and refuse beyond ``τ`` (keys are then regenerated).

**Security.** The collective key is RLWE-secure at the parameter set's level (SEAL validates
the 128-bit bound; the default preset meets 192). Shamir shares are information-theoretically
hidden from any ``t − 1`` members; they travel member to member under AES-256-GCM keyed by
X25519 (:mod:`secfl.crypto.keys`), so the relaying server reads none. A partial decryption is an
RLWE sample of a uniformly distributed key share with Gaussian error σ_flood, and the combined
result is statistically close (``2^-s`` over ``τ`` decryptions) to one whose noise does not
depend on the key. ``t`` colluding members recover ``s``. Nothing here protects against
malicious parties: a member can return garbage (the result is wrong, nothing leaks), and a client
colluding with the combiner can submit a crafted ciphertext whose decryption exposes the key
(no proofs of well-formed ciphertexts are required).
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto import seal_bridge
from secfl.crypto.ckks import SlotGeometry, largest_accepted
from secfl.crypto.modarith import (
    MulConst,
    addmod,
    mul_const,
    ntt,
    pack_bits,
    submod,
    to_residues,
    unpack_bits,
)
from secfl.crypto.prg import SEED_BYTES, Prg, derive_seed
from secfl.errors import ConfigError, InsecureParametersError, InsufficientQuorumError, MalformedMessageError

__all__ = [
    "NOISE_SIGMA",
    "NOISE_MAX",
    "ERROR_TAIL_SIGMAS",
    "MAX_MEMBERS",
    "ThresholdPreset",
    "Flooding",
    "ThresholdParams",
    "crp_seed",
    "expand_crp",
    "MemberSecret",
    "KeyShare",
    "collective_public_key",
    "lagrange_coefficients",
    "combine",
    "CollectivePublicKey",
    "ciphertext_digests",
    "pack_polys",
    "unpack_polys",
    "add_into",
    "preset_table",
]

#: Standard deviation and cut-off of the key-generation error (SEAL's clipped normal).
NOISE_SIGMA = 3.2
NOISE_MAX = 19
#: Error and noise bounds are stated at this many (sub-)Gaussian standard deviations
#: (tail 2·exp(−32) ≈ 2.5e-14 per value).
ERROR_TAIL_SIGMAS = 8.0
#: Largest quorum (Shamir points are 1..n, far below any prime).
MAX_MEMBERS = 1024
_MAX_SCALE_BITS = 100


# --------------------------------------------------------------------------------------------
# parameters


class ThresholdPreset(str, Enum):
    """Named parameter sets for ``ckks-threshold`` (see :meth:`ThresholdParams.from_preset`)."""

    #: N=8192, primes 45+45 (ciphertexts) + 60 (special), scale 2^64, two reals per slot:
    #: 150 bits of modulus (192-bit security), 22.5 B/param, room for heuristic flooding at τ = 2^14.
    STANDARD = "standard"
    #: N=16384, primes 60+60 + 60, scale 2^96, statistical flooding (:class:`Flooding`): 180 bits
    #: of modulus (256-bit security), 30 B/param.
    STATISTICAL = "statistical"


class Flooding(str, Enum):
    """How the partial-decryption flooding noise is sized (σ per coefficient of each partial).

    ``heuristic`` — σ = √(12τ)·2^(s/2)·B_ct, OpenFHE's choice. Its guarantee is s bits of
    *computational* security against key recovery in the bit-security sense of Micciancio–Walter
    (Rényi/relative-error arguments), not a statistical distance: over τ decryptions of N
    coefficients, the Pinsker bound on the statistical distance is only about
    √(τN/2)·B_ct/σ = √(N/24)·2^(-s/2): about 2^-10.8 at N = 8192, s = 30 (whatever τ).
    ``statistical`` — σ = 2^s·√(τN/2)·B_ct: the smudging lemma then bounds the statistical
    distance between the partials an adversary sees over τ decryptions (τN coefficients) and
    ones computed without the key share by 2^-s. Costs about s/2 + log2√(N/24) more bits of
    noise: use the ``statistical`` preset, which has room for it.
    """

    HEURISTIC = "heuristic"
    STATISTICAL = "statistical"


_PRESETS: dict[ThresholdPreset, tuple[int, tuple[int, ...], int]] = {
    ThresholdPreset.STANDARD: (8192, (45, 45, 60), 64),
    ThresholdPreset.STATISTICAL: (16384, (60, 60, 60), 96),
}


def _max_bits(n: int, level: int) -> int:
    """SEAL's HE-standard table: maximum total coefficient-modulus bits for N at 128/192/256."""
    import tenseal.sealapi as sealapi

    sec = {128: sealapi.SEC_LEVEL_TYPE.TC128, 192: sealapi.SEC_LEVEL_TYPE.TC192, 256: sealapi.SEC_LEVEL_TYPE.TC256}
    return int(sealapi.CoeffModulus.MaxBitCount(int(n), sec[level]))


@dataclass(frozen=True)
class ThresholdParams(SlotGeometry):
    """A threshold-CKKS parameter set, validated on construction.

    ``coeff_bits``: SEAL's prime sizes; the last is the special prime (at least two primes: the
    noise analysis relies on SEAL encrypting at the key level and dividing by the special prime).
    Ciphertexts live modulo the others. ``scale_bits``: values are scaled by 2^scale_bits.
    ``complex_packing``: two reals per slot. ``stat_security_bits`` (s >= 30) and
    ``max_decryptions`` (τ) size the flooding noise.

    Raises :class:`InsecureParametersError` beyond the HE-standard 128-bit bound or with s < 30,
    :class:`ConfigError` for malformed values.
    """

    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    complex_packing: bool = True
    stat_security_bits: int = 30
    max_decryptions: int = 1 << 14
    flooding: Flooding = Flooding.HEURISTIC

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "flooding", Flooding(self.flooding))
        except ValueError:
            raise ConfigError(f"threshold flooding must be one of {[f.value for f in Flooding]}, got"
                              f" {self.flooding!r}") from None
        n = self.poly_degree
        if not isinstance(n, int) or isinstance(n, bool) or n not in (2048, 4096, 8192, 16384, 32768):
            raise ConfigError(f"threshold poly_degree must be one of 2048..32768 (a power of two), got {n!r}")
        try:
            bits = tuple(int(b) for b in self.coeff_bits)
        except (TypeError, ValueError):
            raise ConfigError(f"threshold coeff_bits must be integers, got {self.coeff_bits!r}") from None
        if not 2 <= len(bits) <= 16 or any(not 20 <= b <= 60 for b in bits):
            raise ConfigError("threshold coeff_bits must be 2 to 16 prime sizes in [20, 60] bits (the last is the"
                              f" special prime), got {list(bits)}")
        object.__setattr__(self, "coeff_bits", bits)
        limit = _max_bits(n, 128)
        if sum(bits) > limit:
            raise InsecureParametersError(
                f"128-bit security bound (HE standard, ternary secret): N={n} allows at most {limit} bits of"
                f" coefficient modulus in total, got {sum(bits)} ({list(bits)})")
        if not isinstance(self.complex_packing, bool):
            raise ConfigError(f"threshold complex_packing must be a bool, got {self.complex_packing!r}")
        for name, lo, hi in (("scale_bits", 1, _MAX_SCALE_BITS), ("stat_security_bits", 1, 128),
                             ("max_decryptions", 1, 1 << 40)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"threshold {name} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.stat_security_bits < 30:
            raise InsecureParametersError(
                f"flooding bound: stat_security_bits must be at least 30 (Li-Micciancio mitigation), got"
                f" {self.stat_security_bits}")
        if self.scale_bits > self.data_bits - 2:
            raise InsecureParametersError(
                f"overflow bound: scale 2^{self.scale_bits} leaves no room below q/2 = 2^{self.data_bits - 1:.1f}")
        self.primes  # noqa: B018 - SEAL must be able to generate the primes (raises ConfigError)

    @classmethod
    def from_preset(cls, preset: ThresholdPreset | str, **overrides: Any) -> ThresholdParams:
        try:
            p = ThresholdPreset(preset)
        except ValueError:
            raise ConfigError(f"unknown threshold preset {preset!r}; known: {[x.value for x in ThresholdPreset]}"
                              ) from None
        n, bits, scale = _PRESETS[p]
        fields: dict[str, Any] = {"poly_degree": n, "coeff_bits": bits, "scale_bits": scale}
        if p is ThresholdPreset.STATISTICAL:
            fields["flooding"] = Flooding.STATISTICAL
        fields.update(overrides)
        return cls(**fields)

    # -- derived -------------------------------------------------------------------------------

    @property
    def primes(self) -> tuple[int, ...]:
        """All of SEAL's primes (key level), the special prime last."""
        return seal_bridge.seal_primes(self.poly_degree, self.coeff_bits)

    @property
    def data_primes(self) -> tuple[int, ...]:
        return self.primes[:-1]

    @property
    def special_prime(self) -> int:
        return self.primes[-1]

    @property
    def data_widths(self) -> tuple[int, ...]:
        return tuple(q.bit_length() for q in self.data_primes)

    @property
    def key_widths(self) -> tuple[int, ...]:
        return tuple(q.bit_length() for q in self.primes)

    @property
    def data_bits(self) -> float:
        return sum(math.log2(q) for q in self.primes[:-1]) if len(self.coeff_bits) > 1 else 0.0

    @property
    def total_bits(self) -> int:
        return sum(q.bit_length() for q in self.primes)

    @property
    def ciphertext_bytes(self) -> int:
        """One ciphertext on the wire: two polynomials, coefficients packed to their prime's width."""
        return 2 * self.partial_bytes

    @property
    def partial_bytes(self) -> int:
        """One polynomial over the ciphertext primes (a partial decryption of one ciphertext)."""
        return self.poly_degree * sum(self.data_widths) // 8

    # -- noise analysis ----------------------------------------------------------------------------

    def secret_norm_sq(self, members: int) -> float:
        """Bound on ||s||^2 for s = Σ of ``members`` uniform ternary secrets: the mean
        (2n/3)·N plus 4n²√N (Hoeffding on the N terms s_j² <= n², tail exp(−32))."""
        n, N = _count(members, "members"), self.poly_degree
        return 2.0 * n / 3.0 * N + 4.0 * n * n * math.sqrt(N)

    def fresh_noise_proxy(self, members: int) -> float:
        """Sub-Gaussian variance proxy of one coefficient of the noise of one fresh SEAL
        encryption under the collective key: SEAL encrypts at the key level and divides by the
        special prime p, leaving r_0 + r_1·s (rounding, |r| <= 1/2) + the encoder's rounding
        (|.| <= 1/2) + (e·u + e_0 + e_1·s)/p:

            V_1 = ||s||²/4 + 1/4 + 1/4 + (||e||²·(2/3) + σ² + ||s||²·σ²) / p²

        with ||e||² <= 1.25·n·N·σ² (e = Σ e_i)."""
        n, N = _count(members, "members"), self.poly_degree
        s2 = self.secret_norm_sq(n)
        var = NOISE_SIGMA**2
        big = (1.25 * n * N * var * 2.0 / 3.0 + var + s2 * var) / float(self.special_prime) ** 2
        return s2 / 4.0 + 0.5 + big

    def ciphertext_noise_bound(self, clients: int, members: int) -> float:
        """B_ct: bound on every coefficient of the noise of a sum of ``clients`` fresh
        ciphertexts, ERROR_TAIL_SIGMAS·sqrt(K·V_1)."""
        k = _count(clients, "clients")
        return ERROR_TAIL_SIGMAS * math.sqrt(k * self.fresh_noise_proxy(members))

    def flooding_sigma(self, clients: int, members: int) -> float:
        """The standard deviation of each member's flooding noise (:class:`Flooding`):
        heuristic √(12τ)·2^(s/2)·B_ct, statistical 2^s·√(τN/2)·B_ct."""
        b_ct = self.ciphertext_noise_bound(clients, members)
        if self.flooding is Flooding.STATISTICAL:
            return 2.0 ** self.stat_security_bits * math.sqrt(self.max_decryptions * self.poly_degree / 2.0) * b_ct
        return math.sqrt(12.0 * self.max_decryptions) * 2.0 ** (self.stat_security_bits / 2) * b_ct

    def sum_error_bound(self, clients: int, members: int, active: int, max_abs: float = 0.0) -> float:
        """Bound on |decoded − exact| for each real of the decrypted sum of ``clients``
        ciphertexts combined from ``active`` partial decryptions: the flooding noise of the
        ``active`` members (Gaussian, each real of a slot a combination of N coefficients:
        standard deviation σ_flood·sqrt(active·N/2)) at ERROR_TAIL_SIGMAS, plus the ciphertext
        noise at its worst (N·B_ct), over the scale; plus float64 encoding error."""
        t = _count(active, "active")
        N = self.poly_degree
        flood = ERROR_TAIL_SIGMAS * self.flooding_sigma(clients, members) * math.sqrt(t * N / 2.0)
        noise = N * self.ciphertext_noise_bound(clients, members)
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        return (flood + noise) / self.scale + clients * packing * float(max_abs) * 2.0**-45

    def coefficient_bound(self, clients: int, members: int, active: int, max_abs: float) -> float:
        """Bound on |coefficient| of c_0 + Σ d_j: every client's encoded coefficient is at most
        Δ·max|slot| (<= Δ·√2·max_abs with complex packing) + 1, plus B_ct, plus each active
        member's flooding at ERROR_TAIL_SIGMAS·σ_flood (a rounded Gaussian exceeds it with
        probability below 2.5e-14 per coefficient)."""
        k = _count(clients, "clients")
        t = _count(active, "active")
        packing = math.sqrt(2.0) if self.complex_packing else 1.0
        per_client = self.scale * packing * float(max_abs) + 1.0
        flood = t * ERROR_TAIL_SIGMAS * self.flooding_sigma(k, members)
        return k * per_client + self.ciphertext_noise_bound(k, members) + flood

    def check_overflow(self, clients: int, members: int, active: int, max_abs: float) -> None:
        """Refuse (:class:`InsecureParametersError`) when the combined decryption could wrap
        around the ciphertext modulus, or the flooding noise could wrap around one prime."""
        if not (isinstance(max_abs, (int, float)) and math.isfinite(max_abs) and max_abs >= 0):
            raise ConfigError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
        need = self.coefficient_bound(clients, members, active, max_abs)
        sigma = self.flooding_sigma(clients, members)
        half_q = self.data_bits - 1.0
        if math.log2(need) >= half_q:
            raise InsecureParametersError(
                f"overflow bound (incl. flooding): {clients} clients x max|value| {max_abs:g} x scale"
                f" 2^{self.scale_bits}" + (" x sqrt(2)" if self.complex_packing else "")
                + f" + noise + {active} x 8 sigma_flood (sigma_flood = 2^{math.log2(sigma):.1f},"
                f" s = {self.stat_security_bits}, tau = {self.max_decryptions}) = 2^{math.log2(need):.2f} must stay"
                f" below q/2 = 2^{half_q:.2f}; lower the clipping range, the scale, tau or the number of clients,"
                " or use a larger modulus")

    def max_clients(self, members: int, active: int, max_abs: float) -> int:
        """The largest number of clients :meth:`check_overflow` accepts."""
        return largest_accepted(lambda k: self.check_overflow(k, members, active, max_abs), 1 << 40)

    def describe(self) -> str:
        bits = "+".join(str(b) for b in self.coeff_bits)
        return (f"N={self.poly_degree}, primes {bits} bits, scale 2^{self.scale_bits}, "
                f"{'two reals' if self.complex_packing else 'one real'} per slot, flooding"
                f" {self.flooding.value} s={self.stat_security_bits} tau={self.max_decryptions}")

    def to_bytes(self) -> bytes:
        """Canonical encoding (part of the collective key's identity)."""
        mode = 1 if self.flooding is Flooding.STATISTICAL else 0  # the formerly reserved field
        head = struct.pack("<IBBBIB", self.poly_degree, self.scale_bits, int(self.complex_packing),
                           self.stat_security_bits, mode, len(self.coeff_bits))
        return (head + bytes(self.coeff_bits) + struct.pack(f"<{len(self.primes)}Q", *self.primes)
                + struct.pack("<Q", self.max_decryptions))

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[ThresholdParams, int]:
        """Parse :meth:`to_bytes` at the start of ``data``; returns (params, bytes consumed)."""
        head = struct.Struct("<IBBBIB")
        if len(data) < head.size:
            raise MalformedMessageError("threshold parameters: truncated")
        n, scale, cplx, sbits, mode, count = head.unpack_from(data, 0)
        need = head.size + count + 8 * count + 8
        if mode > 1 or cplx > 1 or not 2 <= count <= 16 or len(data) < need:
            raise MalformedMessageError("threshold parameters: malformed header")
        bits = tuple(data[head.size : head.size + count])
        primes = struct.unpack_from(f"<{count}Q", data, head.size + count)
        (tau,) = struct.unpack_from("<Q", data, head.size + 9 * count)
        try:
            params = cls(n, bits, scale, bool(cplx), sbits, tau,
                         Flooding.STATISTICAL if mode else Flooding.HEURISTIC)
        except ConfigError as exc:
            raise MalformedMessageError(f"threshold parameters refused: {exc}") from None
        if params.primes != tuple(primes):
            raise MalformedMessageError("threshold parameters: primes differ from SEAL's for these sizes")
        return params, need


def _count(v: int, name: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or int(v) < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


# --------------------------------------------------------------------------------------------
# SEAL objects for a parameter set


@functools.lru_cache(maxsize=8)
def _seal(params: ThresholdParams) -> tuple[Any, seal_bridge.ParmsId, seal_bridge.ParmsId]:
    """(SEALContext, key-level parms_id, first data-level parms_id)."""
    ctx = seal_bridge.seal_context(params.poly_degree, params.primes)
    return ctx, seal_bridge.parms_id_of(ctx.key_parms_id()), seal_bridge.parms_id_of(ctx.first_parms_id())


def _save(obj: Any) -> bytes:
    """Bytes of a SEAL object that holds no secret (the bridge's scratch file when it has one)."""
    scratch = getattr(seal_bridge, "seal_scratch", None)
    return scratch().save(obj) if scratch is not None else seal_bridge.save_seal_object(obj)


def _load(obj: Any, ctx: Any, data: bytes) -> Any:
    scratch = getattr(seal_bridge, "seal_scratch", None)
    return scratch().load(obj, ctx, data) if scratch is not None else seal_bridge.load_seal_object(obj, ctx, data)


# --------------------------------------------------------------------------------------------
# common random polynomial


def crp_seed(nonces: Sequence[bytes], context: bytes = b"") -> bytes:
    """The CRP seed all members agree on: SHA-256 over every member's 32-byte nonce, in member
    order, and a context (parameters, key epoch). No single party chooses it."""
    h = hashlib.sha256(b"secfl-thr-crp-v1")
    h.update(struct.pack("<Q", len(context)) + context)
    for nonce in nonces:
        if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != SEED_BYTES:
            raise ConfigError(f"CRP nonces must be {SEED_BYTES} bytes")
        h.update(bytes(nonce))
    return h.digest()


def expand_crp(params: ThresholdParams, seed: bytes) -> np.ndarray:
    """``a``: (L_key, N) int64, uniform modulo each key-level prime (NTT form: uniform in either)."""
    n = params.poly_degree
    out = np.empty((len(params.primes), n), dtype=np.int64)
    for i, q in enumerate(params.primes):
        out[i] = Prg(derive_seed(seed, "secfl-thr-crp-poly", i)).uniform_below(n, q).astype(np.int64)
    return out


def _gaussian(prg: Prg, n: int, sigma: float, cut: float | None = None) -> np.ndarray:
    """``n`` rounded Gaussian integers (int64) of standard deviation ``sigma`` from the CSPRNG;
    with ``cut``, values beyond ±cut are redrawn."""
    out = np.rint(prg.normal(n) * sigma).astype(np.int64)
    if cut is not None:
        bad = np.flatnonzero(np.abs(out) > cut)
        while bad.size:
            out[bad] = np.rint(prg.normal(bad.size) * sigma).astype(np.int64)
            bad = bad[np.abs(out[bad]) > cut]
    return out


def _poly_to_ntt(values: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Integer polynomials (..., N) int64 -> (..., L, N) NTT-form residues modulo ``primes``."""
    v = np.asarray(values, dtype=np.int64)
    bound = int(np.max(np.abs(v))) if v.size else 0
    out = np.empty(v.shape[:-1] + (len(primes), v.shape[-1]), dtype=np.int64)
    for i, q in enumerate(primes):
        res = to_residues(v, q) if bound < q else np.remainder(v, np.int64(q))
        out[..., i, :] = ntt(res, q)
    return out


# --------------------------------------------------------------------------------------------
# member secrets and key shares


class MemberSecret:
    """Member i's secret s_i (SEAL's ternary secret key, NTT form, every key-level prime).

    Never printed or pickled. :meth:`public_share` gives b_i; :meth:`deal` its Shamir shares.
    """

    __slots__ = ("params", "_s")

    def __init__(self, params: ThresholdParams, s_ntt: np.ndarray) -> None:
        arr = np.array(s_ntt, dtype=np.int64, copy=True)
        if arr.shape != (len(params.primes), params.poly_degree):
            raise ConfigError(f"member secret must be ({len(params.primes)}, {params.poly_degree}) residues")
        arr.flags.writeable = False
        self.params = params
        self._s = arr

    @classmethod
    def generate(cls, params: ThresholdParams) -> MemberSecret:
        """A fresh secret from SEAL's ``KeyGenerator`` (SEAL's CSPRNG; uniform ternary)."""
        import tenseal.sealapi as sealapi

        ctx, key_pid, _ = _seal(params)
        sk = sealapi.KeyGenerator(ctx).secret_key()
        parsed = seal_bridge.SealSecretKey.from_bytes(seal_bridge.save_seal_object(sk), poly_degree=params.poly_degree,
                                                      moduli=params.primes)
        if parsed.parms_id != key_pid:
            raise ConfigError("SEAL's secret key is not at the key level")
        return cls(params, parsed.data.astype(np.int64))

    def __repr__(self) -> str:
        return f"MemberSecret(<secret>, {self.params.describe()})"

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle a member secret")

    def public_share(self, a: np.ndarray, prg: Prg | None = None) -> np.ndarray:
        """b_i = −a·s_i + e_i (NTT form, (L_key, N) int64), e_i rounded Gaussian σ = 3.2, |e| <= 19."""
        p = self.params
        a = np.asarray(a, dtype=np.int64)
        if a.shape != self._s.shape:
            raise ConfigError(f"CRP must be {self._s.shape} residues")
        prg = Prg() if prg is None else prg
        e = _poly_to_ntt(_gaussian(prg, p.poly_degree, NOISE_SIGMA, NOISE_MAX), p.primes)
        out = np.empty_like(a)
        for i, q in enumerate(p.primes):
            as_ = mul_const(a[i], MulConst.make(self._s[i], q))
            out[i] = submod(e[i], as_, q)
        return out

    def deal(self, points: Sequence[int], threshold: int, prg: Prg | None = None) -> np.ndarray:
        """Shamir shares of s_i modulo every ciphertext prime: (len(points), L_data, N) int64,
        row j = f(points[j]) with f of degree ``threshold − 1``, f(0) = s_i, random coefficients
        uniform modulo each prime (fresh CSPRNG)."""
        p = self.params
        xs = _check_points(points, p)
        t = _count(threshold, "threshold")
        if t > len(xs):
            raise ConfigError(f"threshold {t} exceeds the {len(xs)} share holders")
        prg = Prg() if prg is None else prg
        n = p.poly_degree
        out = np.empty((len(xs), len(p.data_primes), n), dtype=np.int64)
        for i, q in enumerate(p.data_primes):
            coeffs = prg.uniform_below((t - 1) * n, q).astype(np.int64).reshape(t - 1, n)
            xm = MulConst.make(np.asarray(xs, dtype=np.int64).reshape(-1, 1), q)
            acc = np.zeros((len(xs), n), dtype=np.int64)
            for d in range(t - 2, -1, -1):  # Horner, highest coefficient first
                acc = addmod(mul_const(acc, xm), coeffs[d][None, :], q)
            out[:, i, :] = addmod(mul_const(acc, xm), self._s[i][None, :], q)
        return out

    def data_residues(self) -> np.ndarray:
        """s_i modulo the ciphertext primes (tests and diagnostics)."""
        return self._s[:-1].copy()

    def key_residues(self) -> np.ndarray:
        """s_i modulo every key-level prime (tests and diagnostics)."""
        return self._s.copy()


def _check_points(points: Sequence[int], params: ThresholdParams) -> list[int]:
    xs = [int(x) for x in points]
    if not xs or len(set(xs)) != len(xs) or len(xs) > MAX_MEMBERS + 1:
        raise ConfigError("Shamir points must be distinct, at least one, at most MAX_MEMBERS")
    if any(not 1 <= x <= MAX_MEMBERS for x in xs) or max(xs) >= min(params.data_primes):
        raise ConfigError(f"Shamir points must be in [1, {MAX_MEMBERS}] (below the smallest prime)")
    return xs


def lagrange_coefficients(points: Sequence[int], q: int) -> list[int]:
    """λ_j = Π_{m≠j} x_m / (x_m − x_j) mod q for every point of the active set (interpolation at 0)."""
    xs = [int(x) for x in points]
    if len(set(xs)) != len(xs) or any(not 0 < x < q for x in xs):
        raise ConfigError("Lagrange points must be distinct and in (0, q)")
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % q
                den = den * (xm - xj) % q
        out.append(num * pow(den, -1, q) % q)
    return out


class KeyShare:
    """Member j's share of the collective secret: σ_j = Σ_i f_i(x_j) modulo every ciphertext
    prime (NTT form). Partial decryptions come from here. Never printed or pickled."""

    __slots__ = ("params", "point", "_sigma")

    def __init__(self, params: ThresholdParams, point: int, sigma: np.ndarray) -> None:
        arr = np.array(sigma, dtype=np.int64, copy=True)
        if arr.shape != (len(params.data_primes), params.poly_degree):
            raise ConfigError("key share has the wrong shape")
        arr.flags.writeable = False
        self.params = params
        self.point = _check_points([point], params)[0]
        self._sigma = arr

    @classmethod
    def from_shares(cls, params: ThresholdParams, point: int, shares: Sequence[np.ndarray]) -> KeyShare:
        """σ_j from the Shamir shares every dealer sent member j (its own included)."""
        if not shares:
            raise ConfigError("a key share needs at least one dealer's share")
        q = np.asarray(params.data_primes, dtype=np.int64)[:, None]
        acc = np.zeros((len(params.data_primes), params.poly_degree), dtype=np.int64)
        for s in shares:
            s = np.asarray(s, dtype=np.int64)
            if s.shape != acc.shape or bool(np.any(s < 0)) or bool(np.any(s >= q)):
                raise MalformedMessageError("a Shamir share has the wrong shape or unreduced residues")
            acc = addmod(acc, s, q)
        return cls(params, point, acc)

    def __repr__(self) -> str:
        return f"KeyShare(<secret>, point={self.point})"

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle a key share")

    def additive_share(self, active_points: Sequence[int]) -> np.ndarray:
        """λ_j·σ_j for the active set (tests and diagnostics; the sum over a full active set is s)."""
        pts = [int(x) for x in active_points]
        if self.point not in pts:
            raise ConfigError(f"member at point {self.point} is not in the active set {pts}")
        out = np.empty_like(self._sigma)
        for i, q in enumerate(self.params.data_primes):
            lam = lagrange_coefficients(pts, q)[pts.index(self.point)]
            out[i] = mul_const(self._sigma[i], MulConst.make(lam, q))
        return out

    def partial_decrypt(self, c1: np.ndarray, active_points: Sequence[int], sigma_flood: float,
                        prg: Prg | None = None, *, flood: bool = True) -> np.ndarray:
        """d = c_1·λ_j·σ_j + E for every ciphertext: ``c1`` is (C, L_data, N) NTT-form residues,
        the result has the same shape. E: rounded Gaussian of standard deviation ``sigma_flood``
        per coefficient, fresh from the CSPRNG for every ciphertext; ``flood=False`` leaves it out
        (tests only: an unflooded partial decryption leaks the key share)."""
        p = self.params
        c1 = np.asarray(c1)
        if c1.ndim != 3 or c1.shape[1:] != (len(p.data_primes), p.poly_degree):
            raise ConfigError(f"c1 must be (C, {len(p.data_primes)}, {p.poly_degree}) residues")
        if flood and not (math.isfinite(sigma_flood) and sigma_flood >= 1.0):
            raise ConfigError(f"flooding sigma must be finite and >= 1, got {sigma_flood!r}")
        key = self.additive_share(active_points)
        prg = Prg() if prg is None else prg
        count, n = c1.shape[0], p.poly_degree
        out = np.empty(c1.shape, dtype=np.int64)
        mults = [MulConst.make(key[i], q) for i, q in enumerate(p.data_primes)]
        step = 16
        for start in range(0, count, step):
            chunk = c1[start : start + step].astype(np.int64, copy=False)
            m = chunk.shape[0]
            noise = None
            if flood:
                e = _gaussian(prg, m * n, sigma_flood).reshape(m, n)
                noise = _poly_to_ntt(e, p.data_primes)  # (m, L, N)
            for i, q in enumerate(p.data_primes):
                d = mul_const(chunk[:, i, :], mults[i])
                if noise is not None:
                    d = addmod(d, noise[:, i, :], q)
                out[start : start + m, i, :] = d
        return out


def collective_public_key(shares: Sequence[np.ndarray], params: ThresholdParams) -> np.ndarray:
    """b = Σ b_i modulo every key-level prime ((L_key, N) int64)."""
    if not shares:
        raise InsufficientQuorumError("no public-key share to combine")
    q = np.asarray(params.primes, dtype=np.int64)[:, None]
    acc = np.zeros((len(params.primes), params.poly_degree), dtype=np.int64)
    for b in shares:
        acc = addmod(acc, np.asarray(b, dtype=np.int64), q)
    return acc


def combine(c0: np.ndarray, partials: Sequence[np.ndarray], params: ThresholdParams) -> np.ndarray:
    """c_0 + Σ d_j modulo every ciphertext prime: the NTT-form plaintexts m + noise, (C, L, N)."""
    q = np.asarray(params.data_primes, dtype=np.int64)[:, None]
    acc = np.array(c0, dtype=np.int64, copy=True)
    for d in partials:
        acc = addmod(acc, np.asarray(d, dtype=np.int64), q)
    return acc


def add_into(acc: np.ndarray, batch: np.ndarray, primes: Sequence[int]) -> None:
    """acc += batch modulo the primes along axis −2 (int64 residues), in place."""
    q = np.asarray(primes, dtype=np.int64)[:, None]
    addmod(acc, batch, q, out=acc)


# --------------------------------------------------------------------------------------------
# wire form of polynomials


def pack_polys(arr: np.ndarray, primes: Sequence[int]) -> bytes:
    """(..., L, N) residues -> bytes: for each prime in turn, every polynomial's N coefficients
    at that prime's bit width (prime-major layout)."""
    a = np.asarray(arr)
    return b"".join(pack_bits(a[..., i, :], int(q).bit_length()) for i, q in enumerate(primes))


def unpack_polys(data: bytes | memoryview, lead: tuple[int, ...], primes: Sequence[int], n: int,
                 what: str = "polynomials") -> np.ndarray:
    """Inverse of :func:`pack_polys` for an array of shape ``lead + (L, N)``; the length must
    match exactly and every coefficient must be below its prime. Nothing is allocated before the
    length is checked (``lead`` may come from a count on the wire)."""
    dims = tuple(int(d) for d in lead)
    if any(d < 0 for d in dims):
        raise MalformedMessageError(f"{what}: negative dimension in {dims}")
    count = math.prod(dims) * n  # Python integers: a huge count cannot wrap around
    widths = [int(q).bit_length() for q in primes]
    sizes = [count * w // 8 for w in widths]
    if len(data) != sum(sizes):
        raise MalformedMessageError(f"{what}: {len(data)} bytes, expected {sum(sizes)} for {dims or 1} x"
                                    f" {len(primes)} polynomials of degree {n}")
    out = np.empty(dims + (len(primes), n), dtype=np.int64)
    view = memoryview(data)
    pos = 0
    for i, (q, w, size) in enumerate(zip(primes, widths, sizes, strict=True)):
        vals = unpack_bits(view[pos : pos + size], w, count, what=what)
        if vals.size and int(vals.max()) >= q:
            raise MalformedMessageError(f"{what}: a coefficient is not reduced modulo its prime")
        out[..., i, :] = vals.view(np.int64).reshape(dims + (n,))
        pos += size
    return out


def ciphertext_digests(c1: np.ndarray, key_id: bytes) -> list[bytes]:
    """SHA-256 of each ciphertext's c_1 (with the key id): what a member refuses to decrypt twice.
    c_0 is left out on purpose: two requests with the same c_1 would give two noisy samples of
    the same c_1·λ·σ, whatever c_0 is."""
    arr = np.ascontiguousarray(np.asarray(c1, dtype="<i8"))
    return [hashlib.sha256(b"secfl-thr-ct-v1" + key_id + arr[c].tobytes()).digest() for c in range(arr.shape[0])]


# --------------------------------------------------------------------------------------------
# the collective public key, as clients and the combiner use it


class CollectivePublicKey:
    """Parameters + the CRP seed + b = Σ b_i: everything a client needs to encrypt, and the
    combiner to decode. Public material only.

    Wire form (:meth:`to_bytes`): ``"SFTHRK"``, version u8, parameters, CRP seed (32 B), b over
    every key-level prime packed at each prime's width. ``a`` is re-expanded from the seed.
    """

    MAGIC = b"SFTHRK"
    VERSION = 1

    def __init__(self, params: ThresholdParams, seed: bytes, b: np.ndarray) -> None:
        arr = np.asarray(b, dtype=np.int64)
        if arr.shape != (len(params.primes), params.poly_degree):
            raise ConfigError("collective key b must be (L_key, N) residues")
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ConfigError("CRP seed must be 32 bytes")
        self.params = params
        self.seed = bytes(seed)
        self.b = arr
        self._blob: bytes | None = None
        self._seal_objs: tuple[Any, Any, Any] | None = None

    def to_bytes(self) -> bytes:
        if self._blob is None:
            self._blob = (self.MAGIC + bytes([self.VERSION]) + self.params.to_bytes() + self.seed
                          + pack_polys(self.b, self.params.primes))
        return self._blob

    @classmethod
    def from_bytes(cls, data: bytes) -> CollectivePublicKey:
        data = bytes(data)
        if not data.startswith(cls.MAGIC) or len(data) < len(cls.MAGIC) + 1 or data[len(cls.MAGIC)] != cls.VERSION:
            raise MalformedMessageError("collective key: bad magic or version")
        pos = len(cls.MAGIC) + 1
        params, used = ThresholdParams.from_bytes(data[pos:])
        pos += used
        seed = data[pos : pos + SEED_BYTES]
        if len(seed) != SEED_BYTES:
            raise MalformedMessageError("collective key: truncated seed")
        pos += SEED_BYTES
        b = unpack_polys(memoryview(data)[pos:], (), params.primes, params.poly_degree, "collective key")
        key = cls(params, seed, b)
        key._blob = data
        return key

    @property
    def key_id(self) -> bytes:
        """16 bytes identifying this key (SHA-256 of its wire form)."""
        return hashlib.sha256(self.to_bytes()).digest()[:16]

    def seal_public_key(self) -> seal_bridge.SealPublicKey:
        _, key_pid, _ = _seal(self.params)
        a = expand_crp(self.params, self.seed)
        return seal_bridge.SealPublicKey(key_pid, np.stack([self.b, a]).astype(np.uint64))

    def _objects(self) -> tuple[Any, Any, Any]:
        """(context, CKKSEncoder, Encryptor) -- SEAL's own, built once."""
        if self._seal_objs is None:
            import tenseal.sealapi as sealapi

            ctx, _, _ = _seal(self.params)
            pk = _load(sealapi.PublicKey(), ctx, self.seal_public_key().to_bytes())
            self._seal_objs = (ctx, sealapi.CKKSEncoder(ctx), sealapi.Encryptor(ctx, pk))
        return self._seal_objs

    # -- client side ------------------------------------------------------------------------------

    def encrypt(self, values: np.ndarray) -> np.ndarray:
        """Encode (SEAL's CKKSEncoder; two reals per slot with complex packing) and encrypt
        (SEAL's Encryptor, public key) ``values``, zero-padded to whole ciphertexts.
        Returns (C, 2, L_data, N) int64 NTT-form residues."""
        import tenseal.sealapi as sealapi

        p = self.params
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if not bool(np.all(np.isfinite(vals))):
            raise ConfigError("cannot encrypt NaN or infinite values")
        count = p.ciphertexts_for(vals.size)
        per = p.values_per_ciphertext
        padded = np.zeros(count * per, dtype=np.float64)
        padded[: vals.size] = vals
        slots: np.ndarray = (padded.view(np.complex128).reshape(count, p.slots) if p.complex_packing
                             else padded.reshape(count, p.slots))
        ctx, encoder, encryptor = self._objects()
        out = np.empty((count, 2, len(p.data_primes), p.poly_degree), dtype=np.int64)
        pt, ct = sealapi.Plaintext(), sealapi.Ciphertext()
        for c in range(count):
            encoder.encode(slots[c].tolist(), p.scale, pt)
            encryptor.encrypt(pt, ct)
            parsed = seal_bridge.SealCiphertext.from_bytes(_save(ct))
            if parsed.data.shape != out.shape[1:] or not parsed.is_ntt_form:
                raise ConfigError("SEAL produced a ciphertext of unexpected shape")
            out[c] = parsed.data.view(np.int64)
        return out

    # -- combiner ------------------------------------------------------------------------------

    def decode(self, plain: np.ndarray, n_values: int | None = None) -> np.ndarray:
        """Decode NTT-form plaintexts (C, L_data, N) with SEAL's CKKSEncoder (each loaded as a SEAL
        Plaintext at the first data level and the scale) into float64 reals."""
        import tenseal.sealapi as sealapi

        p = self.params
        arr = np.asarray(plain, dtype=np.int64)
        if arr.ndim != 3 or arr.shape[1:] != (len(p.data_primes), p.poly_degree):
            raise ConfigError("plaintexts must be (C, L_data, N) residues")
        ctx, encoder, _ = self._objects()
        _, _, data_pid = _seal(p)
        pt = sealapi.Plaintext()
        out = []
        for c in range(arr.shape[0]):
            blob = seal_bridge.SealPlaintext(data_pid, p.scale, arr[c].astype(np.uint64)).to_bytes()
            _load(pt, ctx, blob)
            if p.complex_packing:
                out.append(np.asarray(encoder.decode_complex(pt), dtype=np.complex128).view(np.float64))
            else:
                out.append(np.asarray(encoder.decode_double(pt), dtype=np.float64))
        values = np.concatenate(out) if out else np.zeros(0)
        return values if n_values is None else values[:n_values].copy()

    def ciphertexts_for_seal(self, batch: np.ndarray) -> list[Any]:
        """SEAL ``Ciphertext`` objects for a (C, 2, L_data, N) batch (tests, interop)."""
        import tenseal.sealapi as sealapi

        ctx, _, data_pid = _seal(self.params)
        scale = self.params.scale
        return [_load(sealapi.Ciphertext(), ctx,
                      seal_bridge.SealCiphertext(data_pid, True, scale, batch[c].astype(np.uint64)).to_bytes())
                for c in range(batch.shape[0])]


def preset_table(members: int = 5, threshold: int = 3, clients: int = 10) -> list[dict[str, Any]]:
    """One row per threshold preset (for ``secfl info``): parameters, security, sizes, and the
    bounds for ``clients`` clients with a ``threshold``-of-``members`` quorum. Computed, not
    measured: bytes per parameter is the ciphertext size over the reals it carries."""
    rows = []
    for preset in ThresholdPreset:
        p = ThresholdParams.from_preset(preset)
        rows.append({
            "name": preset.value,
            "poly_degree": p.poly_degree,
            "coeff_bits": list(p.coeff_bits),
            "scale_bits": p.scale_bits,
            "security_bits": p.security_level,
            "ciphertext_bytes": p.ciphertext_bytes,
            "bytes_per_param": p.ciphertext_bytes / p.values_per_ciphertext,
            "partial_bytes_per_param": p.partial_bytes / p.values_per_ciphertext,
            "stat_security_bits": p.stat_security_bits,
            "max_decryptions": p.max_decryptions,
            "flooding_sigma_log2": round(math.log2(p.flooding_sigma(clients, members)), 2),
            "error_bound": float(f"{p.sum_error_bound(clients, members, threshold, 1.0):.3g}"),
            "max_clients_at_clip_1": p.max_clients(members, threshold, 1.0),
            "max_clients_at_clip_100": p.max_clients(members, threshold, 100.0),
        })
    return rows
