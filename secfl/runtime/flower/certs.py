"""``secfl deploy certs``: a certificate authority and a server certificate for Flower's TLS.

Written with the ``cryptography`` package (a dependency of Flower): an EC P-256 CA, self-signed,
and a server key and certificate signed by it, valid for the given host name (``localhost`` by
default; ``127.0.0.1`` and ``::1`` are added for loopback). Files, all PEM::

    ca.crt  ca.key         the authority (keep ca.key off the server in a real federation)
    server.crt server.key  the SuperLink's certificate and key

``secfl deploy node-key DIR --site K`` writes a site's node-authentication key pair for Flower's
SuperNode authentication (EC P-384, OpenSSH format): ``site-K.key`` stays at the site,
``site-K.pub`` goes to the server operator, whose ``--authorized-keys`` directory lists one per
site. The server registers each key for its site only: a node that authenticates with site K's
key can play site K and no other.

``secfl deploy identity DIR --site K`` writes a site's long-term identity key (Ed25519; the
site signs its replies and the protocols their key advertisements with it), ``secfl deploy
identity DIR --server`` the server's (it signs every request), and ``secfl deploy roster DIR``
collects the public halves into ``roster.toml``, the federation roster the server and every
site hold (out of band: a relay cannot rewrite it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from secfl.errors import ConfigError

__all__ = ["write_certs", "CERT_FILES", "write_node_key", "node_key_paths", "authorized_sites", "write_identity",
           "write_roster"]

CERT_FILES = ("ca.crt", "ca.key", "server.crt", "server.key")


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_certs(out: str | Path, host: str = "localhost", days: int = 365, *, overwrite: bool = False) -> list[Path]:
    """Write a CA and a server certificate for ``host`` into ``out``; returns the paths."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - installed with the flower extra
        raise ConfigError('certificates need the "cryptography" package: pip install "secfl[flower]"') from None
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"host name must be a non-empty name without spaces, got {host!r}")
    if not 1 <= days <= 3650:
        raise ConfigError(f"days must be in [1, 3650], got {days}")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / name for name in CERT_FILES]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{d}: {', '.join(existing)} already exist (pass --overwrite to replace them)")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secfl federation CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    try:
        names = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        pass
    for extra in ("localhost", "127.0.0.1", "::1"):
        try:
            gn: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(extra))
        except ValueError:
            gn = x509.DNSName(extra)
        if gn not in names:
            names.append(gn)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    plain = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    _write(paths[0], ca.public_bytes(pem), False)
    _write(paths[1], ca_key.private_bytes(pem, plain, none), True)
    _write(paths[2], cert.public_bytes(pem), False)
    _write(paths[3], key.private_bytes(pem, plain, none), True)
    return paths


def node_key_paths(out: str | Path, site: int) -> tuple[Path, Path]:
    """``site-K.key`` (private, kept at the site) and ``site-K.pub`` (given to the server operator)."""
    d = Path(out)
    return d / f"site-{site}.key", d / f"site-{site}.pub"


def write_node_key(out: str | Path, site: int, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write site ``site``'s node-authentication key pair (EC P-384, OpenSSH format, as Flower's
    SuperNode authentication takes it). The server registers the ``.pub`` for that site only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(site, bool) or not isinstance(site, int) or site < 0:
        raise ConfigError(f"--site must be an integer >= 0, got {site!r}")
    priv, pub = node_key_paths(out, site)
    existing = [p.name for p in (priv, pub) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{Path(out)}: {', '.join(existing)} already exist (pass --overwrite to replace them)")
    Path(out).mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), True)
    _write(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                              serialization.PublicFormat.OpenSSH) + b"\n", False)
    return priv, pub


def authorized_sites(keys_dir: str | Path) -> dict[int, Path]:
    """The ``site-K.pub`` files in ``keys_dir``: site id -> public key file."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise ConfigError(f"--authorized-keys {d}: not a directory")
    found: dict[int, Path] = {}
    for p in sorted(d.glob("site-*.pub")):
        k = p.stem.removeprefix("site-")
        if k.isdigit():
            found[int(k)] = p
    if not found:
        raise ConfigError(f"--authorized-keys {d}: no site-K.pub files (create them with `secfl deploy node-key`)")
    return found


def write_identity(out: str | Path, site: int | None, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Site ``site``'s long-term identity key (Ed25519): ``site-K.identity`` (secret, stays at the
    site) and ``site-K.identity.pub`` (public, goes into the federation roster). ``site=None``: the
    server's (``server.identity``, ``server.identity.pub``; it signs every request)."""
    from secfl.crypto.identity import IdentityKey

    if site is not None and (isinstance(site, bool) or not isinstance(site, int) or site < 0):
        raise ConfigError(f"--site must be an integer >= 0, got {site!r}")
    d = Path(out)
    stem = "server" if site is None else f"site-{site}"
    priv, pub = d / f"{stem}.identity", d / f"{stem}.identity.pub"
    existing = [p.name for p in (priv, pub) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{d}: {', '.join(existing)} already exist (pass --overwrite to replace them)")
    d.mkdir(parents=True, exist_ok=True)
    key = IdentityKey.generate()
    key.save(priv)
    _write(pub, key.public.raw.hex().encode() + b"\n", False)
    return priv, pub


def write_roster(keys_dir: str | Path, out: str | Path | None = None) -> Path:
    """The federation roster (``roster.toml``: site id -> public identity key) from the
    ``site-K.identity.pub`` files in ``keys_dir``, and the server's ``server.identity.pub`` (under
    the server's party id); every site and the server get a copy."""
    from secfl.crypto.identity import IdentityPublic, Roster
    from secfl.protocols.network import server_id

    d = Path(keys_dir)
    found: dict[int, IdentityPublic] = {}
    for p in sorted(d.glob("*.identity.pub")):
        k = p.name.removeprefix("site-").removesuffix(".identity.pub")
        if k == "server" or k.isdigit():
            k = str(server_id(0)) if k == "server" else k
            try:
                found[int(k)] = IdentityPublic(bytes.fromhex(p.read_text().strip()))
            except ValueError as exc:
                raise ConfigError(f"{p}: not a public identity key ({exc})") from None
    if not found:
        raise ConfigError(f"{d}: no site-K.identity.pub files (create them with `secfl deploy identity`)")
    if server_id(0) not in found:
        raise ConfigError(f"{d}: no server.identity.pub: the server signs every request (create it with"
                          " `secfl deploy identity DIR --server`)")
    path = Path(out) if out is not None else d / "roster.toml"
    path.write_text(Roster(found).to_toml())
    return path
