"""The ``ckks-threshold`` quorum member: key generation, its key share, flooded partial decryptions.

A member holds only its own secrets: an X25519 key per key generation, its secret ``s_i`` while
it deals (forgotten right after), and its Shamir share σ_j of the collective secret. Everything it
receives is bytes from the server; the shares other members dealt to it arrive sealed (AES-256-GCM
under ``HKDF(X25519)``) and are opened only here.

Stages it answers across sites (:meth:`QuorumMember.handle`): ``thr.hello``
(``THR_KEYGEN_REQUEST`` → ``THR_MEMBER_HELLO``), ``thr.deal`` (``THR_ROSTER`` → ``THR_DEALING``),
``thr.key`` (``THR_KEY_DELIVERY`` → ``THR_KEY_ACK``), ``thr.ready`` (``THR_DECRYPT_REQUEST`` →
``THR_READY``, or no answer when it will not decrypt) and ``thr.partial``
(``THR_PARTIAL_REQUEST`` → ``THR_PARTIAL_DECRYPTION``). The in-process round calls the same
methods (:meth:`hello`, :meth:`on_roster`, ...) with the bytes it moved through the network.

Refusals: a member never partially decrypts a ciphertext twice (under any active set), nor
beyond τ ciphertexts per key (:class:`~secfl.errors.DecryptionRefusedError`); it records the
ciphertexts before computing, so even a crash midway never leads to a second answer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfl.crypto.identity import SIGNATURE_BYTES, IdentityKey, Roster
from secfl.crypto.keys import KEY_BYTES, PrivateKey, PublicKey, agree, open_sealed, seal
from secfl.crypto.prg import SEED_BYTES, Prg, fresh_seed
from secfl.crypto.threshold import (
    CollectivePublicKey,
    KeyShare,
    MemberSecret,
    ThresholdParams,
    add_into,
    ciphertext_digests,
    crp_seed,
    expand_crp,
    pack_polys,
    unpack_polys,
)
from secfl.errors import (
    AuthenticationError,
    ConfigError,
    DecryptionRefusedError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.protocols.ckks_threshold.messages import (
    SHARE_LABEL,
    ThrActiveSet,
    ThrCollectiveKey,
    ThrDealing,
    ThrDecryptRequest,
    ThrKeyAck,
    ThrKeyDelivery,
    ThrKeygenRequest,
    ThrMemberHello,
    ThrPartialDecryption,
    ThrPartialRequest,
    ThrPubkeyShare,
    ThrReady,
    ThrRoster,
    ThrShamirShares,
    aggregate_digest,
    hello_signed,
    key_signed,
    roster_binding,
    share_ad,
    upload_signed,
)
from secfl.protocols.network import member_id, server_id
from secfl.protocols.parties import Party
from secfl.protocols.wire import Frame

__all__ = ["QuorumMember", "HELLO", "DEAL", "KEY", "READY", "PARTIAL"]

#: stage names across sites (the coordinator's stage sequence: :mod:`.stages`)
HELLO, DEAL, KEY, READY, PARTIAL = "thr.hello", "thr.deal", "thr.key", "thr.ready", "thr.partial"


def _u32s(values: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)

@dataclass
class _Keygen:
    """A member's state during one key generation."""

    epoch: int
    private: PrivateKey
    nonce: bytes
    roster: dict[int, PublicKey] = field(default_factory=dict)
    threshold: int = 0
    seed: bytes = b""
    own_share: np.ndarray | None = None
    received: dict[int, np.ndarray] = field(default_factory=dict)


