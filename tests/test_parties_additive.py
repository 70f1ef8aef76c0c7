"""``additive`` across sites (issue 11, part 1): the coordinator (aggregation server 0) over the
in-process LocalTransport, with one party object per site (clients and aggregation servers
1..S−1, each built by ``proto.party``): the plaintext weighted mean within the stated bound, the
same integer sum as the in-process round, client dropouts and tampered uploads costing only
their sender, a silent or misbehaving aggregation server aborting only its round, and a
coordinator that relays shares it cannot open."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from secfl.crypto.keys import PublicKey, agree, open_sealed
from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.additive import (
    STAGES,
    AddIncludedSet,
    AdditiveAggregator,
    AdditiveClient,
    AddShare,
    AddShareBatch,
    AddUpload,
    ShareKind,
)
from secfl.protocols.additive.options import KDF_LABEL, dither
from secfl.protocols.dp_encoding import round_encoder
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import LocalTransport, RoundRequest
from secfl.protocols.wire import Frame, MsgType

SEED = b"\x07" * 32
P_VALUE = 1e-6


def _sites(proto, clients):
    """One party object per party id, each built on its own (as a separate site would)."""
    servers = [server_id(j) for j in range(1, proto.options.servers)]
    return {pid: proto.party(pid) for pid in (*clients, *servers)}


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)  # test data only
    return rng.uniform(-1, 1, size=(n, d)), rng.integers(1, 200, size=n).astype(float)


def _reference(xs, ws, keep):
    keep = list(keep)
    return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()


def _feed(parties, clients, rnd, xs, ws):
    for c in clients:
        parties[c].set_input(rnd, xs[c], ws[c])


def _spec(rnd, clients, d):
    return RoundSpec(rnd, tuple(clients), d, seed=SEED)


def _encoder(proto, n):
    return round_encoder(proto.options, n, None)


def _codes(encoder, rnd, xs, ws, clients):
    """The integer sum the servers must reveal (same public dither as the clients)."""
    total = encoder.ring.zeros(encoder.length(xs.shape[1]))
    for c in clients:
        encoder.ring.add_(total, encoder.encode(xs[c], ws[c], dither(SEED, rnd, c)))
    return total


@pytest.mark.parametrize("servers", [2, 3])
def test_stage_sequence_two_rounds_with_a_client_dropout(servers):
    proto = make_protocol("additive", servers=servers)
    coord = proto.coordinator()
    clients = tuple(range(6))
    parties = _sites(proto, clients)
    net = Network(record_views=True)
    for rnd, silent in ((0, {}), (1, {"additive.upload": {2}})):
        xs, ws = _data(6, 400, seed=rnd)
        _feed(parties, clients, rnd, xs, ws)
        out = coord.run_round(_spec(rnd, clients, 400), LocalTransport(net, parties, silent=silent))
        keep = [c for c in clients if c not in silent.get("additive.upload", ())]
        assert out.included == tuple(keep) and out.dropped == tuple(sorted(set(clients) - set(keep)))
        assert np.max(np.abs(out.mean - _reference(xs, ws, keep))) <= coord.error_bound
        assert out.total_weight == pytest.approx(ws[keep].sum(), rel=1e-3)
        if silent:
            assert "simulated dropout" in coord.dropped[2]
    # every stage ran, in order, through the transport (server 0 is the coordinator itself)
    seen = [Frame.from_bytes(d.data).type for d in net.views[server_id(1)]]
    assert seen[:4] == [MsgType.ROUND_REQUEST, MsgType.ADD_SHARE_BATCH, MsgType.ADD_SHARE_BATCH,
                        MsgType.ADD_INCLUDED_SET]
    assert STAGES == ("additive.keys", "additive.upload", "additive.seeds", "additive.vectors", "additive.reveal")


def test_across_sites_reveals_the_same_integer_sum_as_the_in_process_round():
    proto = make_protocol("additive", servers=3)
    clients = (0, 1, 2, 3, 4)
    xs, ws = _data(5, 300, seed=4)
    rnd = proto.open_round(_spec(7, clients, 300), Network())
    rnd.setup()
    for c in clients:
        rnd.receive(c, rnd.protect(c, xs[c], ws[c]))
    local = rnd.reveal()
    coord = proto.coordinator()
    parties = _sites(proto, clients)
    _feed(parties, clients, 7, xs, ws)
    out = coord.run_round(_spec(7, clients, 300), LocalTransport(Network(), parties))
    assert np.array_equal(coord.integer_sum, rnd.integer_sum)
    assert np.array_equal(coord.integer_sum, _codes(rnd.encoder, 7, xs, ws, clients))
    assert np.array_equal(out.mean, local.mean) and out.included == local.included


def _reframe(msg_bytes, mutate):
    frame = Frame.from_bytes(msg_bytes)
    payload = bytearray(frame.payload)
    mutate(payload)
    return Frame(frame.type, frame.round, frame.sender, bytes(payload)).to_bytes()


def _flip_share(upload_bytes, j):
    """Flip one byte inside the sealed share for server j (frames re-built: only AES-GCM can tell)."""
    up = AddUpload.from_bytes(upload_bytes)
    share = AddShare.from_bytes(up.shares[j])
    sealed = bytearray(share.sealed)
    sealed[3] ^= 1
    bad = AddShare(share.round, share.sender, share.recipient, share.ephemeral, share.kind, share.length,
                   bytes(sealed)).to_bytes()
    shares = tuple(bad if i == j else s for i, s in enumerate(up.shares))
    return AddUpload(up.round, up.sender, shares).to_bytes()


class _Tamper(LocalTransport):
    """Rewrites some parties' replies in transit."""

    def __init__(self, *args, rewrite, **kwargs):
        super().__init__(*args, **kwargs)
        self.rewrite = rewrite

    def exchange(self, stage, requests):
        replies = super().exchange(stage, requests)
        for pid, fn in self.rewrite.get(stage, {}).items():
            if pid in replies:
                replies[pid] = fn(replies[pid])
        return replies


