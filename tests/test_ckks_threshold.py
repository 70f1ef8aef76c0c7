"""Threshold CKKS primitives (secfl.crypto.threshold): parameters, collective keys, Shamir,
partial decryption with flooding, security of fewer than t shares, SEAL interop."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sealapi
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.crypto import seal_bridge
from secfl.crypto.modarith import MulConst, centered, intt, mul_const, ntt, pack_bits
from secfl.crypto.prg import Prg
from secfl.crypto.threshold import (
    CollectivePublicKey,
    KeyShare,
    MemberSecret,
    ThresholdParams,
    ThresholdPreset,
    add_into,
    ciphertext_digests,
    collective_public_key,
    combine,
    crp_seed,
    expand_crp,
    lagrange_coefficients,
    pack_polys,
    preset_table,
    unpack_polys,
)
from secfl.errors import ConfigError, InsecureParametersError, InsufficientQuorumError, MalformedMessageError

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "vectors" / "ckks_threshold" / "kat.json"
CHI2_15_P1E6 = 56.49  # chi-square critical value, 15 degrees of freedom, p = 1e-6


class World:
    """n members with a collective key, their t-of-n key shares, and an aggregate of K clients."""

    def __init__(self, n: int = 5, t: int = 3, clients: int = 4, dim: int = 9000, seed: int = 0) -> None:
        p = ThresholdParams.from_preset(ThresholdPreset.STANDARD)
        self.p, self.n, self.t, self.K = p, n, t, clients
        self.secrets = [MemberSecret.generate(p) for _ in range(n)]
        self.seed = crp_seed([bytes([i]) * 32 for i in range(n)], b"test")
        self.a = expand_crp(p, self.seed)
        self.b_shares = [s.public_share(self.a) for s in self.secrets]
        self.key = CollectivePublicKey(p, self.seed, collective_public_key(self.b_shares, p))
        self.points = list(range(1, n + 1))
        dealt = [s.deal(self.points, t) for s in self.secrets]
        self.dealt = dealt
        self.shares = [KeyShare.from_shares(p, self.points[j], [dealt[i][j] for i in range(n)]) for j in range(n)]
        rng = np.random.default_rng(seed)
        self.x = rng.uniform(-1.0, 1.0, size=(clients, dim))
        self.agg = None
        for k in range(clients):
            ct = self.key.encrypt(self.x[k])
            if self.agg is None:
                self.agg = ct.copy()
            else:
                add_into(self.agg, ct, p.data_primes)
        self.truth = self.x.sum(axis=0)
        # s = sum of every member's secret, modulo every key-level prime
        s = np.zeros_like(self.secrets[0].key_residues())
        for sec in self.secrets:
            for i, q in enumerate(p.primes):
                s[i] = (s[i] + sec.key_residues()[i]) % q
        self.s_key = s

    @property
    def sigma(self) -> float:
        return self.p.flooding_sigma(self.K, self.n)

    def partials(self, members, active, *, flood=True, count=None):
        c1 = self.agg[:count, 1] if count else self.agg[:, 1]
        return [self.shares[j].partial_decrypt(c1, [self.points[m] for m in active], self.sigma, flood=flood)
                for j in members]

    def c0(self, count=None):
        return self.agg[:count, 0] if count else self.agg[:, 0]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _chi2_uniform(residues: np.ndarray, q: int | float, bins: int = 16) -> float:
    counts = np.bincount((residues.astype(np.float64) / q * bins).astype(np.int64).ravel(), minlength=bins)
    expected = residues.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def _crt_fraction(plain: np.ndarray, primes) -> np.ndarray:
    """NTT-form plaintexts over two primes -> each coefficient's value modulo Q = q0·q1, as a
    fraction of Q in [0, 1) (Garner: v = r0 + q0·((r1 − r0)·q0^-1 mod q1))."""
    q0, q1 = primes
    r0 = intt(plain[:, 0, :], q0)
    r1 = intt(plain[:, 1, :], q1)
    diff = (r1 - r0 % q1) % q1
    d = mul_const(diff, MulConst.make(pow(q0, -1, q1), q1))
    return d / q1 + r0 / (q0 * q1)


# ------------------------------------------------------------------------------------------- params


def test_standard_preset_is_192_bit_and_fits_flooding():
    p = ThresholdParams.from_preset("standard")
    assert (p.poly_degree, p.coeff_bits, p.scale_bits) == (8192, (45, 45, 60), 64)
    assert p.security_level == 192 and p.total_bits == 150
    assert p.values_per_ciphertext == 8192 and p.ciphertext_bytes == 2 * 8192 * 90 // 8
    assert p.stat_security_bits == 30 and p.max_decryptions == 1 << 14
    # room for thousands of clients at clip 100 with a 10-member quorum, and precision to spare
    assert p.max_clients(10, 10, 100.0) > 10_000
    assert p.sum_error_bound(100, 10, 10, 1.0) < 1e-4
    assert p.flooding_sigma(10, 5) == pytest.approx(
        math.sqrt(12 * 2**14) * 2**15 * p.ciphertext_noise_bound(10, 5))


def test_preset_table_for_info():
    rows = {r["name"]: r for r in preset_table()}
    assert set(rows) == {"standard", "statistical"}
    row = rows["standard"]
    assert row["name"] == "standard" and row["security_bits"] == 192 and row["bytes_per_param"] == 22.5
    assert row["max_clients_at_clip_100"] > 100_000 and row["error_bound"] < 1e-5
    stat = rows["statistical"]  # statistical flooding: 30 more modulus bits, 30 B/param
    assert stat["security_bits"] == 256 and stat["bytes_per_param"] == 30.0 and stat["error_bound"] < 1e-5


def test_params_refusals_name_the_bound():
    with pytest.raises(InsecureParametersError, match="128-bit security bound"):
        ThresholdParams(8192, (60, 60, 60, 50), 40)
    with pytest.raises(InsecureParametersError, match="stat_security_bits"):
        ThresholdParams(8192, (45, 45, 60), 64, stat_security_bits=20)
    with pytest.raises(InsecureParametersError, match="overflow bound"):
        ThresholdParams(8192, (45, 45, 60), 89)
    with pytest.raises(ConfigError, match="special prime"):
        ThresholdParams(8192, (60,), 40)
    with pytest.raises(ConfigError):
        ThresholdParams(8000, (45, 45, 60), 64)
    with pytest.raises(ConfigError):
        ThresholdParams.from_preset("nope")


def test_overflow_check_includes_flooding():
    p = ThresholdParams(8192, (30, 30, 60), 50)
    k = p.max_clients(5, 3, 1.0)
    assert 1 <= k < 1000
    p.check_overflow(k, 5, 3, 1.0)
    with pytest.raises(InsecureParametersError, match="overflow bound .incl. flooding"):
        p.check_overflow(k + 1, 5, 3, 1.0)
    # flooding alone can break a set whose data fits: tau raises sigma_flood by sqrt(tau)
    big_tau = ThresholdParams(8192, (30, 30, 60), 50, max_decryptions=1 << 40)
    assert big_tau.max_clients(5, 3, 1.0) < k


def test_params_round_trip_bytes():
    p = ThresholdParams(8192, (45, 45, 60), 60, True, 40, 1000)
    blob = p.to_bytes()
    q, used = ThresholdParams.from_bytes(blob + b"tail")
    assert q == p and used == len(blob)
    with pytest.raises(MalformedMessageError):
        ThresholdParams.from_bytes(blob[:10])
    bad = bytearray(blob)
    bad[-9] ^= 1  # a prime byte
    with pytest.raises(MalformedMessageError):
        ThresholdParams.from_bytes(bytes(bad))


def test_overflow_bound_is_tight_on_all_maximum_values():
    """All-maximum inputs: at the accepted client count the sum decodes correctly; far beyond the
    modulus it is garbage -- the check is what stands between them."""
    p = ThresholdParams(8192, (30, 30, 60), 50)
    n, t = 3, 2
    secrets = [MemberSecret.generate(p) for _ in range(n)]
    seed = crp_seed([bytes([i]) * 32 for i in range(n)])
    key = CollectivePublicKey(p, seed, collective_public_key([s.public_share(expand_crp(p, seed)) for s in secrets],
                                                            p))
    pts = [1, 2, 3]
    dealt = [s.deal(pts, t) for s in secrets]
    shares = [KeyShare.from_shares(p, pts[j], [dealt[i][j] for i in range(n)]) for j in range(n)]
    k_max = p.max_clients(n, t, 1.0)
    ct = key.encrypt(np.ones(p.values_per_ciphertext))  # every slot 1 + 1j: coefficients up to Δ

    def decrypt_sum(k):
        agg = ct.copy()
        for _ in range(k - 1):
            add_into(agg, ct, p.data_primes)
        parts = [shares[j].partial_decrypt(agg[:, 1], [1, 2], p.flooding_sigma(k, n)) for j in (0, 1)]
        return key.decode(combine(agg[:, 0], parts, p), 64)

    ok = decrypt_sum(k_max)
    assert np.abs(ok - k_max).max() <= p.sum_error_bound(k_max, n, t, 1.0)
    bad = decrypt_sum(4 * k_max)  # sqrt(2)·4·k_max·Δ > q/2: wraps
    assert np.abs(bad - 4 * k_max).max() > 1.0


# ------------------------------------------------------------------------------------------- keys


def test_crp_is_deterministic_and_depends_on_every_nonce():
    p = ThresholdParams.from_preset("standard")
    nonces = [bytes([i]) * 32 for i in range(3)]
    s1 = crp_seed(nonces, b"ctx")
    assert s1 == crp_seed(nonces, b"ctx") != crp_seed(nonces, b"other")
    assert s1 != crp_seed([nonces[0], nonces[1], bytes([9]) * 32], b"ctx")
    a = expand_crp(p, s1)
    assert a.shape == (3, 8192) and np.array_equal(a, expand_crp(p, s1))
    assert all(int(a[i].max()) < q for i, q in enumerate(p.primes))
    # uniform residues: the top 4 bits of a/q fill 16 bins evenly
    assert _chi2_uniform(a[0], p.primes[0]) < CHI2_15_P1E6
    with pytest.raises(ConfigError):
        crp_seed([b"short"])


def test_collective_key_loads_into_seal_and_round_trips(world):
    key = world.key
    blob = key.to_bytes()
    again = CollectivePublicKey.from_bytes(blob)
    assert again.key_id == key.key_id and np.array_equal(again.b, key.b) and again.seed == key.seed
    # SEAL PublicKey through the bridge and back, unchanged
    ctx = seal_bridge.seal_context(world.p.poly_degree, world.p.primes)
    spk = key.seal_public_key()
    obj = seal_bridge.load_seal_object(sealapi.PublicKey(), ctx, spk.to_bytes())
    back = seal_bridge.SealPublicKey.from_bytes(seal_bridge.save_seal_object(obj), moduli=world.p.primes)
    assert back.parms_id == spk.parms_id and np.array_equal(back.data, spk.data)
    with pytest.raises(MalformedMessageError):
        CollectivePublicKey.from_bytes(blob[:-1])
    with pytest.raises(MalformedMessageError):
        CollectivePublicKey.from_bytes(b"XX" + blob[2:])


def test_seal_objects_round_trip_through_the_bridge(world):
    p = world.p
    ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
    # ciphertexts
    cts = world.key.ciphertexts_for_seal(world.agg[:1])
    parsed = seal_bridge.SealCiphertext.from_bytes(seal_bridge.save_seal_object(cts[0]), moduli=p.data_primes)
    assert parsed.is_ntt_form and parsed.scale == p.scale
    assert np.array_equal(parsed.data.view(np.int64), world.agg[0])
    # plaintexts (the combiner's output) and secret keys
    plain = combine(world.c0(1), world.partials(range(3), range(3), flood=False, count=1), p)
    pt_bytes = seal_bridge.SealPlaintext(seal_bridge.parms_id_of(ctx.first_parms_id()), p.scale,
                                         plain[0].astype(np.uint64)).to_bytes()
    pt = seal_bridge.load_seal_object(sealapi.Plaintext(), ctx, pt_bytes)
    pt_back = seal_bridge.SealPlaintext.from_bytes(seal_bridge.save_seal_object(pt), poly_degree=p.poly_degree)
    assert np.array_equal(pt_back.data.view(np.int64), plain[0]) and pt_back.scale == p.scale
    sk = seal_bridge.SealSecretKey(seal_bridge.parms_id_of(ctx.key_parms_id()), world.s_key.astype(np.uint64))
    sk_obj = seal_bridge.load_seal_object(sealapi.SecretKey(), ctx, sk.to_bytes())
    sk_back = seal_bridge.SealSecretKey.from_bytes(seal_bridge.save_seal_object(sk_obj), poly_degree=p.poly_degree)
    assert np.array_equal(sk_back.data, sk.data)


def test_public_share_is_rlwe_sample_of_the_member_secret(world):
    """b_i + a·s_i is the small error e_i (|e| <= 19), in coefficient form."""
    p = world.p
    for i, q in enumerate(p.primes):
        sec = world.secrets[0].key_residues()[i]
        e_ntt = (world.b_shares[0][i] + mul_const(world.a[i], MulConst.make(sec, q))) % q
        e = centered(intt(e_ntt, q), q)
        assert np.abs(e).max() <= 19 and 2.5 < e.std() < 4.0


def test_member_secret_is_not_printable_or_picklable(world):
    import pickle

    assert "secret" in repr(world.secrets[0]) and "secret" in repr(world.shares[0])
    with pytest.raises(TypeError):
        pickle.dumps(world.secrets[0])
    with pytest.raises(TypeError):
        pickle.dumps(world.shares[0])


# ------------------------------------------------------------------------------------------- Shamir


def test_shamir_every_t_subset_reconstructs_each_secret(world):
    p, t = world.p, world.t
    for subset in itertools.combinations(range(world.n), t):
        pts = [world.points[j] for j in subset]
        for i, q in enumerate(p.data_primes):
            lam = lagrange_coefficients(pts, q)
            acc = np.zeros(p.poly_degree, dtype=np.int64)
            for j, coeff in zip(subset, lam, strict=True):
                acc = (acc + mul_const(world.dealt[0][j][i], MulConst.make(coeff, q))) % q
            assert np.array_equal(acc, world.secrets[0].data_residues()[i])


def test_key_shares_over_any_t_members_sum_to_the_collective_secret(world):
    p = world.p
    for subset in itertools.combinations(range(world.n), world.t):
        pts = [world.points[j] for j in subset]
        total = np.zeros((len(p.data_primes), p.poly_degree), dtype=np.int64)
        for j in subset:
            total = (total + world.shares[j].additive_share(pts)) % np.asarray(p.data_primes)[:, None]
        assert np.array_equal(total, world.s_key[:-1])


def test_t_minus_1_shares_are_uniform(world):
    """Shamir's t−1 shares of a secret are uniform: here, of the all-zero secret and of s_0,
    the share residues (a single point) fill 16 bins evenly."""
    q = world.p.data_primes[0]
    shares = world.dealt[0][:, 0, :]  # every member's share of s_0, first prime
    for row in shares[: world.t - 1]:
        assert _chi2_uniform(row, q) < CHI2_15_P1E6


def test_lagrange_known_values_and_refusals():
    assert lagrange_coefficients([1, 2], 101) == [2, 100]  # f(0) = 2 f(1) − f(2)
    with pytest.raises(ConfigError):
        lagrange_coefficients([1, 1], 101)
    with pytest.raises(ConfigError):
        lagrange_coefficients([0, 1], 101)
    p = ThresholdParams.from_preset("standard")
    with pytest.raises(ConfigError):
        MemberSecret.generate(p).deal([1, 2, 3], 4)


# ------------------------------------------------------------------------------------------- decryption


def test_unsmudged_combination_equals_seal_decryptor_with_the_summed_key(world):
    p = world.p
    ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
    sk = seal_bridge.load_seal_object(sealapi.SecretKey(), ctx, seal_bridge.SealSecretKey(
        seal_bridge.parms_id_of(ctx.key_parms_id()), world.s_key.astype(np.uint64)).to_bytes())
    decryptor = sealapi.Decryptor(ctx, sk)
    seal_cts = world.key.ciphertexts_for_seal(world.agg)
    for active in [(0, 1, 2), (2, 3, 4), (0, 2, 4)]:
        plain = combine(world.c0(), world.partials(active, active, flood=False), p)
        # c0 + c1·s with s the plain sum of the members' secrets
        for i, q in enumerate(p.data_primes):
            direct = (world.agg[:, 0, i] + mul_const(world.agg[:, 1, i], MulConst.make(world.s_key[i], q))) % q
            assert np.array_equal(plain[:, i], direct)
        for c, ct in enumerate(seal_cts):
            pt = sealapi.Plaintext()
            decryptor.decrypt(ct, pt)
            ref = seal_bridge.SealPlaintext.from_bytes(seal_bridge.save_seal_object(pt), poly_degree=p.poly_degree)
            assert np.array_equal(ref.data.view(np.int64), plain[c])
    values = world.key.decode(plain, world.truth.size)
    assert np.abs(values - world.truth).max() < 1e-9  # the ciphertext noise alone is ~2^-50 here


def test_every_t_subset_recovers_the_sum_within_the_bound(world):
    p = world.p
    bound = p.sum_error_bound(world.K, world.n, world.t, 1.0)
    for active in itertools.combinations(range(world.n), world.t):
        plain = combine(world.c0(1), world.partials(active, active, count=1), p)
        got = world.key.decode(plain, p.values_per_ciphertext)
        assert np.abs(got - world.truth[: got.size]).max() <= bound, active


def test_flooding_noise_is_fresh_gaussian_of_the_stated_sigma(world):
    p = world.p
    active = (0, 1, 2)
    clean = world.partials([0], active, flood=False)[0]
    noisy_a = world.partials([0], active)[0]
    noisy_b = world.partials([0], active)[0]
    assert not np.array_equal(noisy_a, noisy_b)  # fresh noise every time
    q = p.data_primes[0]
    e = centered(intt((noisy_a[:, 0] - clean[:, 0]) % q, q), q).astype(np.float64)
    e2 = centered(intt((noisy_a[:, 1] - clean[:, 1]) % p.data_primes[1], p.data_primes[1]), p.data_primes[1])
    assert np.array_equal(e, e2)  # one integer polynomial, reduced modulo each prime
    sigma = world.sigma
    assert abs(e.mean()) < 5 * sigma / math.sqrt(e.size)
    assert e.std() == pytest.approx(sigma, rel=0.03)
    assert np.abs(e).max() < 9 * sigma
    # sized as the rule says: >= 2^15 x the ciphertext noise bound, which bounds the real noise
    assert sigma >= 2**15 * math.sqrt(12 * p.max_decryptions) * p.ciphertext_noise_bound(world.K, world.n) * 0.999


def test_ciphertext_noise_is_below_its_bound(world):
    """Measured noise of the aggregate (decryption minus the exact encoding) against B_ct."""
    p = world.p
    plain = combine(world.c0(), world.partials(range(3), range(3), flood=False), p)
    ctx = seal_bridge.seal_context(p.poly_degree, p.primes)
    enc = sealapi.CKKSEncoder(ctx)
    q = p.data_primes[0]
    worst = 0.0
    for c in range(world.agg.shape[0]):
        exact = np.zeros(p.values_per_ciphertext)
        chunk = world.truth[c * p.values_per_ciphertext : (c + 1) * p.values_per_ciphertext]
        exact[: chunk.size] = chunk
        pt = sealapi.Plaintext()
        # the exact sum encoded once differs from the sum of K encodings by K rounding errors (<= K/2)
        enc.encode(exact.view(np.complex128).tolist(), p.scale, pt)
        ref = seal_bridge.SealPlaintext.from_bytes(seal_bridge.save_seal_object(pt), poly_degree=p.poly_degree)
        diff = centered(intt((plain[c, 0] - ref.data.view(np.int64)[0]) % q, q), q)
        worst = max(worst, float(np.abs(diff).max()))
    assert worst <= p.ciphertext_noise_bound(world.K, world.n)
    assert worst > 0


# ------------------------------------------------------------------------------------------- security


def _assert_garbage(world, plain):
    """A decryption attempt reveals nothing: in coefficient form its residues are uniform modulo
    every prime, and the decoded values are huge and uncorrelated with the truth."""
    p = world.p
    assert _chi2_uniform(_crt_fraction(plain, p.data_primes), 1.0) < CHI2_15_P1E6
    values = world.key.decode(plain, world.truth.size)
    assert np.median(np.abs(values)) > 1e6
    corr = np.corrcoef(values, world.truth)[0, 1]
    assert abs(corr) < 5.0 / math.sqrt(values.size)


def test_positive_control_a_correct_decryption_is_not_uniform(world):
    p = world.p
    plain = combine(world.c0(), world.partials(range(3), range(3)), p)
    frac = _crt_fraction(plain, p.data_primes)
    assert _chi2_uniform(frac, 1.0) > 1000  # every coefficient is near 0 or Q: |m| << Q/2
    assert np.all((frac < 2.0**-20) | (frac > 1 - 2.0**-20))


def test_t_minus_1_members_recover_nothing(world):
    p = world.p
    for active in [(0, 1, 2), (1, 3, 4)]:
        for missing in active:
            present = [j for j in active if j != missing]
            plain = combine(world.c0(), world.partials(present, active), p)
            _assert_garbage(world, plain)


def test_a_single_member_recovers_nothing(world):
    p = world.p
    for j in range(world.n):
        plain = combine(world.c0(), world.partials([j], (j, (j + 1) % world.n, (j + 2) % world.n)), p)
        _assert_garbage(world, plain)
    # nor does its key share used as if it were the whole key (unflooded, best case for the attacker)
    plain = combine(world.c0(), [world.shares[0].partial_decrypt(world.agg[:, 1], [1], 0.0, flood=False)], p)
    _assert_garbage(world, plain)


def test_the_servers_public_material_recovers_nothing(world):
    """What the server holds: ciphertexts, the public key (b, a), the CRP seed, the members'
    public-key shares. c_0 alone, or c_0 combined with the public key as if it were a key, is noise."""
    p = world.p
    _assert_garbage(world, world.c0().copy())
    fake = combine(world.c0(), [np.stack([mul_const(world.agg[:, 1, i], MulConst.make(world.key.b[i], q))
                                          for i, q in enumerate(p.data_primes)], axis=1)], p)
    _assert_garbage(world, fake)
    fake = combine(world.c0(), [np.stack([mul_const(world.agg[:, 1, i], MulConst.make(world.b_shares[0][i], q))
                                          for i, q in enumerate(p.data_primes)], axis=1)], p)
    _assert_garbage(world, fake)


def test_partials_for_another_active_set_do_not_combine(world):
    p = world.p
    parts = world.partials([0, 1], (0, 1, 2)) + world.partials([3], (1, 3, 4))
    _assert_garbage(world, combine(world.c0(), parts, p))


# ------------------------------------------------------------------------------------------- wire


def test_pack_polys_round_trip_and_strict_checks(world):
    p = world.p
    blob = pack_polys(world.agg, p.data_primes)
    assert len(blob) == world.agg.shape[0] * p.ciphertext_bytes
    back = unpack_polys(blob, world.agg.shape[:2], p.data_primes, p.poly_degree)
    assert np.array_equal(back, world.agg)
    with pytest.raises(MalformedMessageError):
        unpack_polys(blob[:-1], world.agg.shape[:2], p.data_primes, p.poly_degree)
    bad = np.array(world.agg[:1, :1])
    bad[0, 0, 0, 0] = p.data_primes[0]  # not reduced
    raw = pack_bits(bad[..., 0, :], 45) + pack_bits(bad[..., 1, :], 45)
    with pytest.raises(MalformedMessageError, match="not reduced"):
        unpack_polys(raw, (1, 1), p.data_primes, p.poly_degree)


def test_ciphertext_digests_depend_on_c1_and_key(world):
    d = ciphertext_digests(world.agg[:, 1], b"k" * 16)
    assert len(d) == world.agg.shape[0] and len(set(d)) == len(d)
    assert d != ciphertext_digests(world.agg[:, 1], b"j" * 16)
    other = world.agg[:, 1].copy()
    other[0, 0, 0] ^= 1
    assert ciphertext_digests(other, b"k" * 16)[0] != d[0]


def test_partial_decrypt_refuses_bad_input(world):
    with pytest.raises(ConfigError):
        world.shares[0].partial_decrypt(world.agg[:, 1, :1], [1, 2, 3], world.sigma)
    with pytest.raises(ConfigError):
        world.shares[0].partial_decrypt(world.agg[:, 1], [2, 3, 4], world.sigma)  # not in the set
    with pytest.raises(ConfigError):
        world.shares[0].partial_decrypt(world.agg[:, 1], [1, 2, 3], float("nan"))
    with pytest.raises(InsufficientQuorumError):
        collective_public_key([], world.p)


# ------------------------------------------------------------------------------------------- vectors


def test_known_answer_vectors():
    """Fixed inputs -> fixed outputs (protocols/vectors/ckks_threshold/kat.json): parameters' wire
    form, CRP expansion, Lagrange coefficients, SEAL's NTT, bit packing, Shamir dealing and partial
    decryption from seeded generators."""
    kat = json.loads(VECTORS.read_text())
    p = ThresholdParams.from_preset(kat["params"]["preset"])
    assert p.to_bytes().hex() == kat["params"]["bytes"] and list(p.primes) == kat["params"]["primes"]
    crp = kat["crp"]
    seed = crp_seed([bytes.fromhex(n) for n in crp["nonces"]], bytes.fromhex(crp["context"]))
    assert seed.hex() == crp["seed"]
    a = expand_crp(p, seed)
    assert [a[i, :4].tolist() for i in range(len(p.primes))] == crp["first4"]
    for case in kat["lagrange"]:
        assert lagrange_coefficients(case["points"], case["q"]) == case["lambdas"]
    for case in kat["ntt"]:
        got = ntt(np.array(case["input"], dtype=np.int64), case["q"])
        assert got.tolist() == case["output"]
    pk = kat["pack"]
    assert pack_bits(np.array(pk["values"], dtype=np.uint64), pk["width"]).hex() == pk["hex"]
    sh = kat["shamir"]
    secret = MemberSecret(p, np.stack([Prg(bytes.fromhex(sh["secret_seed"])).uniform_below(p.poly_degree, q)
                                       for q in p.primes]).astype(np.int64))
    dealt = secret.deal(sh["points"], sh["threshold"], Prg(bytes.fromhex(sh["prg_seed"])))
    import hashlib

    assert hashlib.sha256(dealt.astype("<i8").tobytes()).hexdigest() == sh["sha256"]
    pd = kat["partial"]
    share = KeyShare(p, pd["point"], np.stack([Prg(bytes.fromhex(pd["share_seed"])).uniform_below(p.poly_degree, q)
                                               for q in p.data_primes]).astype(np.int64))
    c1 = np.stack([Prg(bytes.fromhex(pd["c1_seed"])).uniform_below(p.poly_degree, q)
                   for q in p.data_primes]).astype(np.int64)[None]
    d = share.partial_decrypt(c1, pd["active"], pd["sigma"], Prg(bytes.fromhex(pd["prg_seed"])))
    assert hashlib.sha256(d.astype("<i8").tobytes()).hexdigest() == pd["sha256"]


# ------------------------------------------------------------------------------------------- property


@settings(max_examples=4, deadline=None)
@given(st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False), min_size=1, max_size=50),
       st.sampled_from([(0, 1, 2), (1, 2, 4), (0, 3, 4)]))
def test_secure_sum_equals_plaintext_sum_within_the_bound(world, values, active):
    """Two clients encrypt ``values`` and their negation plus one: the flooded t-of-n decryption
    of the sum is the plaintext sum within the stated bound."""
    p = world.p
    x = np.array(values)
    a = world.key.encrypt(x)
    add_into(a, world.key.encrypt(1.0 - x), p.data_primes)
    parts = [world.shares[j].partial_decrypt(a[:, 1], [world.points[m] for m in active], p.flooding_sigma(2, world.n))
             for j in active]
    got = world.key.decode(combine(a[:, 0], parts, p), x.size)
    assert np.abs(got - 1.0).max() <= p.sum_error_bound(2, world.n, 3, 100.0)
