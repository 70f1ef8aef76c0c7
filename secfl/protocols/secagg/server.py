"""The ``secagg`` server: graph, ciphertext relay, running sum, reconstruction, unmasking.

It holds only what the spec lets the server see: public keys, the graph it chose, sealed share
pairs it relays unopened, masked inputs (folded into one running sum as they arrive), and — in
the unmask step — at most one kind of share per client: of ``b_u`` for clients whose masked input
arrived, of ``s_u`` for those whose did not.
"""

from __future__ import annotations

import numpy as np

from secfl.crypto.keys import PrivateKey, PublicKey
from secfl.crypto.prg import SEED_BYTES
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import reconstruct_bytes
from secfl.errors import (
    ConfigError,
    DuplicateSenderError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
)
from secfl.protocols.hosts import PartyHost
from secfl.protocols.network import server_id
from secfl.protocols.secagg.masks import UnmaskJob, unmask_job
from secfl.protocols.secagg.messages import (
    SaAdvertiseKeys,
    SaCheckedUnmaskRequest,
    SaConsistencyRequest,
    SaConsistencySignature,
    SaKeyRoster,
    SaMaskedInput,
    SaShareKeys,
    SaSharesForward,
    SaUnmaskRequest,
    SaUnmaskResponse,
)
from secfl.protocols.secagg.options import harary_graph

__all__ = ["SecAggServer"]