def test_tampered_uploads_cost_only_their_senders():
    proto = make_protocol("additive", servers=3)
    coord = proto.coordinator()
    clients = tuple(range(7))
    parties = _sites(proto, clients)
    xs, ws = _data(7, 120, seed=2)
    _feed(parties, clients, 0, xs, ws)
    parties[6].set_input(0, np.full(120, np.nan), 1.0)  # refused by its own client: no answer
    rewrite = {"additive.upload": {
        1: lambda b: _flip_share(b, 1),  # client 1's vector share for server 1 (1 mod 3)
        2: lambda b: _flip_share(b, 0),  # client 2's seed share for server 0 (the coordinator)
        3: lambda b: _flip_share(b, 2),  # client 3's seed share for server 2
        4: lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # client 4's frame: checksum broken
    }}
    transport = _Tamper(Network(), parties, rewrite=rewrite)
    out = coord.run_round(_spec(0, clients, 120), transport)
    assert out.included == (0, 5) and out.dropped == (1, 2, 3, 4, 6)
    assert "aggregation server 1 refused its vector share" in coord.dropped[1]
    assert "server 0 refused its seed share" in coord.dropped[2] and "authentication failed" in coord.dropped[2]
    assert "aggregation server 2 refused its seed share" in coord.dropped[3]
    assert "checksum" in coord.dropped[4]
    assert "non-finite" in transport.failures[6] and "non-finite" in coord.dropped[6]
    assert "authentication failed" in parties[server_id(1)].rejected[1]
    assert np.max(np.abs(out.mean - _reference(xs, ws, [0, 5]))) <= coord.error_bound
    assert np.array_equal(coord.integer_sum, _codes(_encoder(proto, 7), 0, xs, ws, [0, 5]))


@pytest.mark.parametrize("stage", ["additive.keys", "additive.seeds", "additive.vectors", "additive.reveal"])
def test_a_silent_aggregation_server_aborts_only_its_round(stage):
    proto = make_protocol("additive", servers=3)
    coord = proto.coordinator()
    clients = (0, 1, 2, 3)
    parties = _sites(proto, clients)
    xs, ws = _data(4, 50, seed=3)
    _feed(parties, clients, 0, xs, ws)
    transport = LocalTransport(Network(), parties, silent={stage: {server_id(2)}})
    with pytest.raises(ProtocolAbort, match=f"server 2 did not answer at stage '{stage}'"):
        coord.run_round(_spec(0, clients, 50), transport)
    _feed(parties, clients, 1, xs, ws)
    out = coord.run_round(_spec(1, clients, 50), LocalTransport(Network(), parties))
    assert out.included == clients
    assert np.max(np.abs(out.mean - _reference(xs, ws, clients))) <= coord.error_bound


