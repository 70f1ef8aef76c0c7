"""Signed envelopes: every request and reply between the server and a site, signed end to end.

Across sites a message passes through relays that TLS does not cover end to end: Flower's
SuperLink terminates TLS and stores every message, and anyone who controls it (or the path
between it and the ServerApp) could rewrite a frame and recompute its CRC. Under an envelope
every request is signed with the server's identity key and every reply with the answering
site's (Ed25519, :mod:`secfl.crypto.identity`), so a rewritten, redirected, replayed or
re-ordered message is refused with :class:`~secfl.errors.AuthenticationError` and costs its
sender the round; the round goes on without it where the protocol allows.

Layout (appended to the frame bytes, whatever they are)::

    payload    the message as the protocol wrote it
    session    16 bytes   the server's random run id
    signer     u32        the signing site id (requests: the server's party id)
    signature  64 bytes   Ed25519 over signed_bytes(label, roster digest, session, stage,
                          recipient party, signer, SHA-256(request) [, SHA-256(reply)])

A reply's signature covers the request it answers, so a reply cannot be replayed to another
request, and the roster digest, so two parties holding different rosters never agree. A site
pins the session of the first request it accepts and refuses any other (a request replayed from
an earlier run). 84 bytes per message; one SHA-256 pass over the payload at each end plus one
Ed25519 signature and one verification (about 0.5 ms and 2 ms with pycryptodome).

Security: this authenticates the server's requests and the sites' replies against the roster; it
does not stop a malicious *server* from sending what it likes under its own signature. That is
what the protocols' own checks are for (signed key advertisements, client-signed ciphertexts,
range checks on the revealed mean). The in-process simulator runs without envelopes (one trust
domain, no relay): its byte counts are 84 bytes per message below a deployment's.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Mapping

from secfl.crypto.identity import SIGNATURE_BYTES, IdentityKey, Roster, signed_bytes
from secfl.errors import AuthenticationError, ConfigError, ReplayError, SecFLError
from secfl.protocols.network import server_id
from secfl.protocols.parties import Party, Transport

__all__ = ["ENVELOPE_BYTES", "SESSION_BYTES", "ServerEnvelopes", "SiteEnvelopes", "SignedTransport", "SignedParty"]

SESSION_BYTES = 16
_SIGNER = struct.Struct("<I")
ENVELOPE_BYTES = SESSION_BYTES + _SIGNER.size + SIGNATURE_BYTES
_REQUEST = "secfl/envelope/request/v1"
_REPLY = "secfl/envelope/reply/v1"


def _split(data: bytes, what: str) -> tuple[bytes, bytes, int, bytes]:
    if not isinstance(data, (bytes, bytearray)) or len(data) < ENVELOPE_BYTES:
        raise AuthenticationError(f"{what}: no envelope ({len(data) if isinstance(data, (bytes, bytearray)) else 0}"
                                  f" bytes, an envelope alone is {ENVELOPE_BYTES}): the message is not signed")
    cut = len(data) - ENVELOPE_BYTES
    tail = bytes(data[cut:])
    (signer,) = _SIGNER.unpack_from(tail, SESSION_BYTES)
    return bytes(data[:cut]), tail[:SESSION_BYTES], int(signer), tail[SESSION_BYTES + _SIGNER.size:]


def _request_bytes(digest: bytes, session: bytes, stage: str, recipient: int, signer: int, body: bytes) -> bytes:
    return signed_bytes(_REQUEST, digest, session, stage.encode(), recipient, signer, hashlib.sha256(body).digest())


def _reply_bytes(digest: bytes, session: bytes, stage: str, party: int, signer: int, request_hash: bytes,
                 body: bytes) -> bytes:
    return signed_bytes(_REPLY, digest, session, stage.encode(), party, signer, request_hash,
                        hashlib.sha256(body).digest())


class ServerEnvelopes:
    """The server's side: signs requests, verifies replies.

    ``roster``: the federation roster by site id, holding the server's key under
    ``server_id(0)``; ``plays(party)``: the site that plays ``party`` (None for an address that is
    no party yet, e.g. a node before its hello: any site in the roster may answer, and
    :meth:`signer_of` tells which one did).
    """

    def __init__(self, identity: IdentityKey, roster: Roster, plays: Callable[[int], int | None]) -> None:
        self.me = server_id(0)
        if roster.keys.get(self.me) != identity.public:
            raise ConfigError("the server's identity key is not the one the roster lists for the server"
                              " (secfl deploy identity DIR --server, then secfl deploy roster DIR)")
        self._identity, self.roster, self._plays = identity, roster, plays
        self._digest = roster.digest()
        self.session = secrets.token_bytes(SESSION_BYTES)
        self._asked: dict[int, tuple[str, bytes]] = {}
        self._signers: dict[int, int] = {}

    def seal(self, stage: str, party: int, data: bytes) -> bytes:
        """``data`` for ``party`` at ``stage``, signed (remembered to check the reply against)."""
        self._asked[party] = (stage, hashlib.sha256(data).digest())
        sig = self._identity.sign(_request_bytes(self._digest, self.session, stage, party, self.me, data))
        return b"".join((data, self.session, _SIGNER.pack(self.me), sig))

    def open(self, stage: str, party: int, data: bytes) -> bytes:
        """The payload of ``party``'s reply at ``stage``; raises :class:`AuthenticationError`."""
        what = f"reply of party {party} at {stage!r}"
        asked = self._asked.pop(party, None)
        if asked is None or asked[0] != stage:
            raise AuthenticationError(f"{what}: no request of this stage was sent to this party")
        body, session, signer, sig = _split(data, what)
        if session != self.session:
            raise ReplayError(f"{what}: signed for another session (replayed from another run)")
        owner = self._plays(party)
        if owner is not None and owner != signer:
            raise AuthenticationError(f"{what}: signed by site {signer}, but site {owner} plays this party")
        self.roster.verify(signer, _reply_bytes(self._digest, session, stage, party, signer, asked[1], body), sig,
                           what)
        self._signers[party] = signer
        return body

    def signer_of(self, party: int) -> int | None:
        """The site whose signature the latest accepted reply from ``party`` carried."""
        return self._signers.get(party)


