"""X25519, HKDF and AES-256-GCM: known answers (RFC 7748, RFC 5869, GCM spec), tampering, hygiene."""

from __future__ import annotations

import pickle
import secrets

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from secfl.crypto.keys import (
    SEAL_OVERHEAD,
    PrivateKey,
    PublicKey,
    agree,
    hkdf,
    info_label,
    open_sealed,
    seal,
    shared_secret,
)
from secfl.errors import ConfigError, MalformedMessageError

H = bytes.fromhex


def test_x25519_rfc7748_section_6_1():
    alice = PrivateKey.from_secret(H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = PrivateKey.from_secret(H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public_key.raw == H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bob.public_key.raw == H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    z = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert shared_secret(alice, bob.public_key) == z == shared_secret(bob, alice.public_key)


def test_hkdf_rfc5869_case_1_and_matches_pycryptodome():
    okm = hkdf(b"\x0b" * 22, 42, salt=H("000102030405060708090a0b0c"), info=H("f0f1f2f3f4f5f6f7f8f9"))
    assert okm == H("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    for length in (16, 32, 64, 100):
        ikm, salt, info = secrets.token_bytes(32), secrets.token_bytes(12), secrets.token_bytes(20)
        assert hkdf(ikm, length, salt=salt, info=info) == HKDF(ikm, length, salt, SHA256, context=info)
    with pytest.raises(ConfigError):
        hkdf(b"x", 0)


def test_agree_is_symmetric_and_separates_purposes():
    a, b, c = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()
    k_ab = agree(a, b.public_key, "mask", 1, 2)
    assert k_ab == agree(b, a.public_key, "mask", 1, 2) and len(k_ab) == 32
    others = {agree(a, b.public_key, "enc", 1, 2), agree(a, b.public_key, "mask", 2, 2),
              agree(a, c.public_key, "mask", 1, 2)}
    assert k_ab not in others and len(others) == 3
    assert info_label("x", 1) != info_label("x", 1, 0)


def test_small_order_and_malformed_public_keys_refused():
    me = PrivateKey.generate()
    for bad in (bytes(32), (1).to_bytes(32, "little"), ((1 << 255) - 20).to_bytes(32, "little")):
        with pytest.raises(MalformedMessageError):
            shared_secret(me, PublicKey(bad))
    with pytest.raises(MalformedMessageError):
        PublicKey(b"\x01" * 31)


def test_private_key_hygiene():
    k = PrivateKey.generate()
    secret = k.export_secret()
    assert secret.hex() not in repr(k) and "secret" in repr(k)
    assert PrivateKey.from_secret(secret).public_key == k.public_key
    with pytest.raises(TypeError):
        pickle.dumps(k)
    with pytest.raises(ConfigError):
        PrivateKey.from_secret(b"short")


def test_gcm_known_answer_test_case_16():
    """McGrew–Viega GCM spec, test case 16 (AES-256, 96-bit IV, with AAD), through open_sealed."""
    key = H("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    iv = H("cafebabefacedbaddecaf888")
    pt = H("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
    aad = H("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    ct = H("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
           "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662")
    tag = H("76fc6ece0f4e1768cddf8853bb2d551b")
    assert open_sealed(key, iv + ct + tag, aad) == pt
    c = AES.new(key, AES.MODE_GCM, nonce=iv)
    c.update(aad)
    assert c.encrypt_and_digest(pt) == (ct, tag)


def test_seal_roundtrip_and_every_tamper_is_caught():
    key, ad = secrets.token_bytes(32), b"round 3 | 7 -> 9"
    msg = b"share bytes " * 5
    sealed = seal(key, msg, ad)
    assert len(sealed) == len(msg) + SEAL_OVERHEAD
    assert open_sealed(key, sealed, ad) == msg
    assert seal(key, msg, ad) != sealed  # fresh nonce every time
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(MalformedMessageError, match="authentication failed"):
            open_sealed(key, bytes(bad), ad)
    with pytest.raises(MalformedMessageError):
        open_sealed(key, sealed, ad + b"!")  # another context
    with pytest.raises(MalformedMessageError):
        open_sealed(secrets.token_bytes(32), sealed, ad)
    with pytest.raises(MalformedMessageError, match="shorter"):
        open_sealed(key, sealed[:20], ad)
    with pytest.raises(ConfigError):
        seal(b"short", msg, ad)
