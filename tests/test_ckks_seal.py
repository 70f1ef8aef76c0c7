"""The numpy <-> SEAL bridge (secfl.crypto.seal_bridge), and what secfl's CKKS takes from SEAL:
its ciphertexts are SEAL's (loadable, decryptable by a separately built SEAL Decryptor), the
server's numpy addition is SEAL's ``Evaluator.add`` bit for bit, and SEAL's noise is what the
error analysis assumes."""

from __future__ import annotations

import numpy as np
import pytest

tenseal_sealapi = pytest.importorskip("tenseal.sealapi")

from secfl.crypto import seal_bridge as sb  # noqa: E402
from secfl.crypto.ckks import (  # noqa: E402
    NOISE_MAX,
    NOISE_VARIANCE,
    CkksAccumulator,
    CkksCiphertexts,
    CkksParams,
    CkksPreset,
    CkksSecretContext,
)
from secfl.errors import MalformedMessageError  # noqa: E402

s = tenseal_sealapi


@pytest.fixture(scope="module")
def seal_keys():
    n = 2048
    primes = sb.seal_primes(n, (54,))
    ctx = sb.seal_context(n, primes)
    kg = s.KeyGenerator(ctx)
    pk = s.PublicKey()
    kg.create_public_key(pk)
    return n, primes, ctx, kg.secret_key(), pk


