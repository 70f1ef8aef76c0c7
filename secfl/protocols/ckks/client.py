"""The ``ckks`` client: holds the shared secret context once provisioned, and encrypts its update.

Stages it answers (across sites): ``ckks.hello`` → ``CKKS_HELLO`` (a one-time X25519 key for its
provisioning), ``ckks.upload`` → ``CKKS_UPDATE`` (opening the sealed secret context first, the
first time). In the simulator the key holder hands it the secret context directly
(:meth:`CkksClient.accept_secret_context`), and the round calls :meth:`CkksClient.protect`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secfl.crypto.ckks import CkksEncryptor, CkksParams, CkksSecretContext
from secfl.crypto.identity import IdentityKey, Roster
from secfl.crypto.keys import PrivateKey, PublicKey, agree, open_sealed
from secfl.errors import MalformedMessageError, ProtocolAbort
from secfl.protocols.ckks.messages import (
    CkksHello,
    CkksSecretContextMessage,
    CkksUpdate,
    CkksUploadRequest,
    hello_signed,
    holder_signed,
)
from secfl.protocols.ckks.options import CkksOptions, UploadForm, round_codec
from secfl.protocols.network import member_id, server_id
from secfl.protocols.parties import ClientParty, RoundRequest

__all__ = ["CkksClient", "KEY_HOLDER", "provision_key"]

#: Party id of the key holder.
KEY_HOLDER = member_id(0)


def provision_key(private: PrivateKey, peer: bytes, rnd: int, client: int) -> bytes:
    """The AES-256-GCM key that seals client ``client``'s secret context in round ``rnd``."""
    return agree(private, PublicKey(peer), "secfl/ckks/provision", rnd, client)


class CkksClient(ClientParty):
    """One ``ckks`` client. ``shared`` (simulator only) lets clients that received identical
    secret-context bytes share one parsed copy and one encryptor pool."""

    def __init__(self, party_id: int, options: CkksOptions, params: CkksParams,
                 shared: dict[bytes, tuple[CkksSecretContext, CkksEncryptor]] | None = None,
                 identity: IdentityKey | None = None, roster: Roster | None = None) -> None:
        self.party_id = party_id
        self._identity = identity  # signs the hello key
        self._roster = roster  # the key holder's one-time key must carry its signature
        self._opt = options
        self._params = params
        self._shared = shared
        self._secret: CkksSecretContext | None = None
        self._secret_bytes: bytes | None = None
        self._encryptor: CkksEncryptor | None = None
        self._hello: PrivateKey | None = None

    def __repr__(self) -> str:
        return f"CkksClient({self.party_id}, provisioned={self.provisioned})"

    @property
    def provisioned(self) -> bool:
        return self._secret is not None

    def state(self) -> dict[str, Any]:
        """What this client holds of its own (for attack experiments)."""
        return {} if self._secret is None else {"secret_context": self._secret}

    # -- provisioning -------------------------------------------------------------------------------

    def accept_secret_context(self, data: bytes, rnd: int) -> None:
        """The simulator's direct channel: a ``CKKS_SECRET_CONTEXT`` message from the key holder."""
        msg = CkksSecretContextMessage.from_bytes(data, expect_round=rnd, expect_sender=KEY_HOLDER)
        self._install(msg.context)

    def hello(self, rnd: int) -> bytes:
        """A fresh one-time X25519 key, for the key holder to seal the secret context to."""
        self._hello = PrivateKey.generate()
        raw = self._hello.public_key.raw
        sig = self._identity.sign(hello_signed(rnd, self.party_id, raw)) if self._identity is not None else b""
        return CkksHello(rnd, self.party_id, raw, sig).to_bytes()

    def _open_provision(self, rnd: int, holder_key: bytes, sealed: bytes, signature: bytes = b"") -> None:
        if self._hello is None:
            raise MalformedMessageError(f"client {self.party_id}: a sealed secret context without a hello")
        if self._roster is not None:  # a context sealed by anyone but the key holder is refused
            self._roster.verify(KEY_HOLDER, holder_signed(rnd, self.party_id, self._hello.public_key.raw, holder_key),
                                signature, f"client {self.party_id}: the key holder's provisioning key")
        key = provision_key(self._hello, holder_key, rnd, self.party_id)
        ad = b"secfl/ckks/secret-context" + rnd.to_bytes(4, "little") + self.party_id.to_bytes(4, "little")
        self._install(open_sealed(key, sealed, ad, what="sealed CKKS secret context"))
        self._hello = None

    def _install(self, secret: bytes) -> None:
        if self._secret_bytes is not None:
            if secret != self._secret_bytes:
                raise ProtocolAbort(f"client {self.party_id} was provisioned twice with different keys")
            return
        cached = self._shared.get(secret) if self._shared is not None else None
        if cached is not None:
            self._secret = cached[0]
        else:
            self._secret = CkksSecretContext.from_bytes(secret)
            if self._secret.params != self._params:
                raise MalformedMessageError("the provisioned CKKS context has other parameters than configured")
        self._secret_bytes = secret

    def _get_encryptor(self) -> CkksEncryptor:
        if self._secret is None or self._secret_bytes is None:
            raise ProtocolAbort(f"client {self.party_id} holds no CKKS key (not provisioned in setup)")
        if self._encryptor is None:
            cached = self._shared.get(self._secret_bytes) if self._shared is not None else None
            if cached is not None:
                self._encryptor = cached[1]
            else:
                self._encryptor = CkksEncryptor(self._secret, workers=self._opt.workers)
                if self._shared is not None:
                    self._shared[self._secret_bytes] = (self._secret, self._encryptor)
        return self._encryptor

    # -- the upload ---------------------------------------------------------------------------------

    def protect(self, rnd: int, participants: int, dim: int, update: np.ndarray, weight: float) -> bytes:
        """``CKKS_UPDATE``: (a·x, a) encoded for this round (grid by default) and encrypted."""
        encryptor = self._get_encryptor()
        codec = round_codec(self._opt, self._params, dim, participants)
        values = codec.encode(update, weight, f"client {self.party_id}")
        if self._opt.upload is UploadForm.SEEDED:
            blob = encryptor.encrypt_seeded_to_bytes(values)
        else:
            blob = encryptor.encrypt_to_bytes(values)
        return CkksUpdate(rnd, self.party_id, blob).to_bytes()

    def handle(self, stage: str, request: bytes) -> bytes:
        if stage == "ckks.hello":
            req = RoundRequest.from_bytes(request, expect_sender=server_id(0))
            return self.hello(req.round)
        if stage == "ckks.upload":
            up = CkksUploadRequest.from_bytes(request, expect_sender=server_id(0))
            if self.party_id not in set(int(c) for c in up.participants):
                raise MalformedMessageError(f"client {self.party_id} is not a participant of round {up.round}")
            if up.sealed:
                self._open_provision(up.round, up.holder_key, up.sealed, up.holder_signature)
            update, weight = self.take_input(up.round)
            return self.protect(up.round, len(up.participants), up.dim, update, weight)
        raise MalformedMessageError(f"ckks client: unknown stage {stage!r}")

    def close(self) -> None:
        if self._encryptor is not None and self._shared is None:
            self._encryptor.close()
        self._encryptor = None
