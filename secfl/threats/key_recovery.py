"""The Li–Micciancio key-recovery attack on a revealed CKKS decryption (Eurocrypt 2021).

A party that holds a ciphertext ``(c0, c1)`` (NTT form) and the decoded values ``z`` of its
decryption re-encodes ``z`` with SEAL's encoder: if ``z`` is the *noisy* decryption, that gives
back exactly the decrypted plaintext ``p = c0 + c1·s`` (the encoder's rounding undoes the
decoder's float error), so ``s = (p − c0) / c1`` coefficient-wise in NTT form, modulo each prime.
The candidate is the key when its coefficients are ternary. With the key the attacker decrypts
every individual upload.

This is what an honest-but-curious ``ckks`` server could do with the mean the FL loop hands it;
``tests/test_ckks_key_recovery.py`` runs it against every default and against the explicit
``unsafe-float`` mode (where it must succeed, or the test proves nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secfl.crypto import seal_bridge
from secfl.crypto.ckks import CkksCiphertexts, CkksPublicContext, CkksSecretContext

__all__ = ["recover_ckks_key", "ternary_coefficients"]


def _encode(public: CkksPublicContext, values: np.ndarray) -> np.ndarray:
    """SEAL's ``CKKSEncoder`` encoding of one ciphertext's worth of reals at the scale: the
    plaintext's NTT-form residues (L, N) at the first data level."""
    api = seal_bridge._sealapi()
    p = public.params
    ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
    encoder = api.CKKSEncoder(ctx)
    vals = np.zeros(p.values_per_ciphertext, dtype=np.float64)
    vals[: values.size] = values[: vals.size]
    row = vals.view(np.complex128).tolist() if p.complex_packing else vals.tolist()
    pt = api.Plaintext()
    encoder.encode(row, p.scale, pt)
    return seal_bridge.SealPlaintext.from_bytes(seal_bridge.save_seal_object(pt), poly_degree=p.poly_degree,
                                                moduli=p.data_primes).data


def _solve(plain: np.ndarray, c0: np.ndarray, c1: np.ndarray, primes: Sequence[int]) -> np.ndarray | None:
    """(plain − c0) · c1^{-1} mod each prime, coefficient-wise; None when some c1 residue is 0."""
    out = np.empty_like(plain)
    for i, q in enumerate(primes):
        diff = (plain[i].astype(object) - c0[i].astype(object)) % q
        try:
            inv = np.array([pow(int(v), -1, q) for v in c1[i]], dtype=object)
        except ValueError:
            return None
        out[i] = np.array((diff * inv) % q, dtype=np.uint64)
    return out


def ternary_coefficients(ntt_residues: np.ndarray, primes: Sequence[int]) -> np.ndarray | None:
    """The coefficients in {-1, 0, 1} of the polynomial with these NTT-form residues, or None
    if it is not ternary modulo every prime."""
    coeffs = seal_bridge.seal_ntt(ntt_residues, primes, inverse=True)
    q = np.asarray(primes, dtype=np.uint64)[:, None]
    minus = coeffs == q - np.uint64(1)
    if not bool(np.all((coeffs <= 1) | minus)):
        return None
    signed = np.where(minus, -1, coeffs.astype(np.int64))
    if not bool(np.all(signed == signed[0])):
        return None
    return signed[0]


def recover_ckks_key(public: CkksPublicContext, aggregate: CkksCiphertexts,
                     decrypted: np.ndarray) -> CkksSecretContext | None:
    """Try the attack on ciphertext 0 of ``aggregate`` given the reals ``decrypted`` its owner
    revealed for it (one ciphertext's worth: ``values_per_ciphertext`` reals). Returns a secret
    context holding the recovered key, or None when the candidate is not a ternary key."""
    p = public.params
    if decrypted.size < p.values_per_ciphertext or not bool(np.all(np.isfinite(decrypted))):
        return None
    data = p.data_primes
    plain = _encode(public, np.asarray(decrypted, dtype=np.float64))
    cand = _solve(plain, aggregate.data[0, 0], aggregate.data[0, 1], data)
    if cand is None:
        return None
    coeffs = ternary_coefficients(cand, data)
    if coeffs is None:
        return None
    primes = p.primes  # lift the key to every prime (key level, special prime included)
    q = np.asarray(primes, dtype=np.int64)[:, None]
    residues = np.where(coeffs[None, :] < 0, q - 1, coeffs[None, :]).astype(np.uint64)
    key_ntt = seal_bridge.seal_ntt(residues, primes)
    ctx = seal_bridge.seal_context(p.poly_degree, primes)
    secret = seal_bridge.SealSecretKey(seal_bridge.parms_id_of(ctx.key_parms_id()), key_ntt)
    return CkksSecretContext(public, secret)