class SiteEnvelopes:
    """One site's side: verifies the server's requests, signs its replies."""

    def __init__(self, identity: IdentityKey, site: int, roster: Roster) -> None:
        if roster.keys.get(site) != identity.public:
            raise ConfigError(f"site {site}: its identity key is not the one the roster lists for site {site}")
        server_key = roster.keys.get(server_id(0))
        if server_key is None:
            raise ConfigError("the roster holds no server key: requests could not be checked (create it with"
                              " `secfl deploy identity DIR --server` and rebuild the roster)")
        self._server_key = server_key
        self._identity, self.site, self._digest = identity, site, roster.digest()
        self._session: bytes | None = None
        self._asked: dict[int, tuple[str, bytes]] = {}

    def open(self, stage: str, party: int, data: bytes) -> bytes:
        """The payload of the server's request to ``party`` at ``stage``, once its signature holds."""
        what = f"request to party {party} at {stage!r}"
        body, session, signer, sig = _split(data, what)
        if signer != server_id(0):
            raise AuthenticationError(f"{what}: signed by party {signer}, not by the server")
        self._server_key.verify(_request_bytes(self._digest, session, stage, party, signer, body), sig, what)
        if self._session is None:
            self._session = session
        elif session != self._session:
            raise ReplayError(f"{what}: from another session than this run's (replayed from another run)")
        self._asked[party] = (stage, hashlib.sha256(body).digest())
        return body

    def seal(self, stage: str, party: int, reply: bytes) -> bytes:
        """``reply`` of ``party`` to the request just opened, signed."""
        asked = self._asked.pop(party, None)
        if asked is None or asked[0] != stage or self._session is None:
            raise AuthenticationError(f"party {party} at {stage!r}: no verified request to answer")
        sig = self._identity.sign(_reply_bytes(self._digest, self._session, stage, party, self.site, asked[1], reply))
        return b"".join((reply, self._session, _SIGNER.pack(self.site), sig))

    def answer(self, stage: str, party: int, request: bytes, handle: Callable[[bytes], bytes]) -> bytes:
        """Open ``request``, ``handle`` its payload, seal the reply."""
        return self.seal(stage, party, handle(self.open(stage, party, request)))


class SignedTransport(Transport):
    """Wraps a transport: requests leave signed, replies count only once their signature holds
    (a reply that does not verify is a failure, like silence, with the reason recorded)."""

    def __init__(self, inner: Transport, envelopes: ServerEnvelopes) -> None:
        self.inner, self.envelopes = inner, envelopes

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        sealed = {pid: self.envelopes.seal(stage, pid, data) for pid, data in requests.items()}
        replies: dict[int, bytes] = {}
        for pid, data in self.inner.exchange(stage, sealed).items():
            try:
                replies[pid] = self.envelopes.open(stage, pid, data)
            except SecFLError as exc:
                self.inner.failures[pid] = f"{type(exc).__name__}: {exc}"
        return replies


class SignedParty(Party):
    """A party (or a site's handler for one party id) behind its site's envelopes: for
    :class:`~secfl.protocols.parties.LocalTransport`, as a site program does across sites."""

    def __init__(self, party_id: int, handle: Callable[[str, bytes], bytes], envelopes: SiteEnvelopes) -> None:
        self.party_id, self._handle, self._envelopes = party_id, handle, envelopes

    def handle(self, stage: str, request: bytes) -> bytes:
        return self._envelopes.answer(stage, self.party_id, request, lambda body: self._handle(stage, body))
