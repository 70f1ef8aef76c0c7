"""``ckks-threshold`` — CKKS under a collective key; t of n quorum members decrypt the aggregate.

Parties: clients ``0..K-1``, the server ``server_id(0)`` (relay, aggregator and combiner), and
quorum members ``member_id(0..n-1)``. No party ever holds the decryption key.

Rounds (spec: ``protocols/ckks_threshold.md``; ``RoundSpec.dropouts`` stage names in brackets —
the *member indices* listed there go silent before that stage; clients drop out for free):

  0. *Key generation* (first round, and whenever the key's decryption budget τ runs out), in
     ``setup``: [``member_keygen``] each member sends ``THR_MEMBER_HELLO`` (a fresh X25519 key and
     a 32-byte nonce); the server returns the roster (``THR_ROSTER``) to every member that did;
     the CRP seed is the hash of the roster's nonces. [``member_shares``] Each member derives
     ``a``, draws ``s_i`` (SEAL's KeyGenerator), sends ``b_i = −a·s_i + e_i``
     (``THR_PUBKEY_SHARE``) and its Shamir shares of ``s_i`` (t-of-n, every ciphertext prime),
     each sealed with AES-256-GCM under ``HKDF(X25519)`` for its recipient (``THR_SHAMIR_SHARES``).
     The server keeps the dealers D that sent both, forwards each member the shares addressed to
     it, and sends everyone the collective key ``(Σ_D b_i, a)`` (``THR_COLLECTIVE_KEY``). Each
     member sums what it received into its key share σ_j.
  1. *Protect* (client k): encode ``(a_k x_k, a_k)`` with SEAL's CKKSEncoder (complex packing,
     ``a_k = n_k / max_weight``) and encrypt with SEAL's Encryptor under the collective key
     (``THR_UPDATE``).
  2. *Aggregate* (server): strict parse, add into one running sum.
  3. *Reveal*: [``member_decrypt``] the server announces the aggregate (``THR_DECRYPT_REQUEST``:
     included clients, one digest per ciphertext); members that can and will take part answer
     ``THR_READY``. The server fixes an active set A of t ready members and sends each the
     aggregate's c_1 with A (``THR_ACTIVE_SET``). [``member_partial``] Member j checks it never
     decrypted any of these ciphertexts, records them, and returns ``c_1·λ_j^A·σ_j + E_j`` with
     fresh flooding noise E_j (``THR_PARTIAL_DECRYPTION``). The server adds ``c_0`` and the t
     shares and decodes with SEAL's CKKSEncoder. A partial that fails to parse, or is for another
     ciphertext or active set, counts its member as absent; the server then tries a disjoint active
     set among the remaining ready members, and raises
     :class:`~secfl.errors.InsufficientQuorumError` when fewer than t remain (nothing is decoded).

Security (semi-honest parties; details in the spec): the server relays sealed Shamir shares it
cannot read and sees only ciphertexts, partial decryptions (each an RLWE sample with flooding
noise) and, as the combiner, the aggregate. Any t − 1 members (with the server) learn nothing
about an individual update; t colluding members recover the key. A member never answers twice
for the same ciphertext (:class:`~secfl.errors.DecryptionRefusedError`) and stops after τ
ciphertexts under one key. Malicious clients are not covered: one can submit garbage, and one
colluding with the combiner can submit a crafted ciphertext whose decryption exposes the key.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfl.crypto.keys import KEY_BYTES, PrivateKey, PublicKey, agree, open_sealed, seal
from secfl.crypto.prg import SEED_BYTES, Prg, fresh_seed
from secfl.crypto.threshold import (
    MAX_MEMBERS,
    CollectivePublicKey,
    KeyShare,
    MemberSecret,
    ThresholdParams,
    ThresholdPreset,
    add_into,
    ciphertext_digests,
    collective_public_key,
    combine,
    crp_seed,
    expand_crp,
    pack_polys,
    unpack_polys,
)
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.ckks_encoding import InputKind, SlotCodec
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = [
    "InputKind",
    "STAGES",
    "CkksThresholdOptions",
    "ThrMemberHello",
    "ThrRoster",
    "ThrPubkeyShare",
    "ThrShamirShares",
    "ThrCollectiveKey",
    "ThrUpdate",
    "ThrDecryptRequest",
    "ThrReady",
    "ThrActiveSet",
    "ThrPartialDecryption",
    "QuorumMember",
    "CkksThreshold",
]

#: ``RoundSpec.dropouts`` stages; the values are quorum member indices that go silent before it.
STAGES = ("member_keygen", "member_shares", "member_decrypt", "member_partial")
_MAX_BLOB = 1 << 34
_DIGEST = 32
_KEY_ID = 16
_SHARE_LABEL = "secfl/ckks-threshold/shamir"


@dataclass(frozen=True)
class CkksThresholdOptions:
    """Options of ``ckks-threshold``.

    ``quorum``: (t, n) — n members hold shares of the key, any t decrypt (1 <= t <= n).
    ``quorum_dropouts``: member indices that are offline whenever a decryption is requested
    (they still took part in key generation).
    ``preset`` / ``params`` (a :class:`ThresholdParams` or a dict of its fields) / ``scale_bits``:
    the parameter set. ``stat_security_bits`` (>= 30) and ``max_decryptions`` (τ: ciphertexts
    decrypted under one key before it is regenerated) size the flooding noise; when given they
    override the parameter set's. ``clip_range``, ``max_weight``, ``input``: as for ``ckks``.
    """

    quorum: tuple[int, int] = (3, 5)
    quorum_dropouts: tuple[int, ...] = ()
    preset: ThresholdPreset = ThresholdPreset.STANDARD
    params: ThresholdParams | None = None
    scale_bits: int | None = None
    stat_security_bits: int | None = None
    max_decryptions: int | None = None
    clip_range: float = 100.0
    max_weight: float = 1e4
    input: InputKind = InputKind.FLOAT

    def __post_init__(self) -> None:
        q = self.quorum
        ok = isinstance(q, (tuple, list)) and len(q) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in q)
        if not ok or not 1 <= q[0] <= q[1] <= MAX_MEMBERS:
            raise ConfigError(f"ckks-threshold.quorum must be (t, n) with 1 <= t <= n <= {MAX_MEMBERS}, got {q!r}")
        object.__setattr__(self, "quorum", (int(q[0]), int(q[1])))
        try:
            drops = tuple(sorted({int(j) for j in self.quorum_dropouts}))
        except (TypeError, ValueError):
            raise ConfigError(f"ckks-threshold.quorum_dropouts must be member indices, got {self.quorum_dropouts!r}"
                              ) from None
        if any(not 0 <= j < q[1] for j in drops):
            raise ConfigError(f"ckks-threshold.quorum_dropouts must be member indices in [0, {q[1]}), got {drops}")
        object.__setattr__(self, "quorum_dropouts", drops)
        try:
            object.__setattr__(self, "preset", ThresholdPreset(self.preset))
        except ValueError:
            raise ConfigError(f"ckks-threshold.preset must be one of {[p.value for p in ThresholdPreset]}, got"
                              f" {self.preset!r}") from None
        allowed_inputs = [InputKind.FLOAT.value, InputKind.QUANTIZED.value]
        if self.input not in allowed_inputs:
            raise ConfigError(f"ckks-threshold.input must be one of {allowed_inputs} (its partial decryptions carry"
                              f" flooding noise; the grid of ckks does not apply), got {self.input!r}")
        object.__setattr__(self, "input", InputKind(self.input))
        if isinstance(self.params, Mapping):
            allowed = {"poly_degree", "coeff_bits", "scale_bits", "complex_packing", "stat_security_bits",
                       "max_decryptions"}
            unknown = sorted(set(self.params) - allowed)
            if unknown:
                raise ConfigError(f"ckks-threshold.params has unknown field(s) {unknown}; allowed: {sorted(allowed)}")
            object.__setattr__(self, "params", ThresholdParams(**dict(self.params)))  # type: ignore[arg-type]
        if self.params is not None and not isinstance(self.params, ThresholdParams):
            raise ConfigError(f"ckks-threshold.params must be ThresholdParams, a dict of its fields, or None;"
                              f" got {self.params!r}")
        for name in ("clip_range", "max_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ConfigError(f"ckks-threshold.{name} must be a finite number > 0, got {v!r}")
        if self.max_weight < 1:
            raise ConfigError(f"ckks-threshold.max_weight must be >= 1 (weights are sample counts), got"
                              f" {self.max_weight}")
        self.resolved_params()  # validates the security bound now

    def resolved_params(self) -> ThresholdParams:
        base = self.params if self.params is not None else ThresholdParams.from_preset(self.preset)
        over = {k: v for k, v in (("scale_bits", self.scale_bits), ("stat_security_bits", self.stat_security_bits),
                                  ("max_decryptions", self.max_decryptions)) if v is not None}
        if not over:
            return base
        fields: dict[str, Any] = {
            "poly_degree": base.poly_degree, "coeff_bits": base.coeff_bits, "scale_bits": base.scale_bits,
            "complex_packing": base.complex_packing, "stat_security_bits": base.stat_security_bits,
            "max_decryptions": base.max_decryptions}
        fields.update(over)
        return ThresholdParams(**fields)

    def max_abs(self) -> float:
        if self.input is InputKind.QUANTIZED:
            return float(self.max_weight) * float(self.clip_range)
        return max(float(self.clip_range), 1.0)


# --------------------------------------------------------------------------------------------
# messages


def _fixed(r: Reader, n: int, what: str) -> bytes:
    b = r.blob(n)
    if len(b) != n:
        raise MalformedMessageError(f"{what}: expected {n} bytes, got {len(b)}")
    return bytes(b)


def _index_set(r: Reader, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    arr = r.array("u4")
    vals = tuple(int(v) for v in arr)
    if (not vals and not allow_empty) or any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
        raise MalformedMessageError(f"{what}: must be a non-empty sorted set of distinct indices")
    return vals


def _u32s(values: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)


@dataclass(frozen=True)
class ThrMemberHello(Message):
    """Member → server: its X25519 key and CRP nonce for key generation ``epoch``."""

    TYPE = MsgType.THR_MEMBER_HELLO
    round: int
    sender: int
    epoch: int
    public_key: bytes
    nonce: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).blob(self.public_key).blob(self.nonce)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrMemberHello:
        return cls(round, sender, r.u32(), _fixed(r, KEY_BYTES, "THR_MEMBER_HELLO key"),
                   _fixed(r, SEED_BYTES, "THR_MEMBER_HELLO nonce"))


@dataclass(frozen=True)
class ThrRoster(Message):
    """Server → member: the parameters, threshold and every member's key and nonce."""

    TYPE = MsgType.THR_ROSTER
    round: int
    sender: int
    epoch: int
    threshold: int
    params: bytes
    members: tuple[int, ...]
    public_keys: bytes  # 32 bytes per member, in member order
    nonces: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).u32(self.threshold).blob(self.params).array(_u32s(self.members))
        w.blob(self.public_keys).blob(self.nonces)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrRoster:
        epoch, t, params = r.u32(), r.u32(), bytes(r.blob(1 << 16))
        members = _index_set(r, "THR_ROSTER members")
        m = len(members)
        keys = _fixed(r, KEY_BYTES * m, "THR_ROSTER keys")
        nonces = _fixed(r, SEED_BYTES * m, "THR_ROSTER nonces")
        if not 1 <= t <= m:
            raise MalformedMessageError(f"THR_ROSTER: threshold {t} for {m} members")
        return cls(round, sender, epoch, t, params, members, keys, nonces)