class SecAggServer:
    """The aggregation server's side: graph, ciphertext relay, running sum, reconstruction."""

    def __init__(self, rnd: int, k: int, t: int, ring: Ring, length: int) -> None:
        self.id = server_id(0)
        self.round = rnd
        self.k = k
        self.t = t
        self.ring = ring
        self.length = length
        self.c_pk: dict[int, bytes] = {}
        self.s_pk: dict[int, bytes] = {}
        self.graph: dict[int, frozenset[int]] = {}
        self.shared: dict[int, dict[int, bytes]] = {}  # u -> {v: sealed for v}
        self.active: set[int] = set()  # U2 after pruning: clients that may send masked input
        self.sum = ring.zeros(length)
        self.masked: set[int] = set()  # U3
        self.b_shares: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.s_shares: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.requested: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self.answered: set[int] = set()
        #: consistency check: client -> its signature of U3 (relayed to its neighbours unverified:
        #: they verify it against the roster)
        self.u3_signatures: dict[int, bytes] = {}
        self.excluded: dict[int, str] = {}
        #: each client's signature of its advertised keys (empty without a roster)
        self.signatures: dict[int, bytes] = {}

    # 0
    def on_advertise(self, client: int, data: bytes) -> None:
        if client in self.c_pk:
            raise DuplicateSenderError(f"client {client} already advertised keys")
        msg = SaAdvertiseKeys.from_bytes(data, expect_round=self.round, expect_sender=client)
        if msg.c_public in self.c_pk.values() or msg.s_public in self.s_pk.values():
            raise MalformedMessageError(f"client {client} advertised a public key another client already uses")
        PublicKey(msg.c_public).validate()
        PublicKey(msg.s_public).validate()
        self.c_pk[client] = msg.c_public
        self.s_pk[client] = msg.s_public
        self.signatures[client] = msg.signature

    def build_graph(self) -> None:
        nodes = sorted(self.c_pk)
        m = len(nodes)
        k = min(self.k, m - 1)
        if (k * m) % 2:
            k -= 1
        if k < self.t:
            raise InsufficientQuorumError(
                f"only {m} clients advertised keys: each would have {max(k, 0)} neighbours, fewer than the "
                f"threshold {self.t}"
            )
        self.k = k
        self.graph = harary_graph(nodes, k)

    def roster(self, u: int) -> bytes:
        peers = sorted(self.graph[u])
        keys = b"".join(self.c_pk[v] + self.s_pk[v] for v in peers)
        sigs = b"".join(self.signatures[v] for v in peers)
        if len(sigs) != 64 * len(peers):
            sigs = b""  # not every neighbour signed (no roster in this federation)
        return SaKeyRoster(self.round, self.id, self.t, tuple(peers), keys, sigs).to_bytes()

    # 1
    def on_share_keys(self, client: int, data: bytes) -> None:
        if client not in self.graph:
            raise MalformedMessageError(f"client {client} did not advertise keys in round {self.round}")
        if client in self.shared:
            raise DuplicateSenderError(f"client {client} already shared its keys")
        msg = SaShareKeys.from_bytes(data, expect_round=self.round, expect_sender=client)
        if set(msg.parties) != set(self.graph[client]):
            raise MalformedMessageError(f"client {client} must send one share to each of its {self.k} neighbours")
        self.shared[client] = dict(msg.items())

    def prune(self) -> None:
        """Keep the clients that shared keys and still have ≥ t neighbours that did too."""
        alive = set(self.shared)
        changed = True
        while changed:
            changed = False
            for u in sorted(alive):
                holders = len(self.graph[u] & alive)
                if holders < self.t:
                    alive.discard(u)
                    self.excluded[u] = (
                        f"excluded after share_keys: only {holders} of its neighbours shared keys, fewer than the "
                        f"threshold {self.t}"
                    )
                    changed = True
        self.active = alive

    def forward(self, v: int) -> bytes:
        senders = sorted(self.graph[v] & self.active)
        blob = b"".join(self.shared[u][v] for u in senders)
        return SaSharesForward(self.round, self.id, tuple(senders), blob).to_bytes()

    # 2
    def on_masked_input(self, client: int, data: bytes) -> None:
        if client in self.masked:
            raise DuplicateSenderError(f"client {client} already sent its masked input")
        msg = SaMaskedInput.from_bytes(data, expect_round=self.round, expect_sender=client)
        if client not in self.active:
            raise MalformedMessageError(f"client {client} is not in the active set of round {self.round}")
        if msg.modulus_bits != self.ring.bits or msg.length != self.length:
            raise MalformedMessageError(
                f"SA_MASKED_INPUT: {msg.length} elements mod 2**{msg.modulus_bits}, expected {self.length} "
                f"mod 2**{self.ring.bits}"
            )
        y = self.ring.unpack(msg.packed, self.length, what="SA_MASKED_INPUT")
        self.ring.add_(self.sum, y)
        self.masked.add(client)

    # 3
    @property
    def dropped(self) -> set[int]:
        return self.active - self.masked

    def consistency_request(self) -> bytes:
        """The same request for every client of U3: U3 itself."""
        return SaConsistencyRequest(self.round, self.id, tuple(sorted(self.masked))).to_bytes()

    def on_consistency(self, v: int, data: bytes) -> None:
        if v not in self.masked:
            raise MalformedMessageError(f"client {v} is not in U3 of round {self.round}")
        if v in self.u3_signatures:
            raise DuplicateSenderError(f"client {v} already signed U3")
        self.u3_signatures[v] = SaConsistencySignature.from_bytes(data, expect_round=self.round,
                                                                  expect_sender=v).signature

    def unmask_request(self, v: int, *, checked: bool = False) -> bytes:
        survivors = frozenset(self.graph[v] & self.masked)
        dropped = frozenset(self.graph[v] & self.dropped)
        self.requested[v] = (survivors, dropped)
        if checked:
            signers = tuple(sorted(u for u in self.graph[v] if u in self.u3_signatures))
            return SaCheckedUnmaskRequest(self.round, self.id, tuple(sorted(survivors)), tuple(sorted(dropped)),
                                          tuple(sorted(self.masked)), signers,
                                          b"".join(self.u3_signatures[u] for u in signers)).to_bytes()
        return SaUnmaskRequest(self.round, self.id, tuple(sorted(survivors)), tuple(sorted(dropped))).to_bytes()

    def on_unmask_response(self, v: int, data: bytes) -> None:
        if v in self.answered:
            raise DuplicateSenderError(f"client {v} already answered the unmask request")
        if v not in self.requested:
            raise MalformedMessageError(f"client {v} was not asked to unmask")
        msg = SaUnmaskResponse.from_bytes(data, expect_round=self.round, expect_sender=v)
        want_b, want_s = self.requested[v]
        if not set(msg.survivors) <= want_b or not set(msg.dropped) <= want_s:
            raise MalformedMessageError(f"client {v} answered with shares that were not requested")
        self.answered.add(v)
        for u, row in zip(msg.survivors, msg.b_shares, strict=True):
            self.b_shares.setdefault(u, []).append((v + 1, row))
        for u, row in zip(msg.dropped, msg.s_shares, strict=True):
            self.s_shares.setdefault(u, []).append((v + 1, row))

    def _reconstruct(self, u: int, pool: dict[int, list[tuple[int, np.ndarray]]], what: str) -> bytes:
        got = pool.get(u, [])
        if len(got) < self.t:
            raise InsufficientQuorumError(
                f"round {self.round}: only {len(got)} of client {u}'s neighbours returned a share of its {what}, "
                f"fewer than the threshold {self.t}; the round cannot be unmasked"
            )
        xs = [x for x, _ in got[: self.t]]
        try:
            return reconstruct_bytes(xs, np.stack([row for _, row in got[: self.t]]), self.t, SEED_BYTES)
        except MalformedMessageError as exc:
            raise ProtocolAbort(f"round {self.round}: client {u}'s {what} shares are inconsistent: {exc}") from None

    def unmask(self, host: PartyHost | None = None) -> np.ndarray:
        """Remove every mask; returns ``Σ_{u ∈ U3} x_u`` mod ``2**k``.

        The mask regeneration is spread over ``host``'s workers (the server's own helpers); the
        reconstructed secrets go only to them."""
        # check the quorum of every client first, so an abort happens before any expensive work
        for u in sorted(self.masked):
            if len(self.b_shares.get(u, [])) < self.t:
                self._reconstruct(u, self.b_shares, "self-mask seed")
        for u in sorted(self.dropped):
            if len(self.s_shares.get(u, [])) < self.t:
                self._reconstruct(u, self.s_shares, "mask key")
        self_seeds = [self._reconstruct(u, self.b_shares, "self-mask seed") for u in sorted(self.masked)]
        dropped: list[tuple[int, bytes, list[tuple[int, bytes]]]] = []
        for u in sorted(self.dropped):
            secret = self._reconstruct(u, self.s_shares, "mask key")
            try:
                sk = PrivateKey.from_secret(secret)
            except ConfigError as exc:
                raise ProtocolAbort(f"client {u}'s mask key could not be rebuilt: {exc}") from None
            if sk.public_key.raw != self.s_pk[u]:
                raise ProtocolAbort(f"client {u}'s reconstructed mask key does not match its advertised public key")
            dropped.append((u, secret, [(v, self.s_pk[v]) for v in sorted(self.graph[u] & self.masked)]))
        helpers = 1 if host is None else host.processes
        jobs: list[UnmaskJob] = [
            (self.ring, self.length, self.round, self_seeds[i::helpers], dropped[i::helpers]) for i in range(helpers)
        ]
        parts = [unmask_job(j) for j in jobs] if host is None else host.run(unmask_job, jobs)
        total = np.array(self.sum, copy=True)
        for part in parts:
            self.ring.add_(total, part)
        return total

