"""``secagg`` across sites (issue 11, part 1): the server's stage sequence over a transport with one
client party object per site gives the plaintext weighted mean within the encoding's bound, in
two rounds; dropouts at every stage are survived up to the threshold; a tampered reply costs
only its sender; the server and the relay see no secret in the clear."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.errors import InsufficientQuorumError, MalformedMessageError, ReplayError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.hosts import InlineHost, ProcessHost
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import LocalTransport, RoundRequest
from secfl.protocols.secagg import (
    SITE_STAGES,
    HostTransport,
    SaShareKeys,
    SaUnmaskResponse,
    SecAggClient,
)
from secfl.protocols.wire import Frame, MsgType

SERVER = server_id(0)


def _sites(proto, clients):
    """One party object per client, each built on its own (as a separate site would)."""
    return {c: proto.party(c) for c in clients}


def _data(rnd, n, d):
    rng = np.random.default_rng(100 + rnd)  # test data only
    return rng.uniform(-1, 1, size=(n, d)), rng.integers(1, 300, size=n).astype(float)


def _reference(xs, ws, keep):
    keep = list(keep)
    return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()


def _round(coord, parties, rnd, n, d, transport):
    xs, ws = _data(rnd, n, d)
    for c, p in parties.items():
        p.set_input(rnd, xs[c], ws[c])
    out = coord.run_round(RoundSpec(rnd, tuple(range(n)), d), transport)
    assert np.max(np.abs(out.mean - _reference(xs, ws, out.included))) <= coord.error_bound
    assert out.total_weight == pytest.approx(ws[list(out.included)].sum())
    return out


def test_two_rounds_over_local_transport_with_one_party_per_site():
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(8))
    net = Network(record_views=True)
    out = _round(coord, parties, 0, 8, 300, LocalTransport(net, parties))
    assert out.included == tuple(range(8)) and out.dropped == () and coord.dropped == {}
    keys0 = parties[3]._s.export_secret()
    out = _round(coord, parties, 1, 8, 300, LocalTransport(net, parties, silent={"secagg.masked_input": {5}}))
    assert out.included == (0, 1, 2, 3, 4, 6, 7) and out.dropped == (5,)
    assert "silent" in coord.dropped[5]
    assert parties[3]._s.export_secret() != keys0  # fresh keys every round
    assert coord.error_bound is not None and coord.error_bound < 1e-4


@pytest.mark.parametrize("stage", SITE_STAGES)
def test_dropouts_at_each_stage_are_survived(stage):
    n = 10  # k = 8, t = 5: anyone may lose 3 neighbours
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(n))
    out = _round(coord, parties, 0, n, 50, LocalTransport(Network(), parties, silent={stage: {2, 7}}))
    if stage == "secagg.unmask":  # their masked inputs arrived: they count; others unmask for them
        assert out.included == tuple(range(n))
        assert set(coord.unmask_failures) == {2, 7}
    else:
        assert out.included == tuple(c for c in range(n) if c not in (2, 7))
        assert set(coord.dropped) == {2, 7}


def test_a_dropout_at_every_stage_in_one_round_and_too_many_abort():
    n = 16
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(n))
    silent = {s: {1 + 4 * i} for i, s in enumerate(SITE_STAGES)}
    out = _round(coord, parties, 0, n, 40, LocalTransport(Network(), parties, silent=silent))
    assert out.included == tuple(c for c in range(n) if c not in (1, 5, 9))
    # more than k − t of everyone's neighbours silent at unmask: the round cannot be unmasked
    with pytest.raises(InsufficientQuorumError, match="threshold"):
        _round(coord, parties, 1, n, 40, LocalTransport(Network(), parties, silent={"secagg.unmask": set(range(9))}))


class _Tamper(LocalTransport):
    """Flips one byte of the reply of ``victim`` at ``stage``; ``reframe`` keeps the checksum valid."""

    def __init__(self, *args, stage, victim, edit, **kw):
        super().__init__(*args, **kw)
        self.stage, self.victim, self.edit = stage, victim, edit

    def exchange(self, stage, requests):
        replies = super().exchange(stage, requests)
        if stage == self.stage and self.victim in replies:
            replies[self.victim] = self.edit(replies[self.victim])
        return replies


def _flip(data):
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    return bytes(bad)


def test_a_tampered_masked_input_costs_only_its_sender():
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(8))
    transport = _Tamper(Network(), parties, stage="secagg.masked_input", victim=4, edit=_flip)
    out = _round(coord, parties, 0, 8, 60, transport)
    assert out.dropped == (4,) and "MalformedMessageError" in coord.dropped[4]


def test_a_tampered_sealed_share_costs_one_share_only():
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(8))
    hit = {}

    def reseal(data):  # alter the ciphertext addressed to the first neighbour, valid frame
        msg = SaShareKeys.from_bytes(data)
        hit["to"] = msg.parties[0]
        sealed = bytearray(msg.sealed)
        sealed[20] ^= 0x80
        return SaShareKeys(msg.round, msg.sender, msg.parties, bytes(sealed)).to_bytes()

    transport = _Tamper(Network(), parties, stage="secagg.share_keys", victim=2, edit=reseal)
    out = _round(coord, parties, 0, 8, 60, transport)
    assert out.included == tuple(range(8))  # the other neighbours' shares of client 2 suffice
    failures = parties[hit["to"]].failures
    assert len(failures) == 1 and "authentication failed" in str(failures[0])


def test_the_server_and_the_relay_see_no_secret_in_the_clear():
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    n = 8
    parties = _sites(proto, range(n))
    net = Network(record_views=True)
    silent = {"secagg.masked_input": {6}}
    _round(coord, parties, 0, n, 64, LocalTransport(net, parties, silent=silent))
    at_server = net.views[SERVER]
    assert {Frame.from_bytes(d.data).type for d in at_server} == {
        MsgType.SA_ADVERTISE_KEYS, MsgType.SA_SHARE_KEYS, MsgType.SA_MASKED_INPUT, MsgType.SA_UNMASK_RESPONSE}
    everything = [d.data for view in net.views.values() for d in view]  # the server's view and what it relays
    for c, p in parties.items():
        secrets_ = [p._c.export_secret(), p._s.export_secret(), p._b]
        for u in p.active_neighbours:
            secrets_.append(p.open_share(u).astype("<u4").tobytes())  # the share pair in the clear
        for secret in secrets_:
            assert all(secret not in data for data in everything), f"client {c}'s secret crossed the network"
    # the server never got both kinds of share of one client
    kinds: dict[int, set[str]] = {}
    for d in at_server:
        if Frame.from_bytes(d.data).type == MsgType.SA_UNMASK_RESPONSE:
            resp = SaUnmaskResponse.from_bytes(d.data)
            for u in resp.survivors:
                kinds.setdefault(u, set()).add("b")
            for u in resp.dropped:
                kinds.setdefault(u, set()).add("s")
    assert kinds and all(len(k) == 1 for k in kinds.values())
    assert kinds[6] == {"s"} and all(kinds[u] == {"b"} for u in range(n) if u != 6)


def test_a_client_answers_only_forward_rounds_and_known_stages():
    proto = make_protocol("secagg")
    client = proto.party(0)
    ask = RoundRequest(3, SERVER, np.arange(5, dtype=np.uint32), 10).to_bytes()
    client.handle("secagg.advertise_keys", ask)
    with pytest.raises(ReplayError):  # a second set of keys for the same round
        client.handle("secagg.advertise_keys", ask)
    with pytest.raises(MalformedMessageError, match="unknown stage"):
        client.handle("secagg.nothing", b"")
    other = RoundRequest(4, SERVER, np.arange(1, 5, dtype=np.uint32), 10).to_bytes()
    with pytest.raises(MalformedMessageError, match="not a participant"):
        client.handle("secagg.advertise_keys", other)


def test_a_client_without_its_update_drops_out_of_that_round_only():
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    parties = _sites(proto, range(6))
    xs, ws = _data(0, 6, 20)
    for c in range(6):
        if c != 1:
            parties[c].set_input(0, xs[c], ws[c])
    transport = LocalTransport(Network(), parties)
    out = coord.run_round(RoundSpec(0, tuple(range(6)), 20), transport)
    assert out.dropped == (1,) and "no update for round 0" in coord.dropped[1]
    assert np.max(np.abs(out.mean - _reference(xs, ws, out.included))) <= coord.error_bound


@pytest.mark.parametrize("processes", [1, 2])
def test_the_coordinator_over_parties_in_worker_processes(processes):
    proto = make_protocol("secagg")
    coord = proto.coordinator()
    n, d = 8, 200
    host = InlineHost() if processes == 1 else ProcessHost(processes)
    try:
        net = Network()
        transport = HostTransport(host, SecAggClient, range(n), proto.options, None, net=net)
        for rnd, silent in ((0, {}), (1, {"secagg.share_keys": {3}})):
            transport.silent = {k: frozenset(v) for k, v in silent.items()}
            xs, ws = _data(rnd, n, d)
            transport.set_inputs(rnd, {c: (xs[c], ws[c]) for c in range(n)})
            out = coord.run_round(RoundSpec(rnd, tuple(range(n)), d), transport)
            assert out.included == tuple(c for c in range(n) if c not in silent.get("secagg.share_keys", ()))
            assert np.max(np.abs(out.mean - _reference(xs, ws, out.included))) <= coord.error_bound
        assert net.client_bytes()[0] > 0
    finally:
        host.close()