@dataclass(frozen=True)
class ThrPubkeyShare(Message):
    """Member → server: b_i over every key-level prime, and the CRP seed it derived."""

    TYPE = MsgType.THR_PUBKEY_SHARE
    round: int
    sender: int
    epoch: int
    seed: bytes
    share: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).blob(self.seed).blob(self.share)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrPubkeyShare:
        return cls(round, sender, r.u32(), _fixed(r, SEED_BYTES, "THR_PUBKEY_SHARE seed"), bytes(r.blob(_MAX_BLOB)))


@dataclass(frozen=True)
class ThrShamirShares(Message):
    """Sealed Shamir shares: member → server (from the sender to each recipient) and server →
    member (from each dealer to that member). Entries: (dealer, recipient, AES-GCM blob)."""

    TYPE = MsgType.THR_SHAMIR_SHARES
    round: int
    sender: int
    epoch: int
    entries: tuple[tuple[int, int, bytes], ...]

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).u32(len(self.entries))
        for dealer, recipient, blob in self.entries:
            w.u32(dealer).u32(recipient).blob(blob)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrShamirShares:
        epoch, count = r.u32(), r.u32()
        if count > MAX_MEMBERS:
            raise MalformedMessageError(f"THR_SHAMIR_SHARES: {count} entries")
        entries = tuple((r.u32(), r.u32(), bytes(r.blob(_MAX_BLOB))) for _ in range(count))
        if len({(d, t) for d, t, _ in entries}) != count:
            raise MalformedMessageError("THR_SHAMIR_SHARES: duplicate entries")
        return cls(round, sender, epoch, entries)


