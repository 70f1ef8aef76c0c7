"""The ``ckks-threshold`` server: relay, aggregator and combiner, holding public material only.

Across rounds it keeps the collective public key, the epoch, the members holding a key share and
the count of ciphertexts decrypted under the key; during key generation it relays the members'
Shamir shares, which are sealed for their recipients (it cannot open them). Each round it parses
every upload strictly and adds it into one running sum (no upload is kept), announces the
aggregate to the members, fixes active sets, checks each partial decryption against the aggregate
and active set, and combines t of them. The in-process round and the stage sequence across sites
(:mod:`.stages`) drive the same methods; only the way bytes reach the members differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from secfl.crypto.identity import Roster
from secfl.crypto.keys import PublicKey
from secfl.crypto.threshold import (
    CollectivePublicKey,
    ThresholdParams,
    add_into,
    ciphertext_digests,
    collective_public_key,
    combine,
    pack_polys,
    unpack_polys,
)
from secfl.errors import (
    ConfigError,
    DuplicateSenderError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.protocols.base import Revealed
from secfl.protocols.ckks_encoding import SlotCodec
from secfl.protocols.ckks_threshold.messages import (
    ThrActiveSet,
    ThrCollectiveKey,
    ThrDecryptRequest,
    ThrKeyAck,
    ThrKeygenRequest,
    ThrMemberHello,
    ThrPartialDecryption,
    ThrPubkeyShare,
    ThrReady,
    ThrRoster,
    ThrShamirShares,
    ThrUpdate,
    aggregate_digest,
    upload_signed,
)
from secfl.protocols.ckks_threshold.options import CkksThresholdOptions, round_codec
from secfl.protocols.network import member_id, server_id

__all__ = ["ThresholdServer", "SERVER", "AskPartials"]

SERVER = server_id(0)

#: ``ask(active, THR_ACTIVE_SET bytes) -> {member index: reply bytes, or why it failed}``; a member
#: absent from the result went silent.
AskPartials = Callable[[tuple[int, ...], bytes], Mapping[int, "bytes | str"]]


@dataclass
class _Keygen:
    """The server's view of one key generation (public material and sealed blobs only)."""

    epoch: int
    round: int
    started: float
    hellos: dict[int, ThrMemberHello] = field(default_factory=dict)
    roster: tuple[int, ...] = ()
    seeds: dict[int, bytes] = field(default_factory=dict)
    pk_shares: dict[int, np.ndarray] = field(default_factory=dict)
    sealed: dict[int, dict[int, bytes]] = field(default_factory=dict)
    dealers: tuple[int, ...] = ()
    key: CollectivePublicKey | None = None
    holders: set[int] = field(default_factory=set)
    key_signatures: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Round:
    """This round's running sum and what was announced to the members."""

    round: int
    participants: frozenset[int]
    dim: int
    count: int
    codec: SlotCodec
    acc: np.ndarray
    accepted: set[int] = field(default_factory=set)
    #: each accepted client's packed c_1 and its signature: the members' evidence
    evidence: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    included: tuple[int, ...] = ()
    digest: bytes = b""


