"""Long-term identity keys (Ed25519, RFC 8032, through pycryptodome) and the federation roster.

Every party that advertises a key others rely on (a quorum member's X25519 key, a client's hello
key, a SecAgg key pair) signs the advertisement with its identity key. The public identity keys
are distributed out of band, as a :class:`Roster`: a file listing each party id and its Ed25519
public key, the way Flower's node authentication lists the authorized node keys. A relay that
rewrites an advertisement cannot produce the signature, so the rewrite is detected
(:class:`~secfl.errors.AuthenticationError`).

Signed bytes are domain-separated: :func:`signed_bytes` prefixes a label and length-prefixes
every part, so a signature made for one purpose never verifies for another.

Security: :class:`IdentityKey` is a secret type (never printed or pickled); it is drawn from the
OS generator. Verification is strict RFC 8032 (pycryptodome's ``eddsa`` in ``rfc8032`` mode).
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from secfl.errors import AuthenticationError, ConfigError, MalformedMessageError, SecFLError

__all__ = ["IdentityKey", "IdentityPublic", "Roster", "new_identities", "signed_bytes", "SIGNATURE_BYTES",
           "IDENTITY_BYTES"]

IDENTITY_BYTES = 32
SIGNATURE_BYTES = 64
_ROSTER_LABEL = b"secfl/roster/v1"


def signed_bytes(label: str, *parts: bytes | int) -> bytes:
    """The exact bytes a signature covers: ``label`` then each part, integers as u64 and bytes
    length-prefixed (no two different part lists give the same bytes)."""
    out = [struct.pack("<H", len(label)), label.encode()]
    for p in parts:
        if isinstance(p, int):
            out.append(b"\x00" + struct.pack("<Q", p))
        else:
            out.append(b"\x01" + struct.pack("<Q", len(p)) + bytes(p))
    return b"".join(out)


@dataclass(frozen=True)
class IdentityPublic:
    """An Ed25519 public key (32 bytes, RFC 8032 encoding); safe to publish."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, (bytes, bytearray)) or len(self.raw) != IDENTITY_BYTES:
            raise MalformedMessageError(f"an Ed25519 public key is {IDENTITY_BYTES} bytes")
        object.__setattr__(self, "raw", bytes(self.raw))
        try:  # decoded once: a verification then costs the signature check alone
            object.__setattr__(self, "_verifier", eddsa.new(eddsa.import_public_key(self.raw), "rfc8032"))
        except ValueError as exc:
            raise MalformedMessageError(f"invalid Ed25519 public key: {exc}") from None

    def verify(self, data: bytes, signature: bytes, what: str) -> None:
        """Raise :class:`AuthenticationError` unless ``signature`` signs ``data`` under this key."""
        if len(signature) != SIGNATURE_BYTES:
            raise AuthenticationError(f"{what}: a signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
        try:
            self._verifier.verify(data, signature)  # type: ignore[attr-defined]
        except ValueError:
            raise AuthenticationError(f"{what}: the signature does not verify under the signer's identity key"
                                      ) from None

    def __reduce__(self) -> Any:  # the raw key only: the verifier is rebuilt on arrival
        return (IdentityPublic, (self.raw,))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]


class IdentityKey:
    """An Ed25519 private key: signs this party's advertisements. Secret: never printed or pickled."""

    __slots__ = ("_key", "_signer", "public")

    def __init__(self, key: ECC.EccKey) -> None:
        if not isinstance(key, ECC.EccKey) or not key.has_private() or key.curve != "Ed25519":
            raise ConfigError("IdentityKey wraps an Ed25519 private EccKey")
        self._key = key
        self._signer = eddsa.new(key, "rfc8032")
        self.public = IdentityPublic(key.public_key().export_key(format="raw"))

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls.from_secret(secrets.token_bytes(IDENTITY_BYTES))

    @classmethod
    def from_secret(cls, secret: bytes) -> IdentityKey:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != IDENTITY_BYTES:
            raise ConfigError(f"an Ed25519 private key is {IDENTITY_BYTES} bytes")
        return cls(eddsa.import_private_key(bytes(secret)))

    @classmethod
    def load(cls, path: str | Path) -> IdentityKey:
        """Read a key written by :meth:`save` (hex of the 32-byte secret)."""
        try:
            text = Path(path).read_text().strip()
            return cls.from_secret(bytes.fromhex(text))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a secfl identity key ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write the secret (hex) to ``path``, readable by its owner only."""
        import os

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(bytes(self._key.seed).hex() + "\n")

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signer.sign(data))

    def __repr__(self) -> str:
        return f"IdentityKey(<secret>, public={self.public.fingerprint()})"

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle an identity key")


@dataclass(frozen=True)
class Roster:
    """The federation's public identity keys: party id -> :class:`IdentityPublic`.

    Distributed out of band (a file every party holds); :meth:`digest` binds a round's keys to it.
    """

    keys: Mapping[int, IdentityPublic]

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", dict(sorted(self.keys.items())))
        if any(not isinstance(p, int) or p < 0 for p in self.keys):
            raise ConfigError("roster party ids are integers >= 0")

    @classmethod
    def of(cls, keys: Mapping[int, IdentityKey]) -> Roster:
        return cls({p: k.public for p, k in keys.items()})

    def key_of(self, party: int, what: str) -> IdentityPublic:
        try:
            return self.keys[party]
        except KeyError:
            raise AuthenticationError(f"{what}: party {party} is not in the federation roster") from None

    def verify(self, party: int, data: bytes, signature: bytes, what: str) -> None:
        self.key_of(party, what).verify(data, signature, what)

    def digest(self) -> bytes:
        """SHA-256 over the label and every (party id, key), in id order."""
        h = hashlib.sha256(_ROSTER_LABEL)
        for p, k in self.keys.items():
            h.update(struct.pack("<Q", p) + k.raw)
        return h.digest()

    def parties(self) -> Iterable[int]:
        return self.keys.keys()

    def to_toml(self) -> str:
        lines = ["# secfl federation roster: party id -> Ed25519 public key (hex)", "[keys]"]
        lines += [f'"{p}" = "{k.raw.hex()}"' for p, k in self.keys.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> Roster:
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            table = tomllib.loads(text).get("keys", {})
            return cls({int(p): IdentityPublic(bytes.fromhex(str(v))) for p, v in table.items()})
        except (ValueError, TypeError, AttributeError, SecFLError) as exc:
            raise ConfigError(f"not a secfl roster ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Roster:
        try:
            return cls.from_toml(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the roster ({exc})") from None


def new_identities(parties: Iterable[int]) -> tuple[dict[int, IdentityKey], Roster]:
    """Fresh identity keys for ``parties`` and their roster (one process playing every site:
    tests and the simulator; a real federation makes each key at its site)."""
    keys = {int(p): IdentityKey.generate() for p in parties}
    return keys, Roster.of(keys)