@dataclass(frozen=True)
class ThrCollectiveKey(Message):
    """Server → members and clients: the dealers in the key and the collective public key."""

    TYPE = MsgType.THR_COLLECTIVE_KEY
    round: int
    sender: int
    epoch: int
    dealers: tuple[int, ...]
    key: bytes

    def _write(self, w: Writer) -> None:
        w.u32(self.epoch).array(_u32s(self.dealers)).blob(self.key)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrCollectiveKey:
        return cls(round, sender, r.u32(), _index_set(r, "THR_COLLECTIVE_KEY dealers"), bytes(r.blob(_MAX_BLOB)))


@dataclass(frozen=True)
class ThrUpdate(Message):
    """Client → server: the ciphertexts of (a_k x_k, a_k) under the collective key (NTT form)."""

    TYPE = MsgType.THR_UPDATE
    round: int
    sender: int
    key_id: bytes
    count: int
    ciphertexts: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).u32(self.count).blob(self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrUpdate:
        return cls(round, sender, _fixed(r, _KEY_ID, "THR_UPDATE key id"), r.u32(), bytes(r.blob(_MAX_BLOB)))


@dataclass(frozen=True)
class ThrDecryptRequest(Message):
    """Server → member: a decryption is about to be requested (included clients, one digest per
    ciphertext); members able and willing answer THR_READY."""

    TYPE = MsgType.THR_DECRYPT_REQUEST
    round: int
    sender: int
    key_id: bytes
    included: tuple[int, ...]
    digests: tuple[bytes, ...]

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).array(_u32s(self.included)).blob(b"".join(self.digests))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrDecryptRequest:
        key_id = _fixed(r, _KEY_ID, "THR_DECRYPT_REQUEST key id")
        included = _index_set(r, "THR_DECRYPT_REQUEST included clients")
        raw = bytes(r.blob(_MAX_BLOB))
        if not raw or len(raw) % _DIGEST:
            raise MalformedMessageError("THR_DECRYPT_REQUEST: digests must be whole 32-byte values")
        return cls(round, sender, key_id, included, tuple(raw[i : i + _DIGEST] for i in range(0, len(raw), _DIGEST)))


