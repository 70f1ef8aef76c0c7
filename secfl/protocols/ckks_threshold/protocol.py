"""The ``ckks-threshold`` protocol object and its in-process round (the simulator's transport).

:class:`CkksThreshold` holds one :class:`ThresholdServer` (public material only), the quorum
members (:class:`QuorumMember`, each with only its own key share) and a
:class:`ThresholdClient` per client; :class:`_ThresholdRound` drives them through the four steps
of :class:`~secfl.protocols.base.ProtocolRound`, every message crossing the
:class:`~secfl.protocols.network.Network` as bytes, one message at a time as the spec numbers
them. ``RoundSpec.dropouts`` names the *member indices* silent before a stage (:data:`STAGES`).
Across sites :meth:`CkksThreshold.coordinator` drives the same parties stage by stage
(:mod:`.stages`). Clients that received identical key bytes share one parsed key (a simulation
shortcut on public material).
"""

from __future__ import annotations

import time
from typing import Any

from secfl.crypto.identity import IdentityKey, Roster
from secfl.crypto.threshold import CollectivePublicKey, ThresholdParams
from secfl.errors import ConfigError, ProtocolAbort, SecFLError
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.ckks_threshold.client import ThresholdClient
from secfl.protocols.ckks_threshold.member import QuorumMember
from secfl.protocols.ckks_threshold.options import CkksThresholdOptions, round_codec
from secfl.protocols.ckks_threshold.server import SERVER, ThresholdServer
from secfl.protocols.ckks_threshold.stages import ThresholdCoordinator
from secfl.protocols.network import MEMBER_BASE, Network, is_client, member_id
from secfl.protocols.parties import Party

__all__ = ["CkksThreshold", "STAGES"]

#: ``RoundSpec.dropouts`` stages; the values are quorum member indices that go silent before it.
STAGES = ("member_keygen", "member_shares", "member_decrypt", "member_partial")


class _ThresholdRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, proto: CkksThreshold) -> None:
        super().__init__(spec, net)
        opt = proto.options
        self._proto = proto
        self._opt = opt
        self._params = proto.params
        n = opt.quorum[1]
        unknown = sorted(set(spec.dropouts) - set(STAGES))
        if unknown:
            raise ConfigError(f"ckks-threshold dropout stages are {list(STAGES)} (member indices); unknown: {unknown}")
        for stage, who in spec.dropouts.items():
            outside = sorted(j for j in who if not 0 <= j < n)
            if outside:
                raise ConfigError(f"dropouts[{stage!r}] names members outside [0, {n}): {outside}")
        round_codec(opt, self._params, spec.dim, len(spec.clients))  # refuses an overflowing round now
        self._count = self._params.ciphertexts_for(spec.dim + 1)
        self._open = False
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
            if m.party == party:
                return m.state()
        return {}

    def _silent(self, stage: str) -> frozenset[int]:
        return frozenset(self.spec.dropouts.get(stage, frozenset()))

    # -- setup: key generation when needed, key to clients ---------------------------------------

    def setup(self) -> None:
        proto = self._proto
        if proto.needs_keygen(self._count):
            proto.keygen(self.spec.round, self.net, self._silent("member_keygen"), self._silent("member_shares"))
        proto.server_key()  # raises when there is none
        proto.server.open_round(self.spec.round, frozenset(self.spec.clients), self.spec.dim)
        proto.provision_clients(self.spec, self.net)
        self._open = True

    # -- client ------------------------------------------------------------------------------------

    def protect(self, client: int, update: Any, weight: float) -> Upload:
        if not self._open:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before protect()")
        data = self._proto.client(client).protect(self.spec.round, len(self.spec.clients), self.spec.dim,
                                                  update, weight)
        return Upload(((SERVER, data),))

    # -- server --------------------------------------------------------------------------------------

    def receive(self, client: int, upload: Upload) -> None:
        if not self._open:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before receive()")
        server = self._proto.server
        data = self.single_message(client, upload, server.accepted, SERVER)
        server.intake(client, data)

    # -- reveal --------------------------------------------------------------------------------------

    def reveal(self) -> Revealed:
        proto, rnd = self._proto, self.spec.round
        server = proto.server
        if not self._open or not server.accepted:
            raise ProtocolAbort(f"round {rnd}: no client update was accepted")
        t0 = time.perf_counter()
        # 2-3: announce; collect THR_READY
        request = server.decrypt_request()
        offline = set(self._opt.quorum_dropouts) | self._silent("member_decrypt")
        ready: list[int] = []
        for j in server.dealers:
            member = proto.members[j]
            delivered = self.net.send(SERVER, member.party, request)
            if j in offline:
                continue  # an offline member never answers
            try:
                reply = member.on_decrypt_request(delivered, rnd)
                if reply is not None and server.accept_ready(j, self.net.send(member.party, SERVER, reply)):
                    ready.append(j)
            except SecFLError:
                continue
        self.timings["poll"] = time.perf_counter() - t0
        # 4-5: fixed active sets, disjoint from earlier attempts
        member_seconds: dict[int, float] = {}
        silent = self._silent("member_partial")

        def ask(active: tuple[int, ...], request: bytes) -> dict[int, bytes | str]:
            out: dict[int, bytes | str] = {}
            for j in active:
                member = proto.members[j]
                delivered = self.net.send(SERVER, member.party, request)
                if j in silent:
                    continue
                try:
                    t1 = time.perf_counter()
                    reply = member.on_active_set(delivered, rnd, len(self.spec.clients))
                    member_seconds[j] = time.perf_counter() - t1
                    self.timings["partial_bytes"] = len(reply)
                    out[j] = self.net.send(member.party, SERVER, reply)
                except SecFLError as exc:  # refused: the member is absent
                    out[j] = f"{type(exc).__name__}: {exc}"
            return out

        active, partials = server.decrypt(ready, ask)
        self.timings["member_s"] = member_seconds
        self.active_set = active
        # combine and decode (SEAL's CKKSEncoder)
        t0 = time.perf_counter()
        out = server.reveal(active, partials)
        self.timings["combine"] = time.perf_counter() - t0
        self.error_bound = server.error_bound
        return out


