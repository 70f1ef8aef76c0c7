"""CKKS on SEAL (secfl.crypto.ckks): parameters and their bounds, key material types, the wire
packing, encryption error within the documented bound, strict ciphertext parsing, the process pool."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.crypto import ckks, seal_bridge
from secfl.crypto.ckks import (
    HE_STD_MAX_BITS,
    CkksAccumulator,
    CkksCiphertexts,
    CkksEncryptor,
    CkksParams,
    CkksPreset,
    CkksPublicContext,
    CkksSecretContext,
    preset_table,
)
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    InsecureParametersError,
    MalformedMessageError,
)

_KEYS: dict[str, CkksSecretContext] = {}


def keys(preset: str = "compact") -> CkksSecretContext:
    """One key per preset for the whole module (key generation is the slow part)."""
    if preset not in _KEYS:
        _KEYS[preset] = CkksSecretContext.generate(preset)
    return _KEYS[preset]


# -- parameters -------------------------------------------------------------------------------


def test_presets_are_valid_and_their_security_level_is_reported():
    levels = {p: CkksParams.from_preset(p).security_level for p in CkksPreset}
    assert levels == {CkksPreset.COMPACT: 128, CkksPreset.WIDE: 192, CkksPreset.NVFLARE: 192}
    common = CkksParams.from_preset("nvflare")
    assert (common.poly_degree, common.coeff_bits, common.scale_bits, common.complex_packing) == (
        8192, (60, 40, 40), 40, False)
    assert [q.bit_length() for q in common.data_primes] == [60, 40]
    for p in CkksPreset:
        params = CkksParams.from_preset(p)
        assert all(q % (2 * params.poly_degree) == 1 for q in params.primes)


@pytest.mark.parametrize("n,bits", [(2048, (60,)), (2048, (30, 30)), (4096, (60, 50)), (8192, (60,) * 4)])
def test_beyond_the_128_bit_bound_is_refused_naming_the_bound(n, bits):
    assert sum(bits) > HE_STD_MAX_BITS[128][n]
    with pytest.raises(InsecureParametersError, match="128-bit security bound"):
        CkksParams(n, bits, 30)


def test_at_the_bound_is_accepted():
    for n, limit in HE_STD_MAX_BITS[128].items():
        bits = (60,) * (limit // 60) + ((limit % 60,) if limit % 60 >= 20 else ())
        assert CkksParams(n, bits, 30).total_bits <= limit


@pytest.mark.parametrize("kwargs", [
    dict(poly_degree=3000, coeff_bits=(54,), scale_bits=30),
    dict(poly_degree=1024, coeff_bits=(27,), scale_bits=20),
    dict(poly_degree=2048, coeff_bits=(61,), scale_bits=30),
    dict(poly_degree=2048, coeff_bits=(10,), scale_bits=5),
    dict(poly_degree=2048, coeff_bits=(), scale_bits=30),
    dict(poly_degree=2048, coeff_bits=(54,), scale_bits=0),
    dict(poly_degree=2048, coeff_bits=(54,), scale_bits=30, complex_packing="yes"),
])
def test_malformed_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        CkksParams(**kwargs)


def test_scale_without_room_is_refused_as_overflow():
    with pytest.raises(InsecureParametersError, match="overflow bound"):
        CkksParams(2048, (54,), 53)


def test_overflow_check_refuses_too_many_clients_and_names_the_bound():
    p = CkksParams.from_preset("compact")
    limit = p.max_clients(100.0)
    p.check_overflow(limit, 100.0)
    with pytest.raises(InsecureParametersError, match="overflow bound.*clients"):
        p.check_overflow(limit + 1, 100.0)
    with pytest.raises(InsecureParametersError, match="overflow bound"):
        p.check_overflow(1, 2.0**20)  # one client is enough when the values are huge
    assert p.max_clients(1.0) > 100 * limit - 200


def test_all_maximum_vector_overflows_exactly_where_the_check_says():
    """Random data hides wrap-around; all-maximum inputs expose it. At the largest client count
    the check accepts, the sum is right; past the modulus (which the check refuses), it is not."""
    p = CkksParams(2048, (54,), 48)  # a large scale puts the bound at a handful of clients
    sk = CkksSecretContext.generate(p)
    pub = sk.public()
    ok = p.max_clients(1.0)
    assert 10 <= ok <= 40
    vec = np.ones(2 * p.values_per_ciphertext)  # all maximal, two ciphertexts
    acc = CkksAccumulator(pub, 2)
    for _ in range(ok):  # fresh encryptions: the bound is for independent noise (adding one
        acc.add(pub.encrypt(vec))  # ciphertext K times multiplies its noise by K, not sqrt(K))
    got = sk.decrypt(acc.result(), vec.size)
    assert np.max(np.abs(got - ok)) <= p.sum_error_bound(ok, 1.0)
    too_many = 2 ** (54 - 48)  # ok * 1.0 * 2^48 < q/2 < too_many * 2^48
    with pytest.raises(InsecureParametersError):
        p.check_overflow(too_many, 1.0)
    one = pub.encrypt(vec)
    for _ in range(too_many - ok):
        acc.add(one)
    wrapped = sk.decrypt(acc.result(), vec.size)
    assert np.max(np.abs(wrapped - too_many)) > 1.0


# -- packing (the wire form) -------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_bit_packing_round_trips(width, groups, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2**width, size=8 * groups, dtype=np.uint64, endpoint=False) if width < 64 else \
        rng.integers(0, 2**63, size=8 * groups, dtype=np.uint64)
    packed = ckks._pack_bits(v, width)
    assert packed.size == v.size * width // 8
    assert np.array_equal(ckks._unpack_bits(packed, width, v.size), v)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([20, 25, 30, 40, 49, 54, 60]), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_batched_poly_packing_matches_the_reference_packer(width, count, primes, seed):
    """The cache-friendly packer (strided input, several primes, written into one buffer) gives
    exactly the bytes of the simple reference packer, and the strict parser inverts it."""
    n = 64
    rng = np.random.default_rng(seed)
    qs = [(1 << width) - 1 - 2 * i for i in range(primes)]  # only the bit lengths matter here
    polys = np.stack([rng.integers(0, q, size=(count, 2, n), dtype=np.uint64) for q in qs], axis=2)
    padded = np.zeros((count, polys[0].size + 3), dtype=np.uint64)  # strided rows, as from SEAL's buffer
    padded[:, 3:] = polys.reshape(count, -1)
    view = padded[:, 3:].reshape(count, 2, primes, n)
    expect = b"".join(ckks._pack_bits(np.ascontiguousarray(view[c, j, i]), width).tobytes()
                      for c in range(count) for j in range(2) for i in range(primes))
    got = ckks._pack_polys(view, qs)
    assert got == expect
    back = ckks._unpack_polys(got, count, 2, qs, n, "test")
    assert np.array_equal(back, polys)


# -- encryption / decryption -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["public-key", "symmetric"])
@pytest.mark.parametrize("preset", [p.value for p in CkksPreset])
def test_round_trip_within_bound_for_every_preset(preset, mode):
    sk = keys(preset)
    p = sk.params
    x = np.random.default_rng(1).uniform(-3, 3, 2 * p.values_per_ciphertext + 17)
    got = sk.decrypt((sk.public() if mode == "public-key" else sk).encrypt(x), x.size)
    assert got.shape == x.shape
    assert np.max(np.abs(got - x)) <= p.sum_error_bound(1, 3.0)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3 * 2048 + 5), st.integers(1, 6), st.floats(0.01, 100.0), st.integers(0, 2**32 - 1))
def test_sum_of_encryptions_equals_plain_sum_within_documented_bound(length, clients, clip, seed):
    sk = keys("compact")
    pub = sk.public()
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-clip, clip, size=(clients, length))
    acc = CkksAccumulator(pub, pub.params.ciphertexts_for(length))
    for x in xs:
        acc.add(pub.ciphertexts_from_bytes(pub.encrypt(x).to_bytes()))
    got = sk.decrypt(acc.result(), length)
    assert acc.summands == clients
    assert np.max(np.abs(got - xs.sum(0))) <= pub.params.sum_error_bound(clients, clip)


@pytest.mark.parametrize("preset", ["compact", "nvflare"])  # without and with a special prime
def test_error_bound_is_conservative_but_not_vacuous(preset):
    """The observed error sits well inside the bound, and within a small factor of it."""
    sk = keys(preset)
    pub, p = sk.public(), sk.params
    x = np.zeros(max(8, 65536 // p.values_per_ciphertext) * p.values_per_ciphertext)
    acc = CkksAccumulator(pub, p.ciphertexts_for(x.size))
    for _ in range(8):
        acc.add(pub.encrypt(x))
    err = np.abs(sk.decrypt(acc.result(), x.size))
    std = p.sum_error_std(8)
    assert float(err.std()) < std and float(err.max()) < p.sum_error_bound(8)
    assert float(err.std()) > std / 10
    # the clients' symmetric encryption adds less noise: the same bound covers it
    acc = CkksAccumulator(pub, p.ciphertexts_for(x.size))
    for _ in range(8):
        acc.add(sk.encrypt(x))
    sym = np.abs(sk.decrypt(acc.result(), x.size))
    assert float(sym.std()) < float(err.std()) and float(sym.max()) < p.sum_error_bound(8)


def test_encrypt_refuses_non_finite_values():
    with pytest.raises(ConfigError):
        keys().public().encrypt(np.array([1.0, np.nan]))


def test_encryption_is_randomized():
    """SEAL draws fresh u, e0, e1 for every encryption: both polynomials differ every time."""
    pub = keys().public()
    x = np.ones(10)
    a, b = pub.encrypt(x), pub.encrypt(x)
    assert not np.array_equal(a.data[:, 0], b.data[:, 0]) and not np.array_equal(a.data[:, 1], b.data[:, 1])
    two = pub.encrypt(np.ones(2 * pub.params.values_per_ciphertext))
    assert not np.array_equal(two.data[0], two.data[1])  # same plaintext, different ciphertexts


# -- key material types ---------------------------------------------------------------------------


def _reachable(root: object, limit: int = 20000) -> list[object]:
    seen, stack, out = set(), [root], []
    while stack and len(out) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        out.append(obj)
        stack.extend(gc.get_referents(obj))
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                stack.append(getattr(obj, slot))
    return out


def test_public_context_holds_no_secret_and_cannot_decrypt():
    sk = keys()
    pub = sk.public()
    pub.encrypt(np.ones(4))  # SEAL objects built
    assert pub is not sk.public() and pub == sk.public()  # a new object each time, same key
    secret = sk.seal_secret_key()
    for obj in _reachable(pub):
        assert not isinstance(obj, (CkksSecretContext, seal_bridge.SealSecretKey))
        assert type(obj).__name__ not in ("SecretKey", "Decryptor", "KeyGenerator")  # no SEAL secret object
        if isinstance(obj, np.ndarray) and obj.shape[-1:] == secret.data.shape[-1:]:
            assert not np.array_equal(obj.reshape(-1, obj.shape[-1])[: secret.data.shape[0]], secret.data)
    assert not hasattr(pub, "secret_key") and not hasattr(pub, "_secret") and not hasattr(pub, "_decryptor")
    ct = pub.encrypt(np.ones(4))
    with pytest.raises(DecryptionRefusedError):
        pub.decrypt(ct)


def test_serializers_write_the_secret_key_only_when_told():
    sk = keys()
    p = sk.params
    pub_bytes = sk.public().to_bytes()
    assert sk.to_bytes() == pub_bytes  # default: public material only
    full = sk.to_bytes(include_secret_key=True)
    assert len(full) == len(pub_bytes) + p.poly_degree * sum(q.bit_length() for q in p.primes) // 8
    with pytest.raises(MalformedMessageError, match="secret key"):
        CkksPublicContext.from_bytes(full)  # a server can never load a secret by mistake
    with pytest.raises(MalformedMessageError, match="no secret key"):
        CkksSecretContext.from_bytes(pub_bytes)
    again = CkksSecretContext.from_bytes(full)
    assert again.context_id == sk.context_id
    assert np.array_equal(again.seal_secret_key().data, sk.seal_secret_key().data)
    x = np.linspace(-1, 1, 100)
    assert np.allclose(again.decrypt(sk.public().encrypt(x), x.size), x, atol=1e-4)
    assert CkksPublicContext.from_bytes(pub_bytes) == sk.public()


@pytest.mark.parametrize("preset", ["compact", "nvflare"])
def test_a_secret_key_that_does_not_match_its_public_key_is_refused(preset):
    a, b = keys(preset), CkksSecretContext.generate(preset)
    full_a, full_b = a.to_bytes(include_secret_key=True), b.to_bytes(include_secret_key=True)
    pub_len = len(a.to_bytes())
    with pytest.raises(MalformedMessageError, match="does not match"):
        CkksSecretContext.from_bytes(full_a[:pub_len] + full_b[pub_len:])  # a's public key, b's secret
    p = a.params
    last = pub_len + p.poly_degree * sum(q.bit_length() for q in p.primes[:-1]) // 8  # the last prime's residues
    for offset in (pub_len + 10, last + 10):  # one residue changed: in the first / the last (special) prime
        tampered = bytearray(full_a)
        tampered[offset] ^= 0x04
        with pytest.raises(MalformedMessageError, match="ternary|does not match|not reduced"):
            CkksSecretContext.from_bytes(bytes(tampered))


def test_generated_keys_meet_the_embedding_norms_the_bound_assumes():
    for preset in ("compact", "nvflare"):
        sk = keys(preset)
        s_norm, e_norm = ckks._key_norms(sk.public()._seal(), sk._decryptor, sk.public().public_key)
        t = sk.params.key_norm_factor
        assert 0.5 < s_norm <= t and 0.5 < e_norm <= t  # a typical key sits near ln(N/2)


def test_secret_context_hides_itself():
    sk = keys()
    digits = str(int(sk.seal_secret_key().data[0, 0]))
    assert "secret" in repr(sk) and digits not in repr(sk) and digits not in repr(sk.seal_secret_key())
    with pytest.raises(TypeError):
        pickle.dumps(sk)
    with pytest.raises(TypeError):
        pickle.dumps(sk.seal_secret_key())
    pub = pickle.loads(pickle.dumps(sk.public()))  # a public context travels as its bytes
    assert pub == sk.public() and isinstance(pub, CkksPublicContext)


def test_context_bytes_are_validated():
    pub_bytes = keys().public().to_bytes()
    for bad in (pub_bytes[:-1], pub_bytes + b"\x00", b"XX" + pub_bytes[2:], b""):
        with pytest.raises(MalformedMessageError):
            CkksPublicContext.from_bytes(bad)
    forged = bytearray(pub_bytes)
    forged[8:12] = (1024).to_bytes(4, "little")  # N=1024: not an allowed degree
    with pytest.raises(MalformedMessageError):
        CkksPublicContext.from_bytes(bytes(forged))
    forged = bytearray(pub_bytes)
    forged[forged.index(bytes([1, 54])) + 1] = 60  # 60 bits at N=2048: beyond the security bound
    with pytest.raises(MalformedMessageError, match="security"):
        CkksPublicContext.from_bytes(bytes(forged))


# -- ciphertext parsing ------------------------------------------------------------------------------


def test_ciphertext_bytes_round_trip_and_size():
    pub = keys().public()
    p = pub.params
    ct = pub.encrypt(np.ones(3 * p.values_per_ciphertext))
    blob = ct.to_bytes()
    assert len(blob) == ct.nbytes == 20 + 3 * p.ciphertext_bytes
    assert p.ciphertext_bytes == 2 * 2048 * 54 // 8
    back = pub.ciphertexts_from_bytes(blob, expect_count=3)
    assert np.array_equal(back.data, ct.data)


def test_truncated_or_tampered_ciphertexts_raise_typed_errors():
    sk = keys()
    pub = sk.public()
    blob = pub.encrypt(np.ones(100)).to_bytes()
    for bad in (blob[:-1], blob[:10], blob + b"\x00", b""):
        with pytest.raises(MalformedMessageError):
            pub.ciphertexts_from_bytes(bad)
    with pytest.raises(MalformedMessageError, match="count"):
        pub.ciphertexts_from_bytes(blob, expect_count=2)
    over = bytearray(blob)
    over[20:27] = b"\xff" * 7  # first coefficient (54 bits) := 2^54 - 1 >= q
    with pytest.raises(MalformedMessageError, match="not reduced"):
        pub.ciphertexts_from_bytes(bytes(over))
    other = CkksSecretContext.generate("compact").public()
    with pytest.raises(MalformedMessageError, match="another key"):
        other.ciphertexts_from_bytes(blob)
    with pytest.raises(MalformedMessageError):
        CkksAccumulator(other, 1).add(pub.ciphertexts_from_bytes(blob))


def test_a_flipped_bit_inside_the_range_decrypts_to_garbage_not_an_error():
    """Ciphertexts are not authenticated (the frame's CRC and the channel are): an in-range
    change parses, and only perturbs the result -- documented, not hidden."""
    sk = keys()
    pub = sk.public()
    x = np.zeros(16)
    blob = bytearray(pub.encrypt(x).to_bytes())
    blob[20 + 1000] ^= 0x01
    got = sk.decrypt(pub.ciphertexts_from_bytes(bytes(blob)), 16)
    assert got.shape == (16,)


def test_encryptor_matches_plain_encryption_format():
    pub = keys().public()
    x = np.random.default_rng(3).normal(size=5000)
    with CkksEncryptor(pub) as enc:
        blob = enc.encrypt_to_bytes(x)
    got = keys().decrypt(pub.ciphertexts_from_bytes(blob), x.size)
    assert np.max(np.abs(got - x)) <= pub.params.sum_error_bound(1, float(np.max(np.abs(x))))


@pytest.mark.parametrize("mode", ["public-key", "symmetric"])
def test_encryptor_process_pool_output_decrypts(mode):
    pub = keys().public()
    x = np.random.default_rng(4).uniform(-1, 1, 20 * pub.params.values_per_ciphertext + 3)
    with CkksEncryptor(pub if mode == "public-key" else keys(), workers=2) as enc:
        blob = enc.encrypt_to_bytes(x)
        blob2 = enc.encrypt_to_bytes(x)  # the pool (and the context in each worker) is reused
    assert blob[:20] == blob2[:20] and blob != blob2
    got = keys().decrypt(pub.ciphertexts_from_bytes(blob), x.size)
    assert np.max(np.abs(got - x)) <= pub.params.sum_error_bound(1, 1.0)
    with pytest.raises(ConfigError):
        CkksEncryptor(pub, workers=0)


def test_from_ciphertexts_requires_matching_shape():
    pub = keys().public()
    with pytest.raises(ConfigError):
        CkksCiphertexts(pub, np.zeros((1, 2, 1, 16), dtype=np.uint64))


def test_preset_table_measures_bytes():
    rows = preset_table(measure_values=20_000)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {p.value for p in CkksPreset}
    compact = by_name["compact"]
    assert compact["security_bits"] == 128 and compact["poly_degree"] == 2048
    # 20000 values = 10 ciphertexts of 2048 reals (ceil), 27648 bytes each, + 20 bytes header
    assert compact["bytes_per_param"] == pytest.approx((10 * 27648 + 20) / 20000, abs=1e-3)
    assert compact["ratio_to_float32"] == pytest.approx(compact["bytes_per_param"] / 4, abs=1e-3)
    assert by_name["nvflare"]["bytes_per_param"] > 3 * compact["bytes_per_param"]


@pytest.mark.parametrize("params", [
    CkksParams.from_preset("nvflare"),  # two data primes: 60 + 40 bits
    CkksParams(8192, (25, 25, 25, 25), 38, True),  # three data primes of 25 bits
])
def test_multi_prime_decoding_of_values_beyond_the_first_prime(params):
    """Coefficients larger than the first prime exercise every mixed-radix (CRT) digit."""
    sk = CkksSecretContext.generate(params)
    x = np.random.default_rng(6).uniform(-2e6, 2e6, params.values_per_ciphertext)
    x[:4] = [2e6, -2e6, 1.5, -0.25]
    assert float(np.max(np.abs(x))) * params.scale > params.data_primes[0]
    got = sk.decrypt(sk.public().encrypt(x), x.size)
    assert np.max(np.abs(got - x)) <= params.sum_error_bound(1, 2e6)


@pytest.mark.parametrize("preset", [p.value for p in CkksPreset])
def test_seeded_ciphertexts_sum_with_full_ones_within_bound(preset):
    sk = keys(preset)
    pub, p = sk.public(), sk.params
    d = 2 * p.values_per_ciphertext + 7
    xs = np.random.default_rng(11).uniform(-1, 1, (3, d))
    acc = CkksAccumulator(pub, p.ciphertexts_for(d))
    blob = sk.encrypt_seeded_to_bytes(xs[0])
    assert len(blob) == ckks.seeded_nbytes(p, p.ciphertexts_for(d))
    acc.add_seeded(blob)
    acc.add_seeded(sk.encrypt_seeded_to_bytes(xs[1]))
    acc.add(pub.encrypt(xs[2]))  # both forms in one sum
    got = sk.decrypt(acc.result(), d)
    assert acc.summands == 3
    assert np.max(np.abs(got - xs.sum(0))) <= p.sum_error_bound(3, 1.0)
    # a key holder (or an adversary with the key) reads one seeded upload in full form
    one = sk.decrypt(pub.ciphertexts_from_seeded_bytes(blob), d)
    assert np.max(np.abs(one - xs[0])) <= p.sum_error_bound(1, 1.0)


def test_seeded_ciphertexts_need_the_secret_key_and_the_right_context():
    sk = keys()
    with pytest.raises(ConfigError, match="secret"):
        CkksEncryptor(sk.public()).encrypt_seeded_to_bytes(np.zeros(10))
    other = CkksSecretContext.generate("compact")
    acc = CkksAccumulator(sk.public(), 1)
    with pytest.raises(MalformedMessageError, match="another key"):
        acc.add_seeded(other.encrypt_seeded_to_bytes(np.zeros(10)))
    with pytest.raises(MalformedMessageError, match="count"):
        acc.add_seeded(sk.encrypt_seeded_to_bytes(np.zeros(3 * sk.params.values_per_ciphertext)))
    assert acc.summands == 0