@dataclass(frozen=True)
class ThrReady(Message):
    """Member → server: ready to decrypt the announced aggregate (its digest echoed)."""

    TYPE = MsgType.THR_READY
    round: int
    sender: int
    key_id: bytes
    digest: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).blob(self.digest)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrReady:
        return cls(round, sender, _fixed(r, _KEY_ID, "THR_READY key id"), _fixed(r, _DIGEST, "THR_READY digest"))


@dataclass(frozen=True)
class ThrActiveSet(Message):
    """Server → member of the active set: the set (fixed before any share is computed), the
    included clients, the aggregate's digest and its c_1 polynomials."""

    TYPE = MsgType.THR_ACTIVE_SET
    round: int
    sender: int
    key_id: bytes
    active: tuple[int, ...]
    included: tuple[int, ...]
    digest: bytes
    count: int
    c1: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).array(_u32s(self.active)).array(_u32s(self.included)).blob(self.digest)
        w.u32(self.count).blob(self.c1)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrActiveSet:
        key_id = _fixed(r, _KEY_ID, "THR_ACTIVE_SET key id")
        active = _index_set(r, "THR_ACTIVE_SET active set")
        included = _index_set(r, "THR_ACTIVE_SET included clients")
        digest = _fixed(r, _DIGEST, "THR_ACTIVE_SET digest")
        return cls(round, sender, key_id, active, included, digest, r.u32(), bytes(r.blob(_MAX_BLOB)))


@dataclass(frozen=True)
class ThrPartialDecryption(Message):
    """Member → server: its flooded partial decryption of every ciphertext of the aggregate."""

    TYPE = MsgType.THR_PARTIAL_DECRYPTION
    round: int
    sender: int
    key_id: bytes
    digest: bytes
    active: tuple[int, ...]
    partial: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.key_id).blob(self.digest).array(_u32s(self.active)).blob(self.partial)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> ThrPartialDecryption:
        key_id = _fixed(r, _KEY_ID, "THR_PARTIAL_DECRYPTION key id")
        digest = _fixed(r, _DIGEST, "THR_PARTIAL_DECRYPTION digest")
        return cls(round, sender, key_id, digest, _index_set(r, "THR_PARTIAL_DECRYPTION active set"),
                   bytes(r.blob(_MAX_BLOB)))


def _aggregate_digest(digests: tuple[bytes, ...] | list[bytes]) -> bytes:
    return hashlib.sha256(b"secfl-thr-aggregate-v1" + b"".join(digests)).digest()


def _share_ad(round_: int, epoch: int, dealer: int, recipient: int, seed: bytes) -> bytes:
    return b"secfl-thr-shamir-v1" + struct.pack("<IIII", round_, epoch, dealer, recipient) + seed


# --------------------------------------------------------------------------------------------
# quorum member


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