def test_parse_seal_saved_objects_zstd(seal_keys):
    n, primes, ctx, sk, pk = seal_keys
    raw = sb.save_seal_object(pk)
    assert sb.SealHeader.parse(raw, "pk").compr_mode == 2  # SEAL writes zstd
    pkb = sb.SealPublicKey.from_bytes(raw, moduli=primes)
    assert pkb.data.shape == (2, 1, n) and pkb.parms_id == tuple(ctx.key_parms_id())
    skb = sb.SealSecretKey.from_bytes(sb.save_seal_object(sk), poly_degree=n, moduli=primes)
    assert "secret" in repr(skb) and str(int(skb.data[0, 0])) not in repr(skb)
    coeffs = sb.seal_ntt(skb.data, primes, inverse=True)[0]
    centred = np.where(coeffs > primes[0] // 2, coeffs.astype(object) - primes[0], coeffs.astype(object))
    assert set(int(v) for v in centred) <= {-1, 0, 1}  # SEAL's secret is ternary
    assert np.array_equal(sb.seal_ntt(sb.seal_ntt(skb.data, primes, inverse=True), primes), skb.data)


def test_written_objects_load_into_seal_and_work(seal_keys):
    n, primes, ctx, sk, pk = seal_keys
    skb = sb.SealSecretKey.from_bytes(sb.save_seal_object(sk), poly_degree=n, moduli=primes)
    pkb = sb.SealPublicKey.from_bytes(sb.save_seal_object(pk), moduli=primes)
    sk2 = sb.load_seal_object(s.SecretKey(), ctx, skb.to_bytes())
    pk2 = sb.load_seal_object(s.PublicKey(), ctx, pkb.to_bytes())
    enc, dec, coder = s.Encryptor(ctx, pk2), s.Decryptor(ctx, sk2), s.CKKSEncoder(ctx)
    pt, ct, out = s.Plaintext(), s.Ciphertext(), s.Plaintext()
    coder.encode([0.5, -0.25], 2.0**30, pt)
    enc.encrypt(pt, ct)
    parsed = sb.SealCiphertext.from_bytes(sb.save_seal_object(ct), moduli=primes)
    assert parsed.is_ntt_form and parsed.scale == 2.0**30 and parsed.data.shape == (2, 1, n)
    ct2 = sb.load_seal_object(s.Ciphertext(), ctx, parsed.to_bytes())
    dec.decrypt(ct2, out)
    assert np.allclose(coder.decode_double(out)[:2], [0.5, -0.25], atol=1e-4)
    ptb = sb.SealPlaintext.from_bytes(sb.save_seal_object(pt), poly_degree=n, moduli=primes)
    assert ptb.data.shape == (1, n) and ptb.scale == 2.0**30


def test_malformed_seal_bytes_raise(seal_keys):
    n, primes, ctx, sk, pk = seal_keys
    good = sb.SealPublicKey.from_bytes(sb.save_seal_object(pk)).to_bytes()
    for bad in (good[:-1], good[:15], b"", b"\x00" * 64, good + b"\x00"):
        with pytest.raises(MalformedMessageError):
            sb.SealCiphertext.from_bytes(bad)
    wrong_magic = b"\x00\x00" + good[2:]
    with pytest.raises(MalformedMessageError, match="not a SEAL object"):
        sb.SealCiphertext.from_bytes(wrong_magic)
    bogus_mode = bytearray(good)
    bogus_mode[5] = 7
    with pytest.raises(MalformedMessageError, match="compression"):
        sb.SealCiphertext.from_bytes(bytes(bogus_mode))
    big = sb.SealCiphertext.from_bytes(good)
    data = big.data.copy()
    data[0, 0, 0] = np.uint64(primes[0])  # not reduced
    forged = sb.SealCiphertext(big.parms_id, True, 1.0, data).to_bytes()
    with pytest.raises(MalformedMessageError, match="not reduced"):
        sb.SealCiphertext.from_bytes(forged, moduli=primes)
    with pytest.raises(MalformedMessageError, match="SEAL refused"):
        sb.load_seal_object(s.Ciphertext(), ctx, forged)  # SEAL's own validation agrees
    corrupt = bytearray(sb.save_seal_object(pk))
    corrupt[17] ^= 0xFF  # the zstd frame's magic (a flipped literal byte can decode to other valid data)
    with pytest.raises(MalformedMessageError):
        sb.SealCiphertext.from_bytes(bytes(corrupt))


def test_scratch_path_reads_what_seal_saves(seal_keys):
    n, primes, ctx, sk, pk = seal_keys
    scratch = sb.seal_scratch()
    assert scratch is sb.seal_scratch() and scratch.path.startswith(("/dev/shm/", "/tmp"))
    raw = sb.save_seal_object(pk)
    body = sb._body(raw, "pk")[1]
    out = np.zeros(len(body) + 5, dtype=np.uint8)
    assert scratch.save_body_into(pk, out) == len(body)
    assert out[: len(body)].tobytes() == body
    with pytest.raises(MalformedMessageError):
        scratch.save_body_into(pk, np.zeros(100, dtype=np.uint8))  # does not fit
    with pytest.raises(MalformedMessageError, match="SEAL refused"):
        scratch.load(s.PublicKey(), ctx, b"\x00" * 64)


@pytest.mark.parametrize("preset", [p.value for p in CkksPreset])
def test_our_ciphertexts_are_seals_and_the_exported_keys_work_in_seal(preset):
    """Keys exported through the bridge, loaded into SEAL objects built here: SEAL's Decryptor
    decrypts our ciphertexts, and SEAL's own encryptions decrypt with ours."""
    sk = CkksSecretContext.generate(preset)
    pub, p = sk.public(), sk.params
    ctx = sb.seal_context(p.poly_degree, p.primes)
    seal_sk = sb.load_seal_object(s.SecretKey(), ctx, sk.seal_secret_key().to_bytes())
    seal_pk = sb.load_seal_object(s.PublicKey(), ctx, sk.seal_public_key().to_bytes())
    coder, dec = s.CKKSEncoder(ctx), s.Decryptor(ctx, seal_sk)
    x = np.random.default_rng(5).uniform(-2, 2, p.values_per_ciphertext)
    bound = p.sum_error_bound(1, 2.0)

    ours = pub.encrypt(x)
    (seal_ct,) = ours.to_seal()
    saved = sb.SealCiphertext.from_bytes(sb.save_seal_object(seal_ct), moduli=p.data_primes)
    assert saved.is_ntt_form and saved.scale == p.scale and np.array_equal(saved.data, ours.data[0])
    pt = s.Plaintext()
    dec.decrypt(seal_ct, pt)
    got = (np.array(coder.decode_complex(pt)).view(np.float64) if p.complex_packing
           else np.array(coder.decode_double(pt)))
    assert np.max(np.abs(got - x)) <= bound

    pt2, ct2 = s.Plaintext(), s.Ciphertext()
    slots = x.view(np.complex128).tolist() if p.complex_packing else x.tolist()
    coder.encode(slots, p.scale, pt2)
    s.Encryptor(ctx, seal_pk).encrypt(pt2, ct2)
    imported = CkksCiphertexts.from_seal(pub, [ct2])
    assert np.max(np.abs(sk.decrypt(imported) - x)) <= bound


@pytest.mark.parametrize("preset", [p.value for p in CkksPreset])
def test_server_addition_is_seals_evaluator_add_bit_for_bit(preset):
    sk = CkksSecretContext.generate(preset)
    pub, p = sk.public(), sk.params
    ctx = sb.seal_context(p.poly_degree, p.primes)
    ev = s.Evaluator(ctx)
    rng = np.random.default_rng(8)
    batches = [pub.encrypt(rng.uniform(-50, 50, 2 * p.values_per_ciphertext + 3)) for _ in range(4)]
    acc = CkksAccumulator(pub, 3)
    for b in batches:
        acc.add(pub.ciphertexts_from_bytes(b.to_bytes()))
    sums = batches[0].to_seal()
    for b in batches[1:]:
        for total, ct in zip(sums, b.to_seal(), strict=True):
            ev.add_inplace(total, ct)
    seal_sum = CkksCiphertexts.from_seal(pub, sums)
    assert np.array_equal(acc.result().data, seal_sum.data)


def test_seal_noise_is_what_the_error_analysis_assumes():
    """SEAL's secret is uniform ternary and its error is the centred binomial distribution of
    variance 10.5 (|e| <= 21): decrypting a public key (b, a) = (-a s + e, a) gives e."""
    p = CkksParams.from_preset("compact")
    n, primes = p.poly_degree, p.primes
    ctx = sb.seal_context(n, primes)
    pid = sb.parms_id_of(ctx.first_parms_id())
    errors, secrets_ = [], []
    for _ in range(60):
        kg = s.KeyGenerator(ctx)
        pk = s.PublicKey()
        kg.create_public_key(pk)
        pkb = sb.SealPublicKey.from_bytes(sb.save_seal_object(pk), moduli=primes)
        ct = sb.load_seal_object(s.Ciphertext(), ctx, sb.SealCiphertext(pid, True, 1.0, pkb.data).to_bytes())
        pt = s.Plaintext()
        s.Decryptor(ctx, kg.secret_key()).decrypt(ct, pt)
        ptb = sb.SealPlaintext.from_bytes(sb.save_seal_object(pt), poly_degree=n, moduli=primes)
        skb = sb.SealSecretKey.from_bytes(sb.save_seal_object(kg.secret_key()), poly_degree=n, moduli=primes)
        for data, out in ((ptb.data, errors), (skb.data, secrets_)):
            c = sb.seal_ntt(data, primes, inverse=True)[0].astype(np.int64)
            out.append(np.where(c > primes[0] // 2, c - primes[0], c))
    e, sec = np.concatenate(errors), np.concatenate(secrets_)
    assert int(np.max(np.abs(e))) <= NOISE_MAX and abs(float(e.mean())) < 0.03
    # 122 880 samples: the variance estimate's standard error is 0.043 (0.2 is 4.7 of them); SEAL built
    # with Gaussian noise (sigma 3.2, variance 10.24) would show up here -- and the bound would still hold
    assert abs(float(e.var()) - NOISE_VARIANCE) < 0.2
    assert set(np.unique(sec).tolist()) == {-1, 0, 1}
    assert np.all(np.abs(np.bincount(sec + 1) / sec.size - 1 / 3) < 0.01)