def test_a_tampered_partial_sum_aborts_the_round_and_a_server_sends_one_partial_sum_per_round():
    proto = make_protocol("additive", servers=2)
    coord = proto.coordinator()
    clients = (0, 1, 2)
    parties = _sites(proto, clients)
    xs, ws = _data(3, 40, seed=5)
    _feed(parties, clients, 0, xs, ws)

    def digest_off(b):
        return _reframe(b, lambda p: p.__setitem__(12, p[12] ^ 1))  # inside the included-set digest

    transport = _Tamper(Network(), parties, rewrite={"additive.reveal": {server_id(1): digest_off}})
    with pytest.raises(ProtocolAbort, match="different set of clients"):
        coord.run_round(_spec(0, clients, 40), transport)
    # server 1 already sent its partial sum for round 0: a second one (another set) is refused
    again = AddIncludedSet(0, server_id(0), np.asarray([0], dtype=np.uint32)).to_bytes()
    with pytest.raises(ProtocolAbort, match="one partial sum per round"):
        parties[server_id(1)].handle("additive.reveal", again)


def test_the_coordinator_relays_shares_it_cannot_open_and_sees_uniform_bytes():
    """What the server side received (its recorded view) and relayed: no update in the clear, no
    share it can open except server 0's own, which is uniform even for an all-zero update."""
    proto = make_protocol("additive", servers=2)
    coord = proto.coordinator()
    clients, d = (0, 1, 2, 3), 20_000
    parties = _sites(proto, clients)
    net = Network(record_views=True)
    zeros = np.zeros(d)
    for c in clients:
        parties[c].set_input(0, zeros, 10.0)
    coord.run_round(_spec(0, clients, d), LocalTransport(net, parties))
    encoder = _encoder(proto, len(clients))
    received = net.views[server_id(0)]
    assert {Frame.from_bytes(m.data).type for m in received} == {
        MsgType.ADD_SERVER_KEY, MsgType.ADD_UPLOAD, MsgType.ADD_INCLUDED_SET, MsgType.ADD_PARTIAL_SUM}
    relayed = [m for pid in (server_id(1), *clients) for m in net.views[pid] if m.sender == server_id(0)]
    for c in clients:
        codes = encoder.ring.pack(encoder.encode(zeros, 10.0, dither(SEED, 0, c)))
        for m in (*received, *relayed):
            assert codes[:64] not in m.data and codes[-64:] not in m.data
        upload = next(AddUpload.from_bytes(m.data) for m in received if m.sender == c)
        for j, blob in enumerate(upload.shares):
            share = AddShare.from_bytes(blob)
            key = agree(coord.server.key, PublicKey(share.ephemeral), KDF_LABEL, 0, c, share.recipient)
            if j == 0:  # server 0's own share: it opens, and it is uniform
                kind, plain = coord.server.open_share(c, blob, share.kind)
                vec = coord.server.share_vector(kind, plain)
                assert stats.chisquare(np.bincount(vec.view(np.uint8), minlength=256)).pvalue > P_VALUE
            else:  # server 1's share: sealed to server 1, the relay cannot open it
                with pytest.raises(MalformedMessageError, match="authentication failed"):
                    open_sealed(key, share.sealed, share.associated_data())
    # server 1 received only shares sealed to itself
    for m in net.views[server_id(1)]:
        if Frame.from_bytes(m.data).type is MsgType.ADD_SHARE_BATCH:
            batch = AddShareBatch.from_bytes(m.data)
            assert all(AddShare.from_bytes(s).recipient == server_id(1) for s in batch.shares)


def test_party_roles_and_strict_stage_handling():
    proto = make_protocol("additive", servers=3)
    assert isinstance(proto.party(server_id(1)), AdditiveAggregator)
    assert isinstance(proto.party(5), AdditiveClient)
    with pytest.raises(ConfigError):
        proto.party(server_id(3))  # not a server of this federation, not a client id either
    assert proto.site_roles(0, 4) == (server_id(1),) and proto.site_roles(1, 4) == (server_id(2),)
    assert proto.site_roles(2, 4) == ()
    with pytest.raises(ConfigError, match="at least 2 sites"):
        proto.site_roles(0, 1)
    with pytest.raises(MalformedMessageError, match="unknown stage"):
        proto.party(0).handle("additive.nothing", b"")
    with pytest.raises(MalformedMessageError, match="unknown stage"):
        proto.party(server_id(1)).handle("additive.upload", b"")
    with pytest.raises(MalformedMessageError):
        proto.party(server_id(1)).handle("additive.keys", b"not a frame")
    # a batch of the wrong kind for its stage is refused; a share of the wrong kind costs its client
    srv = proto.party(server_id(1))
    srv.handle("additive.keys", RoundRequest(0, server_id(0), np.arange(3, dtype=np.uint32), 8).to_bytes())
    batch = AddShareBatch(0, server_id(0), ShareKind.VECTOR, np.asarray([], dtype=np.uint32), ())
    with pytest.raises(MalformedMessageError, match="relays SEED shares"):
        srv.handle("additive.seeds", batch.to_bytes())