class QuorumMember:
    """Quorum member ``index``: takes part in key generation, holds its key share, and answers
    partial-decryption requests — at most once per ciphertext and at most ``max_decryptions``
    ciphertexts per key. All input is bytes from the server; all output is bytes."""

    def __init__(self, index: int, params: ThresholdParams) -> None:
        self.index = int(index)
        self.party = member_id(self.index)
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

    # -- key generation ------------------------------------------------------------------------------

    def hello(self, round_: int, epoch: int) -> bytes:
        priv = PrivateKey.generate()
        self._keygen = _Keygen(epoch, priv, fresh_seed())
        return ThrMemberHello(round_, self.party, epoch, priv.public_key.raw, self._keygen.nonce).to_bytes()

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
        kg.roster = {j: PublicKey(msg.public_keys[KEY_BYTES * i : KEY_BYTES * (i + 1)]).validate()
                     for i, j in enumerate(msg.members)}
        kg.threshold = msg.threshold
        nonces = [msg.nonces[SEED_BYTES * i : SEED_BYTES * (i + 1)] for i in range(m)]
        kg.seed = crp_seed(nonces, p.to_bytes() + struct.pack("<II", kg.epoch, msg.threshold)
                           + _u32s(msg.members).tobytes())
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
            key = agree(kg.private, kg.roster[j], _SHARE_LABEL, kg.epoch, self.index, j)
            blob = pack_polys(dealt[i], p.data_primes)
            entries.append((self.index, j, seal(key, blob, _share_ad(round_, kg.epoch, self.index, j, kg.seed))))
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
            key = agree(kg.private, kg.roster[dealer], _SHARE_LABEL, kg.epoch, dealer, self.index)
            raw = open_sealed(key, blob, _share_ad(round_, kg.epoch, dealer, self.index, kg.seed),
                              what=f"Shamir share from member {dealer}")
            kg.received[dealer] = unpack_polys(raw, (), p.data_primes, p.poly_degree, "Shamir share")

    def on_collective_key(self, data: bytes, round_: int) -> None:
        """Check the collective key matches this key generation and form σ_j from the dealers'
        shares; a member missing a dealer's share ends up without a key share (it cannot decrypt)."""
        kg = self._keygen
        if kg is None:
            raise ProtocolAbort(f"member {self.index}: collective key without a key generation in progress")
        msg = ThrCollectiveKey.from_bytes(data, expect_round=round_, expect_sender=server_id(0))
        self._keygen = None
        self._share, self._key_id, self._decrypted, self.decryptions = None, None, set(), 0
        key = CollectivePublicKey.from_bytes(msg.key)
        if msg.epoch != kg.epoch or key.seed != kg.seed or key.params != self.params:
            raise MalformedMessageError(f"member {self.index}: collective key for another key generation")
        if self.index not in msg.dealers or not set(msg.dealers) <= set(kg.roster) or len(msg.dealers) < kg.threshold:
            return  # not a dealer (it went silent) or an impossible dealer set: no share
        shares: list[np.ndarray] = []
        for dealer in msg.dealers:
            if dealer == self.index and kg.own_share is not None:
                shares.append(kg.own_share)
            elif dealer in kg.received:
                shares.append(kg.received[dealer])
            else:
                return  # a dealer's share never arrived: this member cannot take part
        self._share = KeyShare.from_shares(self.params, self.index + 1, shares)
        self._key_id = key.key_id
        self._dealers = msg.dealers
        self._threshold = kg.threshold

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
        return ThrReady(round_, self.party, msg.key_id, _aggregate_digest(msg.digests)).to_bytes()

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
        if _aggregate_digest(digests) != msg.digest:
            raise MalformedMessageError(f"member {self.index}: the ciphertexts do not match the announced digest")
        seen = sum(d in self._decrypted for d in digests) + len(digests) - len(set(digests))
        if seen:
            raise DecryptionRefusedError(f"member {self.index}: refusing a second partial decryption of"
                                         f" {seen} ciphertext(s) (a retry would leak its key share)")
        if self.decryptions + len(digests) > p.max_decryptions:
            raise DecryptionRefusedError(f"member {self.index}: decryption budget of this key exhausted"
                                         f" ({self.decryptions} of {p.max_decryptions}); the key must be regenerated")
        # record before computing: even a crash midway never leads to a second answer
        self._decrypted.update(digests)
        self.decryptions += len(digests)
        sigma = p.flooding_sigma(max_clients, len(self._dealers))
        d = share.partial_decrypt(c1, [j + 1 for j in msg.active], sigma)
        return ThrPartialDecryption(round_, self.party, msg.key_id, msg.digest, msg.active,
                                    pack_polys(d, p.data_primes)).to_bytes()


# --------------------------------------------------------------------------------------------
# the round