class QuorumMember(Party):
    """Quorum member ``index``: takes part in key generation, holds its key share, and answers
    partial-decryption requests — at most once per ciphertext and at most ``max_decryptions``
    ciphertexts per key. All input is bytes from the server; all output is bytes."""

    def __init__(self, index: int, params: ThresholdParams, identity: IdentityKey | None = None,
                 roster: Roster | None = None, min_clients: int = 2) -> None:
        self.index = int(index)
        self.min_clients = int(min_clients)
        self._partial_rounds: set[int] = set()  # rounds this member already answered a THR_ACTIVE_SET in
        self._identity = identity
        self._roster = roster
        self.party = member_id(self.index)
        self.party_id = self.party
        self.params = params
        self._keygen: _Keygen | None = None
        self._share: KeyShare | None = None
        self._key_id: bytes | None = None
        self._dealers: tuple[int, ...] = ()
        self._threshold = 0
        self._decrypted: set[bytes] = set()
        #: ciphertexts this member has partially decrypted under its current key
        self.decryptions = 0

    def __repr__(self) -> str:
        return f"QuorumMember({self.index}, key={'yes' if self._share else 'no'}, decryptions={self.decryptions})"

    @property
    def key_id(self) -> bytes | None:
        return self._key_id

    @property
    def has_share(self) -> bool:
        return self._share is not None

    def state(self) -> dict[str, Any]:
        """What this member holds of its own (for attack experiments): its key share."""
        return {} if self._share is None else {"key_share": self._share}

    # -- key generation ------------------------------------------------------------------------------

    def _identities(self) -> tuple[IdentityKey, Roster]:
        if self._identity is None or self._roster is None:
            raise ConfigError(f"member {self.index}: key generation needs this member's identity key and the"
                              f" federation roster (every member's public identity key)")
        return self._identity, self._roster

    def hello(self, round_: int, epoch: int) -> bytes:
        identity, _ = self._identities()
        priv = PrivateKey.generate()
        self._keygen = _Keygen(epoch, priv, fresh_seed())
        raw = priv.public_key.raw
        sig = identity.sign(hello_signed(epoch, self.index, self.params.to_bytes(), raw, self._keygen.nonce))
        return ThrMemberHello(round_, self.party, epoch, raw, self._keygen.nonce, sig).to_bytes()

    def on_roster(self, data: bytes, round_: int) -> tuple[bytes, bytes]:
        """Parse the roster, generate s_i, return (THR_PUBKEY_SHARE, THR_SHAMIR_SHARES)."""
        kg = self._keygen
        if kg is None:
            raise ProtocolAbort(f"member {self.index}: roster without a key generation in progress")
        msg = ThrRoster.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        p = self.params
        if msg.epoch != kg.epoch or msg.params != p.to_bytes():
            raise MalformedMessageError(f"member {self.index}: roster for another key generation or parameter set")
        if self.index not in msg.members:
            raise MalformedMessageError(f"member {self.index}: not in the roster")
        m = len(msg.members)
        pos = msg.members.index(self.index)
        if msg.public_keys[KEY_BYTES * pos : KEY_BYTES * (pos + 1)] != kg.private.public_key.raw or \
                msg.nonces[SEED_BYTES * pos : SEED_BYTES * (pos + 1)] != kg.nonce:
            raise MalformedMessageError(f"member {self.index}: the roster misstates this member's key or nonce")
        _, identities = self._identities()
        nonces = [msg.nonces[SEED_BYTES * i : SEED_BYTES * (i + 1)] for i in range(m)]
        keys = [msg.public_keys[KEY_BYTES * i : KEY_BYTES * (i + 1)] for i in range(m)]
        for i, j in enumerate(msg.members):  # a relay that swapped any key cannot sign for it
            identities.verify(member_id(j), hello_signed(kg.epoch, j, msg.params, keys[i], nonces[i]),
                              msg.signatures[SIGNATURE_BYTES * i : SIGNATURE_BYTES * (i + 1)],
                              f"member {self.index}: member {j}'s key in THR_ROSTER")
        kg.roster = {j: PublicKey(keys[i]).validate() for i, j in enumerate(msg.members)}
        kg.threshold = msg.threshold
        kg.seed = crp_seed(nonces, p.to_bytes() + struct.pack("<II", kg.epoch, msg.threshold)
                           + _u32s(msg.members).tobytes() + roster_binding(identities.digest(), msg))
        secret = MemberSecret.generate(p)
        prg = Prg()
        share_b = secret.public_share(expand_crp(p, kg.seed), prg)
        points = [j + 1 for j in msg.members]
        dealt = secret.deal(points, msg.threshold, prg)
        del secret  # s_i is not needed again: its Shamir shares carry it
        entries = []
        for i, j in enumerate(msg.members):
            if j == self.index:
                kg.own_share = dealt[i]
                continue
            key = agree(kg.private, kg.roster[j], SHARE_LABEL, kg.epoch, self.index, j)
            blob = pack_polys(dealt[i], p.data_primes)
            entries.append((self.index, j, seal(key, blob, share_ad(round_, kg.epoch, self.index, j, kg.seed))))
        pk_msg = ThrPubkeyShare(round_, self.party, kg.epoch, kg.seed, pack_polys(share_b, p.primes))
        sh_msg = ThrShamirShares(round_, self.party, kg.epoch, tuple(entries))
        return pk_msg.to_bytes(), sh_msg.to_bytes()

    def on_shares(self, data: bytes, round_: int) -> None:
        """The shares the server forwarded to this member (sealed by each dealer)."""
        kg = self._keygen
        if kg is None:
            raise ProtocolAbort(f"member {self.index}: shares without a key generation in progress")
        msg = ThrShamirShares.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        if msg.epoch != kg.epoch:
            raise MalformedMessageError(f"member {self.index}: shares for another key generation")
        p = self.params
        for dealer, recipient, blob in msg.entries:
            if recipient != self.index or dealer not in kg.roster or dealer == self.index:
                raise MalformedMessageError(f"member {self.index}: a forwarded share names dealer {dealer} and"
                                            f" recipient {recipient}")
            key = agree(kg.private, kg.roster[dealer], SHARE_LABEL, kg.epoch, dealer, self.index)
            raw = open_sealed(key, blob, share_ad(round_, kg.epoch, dealer, self.index, kg.seed),
                              what=f"Shamir share from member {dealer}")
            kg.received[dealer] = unpack_polys(raw, (), p.data_primes, p.poly_degree, "Shamir share")

    def on_collective_key(self, data: bytes, round_: int) -> bytes:
        """Check the collective key matches this key generation and form σ_j from the dealers'
        shares; a member missing a dealer's share ends up without a key share (it cannot decrypt).
        Returns ``THR_KEY_ACK``: whether it holds a share of this key."""
        kg = self._keygen
        if kg is None:
            raise ProtocolAbort(f"member {self.index}: collective key without a key generation in progress")
        msg = ThrCollectiveKey.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        self._keygen = None
        self._share, self._key_id, self._decrypted, self.decryptions = None, None, set(), 0
        key = CollectivePublicKey.from_bytes(msg.key)
        if msg.epoch != kg.epoch or key.seed != kg.seed or key.params != self.params:
            raise MalformedMessageError(f"member {self.index}: collective key for another key generation")
        no_share = ThrKeyAck(round_, self.party, kg.epoch, key.key_id, False).to_bytes()
        if self.index not in msg.dealers or not set(msg.dealers) <= set(kg.roster) or len(msg.dealers) < kg.threshold:
            return no_share  # not a dealer (it went silent) or an impossible dealer set: no share
        shares: list[np.ndarray] = []
        for dealer in msg.dealers:
            if dealer == self.index and kg.own_share is not None:
                shares.append(kg.own_share)
            elif dealer in kg.received:
                shares.append(kg.received[dealer])
            else:
                return no_share  # a dealer's share never arrived: this member cannot take part
        self._share = KeyShare.from_shares(self.params, self.index + 1, shares)
        self._key_id = key.key_id
        self._dealers = msg.dealers
        self._threshold = kg.threshold
        identity, _ = self._identities()
        sig = identity.sign(key_signed(kg.epoch, key.key_id, self.params.to_bytes()))
        return ThrKeyAck(round_, self.party, kg.epoch, key.key_id, True, sig).to_bytes()

    # -- decryption ----------------------------------------------------------------------------------

    def on_decrypt_request(self, data: bytes, round_: int) -> bytes | None:
        """THR_READY when this member can decrypt every announced ciphertext (holds a share of
        this key, has never decrypted any of them, has budget left); ``None`` otherwise."""
        msg = ThrDecryptRequest.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        if self._share is None or msg.key_id != self._key_id:
            return None
        if any(d in self._decrypted for d in msg.digests):
            return None
        if self.decryptions + len(msg.digests) > self.params.max_decryptions:
            return None
        return ThrReady(round_, self.party, msg.key_id, aggregate_digest(msg.digests)).to_bytes()

    def on_active_set(self, data: bytes, round_: int, max_clients: int) -> bytes:
        """Compute this member's flooded partial decryption for the fixed active set.

        ``max_clients``: the round's participant count, the public bound on the clients summed
        (the flooding noise is sized for it). Raises :class:`DecryptionRefusedError` for any
        ciphertext already decrypted (or beyond the budget), :class:`MalformedMessageError` for a
        request that does not parse or does not fit this member's key.
        """
        msg = ThrActiveSet.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        share = self._share
        if share is None or msg.key_id != self._key_id:
            raise MalformedMessageError(f"member {self.index}: request for a key this member holds no share of")
        if self.index not in msg.active or len(msg.active) != self._threshold or \
                not set(msg.active) <= set(self._dealers):
            raise MalformedMessageError(f"member {self.index}: active set {msg.active} is not {self._threshold}"
                                        f" key holders including this member")
        if len(msg.included) > max_clients:
            raise MalformedMessageError(f"member {self.index}: {len(msg.included)} included clients, the round has"
                                        f" {max_clients}")
        p = self.params
        if not 1 <= msg.count <= 1 << 20:
            raise MalformedMessageError(f"member {self.index}: {msg.count} ciphertexts")
        c1 = unpack_polys(msg.c1, (msg.count,), p.data_primes, p.poly_degree, "THR_ACTIVE_SET c1")
        digests = ciphertext_digests(c1, msg.key_id)
        if aggregate_digest(digests) != msg.digest:
            raise MalformedMessageError(f"member {self.index}: the ciphertexts do not match the announced digest")
        seen = sum(d in self._decrypted for d in digests) + len(digests) - len(set(digests))
        if seen:
            raise DecryptionRefusedError(f"member {self.index}: refusing a second partial decryption of"
                                         f" {seen} ciphertext(s) (a retry would leak its key share)")
        if msg.round in self._partial_rounds:
            raise DecryptionRefusedError(f"member {self.index}: already answered a decryption in round {msg.round}"
                                         f" (a second aggregate of the same uploads would single one out)")
        if self.decryptions + len(digests) > p.max_decryptions:
            raise DecryptionRefusedError(f"member {self.index}: decryption budget of this key exhausted"
                                         f" ({self.decryptions} of {p.max_decryptions}); the key must be regenerated")
        self._check_evidence(msg, c1)  # last: the signature checks cost the most
        # record before computing: even a crash midway never leads to a second answer
        self._partial_rounds.add(msg.round)
        self._decrypted.update(digests)
        self.decryptions += len(digests)
        sigma = p.flooding_sigma(max_clients, len(self._dealers))
        d = share.partial_decrypt(c1, [j + 1 for j in msg.active], sigma)
        return ThrPartialDecryption(round_, self.party, msg.key_id, msg.digest, msg.active,
                                    pack_polys(d, p.data_primes)).to_bytes()

    def _check_evidence(self, msg: ThrActiveSet, c1: np.ndarray) -> None:
        """``c1`` is the sum of the included clients' own ``c_1``, each signed by its client for
        this round and key, and there are at least ``min_clients`` of them. Otherwise
        :class:`DecryptionRefusedError` (too few) or :class:`AuthenticationError` (a forgery)."""
        _, roster = self._identities()
        k = len(msg.included)
        if k < self.min_clients:
            raise DecryptionRefusedError(f"member {self.index}: the aggregate has {k} client upload(s), at least"
                                         f" {self.min_clients} are needed")
        p, size = self.params, len(msg.c1)
        total = np.zeros_like(c1)
        for i, client in enumerate(msg.included):
            own = msg.client_c1[size * i : size * (i + 1)]
            roster.verify(client, upload_signed(msg.round, client, msg.key_id, msg.count, own),
                          msg.signatures[SIGNATURE_BYTES * i : SIGNATURE_BYTES * (i + 1)],
                          f"member {self.index}: client {client}'s upload")
            add_into(total, unpack_polys(own, (msg.count,), p.data_primes, p.poly_degree, "client c1"),
                     p.data_primes)
        if not np.array_equal(total, c1):
            raise AuthenticationError(f"member {self.index}: c1 is not the sum of the {k} signed client uploads;"
                                      f" refusing to decrypt it")

    # -- across sites: one request, one reply --------------------------------------------------------

    def handle(self, stage: str, request: bytes) -> bytes:
        server = server_id(0)
        if stage == HELLO:
            req = ThrKeygenRequest.from_bytes(request, expect_sender=server)
            return self.hello(req.round, req.epoch)
        if stage == DEAL:
            rnd = Frame.from_bytes(request, expect_sender=server).round
            pk, sh = self.on_roster(request, rnd)
            return ThrDealing(rnd, self.party, pk, sh).to_bytes()
        if stage == KEY:
            got = ThrKeyDelivery.from_bytes(request, expect_sender=server)
            try:
                self.on_shares(got.shares, got.round)
            except SecFLError:
                pass  # a share that does not open: this member will hold no key share (its ack says so)
            return self.on_collective_key(got.key, got.round)
        if stage == READY:
            rnd = Frame.from_bytes(request, expect_sender=server).round
            reply = self.on_decrypt_request(request, rnd)
            if reply is None:
                raise DecryptionRefusedError(f"member {self.index}: not ready to decrypt this aggregate (no share of"
                                             f" its key, a ciphertext decrypted before, or no budget left)")
            return reply
        if stage == PARTIAL:
            part = ThrPartialRequest.from_bytes(request, expect_sender=server)
            return self.on_active_set(part.active_set, part.round, part.clients)
        raise MalformedMessageError(f"ckks-threshold member: unknown stage {stage!r}")
