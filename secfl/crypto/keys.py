"""Key agreement (X25519), key derivation (HKDF-SHA256) and authenticated encryption (AES-256-GCM).

- :class:`PrivateKey` / :class:`PublicKey` — X25519 keys (RFC 7748) from pycryptodome. They are
  different types: a public key is 32 bytes that may cross the network; a private key only
  leaves its object through the explicitly named :meth:`PrivateKey.export_secret` (SecAgg
  Shamir-shares it) and never prints.
- :func:`shared_secret` — raw X25519; an all-zero result (a small-order peer key) is refused.
- :func:`hkdf` — HKDF-SHA256 (RFC 5869), pycryptodome's ``Crypto.Protocol.KDF.HKDF`` (~90 µs
  a call here; SecAgg+ derives two per neighbour pair and client, which is why a pair's two
  directional share keys come from one 64-byte derivation).
- :func:`agree` — ``hkdf(shared_secret(sk, pk), info=label | context)``: one key per purpose.
- :func:`seal` / :func:`open_sealed` — AES-256-GCM with a fresh random 96-bit nonce
  (``nonce ‖ ciphertext ‖ tag``, 28 bytes of overhead) and associated data that binds the
  ciphertext to its context (protocol, round, sender, recipient). A wrong key, a tampered byte
  or a different context raises :class:`~secfl.errors.MalformedMessageError`.

Security: X25519 gives ~128-bit security (computational Diffie–Hellman on Curve25519); HKDF
is a PRF keyed by the shared secret; AES-GCM is IND-CCA and INT-CTXT while no (key, nonce)
pair repeats — nonces are 96 random bits from ``secrets`` and each derived key encrypts a
handful of messages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

from secfl.errors import ConfigError, MalformedMessageError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "SEAL_OVERHEAD",
    "PublicKey",
    "PrivateKey",
    "shared_secret",
    "hkdf",
    "agree",
    "info_label",
    "seal",
    "open_sealed",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
_SALT = b"secfl-kex-v1"


@dataclass(frozen=True)
class PublicKey:
    """An X25519 public key: 32 bytes (RFC 7748 encoding), safe to send."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, (bytes, bytearray)) or len(self.raw) != KEY_BYTES:
            raise MalformedMessageError(f"an X25519 public key is {KEY_BYTES} bytes")
        object.__setattr__(self, "raw", bytes(self.raw))

    def _ecc(self) -> ECC.EccKey:
        # RFC 7748 §5: little-endian u-coordinate, the top bit ignored; pycryptodome refuses the
        # small-order points (0, 1, p−1, ...) on construction.
        u = int.from_bytes(self.raw, "little") & ((1 << 255) - 1)
        try:
            return ECC.construct(curve="Curve25519", point_x=u)
        except ValueError as exc:
            raise MalformedMessageError(f"invalid X25519 public key: {exc}") from None

    def validate(self) -> PublicKey:
        """Raise :class:`~secfl.errors.MalformedMessageError` unless this is a usable X25519 key."""
        self._ecc()
        return self


class PrivateKey:
    """An X25519 private key. ``PrivateKey.generate()`` draws it from the OS generator."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ECC.EccKey) -> None:
        if not isinstance(key, ECC.EccKey) or not key.has_private() or key.curve != "Curve25519":
            raise ConfigError("PrivateKey wraps an X25519 private EccKey")
        self._key = key
        self._public = PublicKey(key.public_key().export_key(format="raw"))

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls.from_secret(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_secret(cls, secret: bytes) -> PrivateKey:
        """Rebuild a key from its 32-byte secret (e.g. after Shamir reconstruction)."""
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != KEY_BYTES:
            raise ConfigError(f"an X25519 private key is {KEY_BYTES} bytes")
        return cls(DH.import_x25519_private_key(bytes(secret)))

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def export_secret(self) -> bytes:
        """The 32-byte secret. Only for protocols that secret-share the key (SecAgg)."""
        seed = self._key.seed
        if seed is None:  # pragma: no cover - keys built here always carry their seed
            raise ConfigError("this private key cannot be exported")
        return bytes(seed)

    def __repr__(self) -> str:
        return f"PrivateKey(<secret>, public={self._public.raw.hex()[:16]}…)"

    def __reduce__(self) -> tuple:  # never pickle a secret by accident
        raise TypeError("PrivateKey is not picklable")


def shared_secret(private: PrivateKey, peer: PublicKey) -> bytes:
    """Raw 32-byte X25519 shared secret; refuses a peer key of small order (all-zero output)."""
    try:
        z = DH.key_agreement(static_priv=private._key, static_pub=peer._ecc(), kdf=bytes)
    except ValueError as exc:
        raise MalformedMessageError(f"X25519 key agreement failed: {exc}") from None
    if not any(z):
        raise MalformedMessageError("X25519 key agreement produced the all-zero secret (small-order peer key)")
    return z


def hkdf(ikm: bytes, length: int = KEY_BYTES, *, salt: bytes = _SALT, info: bytes = b"") -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-then-expand."""
    if not 1 <= length <= 255 * 32:
        raise ConfigError(f"HKDF output length must be in [1, 8160], got {length}")
    out = HKDF(ikm, length, salt, SHA256, context=info)
    return bytes(out)  # type: ignore[arg-type]


def info_label(label: str, *context: int) -> bytes:
    """``label | ctx_1 | ctx_2 …`` with each context integer as 8 little-endian bytes."""
    info = label.encode()
    for value in context:
        info += b"|" + int(value).to_bytes(8, "little", signed=True)
    return info


def agree(private: PrivateKey, peer: PublicKey, label: str, *context: int) -> bytes:
    """A 32-byte key for one purpose: HKDF(X25519(private, peer), info=label | context)."""
    return hkdf(shared_secret(private, peer), info=info_label(label, *context))


def seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM: ``nonce ‖ ciphertext ‖ tag`` authenticating ``ad`` as well."""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"AES-256-GCM key must be {KEY_BYTES} bytes")
    nonce = secrets.token_bytes(NONCE_BYTES)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(ad)
    ct, tag = cipher.encrypt_and_digest(plaintext)
    return b"".join((nonce, ct, tag))


def open_sealed(key: bytes, sealed: bytes, ad: bytes, *, what: str = "ciphertext") -> bytes:
    """Decrypt and verify :func:`seal` output; any failure is a typed, uninformative error."""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"AES-256-GCM key must be {KEY_BYTES} bytes")
    if len(sealed) < SEAL_OVERHEAD:
        raise MalformedMessageError(f"{what}: {len(sealed)} bytes is shorter than nonce + tag")
    nonce, ct, tag = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(ad)
    try:
        return cipher.decrypt_and_verify(ct, tag)
    except ValueError:
        raise MalformedMessageError(f"{what}: authentication failed (tampered, wrong key or wrong context)") from None