class _ThresholdRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, proto: CkksThreshold) -> None:
        super().__init__(spec, net)
        opt = proto.options
        self._proto = proto
        self._opt = opt
        self._params = proto.params
        t, n = opt.quorum
        unknown = sorted(set(spec.dropouts) - set(STAGES))
        if unknown:
            raise ConfigError(f"ckks-threshold dropout stages are {list(STAGES)} (member indices); unknown: {unknown}")
        for stage, who in spec.dropouts.items():
            outside = sorted(j for j in who if not 0 <= j < n)
            if outside:
                raise ConfigError(f"dropouts[{stage!r}] names members outside [0, {n}): {outside}")
        self._max_abs = opt.max_abs()
        k = len(spec.clients)
        self._codec = SlotCodec.for_round(opt, spec.dim, k)
        self._params.check_overflow(k, n, t, self._max_abs)  # InsecureParametersError names the bound
        if opt.input is InputKind.QUANTIZED:
            bound = self._params.sum_error_bound(k, n, t, self._max_abs)
            if bound >= 0.5:
                raise ConfigError(f"ckks-threshold quantized input needs the error bound below 0.5; with {k} clients"
                                  f" it is {bound:.3g}")
        self._count = self._params.ciphertexts_for(spec.dim + 1)
        self._server = server_id(0)
        self._participants = frozenset(spec.clients)
        self._accepted: set[int] = set()
        self._acc: np.ndarray | None = None
        self._key: CollectivePublicKey | None = None
        #: bound on |revealed mean − exact weighted mean| per coordinate, set by reveal()
        self.error_bound: float | None = None
        #: the active set whose partial decryptions were combined, set by reveal()
        self.active_set: tuple[int, ...] = ()
        #: the reveal, measured: "poll" s, "member_s" {member: s handling THR_ACTIVE_SET (parse, checks,
        #: flooded partial decryption, packing)}, "partial_bytes" (one THR_PARTIAL_DECRYPTION),
        #: "combine" s (c_0 + partials, SEAL decode)
        self.timings: dict[str, Any] = {}


    def party_state(self, party: int) -> dict[str, Any]:
        """Quorum member ``j``: its Shamir share of the collective secret key (once generated)."""
        for m in self._proto.members:
            if m.party == party and m._share is not None:
                return {"key_share": m._share}
        return {}
    def _silent(self, stage: str) -> frozenset[int]:
        return frozenset(self.spec.dropouts.get(stage, frozenset()))

    # -- setup: key generation when needed, key to clients ---------------------------------------

    def setup(self) -> None:
        proto = self._proto
        if proto.needs_keygen(self._count):
            proto.keygen(self.spec.round, self.net, self._silent("member_keygen"), self._silent("member_shares"))
        self._key = proto.server_key()
        p = self._params
        self._acc = np.zeros((self._count, 2, len(p.data_primes), p.poly_degree), dtype=np.int64)
        proto.provision_clients(self.spec, self.net)

    # -- client ------------------------------------------------------------------------------------

    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if self._acc is None:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before protect()")
        key = self._proto.client_key(client)
        values = self._codec.encode(update, weight, f"client {client}")
        cts = key.encrypt(values)
        msg = ThrUpdate(self.spec.round, client, key.key_id, cts.shape[0], pack_polys(cts, key.params.data_primes))
        return Upload(((self._server, msg.to_bytes()),))

    # -- server --------------------------------------------------------------------------------------

    def receive(self, client: int, upload: Upload) -> None:
        if self._acc is None or self._key is None:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before receive()")
        data = self.single_message(client, upload, self._accepted, self._server)
        msg = ThrUpdate.from_bytes(data, expect_round=self.spec.round, expect_sender=client)
        if msg.key_id != self._key.key_id:
            raise MalformedMessageError(f"client {client}: ciphertexts under another key")
        if msg.count != self._count:
            raise MalformedMessageError(f"client {client}: {msg.count} ciphertexts, expected {self._count}")
        p = self._params
        batch = unpack_polys(msg.ciphertexts, (self._count, 2), p.data_primes, p.poly_degree, "THR_UPDATE")
        add_into(self._acc, batch, p.data_primes)  # only after the whole upload parsed: atomic
        self._accepted.add(client)

    # -- reveal --------------------------------------------------------------------------------------

    def reveal(self) -> Revealed:
        if self._acc is None or self._key is None or not self._accepted:
            raise ProtocolAbort(f"round {self.spec.round}: no client update was accepted")
        proto, p, rnd = self._proto, self._params, self.spec.round
        t = self._opt.quorum[0]
        key = self._key
        included = tuple(sorted(self._accepted))
        c1 = self._acc[:, 1]
        digests = ciphertext_digests(c1, key.key_id)
        agg_digest = _aggregate_digest(digests)
        t0 = time.perf_counter()
        # 1. announce; collect THR_READY
        request = ThrDecryptRequest(rnd, self._server, key.key_id, included, tuple(digests)).to_bytes()
        offline = set(self._opt.quorum_dropouts) | self._silent("member_decrypt")
        ready: list[int] = []
        for j in proto.dealers:
            member = proto.members[j]
            delivered = self.net.send(self._server, member.party, request)
            if j in offline:
                continue  # an offline member never answers
            try:
                reply = member.on_decrypt_request(delivered, rnd)
                if reply is None:
                    continue
                got = ThrReady.from_bytes(self.net.send(member.party, self._server, reply), expect_round=rnd,
                                          expect_sender=member.party)
            except SecFLError:
                continue
            if got.key_id == key.key_id and got.digest == agg_digest:
                ready.append(j)
        self.timings["poll"] = time.perf_counter() - t0
        # 2. fixed active sets, disjoint from earlier attempts
        c1_blob = pack_polys(c1, p.data_primes)
        if len(ready) >= t:
            proto.decryptions += self._count  # each member spends these at most once, in one attempt
        asked: set[int] = set()
        failures: list[str] = []
        member_seconds: dict[int, float] = {}
        while True:
            candidates = [j for j in ready if j not in asked]
            if len(candidates) < t:
                detail = "; ".join(failures) or "no earlier attempt"
                raise InsufficientQuorumError(
                    f"round {rnd}: {len(candidates)} member(s) ready to decrypt (of {len(ready)} ready,"
                    f" {len(proto.dealers)} holding shares), the threshold is {t}; nothing was decoded ({detail})")
            active = tuple(candidates[:t])
            asked.update(active)
            request = ThrActiveSet(rnd, self._server, key.key_id, active, included, agg_digest, self._count,
                                   c1_blob).to_bytes()
            partials: dict[int, np.ndarray] = {}
            for j in active:
                member = proto.members[j]
                delivered = self.net.send(self._server, member.party, request)
                if j in self._silent("member_partial"):
                    failures.append(f"member {j} went silent")
                    continue
                try:
                    t1 = time.perf_counter()
                    reply = member.on_active_set(delivered, rnd, len(self.spec.clients))
                    member_seconds[j] = time.perf_counter() - t1
                    self.timings["partial_bytes"] = len(reply)
                    partials[j] = self._parse_partial(j, self.net.send(member.party, self._server, reply), active,
                                                      agg_digest)
                except SecFLError as exc:  # refused, or a partial that does not fit: the member is absent
                    failures.append(f"member {j}: {type(exc).__name__}: {exc}")
            if len(partials) == t:
                break
        self.timings["member_s"] = member_seconds
        self.active_set = active
        # 3. combine and decode (SEAL's CKKSEncoder)
        t0 = time.perf_counter()
        plain = combine(self._acc[:, 0], [partials[j] for j in active], p)
        values = key.decode(plain, self.spec.dim + 1)
        self.timings["combine"] = time.perf_counter() - t0
        bound = p.sum_error_bound(len(self.spec.clients), proto.key_members, t, self._max_abs)
        mean, weight, self.error_bound = self._codec.decode(values, bound, rnd)
        dropped = tuple(sorted(self._participants - set(included)))
        return Revealed(mean, weight, included, dropped)

    def _parse_partial(self, j: int, data: bytes, active: tuple[int, ...], digest: bytes) -> np.ndarray:
        p = self._params
        party = member_id(j)
        msg = ThrPartialDecryption.from_bytes(data, expect_round=self.spec.round, expect_sender=party)
        if self._key is None or msg.key_id != self._key.key_id:
            raise MalformedMessageError(f"member {j}: partial decryption under another key")
        if msg.digest != digest or msg.active != active:
            raise MalformedMessageError(f"member {j}: partial decryption for another ciphertext or active set")
        return unpack_polys(msg.partial, (self._count,), p.data_primes, p.poly_degree, "THR_PARTIAL_DECRYPTION")