class CkksThreshold(Protocol):
    """Threshold CKKS aggregation. Keys are generated in the first round and kept until the
    decryption budget (τ ciphertexts) would run out, then regenerated.

    Parties: :attr:`members` (:class:`QuorumMember`: its key share, the digests it decrypted),
    :attr:`server` (:class:`ThresholdServer`: the collective key, dealer set and decryption count,
    public material only), and a :class:`ThresholdClient` per client (:meth:`client`: the
    collective key parsed from the bytes it received). :meth:`coordinator` gives the server's
    stage sequence for other transports; :meth:`party` a fresh party for a site.
    """

    name = "ckks-threshold"
    summary = "CKKS under a collective key; t of n quorum members decrypt the aggregate (flooded partials)"
    reveals_to = "server as combiner, from t partial decryptions (no party holds the key)"
    Options = CkksThresholdOptions
    #: across sites every party needs its site's identity key and the federation roster
    needs_identities = True

    def __init__(self, options: CkksThresholdOptions | None = None) -> None:
        super().__init__(options)
        self.params: ThresholdParams = self.options.resolved_params()
        n = self.options.quorum[1]
        identities = {member_id(j): IdentityKey.generate() for j in range(n)}  # each member keeps its own
        #: the federation roster (public): every member's and client's identity key, as distributed
        #: out of band (here clients join it when first provisioned: :meth:`_enroll`)
        self.roster = Roster.of(identities)
        self.members = [QuorumMember(j, self.params, identities.pop(member_id(j)), self.roster,
                                     self.options.min_clients) for j in range(n)]
        self.server = ThresholdServer(self.options, self.params, self.roster)
        self._clients: dict[int, ThresholdClient] = {}
        self._shared: dict[bytes, CollectivePublicKey] = {}
        self._provisioned: set[int] = set()

    # the server's public state, as earlier versions exposed it
    @property
    def epoch(self) -> int:
        return self.server.epoch

    @property
    def dealers(self) -> tuple[int, ...]:
        """Members holding a key share of the current key (they can decrypt)."""
        return self.server.dealers

    @property
    def key_members(self) -> int:
        """Members whose secrets are in the current key (|D|: sizes the noise)."""
        return self.server.key_members

    @property
    def decryptions(self) -> int:
        """Ciphertexts decrypted under the current key (the server's count)."""
        return self.server.decryptions

    @property
    def keygen_seconds(self) -> float:
        """Seconds of the last key generation (all parties, sequentially simulated)."""
        return self.server.keygen_seconds

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _ThresholdRound(spec, net, self)

    def coordinator(self) -> ThresholdCoordinator:
        """The server's stage sequence across sites (holds public material only)."""
        return ThresholdCoordinator(self.options)

    def party(self, party_id: int, *, identity: IdentityKey | None = None, roster: Roster | None = None) -> Party:
        """A new party for a site: quorum member ``j`` for ``member_id(j)`` (with the site's
        identity key), else client ``party_id``; both check signatures against ``roster``."""
        n = self.options.quorum[1]
        if MEMBER_BASE <= party_id < MEMBER_BASE + n:
            return QuorumMember(party_id - MEMBER_BASE, self.params, identity, roster, self.options.min_clients)
        if is_client(party_id):
            return ThresholdClient(party_id, self.options, self.params, roster=roster, identity=identity)
        raise ConfigError(f"ckks-threshold has no party {party_id:#x}: clients are 0..2^31-1, members"
                          f" member_id(0..{n - 1})")

    def site_roles(self, site: int, sites: int) -> tuple[int, ...]:
        """Across sites, site j < n also plays quorum member j (n sites at least: a site playing
        two members would hold two key shares)."""
        if sites < self.options.quorum[1]:
            raise ConfigError(f"ckks-threshold with a quorum of n = {self.options.quorum[1]} members needs at least"
                              f" {self.options.quorum[1]} sites (one member each); this federation has {sites}")
        return (member_id(site),) if site < self.options.quorum[1] else ()

    def client(self, cid: int) -> ThresholdClient:
        got = self._clients.get(cid)
        if got is None or cid not in self._provisioned:
            raise ProtocolAbort(f"client {cid} holds no collective key (not provisioned in setup)")
        return got

    # -- key generation ---------------------------------------------------------------------------------

    def needs_keygen(self, count: int) -> bool:
        return self.server.needs_keygen(count)

    def keygen(self, round_: int, net: Network, silent_hello: frozenset[int] = frozenset(),
               silent_shares: frozenset[int] = frozenset()) -> None:
        """Run collective key generation (messages 0a–0e of the spec) through ``net``."""
        server = self.server
        self._provisioned = set()
        server.begin_keygen(round_)  # in-process the members start on their own: no request travels
        epoch = server.epoch
        # 0a hello
        for j, member in enumerate(self.members):
            if j in silent_hello:
                continue
            try:
                server.accept_hello(j, net.send(member.party, SERVER, member.hello(round_, epoch)))
            except SecFLError:
                continue  # a member whose hello fails is left out of this key
        # 0b roster; 0c / 0d dealing
        roster, ros_bytes = server.roster_message()
        for j in roster:
            member = self.members[j]
            delivered = net.send(SERVER, member.party, ros_bytes)
            if j in silent_shares:
                continue
            try:
                pk_bytes, sh_bytes = member.on_roster(delivered, round_)
            except SecFLError:
                continue  # the member refuses the roster: it deals nothing and is left out
            try:
                server.accept_dealing(j, net.send(member.party, SERVER, pk_bytes),
                                      net.send(member.party, SERVER, sh_bytes))
            except SecFLError:
                continue
        key_msg = server.dealing_done()
        # 0d forward + 0e collective key (to every roster member; non-dealers learn they hold nothing)
        for j in roster:
            member = self.members[j]
            if j in silent_shares:
                continue
            try:
                member.on_shares(net.send(SERVER, member.party, server.forward(j)), round_)
            except SecFLError:
                pass  # the member cannot open a share: it will hold no key share
            try:
                ack = member.on_collective_key(net.send(SERVER, member.party, key_msg), round_)
                server.accept_ack(j, net.send(member.party, SERVER, ack))
            except SecFLError:
                pass  # it holds no key share under this key
        server.finish_keygen()

    def server_key(self) -> CollectivePublicKey:
        if self.server.key is None:
            raise ProtocolAbort("no collective key (key generation did not run)")
        return self.server.key

    def provision_clients(self, spec: RoundSpec, net: Network) -> None:
        """Send the collective key to every client that has not received this key yet."""
        blob: bytes | None = None
        for c in spec.clients:
            if c in self._provisioned:
                continue
            if blob is None:
                blob = self.server.client_key_message(spec.round)
            if c not in self._clients:
                self._enroll([x for x in spec.clients if x not in self._clients])
            client = self._clients[c]
            client.accept_key(net.send(SERVER, c, blob), spec.round)
            self._provisioned.add(c)

    def _enroll(self, cids: list[int]) -> None:
        """New clients, each with its own identity key; their public keys join the roster every party holds."""
        identities = {cid: IdentityKey.generate() for cid in cids}
        self.roster = Roster({**self.roster.keys, **{c: k.public for c, k in identities.items()}})
        for m in self.members:
            m._roster = self.roster
        self.server.roster = self.roster
        for other in self._clients.values():
            other._roster = self.roster
        for cid, identity in identities.items():
            self._clients[cid] = ThresholdClient(cid, self.options, self.params, self._shared, self.roster, identity)

    def client_key(self, client: int) -> CollectivePublicKey:
        key = self.client(client).key
        if key is None:
            raise ProtocolAbort(f"client {client} holds no collective key (not provisioned in setup)")
        return key
