"""Recorded protocol rounds, adversaries' views, and what an adversary can extract from them.

:func:`run_round` runs one complete round of a protocol over a recording
:class:`~secfl.protocols.network.Network` and keeps everything a later adversary may use: each
party's received messages (bytes), each client's input, the revealed aggregate, and a handle on
the parties' own secrets through :meth:`~secfl.protocols.base.ProtocolRound.party_state` (a
server's aggregator and private key, a quorum member's key share, a SecAgg client's state) —
state a corrupted party legitimately holds but never sends. Nothing here reads a protocol's
private attributes.

:func:`adversary_view` builds a coalition's view: the union of its members' received messages,
its clients' own inputs and weights, its members' secrets, and the revealed aggregate (which FL
broadcasts as the next global model, so every party learns it).

:func:`estimate_update` is the adversary's best guess of one client's update from that view,
using only what the view holds:

1. the protocol's own messages, parsed strictly, opened with whatever keys the coalition holds
   (plaintext: the ``PLAIN_UPDATE``; ``ckks``: the ciphertext, decrypted when a secret context
   is in the view or held by a corrupted key holder; ``ckks-threshold``: decrypted when t
   corrupted members' key shares are at hand; ``additive``: the sum of the shares the corrupted
   servers opened; ``secagg``: the masked input);
2. when the coalition holds every other client of the round: the aggregate minus their inputs
   (the subtraction attack);
3. material that does not open (ciphertexts, a strict subset of shares, a masked vector) is used
   **as given**: decoded with the protocol's public encoding (a masked vector or share is decoded
   as if it were the client's encoding) or, for ciphertext bytes, read as centred 32-bit words,
   and scaled to the revealed aggregate's norm (a public prior). Attacks then run on that, so a
   protected update shows chance-level leakage by measurement, not by assumption;
4. a view with nothing from the target leaves only the aggregate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfl.crypto.prg import derive_seed
from secfl.errors import ConfigError, SecFLError
from secfl.protocols import Protocol, ProtocolRound, Revealed, RoundSpec, make_protocol
from secfl.protocols.exposure import Coalition, Deployment, default_deployment
from secfl.protocols.network import Delivery, Network, member_id, server_id
from secfl.protocols.wire import Frame, MsgType

__all__ = [
    "RoundRecord",
    "Parties",
    "AdversaryView",
    "Estimate",
    "run_round",
    "deployment_of",
    "corrupt_parties",
    "adversary_view",
    "estimate_update",
    "bytes_as_vector",
]


@dataclass
class RoundRecord:
    """One recorded round: inputs, views, the revealed aggregate, and the parties' own state."""

    protocol: str
    options: dict[str, Any]
    inputs: dict[int, np.ndarray]  # what each client passed to protect() (float64)
    weights: dict[int, float]
    revealed: Revealed
    network: Network
    seconds: dict[str, float]
    deployment: Deployment
    proto: Protocol = field(repr=False)
    round: ProtocolRound = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.round.spec.dim)

    @property
    def clients(self) -> tuple[int, ...]:
        return tuple(self.round.spec.clients)