class ThresholdServer:
    """The server's state. Every input is bytes from a party; every secret it relays is sealed."""

    def __init__(self, options: CkksThresholdOptions, params: ThresholdParams, roster: Roster | None = None) -> None:
        self._opt = options
        #: the federation roster (public), if the server holds it: forged uploads are dropped at intake
        self.roster = roster
        self.params = params
        self.epoch = 0
        #: members holding a key share of the current key (they can decrypt)
        self.dealers: tuple[int, ...] = ()
        #: members whose secrets are in the current key (|D|: sizes the noise)
        self.key_members = 0
        #: ciphertexts decrypted under the current key (the server's count)
        self.decryptions = 0
        self.key: CollectivePublicKey | None = None
        self.key_blob: bytes | None = None
        #: (member, signature of the key) from every key-share holder's ack: clients check them
        self.key_signatures: tuple[tuple[int, bytes], ...] = ()
        #: seconds of the last key generation (all parties, as driven)
        self.keygen_seconds = 0.0
        #: bound on |revealed mean − exact weighted mean| per coordinate, set by :meth:`reveal`
        self.error_bound: float | None = None
        self._kg: _Keygen | None = None
        self._round: _Round | None = None

    # -- key generation ---------------------------------------------------------------------------------

    def needs_keygen(self, count: int) -> bool:
        if self.key is None:
            return True
        if count > self.params.max_decryptions:
            raise ConfigError(f"a round needs {count} decryptions, more than max_decryptions"
                              f" = {self.params.max_decryptions} per key")
        return self.decryptions + count > self.params.max_decryptions

    def begin_keygen(self, rnd: int) -> bytes:
        """Forget the current key and start key generation ``epoch + 1``: ``THR_KEYGEN_REQUEST``."""
        self.epoch += 1
        self.key, self.key_blob, self.dealers, self.decryptions = None, None, (), 0
        self._kg = _Keygen(self.epoch, rnd, time.perf_counter())
        return ThrKeygenRequest(rnd, SERVER, self.epoch).to_bytes()

    def _keygen(self) -> _Keygen:
        if self._kg is None:
            raise ProtocolAbort("no key generation in progress")
        return self._kg

    def accept_hello(self, j: int, data: bytes) -> None:
        """0a ``THR_MEMBER_HELLO`` from member ``j`` (a member whose hello fails is left out)."""
        kg = self._keygen()
        msg = ThrMemberHello.from_bytes(data, expect_round=kg.round, expect_sender=member_id(j))
        PublicKey(msg.public_key).validate()
        if msg.epoch != kg.epoch:
            raise MalformedMessageError(f"member {j}: hello for key generation {msg.epoch}, this is {kg.epoch}")
        kg.hellos[j] = msg

    def roster_message(self) -> tuple[tuple[int, ...], bytes]:
        """0b ``THR_ROSTER`` for every member that said hello (fewer than t: InsufficientQuorumError)."""
        kg = self._keygen()
        t = self._opt.quorum[0]
        roster = tuple(sorted(kg.hellos))
        if len(roster) < t:
            raise InsufficientQuorumError(f"key generation: {len(roster)} member(s) answered, the threshold is {t}")
        kg.roster = roster
        ros = ThrRoster(kg.round, SERVER, kg.epoch, t, self.params.to_bytes(), roster,
                        b"".join(kg.hellos[j].public_key for j in roster), b"".join(kg.hellos[j].nonce for j in roster),
                        b"".join(kg.hellos[j].signature for j in roster))
        return roster, ros.to_bytes()

    def accept_dealing(self, j: int, pubkey_share: bytes, shamir_shares: bytes) -> None:
        """0c ``THR_PUBKEY_SHARE`` and 0d ``THR_SHAMIR_SHARES`` from roster member ``j``, parsed
        strictly; a member whose messages fail is left out of the key (atomic: all or nothing)."""
        kg, p = self._keygen(), self.params
        if j not in kg.roster:
            raise MalformedMessageError(f"member {j} is not in the roster")
        party = member_id(j)
        pk = ThrPubkeyShare.from_bytes(pubkey_share, expect_round=kg.round, expect_sender=party)
        sh = ThrShamirShares.from_bytes(shamir_shares, expect_round=kg.round, expect_sender=party)
        if pk.epoch != kg.epoch or sh.epoch != kg.epoch:
            raise MalformedMessageError("key generation messages for another epoch")
        share = unpack_polys(pk.share, (), p.primes, p.poly_degree, "THR_PUBKEY_SHARE")
        targets = {rcp for d, rcp, _ in sh.entries if d == j}
        if len(sh.entries) != len(kg.roster) - 1 or targets != set(kg.roster) - {j}:
            raise MalformedMessageError(f"member {j} did not send one share to every other member")
        kg.seeds[j], kg.pk_shares[j] = pk.seed, share
        kg.sealed[j] = {rcp: blob for _, rcp, blob in sh.entries}

    def dealing_done(self) -> bytes:
        """The dealers D and the collective key ``(Σ_D b_i, a)``: 0e ``THR_COLLECTIVE_KEY`` for
        the members."""
        kg, p, t = self._keygen(), self.params, self._opt.quorum[0]
        if len(set(kg.seeds.values())) > 1:
            raise ProtocolAbort("key generation: members derived different CRP seeds")
        dealers = tuple(sorted(kg.pk_shares))
        if len(dealers) < t:
            raise InsufficientQuorumError(f"key generation: {len(dealers)} member(s) completed, the threshold is {t}")
        kg.dealers = dealers
        kg.key = CollectivePublicKey(p, kg.seeds[dealers[0]],
                                     collective_public_key([kg.pk_shares[j] for j in dealers], p))
        return ThrCollectiveKey(kg.round, SERVER, kg.epoch, dealers, kg.key.to_bytes()).to_bytes()

    def forward(self, j: int) -> bytes:
        """0d forwarded: ``THR_SHAMIR_SHARES`` with the sealed shares every dealer addressed to ``j``."""
        kg = self._keygen()
        entries = tuple((d, j, kg.sealed[d][j]) for d in kg.dealers if d != j)
        return ThrShamirShares(kg.round, SERVER, kg.epoch, entries).to_bytes()

    def accept_ack(self, j: int, data: bytes) -> None:
        """``THR_KEY_ACK`` from member ``j``: whether it formed a key share of this key."""
        kg = self._keygen()
        msg = ThrKeyAck.from_bytes(data, expect_round=kg.round, expect_sender=member_id(j))
        if kg.key is None or msg.epoch != kg.epoch or msg.key_id != kg.key.key_id:
            raise MalformedMessageError(f"member {j}: acknowledged another key")
        if msg.holds_share and j in kg.dealers:
            kg.holders.add(j)
            kg.key_signatures[j] = msg.signature

    def finish_keygen(self) -> None:
        """Adopt the key; the members holding a share are those that acknowledged one."""
        kg, t = self._keygen(), self._opt.quorum[0]
        if kg.key is None:
            raise ProtocolAbort("key generation: no collective key was formed")
        self._kg = None
        self.key, self.key_blob = kg.key, kg.key.to_bytes()
        self.key_members = len(kg.dealers)
        self.dealers = tuple(j for j in kg.dealers if j in kg.holders)
        self.key_signatures = tuple((j, kg.key_signatures[j]) for j in self.dealers)
        if len(self.dealers) < t:
            raise InsufficientQuorumError(f"key generation: {len(self.dealers)} member(s) hold a key share,"
                                          f" the threshold is {t}")
        self.keygen_seconds = time.perf_counter() - kg.started

    def client_key_message(self, rnd: int) -> bytes:
        """``THR_COLLECTIVE_KEY`` for clients (public)."""
        if self.key_blob is None:
            raise ProtocolAbort("no collective key to provision")
        return ThrCollectiveKey(rnd, SERVER, self.epoch, self.dealers, self.key_blob, self.key_signatures).to_bytes()

    # -- aggregation ------------------------------------------------------------------------------------

    def open_round(self, rnd: int, participants: frozenset[int], dim: int) -> None:
        if self.key is None:
            raise ProtocolAbort("no collective key (key generation did not run)")
        p = self.params
        codec = round_codec(self._opt, p, dim, len(participants))
        count = p.ciphertexts_for(dim + 1)
        acc = np.zeros((count, 2, len(p.data_primes), p.poly_degree), dtype=np.int64)
        self._round = _Round(rnd, frozenset(participants), dim, count, codec, acc)

    def _state(self) -> _Round:
        if self._round is None or self.key is None:
            raise ProtocolAbort("setup() must run before receive()")
        return self._round

    @property
    def accepted(self) -> set[int]:
        return set() if self._round is None else self._round.accepted

    def intake(self, client: int, data: bytes) -> None:
        """Parse one ``THR_UPDATE`` strictly and add it into the running sum (atomically)."""
        st = self._state()
        if client not in st.participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {st.round}")
        if client in st.accepted:
            raise DuplicateSenderError(f"client {client} already contributed to round {st.round}")
        msg = ThrUpdate.from_bytes(data, expect_round=st.round, expect_sender=client)
        if self.key is None or msg.key_id != self.key.key_id:
            raise MalformedMessageError(f"client {client}: ciphertexts under another key")
        if msg.count != st.count:
            raise MalformedMessageError(f"client {client}: {msg.count} ciphertexts, expected {st.count}")
        p = self.params
        batch = unpack_polys(msg.ciphertexts, (st.count, 2), p.data_primes, p.poly_degree, "THR_UPDATE")
        c1 = pack_polys(batch[:, 1], p.data_primes)
        if self.roster is not None:  # the members check it anyway; the server drops a forgery early
            self.roster.verify(client, upload_signed(st.round, client, msg.key_id, msg.count, c1), msg.signature,
                               f"client {client}'s upload")
        add_into(st.acc, batch, p.data_primes)  # only after the whole upload parsed: atomic
        st.accepted.add(client)
        st.evidence[client] = (c1, msg.signature)

    # -- decryption -------------------------------------------------------------------------------------

    def decrypt_request(self) -> bytes:
        """2 ``THR_DECRYPT_REQUEST``: the included clients and one digest per ciphertext."""
        st = self._state()
        if not st.accepted or self.key is None:
            raise ProtocolAbort(f"round {st.round}: no client update was accepted")
        st.included = tuple(sorted(st.accepted))
        digests = ciphertext_digests(st.acc[:, 1], self.key.key_id)
        st.digest = aggregate_digest(digests)
        return ThrDecryptRequest(st.round, SERVER, self.key.key_id, st.included, tuple(digests)).to_bytes()

    def accept_ready(self, j: int, data: bytes) -> bool:
        """3 ``THR_READY`` from member ``j``: True when it names this key and aggregate."""
        st = self._state()
        got = ThrReady.from_bytes(data, expect_round=st.round, expect_sender=member_id(j))
        return self.key is not None and got.key_id == self.key.key_id and got.digest == st.digest

    def decrypt(self, ready: list[int], ask: AskPartials) -> tuple[tuple[int, ...], dict[int, np.ndarray]]:
        """4–5: active sets of t ready members, disjoint from earlier attempts, until all t answer
        with a partial that fits; returns (active set, partials). Raises
        :class:`InsufficientQuorumError` (nothing decoded) when fewer than t untried members remain."""
        st, p, t = self._state(), self.params, self._opt.quorum[0]
        if self.key is None or not st.digest:
            raise ProtocolAbort(f"round {st.round}: decrypt_request() must come first")
        c1_blob = pack_polys(st.acc[:, 1], p.data_primes)
        if len(ready) >= t:
            self.decryptions += st.count  # each member spends these at most once, in one attempt
        asked: set[int] = set()
        failures: list[str] = []
        while True:
            candidates = [j for j in ready if j not in asked]
            if len(candidates) < t:
                detail = "; ".join(failures) or "no earlier attempt"
                raise InsufficientQuorumError(
                    f"round {st.round}: {len(candidates)} member(s) ready to decrypt (of {len(ready)} ready,"
                    f" {len(self.dealers)} holding shares), the threshold is {t}; nothing was decoded ({detail})")
            active = tuple(candidates[:t])
            asked.update(active)
            request = ThrActiveSet(st.round, SERVER, self.key.key_id, active, st.included, st.digest, st.count,
                                   c1_blob, b"".join(st.evidence[c][1] for c in st.included),
                                   b"".join(st.evidence[c][0] for c in st.included)).to_bytes()
            replies = ask(active, request)
            partials: dict[int, np.ndarray] = {}
            for j in active:
                got = replies.get(j)
                if got is None:
                    failures.append(f"member {j} went silent")
                elif isinstance(got, str):
                    failures.append(f"member {j}: {got}")
                else:
                    try:
                        partials[j] = self.parse_partial(j, got, active)
                    except SecFLError as exc:  # a partial that does not fit: the member is absent
                        failures.append(f"member {j}: {type(exc).__name__}: {exc}")
            if len(partials) == t:
                return active, partials

    def parse_partial(self, j: int, data: bytes, active: tuple[int, ...]) -> np.ndarray:
        st, p = self._state(), self.params
        msg = ThrPartialDecryption.from_bytes(data, expect_round=st.round, expect_sender=member_id(j))
        if self.key is None or msg.key_id != self.key.key_id:
            raise MalformedMessageError(f"member {j}: partial decryption under another key")
        if msg.digest != st.digest or msg.active != active:
            raise MalformedMessageError(f"member {j}: partial decryption for another ciphertext or active set")
        return unpack_polys(msg.partial, (st.count,), p.data_primes, p.poly_degree, "THR_PARTIAL_DECRYPTION")

    def reveal(self, active: tuple[int, ...], partials: Mapping[int, np.ndarray]) -> Revealed:
        """Combine ``c_0`` and the t partials, decode with SEAL's CKKSEncoder: the round's outcome."""
        st, p, t = self._state(), self.params, self._opt.quorum[0]
        if self.key is None:
            raise ProtocolAbort("no collective key")
        plain = combine(st.acc[:, 0], [partials[j] for j in active], p)
        values = self.key.decode(plain, st.dim + 1)
        bound = p.sum_error_bound(len(st.participants), self.key_members, t, self._opt.max_abs())
        mean, weight, self.error_bound = st.codec.decode(values, bound, st.round)
        dropped = tuple(sorted(st.participants - set(st.included)))
        return Revealed(mean, weight, st.included, dropped)
