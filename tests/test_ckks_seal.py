"""The numpy <-> SEAL bridge (secfl.crypto.seal_bridge) and interoperability of secfl's CKKS with
Microsoft SEAL itself: SEAL decrypts our ciphertexts, we decrypt SEAL's."""

from __future__ import annotations

import numpy as np
import pytest

tenseal_sealapi = pytest.importorskip("tenseal.sealapi")

from secfl.crypto import seal_bridge as sb  # noqa: E402
from secfl.crypto.ckks import CkksCiphertexts, CkksPreset, CkksSecretContext  # noqa: E402
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
    corrupt[40] ^= 0xFF  # inside the zstd frame
    with pytest.raises(MalformedMessageError):
        sb.SealCiphertext.from_bytes(bytes(corrupt))


@pytest.mark.parametrize("preset", [p.value for p in CkksPreset])
def test_seal_decrypts_our_ciphertexts_and_we_decrypt_seals(preset):
    sk = CkksSecretContext.generate(preset)
    pub, p = sk.public(), sk.params
    ctx = sb.seal_context(p.poly_degree, p.primes)
    seal_sk = sb.load_seal_object(s.SecretKey(), ctx, sk.seal_secret_key().to_bytes())
    seal_pk = sb.load_seal_object(s.PublicKey(), ctx, sk.seal_public_key().to_bytes())
    coder, dec = s.CKKSEncoder(ctx), s.Decryptor(ctx, seal_sk)
    x = np.random.default_rng(5).uniform(-2, 2, p.values_per_ciphertext)
    bound = p.sum_error_bound(1, 2.0)

    (seal_ct,) = pub.encrypt(x).to_seal()
    pt = s.Plaintext()
    dec.decrypt(seal_ct, pt)
    got = (np.array(coder.decode_complex(pt)).view(np.float64) if p.complex_packing
           else np.array(coder.decode_double(pt)))
    assert np.max(np.abs(got - x)) <= bound  # same slot order, same scale, same key

    pt2, ct2 = s.Plaintext(), s.Ciphertext()
    slots = x.view(np.complex128).tolist() if p.complex_packing else x.tolist()
    coder.encode(slots, p.scale, pt2)
    s.Encryptor(ctx, seal_pk).encrypt(pt2, ct2)
    ours = CkksCiphertexts.from_seal(pub, [ct2])
    assert np.max(np.abs(sk.decrypt(ours) - x)) <= bound