def run_round(protocol: str, inputs: Sequence[np.ndarray], weights: Sequence[float] | None = None, *,
              options: Mapping[str, Any] | None = None, seed: int | None = None) -> RoundRecord:
    """Run one complete round of ``protocol`` over a recording network (all parties in-process).

    Every client uploads; a client the protocol rejects raises (an attack experiment needs a
    complete round). ``seed`` fixes the non-secret randomness (dither); keys, masks and shares
    are fresh as always.
    """
    vectors = [np.asarray(v, dtype=np.float64) for v in inputs]
    if not vectors or vectors[0].ndim != 1:
        raise ConfigError("inputs: need one 1-D vector per client")
    n, dim = len(vectors), int(vectors[0].shape[0])
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"weights: expected {n}, got {len(w)}")
    opts = dict(options or {})
    proto = make_protocol(protocol, **opts)
    net = Network(record_views=True)
    round_seed = derive_seed(int(seed).to_bytes(32, "little"), "threats") if seed is not None else None
    seconds = {"setup": 0.0, "protect": 0.0, "aggregate": 0.0, "reveal": 0.0}
    t0 = time.perf_counter()
    rnd = proto.open_round(RoundSpec(0, tuple(range(n)), dim, seed=round_seed), net)
    t = time.perf_counter()
    rnd.setup()
    seconds["setup"] = time.perf_counter() - t
    for c in range(n):
        t = time.perf_counter()
        upload = rnd.protect(c, vectors[c], w[c])
        seconds["protect"] += time.perf_counter() - t
        t = time.perf_counter()
        rnd.receive(c, upload)
        seconds["aggregate"] += time.perf_counter() - t
    t = time.perf_counter()
    revealed = rnd.reveal()
    seconds["reveal"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    proto.close()
    if set(revealed.included) != set(range(n)):
        raise ConfigError(f"{protocol}: clients {sorted(set(range(n)) - set(revealed.included))} were dropped; "
                          "an attack experiment needs a complete round")
    return RoundRecord(protocol, opts, dict(enumerate(vectors)), dict(enumerate(w)), revealed, net, seconds,
                       deployment_of(protocol, proto, n), proto, rnd)


def deployment_of(protocol: str, proto: Protocol, clients: int) -> Deployment:
    """The :class:`Deployment` (servers, members, threshold) of a configured protocol."""
    opt = proto.options
    if protocol == "additive":
        return Deployment(clients, servers=int(opt.servers))
    if protocol == "secagg":
        _, t = opt.graph_parameters(clients)
        return Deployment(clients, threshold=int(t))
    if protocol == "ckks-threshold":
        t, m = opt.quorum
        return Deployment(clients, members=int(m), threshold=int(t))
    return default_deployment(protocol, clients)


@dataclass(frozen=True)
class Parties:
    """Concrete corrupted party ids."""

    servers: tuple[int, ...] = ()
    clients: tuple[int, ...] = ()
    members: tuple[int, ...] = ()

    @property
    def all(self) -> frozenset[int]:
        return frozenset(self.servers + self.clients + self.members)


def corrupt_parties(record: RoundRecord, coalition: Coalition, target: int) -> Parties:
    """The party ids a coalition stands for in this round, placed where it helps the adversary:
    for ``secagg`` corrupted clients are the target's neighbours first."""
    s, c, m = coalition.resolve(record.deployment)
    others = [k for k in record.clients if k != target]
    if record.protocol == "secagg":
        graph = record.round.party_state(server_id(0)).get("graph", {})
        near = sorted(graph.get(target, ()))
        others = near + [k for k in others if k not in near]
    return Parties(tuple(server_id(j) for j in range(s)), tuple(others[:c]), tuple(member_id(j) for j in range(m)))


@dataclass(frozen=True)
class AdversaryView:
    """What a coalition holds after the round."""

    protocol: str
    target: int
    parties: Parties
    deliveries: tuple[Delivery, ...]  # every message any corrupted party received
    own_inputs: Mapping[int, tuple[np.ndarray, float]]  # corrupted clients' inputs and weights
    revealed: Revealed  # the aggregate (public in FL)
    dim: int
    secrets: Mapping[str, Any] = field(default_factory=dict, repr=False)  # corrupted parties' own keys

    def received(self, sender: int, recipient: int | None = None, kind: MsgType | None = None) -> list[Delivery]:
        out = []
        for d in self.deliveries:
            if d.sender != sender or (recipient is not None and d.recipient != recipient):
                continue
            if kind is not None and _kind(d.data) is not kind:
                continue
            out.append(d)
        return out

    def of_kind(self, kind: MsgType) -> list[Delivery]:
        return [d for d in self.deliveries if _kind(d.data) is kind]

    @property
    def view_bytes(self) -> int:
        return sum(len(d.data) for d in self.deliveries)


def _kind(data: bytes) -> MsgType | None:
    try:
        return Frame.from_bytes(data).type
    except SecFLError:
        return None


def adversary_view(record: RoundRecord, parties: Parties, target: int) -> AdversaryView:
    """The union of the corrupted parties' received messages plus their own inputs and secrets."""
    if target in parties.clients:
        raise ConfigError(f"the target client {target} cannot be part of the coalition attacking it")
    deliveries: list[Delivery] = []
    for p in sorted(parties.all):
        deliveries.extend(record.network.views.get(p, []))
    own = {c: (record.inputs[c], record.weights[c]) for c in parties.clients}
    return AdversaryView(record.protocol, target, parties, tuple(deliveries), own, record.revealed, record.dim,
                         _secrets(record, parties))


# ------------------------------------------------------------------------------------------
# the parties' own state (what a corrupted party holds without ever receiving it)


def _secrets(record: RoundRecord, parties: Parties) -> dict[str, Any]:
    """The corrupted parties' own state (``ProtocolRound.party_state``: keys, key shares,
    protocol-side objects), plus the round and protocol objects for their public parameters."""
    states = {p: st for p in parties.all if (st := record.round.party_state(p))}
    return {"states": states, "round": record.round, "proto": record.proto}


def _held(view: AdversaryView, key: str, among: tuple[int, ...] | None = None) -> dict[int, Any]:
    """``{party: state[key]}`` over the coalition's parties (or ``among`` them) that hold ``key``."""
    states = view.secrets.get("states", {})
    return {p: st[key] for p, st in states.items() if key in st and (among is None or p in among)}


# ------------------------------------------------------------------------------------------
# estimates


@dataclass(frozen=True)
class Estimate:
    """The adversary's best guess of the target's update.

    ``source``: where it came from (words). ``individual``: built from material specific to the
    target (its messages) rather than the aggregate alone. ``opened``: the protection was
    removed (decrypted, all shares summed, subtraction) — the guess is the update itself, up to
    the protocol's numerical error and any DP noise.
    """

    vector: np.ndarray
    source: str
    individual: bool
    opened: bool


def bytes_as_vector(data: bytes, dim: int) -> np.ndarray:
    """Bytes read as little-endian 32-bit words, centred and scaled to [-1, 1), tiled to ``dim``."""
    usable = len(data) - len(data) % 4
    if usable == 0:
        return np.zeros(dim)
    words = np.frombuffer(data[:usable], dtype="<u4").astype(np.float64)
    vec = (words - 2.0 ** 31) / 2.0 ** 31
    if vec.size < dim:
        vec = np.tile(vec, -(-dim // vec.size))
    return vec[:dim].copy()


def _as_given(vec: np.ndarray, view: AdversaryView) -> np.ndarray:
    """Scale an unopened guess to the revealed aggregate's norm (the only public scale)."""
    vec = np.nan_to_num(np.asarray(vec, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    norm = float(np.linalg.norm(vec))
    target = float(np.linalg.norm(view.revealed.mean))
    return vec * (target / norm) if norm > 0 else vec


def _subtraction(view: AdversaryView) -> np.ndarray | None:
    """(W·mean − Σ_k w_k x_k) / w_t over the coalition's clients, when they are all the others."""
    included = set(view.revealed.included)
    others = included - {view.target}
    if view.target not in included or not others <= set(view.own_inputs):
        return None
    total = float(view.revealed.total_weight)
    acc = total * np.asarray(view.revealed.mean, dtype=np.float64)
    w_rest = 0.0
    for c in others:
        x, w = view.own_inputs[c]
        acc = acc - w * x
        w_rest += w
    w_t = total - w_rest
    if not w_t > 0:
        return None
    return acc / w_t


Extractor = Callable[[AdversaryView], "Estimate | None"]


def _server_message(view: AdversaryView, kind: MsgType) -> bytes | None:
    got = view.received(view.target, server_id(0), kind)
    return got[0].data if got else None


def _plaintext(view: AdversaryView) -> Estimate | None:
    from secfl.protocols.plaintext import PlainUpdate

    data = _server_message(view, MsgType.PLAIN_UPDATE)
    if data is None:
        return None
    msg = PlainUpdate.from_bytes(data, expect_sender=view.target)
    return Estimate(np.asarray(msg.vector, dtype=np.float64), "PLAIN_UPDATE read by the server", True, True)


def _ckks(view: AdversaryView) -> Estimate | None:
    from secfl.crypto.ckks import CkksSecretContext
    from secfl.protocols.ckks import CkksSecretContextMessage, CkksUpdate, UploadForm
    from secfl.protocols.ckks_encoding import weight_factor

    data = _server_message(view, MsgType.CKKS_UPDATE)
    if data is None:
        return None
    msg = CkksUpdate.from_bytes(data, expect_sender=view.target)
    held = _held(view, "secret_context", view.parties.members)
    ctx = next(iter(held.values()), None)
    where = "the key holder's secret key"
    if ctx is None:
        for d in view.of_kind(MsgType.CKKS_SECRET_CONTEXT):
            ctx = CkksSecretContext.from_bytes(CkksSecretContextMessage.from_bytes(d.data).context)
            where = f"the secret context client {d.recipient} received"
            break
    if ctx is None:
        return Estimate(_as_given(bytes_as_vector(msg.ciphertexts, view.dim), view),
                        "CKKS ciphertext bytes as given (no key in the view)", True, False)
    pub = ctx.public()
    options = getattr(view.secrets.get("proto"), "options", None)
    seeded = getattr(options, "upload", None) == UploadForm.SEEDED
    c_w = weight_factor(options) if options is not None else 1.0
    cts = pub.ciphertexts_from_seeded_bytes(msg.ciphertexts) if seeded else pub.ciphertexts_from_bytes(msg.ciphertexts)
    values = ctx.decrypt(cts, view.dim + 1)
    return Estimate(values[:-1] / values[-1] * c_w, f"CKKS_UPDATE decrypted with {where}", True, True)


def _ckks_threshold(view: AdversaryView) -> Estimate | None:
    from secfl.crypto.threshold import combine, unpack_polys
    from secfl.protocols.ckks_threshold import ThrUpdate

    data = _server_message(view, MsgType.THR_UPDATE)
    if data is None:
        return None
    msg = ThrUpdate.from_bytes(data, expect_sender=view.target)
    shares = {m - member_id(0): share for m, share in _held(view, "key_share").items()}
    proto = view.secrets.get("proto")
    t = proto.options.quorum[0] if proto is not None else None
    if proto is None or t is None or len(shares) < t:
        return Estimate(_as_given(bytes_as_vector(msg.ciphertexts, view.dim), view),
                        f"ckks-threshold ciphertext bytes as given ({len(shares)} key share(s) in the coalition)",
                        True, False)
    p = proto.params
    cts = unpack_polys(msg.ciphertexts, (msg.count, 2), p.data_primes, p.poly_degree, "THR_UPDATE")
    active = sorted(shares)[:t]
    points = [j + 1 for j in active]
    partials = [shares[j].partial_decrypt(cts[:, 1], points, 0.0, flood=False) for j in active]
    values = proto.server_key().decode(combine(cts[:, 0], partials, p), view.dim + 1)
    return Estimate(values[:-1] / values[-1], f"THR_UPDATE decrypted with {t} corrupted members' key shares",
                    True, True)


def _additive(view: AdversaryView) -> Estimate | None:
    from secfl.protocols.additive import ShareKind

    servers = list(_held(view, "aggregator").values())
    rnd = view.secrets.get("round")
    messages = {d.recipient: d.data for d in view.of_kind(MsgType.ADD_SHARE) if d.sender == view.target}
    if not messages:
        return None
    if rnd is None or not servers:
        data = next(iter(messages.values()))
        return Estimate(_as_given(bytes_as_vector(data, view.dim), view),
                        "sealed ADD_SHARE bytes as given (no server key)", True, False)
    ring, encoder = rnd.ring, rnd.encoder
    total = ring.zeros(encoder.length(view.dim))
    opened = 0
    for srv in servers:
        share = messages.get(srv.id)
        if share is None:
            continue
        kind = ShareKind.VECTOR if srv.index == rnd.holder(view.target) else ShareKind.SEED
        k, plain = srv.open_share(view.target, share, kind)
        ring.add_(total, srv.share_vector(k, plain))
        opened += 1
    everyone = opened == rnd.servers
    try:
        vec, _, _ = encoder.decode(total, 1)
    except SecFLError:  # e.g. a weight code of 0: decode the rest with weight 1
        vec = encoder.quantizer.decode_sum(total[:-1], 1)
    if everyone:
        return Estimate(np.asarray(vec, dtype=np.float64), f"all {opened} shares opened and summed", True, True)
    return Estimate(_as_given(vec, view), f"{opened} of {rnd.servers} shares opened, decoded as given", True,
                    False)


def _secagg(view: AdversaryView) -> Estimate | None:
    from secfl.protocols.secagg import SaMaskedInput

    data = _server_message(view, MsgType.SA_MASKED_INPUT)
    if data is None:
        return None
    msg = SaMaskedInput.from_bytes(data, expect_sender=view.target)
    rnd = view.secrets.get("round")
    encoder = getattr(rnd, "encoder", None) if server_id(0) in view.parties.servers else None
    if encoder is None:
        return Estimate(_as_given(bytes_as_vector(msg.packed, view.dim), view), "masked input bytes as given",
                        True, False)
    y = encoder.ring.unpack(msg.packed, msg.length)
    try:
        unmasked = _secagg_unmask(view, y, encoder)
    except (SecFLError, ImportError, AttributeError, KeyError, ValueError):
        unmasked = None
    if unmasked is not None:
        vec, _, _ = encoder.decode(unmasked[0], 1)
        return Estimate(np.asarray(vec, dtype=np.float64), unmasked[1], True, True)
    try:
        vec, _, _ = encoder.decode(y, 1)
    except SecFLError:
        vec = encoder.quantizer.decode_sum(y[:-1], 1)
    return Estimate(_as_given(vec, view), "masked input decoded as given (mask key not recovered)", True, False)


def _secagg_unmask(view: AdversaryView, y: np.ndarray, encoder: Any) -> tuple[np.ndarray, str] | None:
    """Server + t corrupted neighbours of the target: rebuild its mask key s_u from the
    neighbours' Shamir shares, its self-mask seed b_u from the unmask answers the server received
    (the protocol hands it those), and remove every mask from the stored masked input."""
    from secfl.crypto.keys import PrivateKey, PublicKey
    from secfl.crypto.prg import SEED_BYTES
    from secfl.crypto.sharing import reconstruct_bytes
    from secfl.protocols.secagg import SaAdvertiseKeys, SaUnmaskResponse, add_masks, pair_seed

    rnd = view.secrets.get("round")
    colluders = _held(view, "client", view.parties.clients)
    server = view.secrets.get("states", {}).get(server_id(0))
    if rnd is None or server is None:
        return None
    u, t = view.target, int(rnd.t)
    graph, active = server["graph"], server["active"]  # the server built them
    near = [v for v in sorted(colluders) if v in graph.get(u, ())]
    if len(near) < t:
        return None
    rows = np.stack([colluders[v].open_share(u)[1] for v in near[:t]])
    s_u = PrivateKey.from_secret(reconstruct_bytes([v + 1 for v in near[:t]], rows, t, SEED_BYTES))
    s_pk = {}
    for d in view.of_kind(MsgType.SA_ADVERTISE_KEYS):
        adv = SaAdvertiseKeys.from_bytes(d.data)
        s_pk[adv.sender] = adv.s_public
    if s_u.public_key.raw != s_pk.get(u):
        return None
    b_points, b_rows = [], []
    for d in view.of_kind(MsgType.SA_UNMASK_RESPONSE):
        resp = SaUnmaskResponse.from_bytes(d.data)
        for w, row in zip(resp.survivors, resp.b_shares, strict=True):
            if w == u:
                b_points.append(resp.sender + 1)
                b_rows.append(row)
    if len(b_rows) < t:
        return None
    b_u = reconstruct_bytes(b_points[:t], np.stack(b_rows[:t]), t, SEED_BYTES)
    seeds = [(b_u, -1)]  # the client added +PRG(b_u)
    for v in sorted(graph[u] & active):  # it added +PRG(s_uv) for v > u, −PRG(s_uv) for v < u
        seeds.append((pair_seed(s_u, PublicKey(s_pk[v]), rnd.spec.round, u, v), -1 if u < v else 1))
    x = add_masks(encoder.ring, np.array(y, copy=True), seeds)
    return x, f"masked input unmasked: mask key rebuilt from {t} neighbours' shares, self-mask from the unmask step"


EXTRACTORS: dict[str, Extractor] = {
    "plaintext": _plaintext,
    "ckks": _ckks,
    "ckks-threshold": _ckks_threshold,
    "additive": _additive,
    "secagg": _secagg,
}


def estimate_update(view: AdversaryView) -> Estimate:
    """The adversary's best guess of the target's update (see the module docstring for the order)."""
    extractor = EXTRACTORS.get(view.protocol)
    from_messages = extractor(view) if extractor is not None else None
    if from_messages is not None and from_messages.opened:
        return from_messages
    sub = _subtraction(view)
    if sub is not None:
        return Estimate(sub, "aggregate minus the other clients' own updates (subtraction)", True, True)
    if from_messages is not None:
        return from_messages
    return Estimate(np.asarray(view.revealed.mean, dtype=np.float64), "the aggregate only", False, False)