# --------------------------------------------------------------------------------------------
# the protocol


class CkksThreshold(Protocol):
    """Threshold CKKS aggregation. Keys are generated in the first round and kept until the
    decryption budget (τ ciphertexts) would run out, then regenerated.

    State by party: each :class:`QuorumMember` (its key share, the digests it decrypted); the
    server's collective key, dealer set and decryption count (public material only); the
    clients' collective key (parsed from the bytes they received).
    """

    name = "ckks-threshold"
    summary = "CKKS under a collective key; t of n quorum members decrypt the aggregate (flooded partials)"
    reveals_to = "server as combiner, from t partial decryptions (no party holds the key)"
    Options = CkksThresholdOptions

    def __init__(self, options: CkksThresholdOptions | None = None) -> None:
        super().__init__(options)
        self.params: ThresholdParams = self.options.resolved_params()
        t, n = self.options.quorum
        self.members = [QuorumMember(j, self.params) for j in range(n)]
        self.epoch = 0
        #: members holding a key share of the current key (they can decrypt)
        self.dealers: tuple[int, ...] = ()
        #: members whose secrets are in the current key (|D|: sizes the noise)
        self.key_members = 0
        #: ciphertexts decrypted under the current key (the server's count)
        self.decryptions = 0
        self._server_key: CollectivePublicKey | None = None
        self._key_blob: bytes | None = None
        self._client_key: CollectivePublicKey | None = None
        self._provisioned: set[int] = set()
        #: seconds of the last key generation (all parties, sequentially simulated)
        self.keygen_seconds = 0.0

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _ThresholdRound(spec, net, self)

    # -- key generation ---------------------------------------------------------------------------------

    def needs_keygen(self, count: int) -> bool:
        if self._server_key is None:
            return True
        if count > self.params.max_decryptions:
            raise ConfigError(f"a round needs {count} decryptions, more than max_decryptions"
                              f" = {self.params.max_decryptions} per key")
        return self.decryptions + count > self.params.max_decryptions

    def keygen(self, round_: int, net: Network, silent_hello: frozenset[int] = frozenset(),
               silent_shares: frozenset[int] = frozenset()) -> None:
        """Run collective key generation (messages 0a–0e of the spec) through ``net``."""
        t0 = time.perf_counter()
        t, n = self.options.quorum
        p = self.params
        server = server_id(0)
        self.epoch += 1
        epoch = self.epoch
        self._server_key, self._key_blob, self._client_key, self._provisioned = None, None, None, set()
        self.dealers, self.decryptions = (), 0
        # 0a hello
        hellos: dict[int, ThrMemberHello] = {}
        for j, member in enumerate(self.members):
            if j in silent_hello:
                continue
            data = net.send(member.party, server, member.hello(round_, epoch))
            try:
                msg = ThrMemberHello.from_bytes(data, expect_round=round_, expect_sender=member.party)
                PublicKey(msg.public_key).validate()
            except SecFLError:
                continue  # a member whose hello fails is left out of this key
            if msg.epoch == epoch:
                hellos[j] = msg
        roster = tuple(sorted(hellos))
        if len(roster) < t:
            raise InsufficientQuorumError(f"key generation: {len(roster)} member(s) answered, the threshold is {t}")
        # 0b roster
        ros = ThrRoster(round_, server, epoch, t, p.to_bytes(), roster,
                        b"".join(hellos[j].public_key for j in roster), b"".join(hellos[j].nonce for j in roster))
        ros_bytes = ros.to_bytes()
        seeds: dict[int, bytes] = {}
        pk_shares: dict[int, np.ndarray] = {}
        sealed: dict[int, dict[int, bytes]] = {}
        for j in roster:
            member = self.members[j]
            delivered = net.send(server, member.party, ros_bytes)
            if j in silent_shares:
                continue
            try:
                pk_bytes, sh_bytes = member.on_roster(delivered, round_)
            except SecFLError:
                continue  # the member refuses the roster: it deals nothing and is left out
            # 0c / 0d: server side, strict parse; a member whose messages fail is left out of the key
            try:
                pk = ThrPubkeyShare.from_bytes(net.send(member.party, server, pk_bytes), expect_round=round_,
                                               expect_sender=member.party)
                sh = ThrShamirShares.from_bytes(net.send(member.party, server, sh_bytes), expect_round=round_,
                                                expect_sender=member.party)
                if pk.epoch != epoch or sh.epoch != epoch:
                    raise MalformedMessageError("key generation messages for another epoch")
                share = unpack_polys(pk.share, (), p.primes, p.poly_degree, "THR_PUBKEY_SHARE")
                targets = {rcp for d, rcp, _ in sh.entries if d == j}
                if len(sh.entries) != len(roster) - 1 or targets != set(roster) - {j}:
                    raise MalformedMessageError(f"member {j} did not send one share to every other member")
            except SecFLError:
                continue
            seeds[j], pk_shares[j] = pk.seed, share
            sealed[j] = {rcp: blob for _, rcp, blob in sh.entries}
        if len(set(seeds.values())) > 1:
            raise ProtocolAbort("key generation: members derived different CRP seeds")
        dealers = tuple(sorted(pk_shares))
        if len(dealers) < t:
            raise InsufficientQuorumError(f"key generation: {len(dealers)} member(s) completed, the threshold is {t}")
        seed = seeds[dealers[0]]
        key = CollectivePublicKey(p, seed, collective_public_key([pk_shares[j] for j in dealers], p))
        key_msg = ThrCollectiveKey(round_, server, epoch, dealers, key.to_bytes()).to_bytes()
        # 0d forward + 0e collective key (to every roster member; non-dealers learn they hold nothing)
        for j in roster:
            member = self.members[j]
            if j in silent_shares:
                continue
            entries = tuple((d, j, sealed[d][j]) for d in dealers if d != j)
            fwd = ThrShamirShares(round_, server, epoch, entries).to_bytes()
            try:
                member.on_shares(net.send(server, member.party, fwd), round_)
            except SecFLError:
                pass  # the member cannot open a share: it will hold no key share
            try:
                member.on_collective_key(net.send(server, member.party, key_msg), round_)
            except SecFLError:
                pass  # it holds no key share under this key
        self._server_key = key
        self._key_blob = key.to_bytes()
        self.key_members = len(dealers)
        self.dealers = tuple(j for j in dealers if self.members[j].has_share)
        if len(self.dealers) < t:
            raise InsufficientQuorumError(f"key generation: {len(self.dealers)} member(s) hold a key share,"
                                          f" the threshold is {t}")
        self.keygen_seconds = time.perf_counter() - t0

    def server_key(self) -> CollectivePublicKey:
        if self._server_key is None:
            raise ProtocolAbort("no collective key (key generation did not run)")
        return self._server_key

    def provision_clients(self, spec: RoundSpec, net: Network) -> None:
        """Send the collective key to every client that has not received this key yet."""
        if self._key_blob is None:
            raise ProtocolAbort("no collective key to provision")
        server = server_id(0)
        blob: bytes | None = None
        for client in spec.clients:
            if client in self._provisioned:
                continue
            if blob is None:
                blob = ThrCollectiveKey(spec.round, server, self.epoch, self.dealers, self._key_blob).to_bytes()
            data = net.send(server, client, blob)
            msg = ThrCollectiveKey.from_bytes(data, expect_round=spec.round, expect_sender=server)
            if self._client_key is None:  # every client parses identical bytes; one shared parsed copy
                self._client_key = CollectivePublicKey.from_bytes(msg.key)
            elif msg.key != self._client_key.to_bytes():
                raise ProtocolAbort("clients received different collective keys")
            self._provisioned.add(client)

    def client_key(self, client: int) -> CollectivePublicKey:
        if client not in self._provisioned or self._client_key is None:
            raise ProtocolAbort(f"client {client} holds no collective key (not provisioned in setup)")
        return self._client_key
