"""``ckks-threshold`` across sites (issue 11, part 1): the server's stage sequence over the
in-process LocalTransport, with one party object per site (clients and quorum members built by
``proto.party``). Two rounds give the plaintext weighted mean within the stated bound; member
dropouts at every stage up to n − t are survived (one more fails with nothing decoded); a tampered
reply costs only its sender; the server's view carries no Shamir share or key share in the clear;
members keep refusing a second partial decryption."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.crypto.identity import new_identities
from secfl.crypto.keys import PrivateKey
from secfl.crypto.threshold import KeyShare, MemberSecret, pack_polys
from secfl.errors import ConfigError, DecryptionRefusedError, InsufficientQuorumError, MalformedMessageError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks_threshold import (
    SITE_STAGES,
    QuorumMember,
    ThrDealing,
    ThresholdClient,
    ThrKeyDelivery,
    ThrKeygenRequest,
    ThrShamirShares,
    ThrUploadRequest,
)
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.parties import LocalTransport
from secfl.protocols.wire import Frame, MsgType

DIM = 200
CLIENTS = (0, 1, 2, 3)


def _sites(proto, clients, members):
    """One party object per party id, each built on its own (as a separate site would), each
    member with its own identity key; every party holds the federation roster."""
    keys, roster = new_identities((*clients, *(member_id(j) for j in range(members))))
    parties = _Parties({pid: proto.party(pid, identity=keys.get(pid), roster=roster)
                        for pid in (*clients, *(member_id(j) for j in range(members)))})
    parties.roster, parties.keys = roster, keys
    return parties


class _Parties(dict):
    roster = None  # the federation roster every site holds
    keys: dict = {}  # each site's identity key (a file at the site: it survives a restart)


def _data(rnd: int, k: int = len(CLIENTS)):
    rng = np.random.default_rng(rnd)
    return rng.uniform(-1, 1, size=(k, DIM)), rng.integers(20, 400, size=k).astype(np.float64)


def _reference(xs, ws, keep):
    keep = list(keep)
    return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()


def _run(coord, parties, rnd, *, net=None, transport=None, silent=None, clients=CLIENTS):
    xs, ws = _data(rnd, len(clients))
    for i, c in enumerate(clients):
        parties[c].set_input(rnd, xs[i], ws[i])
    transport = transport or LocalTransport(net or Network(), parties, silent=silent or {})
    out = coord.run_round(RoundSpec(rnd, clients, DIM), transport)
    return out, xs, ws, transport


def test_two_rounds_over_local_transport_one_party_per_site():
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 5)
    assert isinstance(parties[0], ThresholdClient) and isinstance(parties[member_id(4)], QuorumMember)
    net = Network(record_views=True)
    for rnd, silent in ((0, {}), (1, {"thr.upload": {2}, "thr.ready": {member_id(0)}})):
        out, xs, ws, _ = _run(coord, parties, rnd, net=net, silent=silent)
        keep = [c for c in CLIENTS if c not in silent.get("thr.upload", ())]
        assert out.included == tuple(keep) and out.dropped == tuple(sorted(set(CLIENTS) - set(keep)))
        assert coord.error_bound is not None and coord.error_bound < 1e-4
        assert np.max(np.abs(out.mean - _reference(xs, ws, keep))) <= coord.error_bound
        assert out.total_weight == pytest.approx(ws[keep].sum(), rel=1e-6)
        assert len(coord.active_set) == 3
    assert 0 not in coord.active_set  # silent when the decryption was announced
    assert coord.server.epoch == 1 and coord.server.dealers == (0, 1, 2, 3, 4)  # one key for both rounds
    # the key reaches a client once per key: round 1's request to client 0 carries no key
    requests = [ThrUploadRequest.from_bytes(d.data) for d in net.views[0]]
    assert [bool(r.key) for r in requests] == [True, False]
    # every stage ran, in order, and each member decrypted each aggregate at most once
    seen = [Frame.from_bytes(d.data).type for d in net.views[member_id(1)]]
    assert seen[:3] == [MsgType.THR_KEYGEN_REQUEST, MsgType.THR_ROSTER, MsgType.THR_KEY_DELIVERY]
    assert set(SITE_STAGES) == {"thr.hello", "thr.deal", "thr.key", "thr.upload", "thr.ready", "thr.partial"}


def test_key_rotation_reprovisions_clients():
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_decryptions=1, max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 3)
    ids = []
    for rnd in range(2):
        out, xs, ws, _ = _run(coord, parties, rnd)
        assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound
        ids.append(coord.server.key.key_id)
    assert ids[0] != ids[1] and coord.server.epoch == 2


@pytest.mark.parametrize("stage", ["thr.hello", "thr.deal", "thr.key", "thr.ready"])
def test_member_dropouts_up_to_n_minus_t_at_every_stage(stage):
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 5)
    out, xs, ws, transport = _run(coord, parties, 0, silent={stage: {member_id(0), member_id(3)}})
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound
    assert 0 not in coord.active_set and 3 not in coord.active_set
    assert "simulated dropout" in transport.failures[member_id(0)]
    # one more than n - t: the round fails, nothing decoded
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 5)
    with pytest.raises(InsufficientQuorumError):
        _run(coord, parties, 0, silent={stage: {member_id(0), member_id(2), member_id(4)}})


def test_member_silent_at_partial_costs_a_whole_active_set():
    proto = make_protocol("ckks-threshold", quorum=(2, 5), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 5)
    out, xs, ws, _ = _run(coord, parties, 0, silent={"thr.partial": {member_id(0)}})
    assert coord.active_set == (2, 3)  # (0, 1) failed; 1 answered and is spent
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound
    # the member that answered in the failed attempt refuses to decrypt that aggregate again
    assert parties[member_id(1)].decryptions == 1


def test_client_dropout_at_upload_and_a_client_without_input():
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 3)
    xs, ws = _data(0)
    for c in (0, 1, 3):
        parties[c].set_input(0, xs[c], ws[c])  # client 2 has no update: it cannot answer
    transport = LocalTransport(Network(), parties, silent={"thr.upload": {3}})
    out = coord.run_round(RoundSpec(0, CLIENTS, DIM), transport)
    assert out.included == (0, 1) and out.dropped == (2, 3)
    assert "no update" in coord.dropped[2] and "simulated dropout" in coord.dropped[3]
    assert np.max(np.abs(out.mean - _reference(xs, ws, (0, 1)))) <= coord.error_bound


class _Tamper(LocalTransport):
    """Alters one party's request or reply at one stage (the CRC recomputed by re-framing)."""

    def __init__(self, *args, stage, pid, request=None, reply=None, **kw):
        super().__init__(*args, **kw)
        self.stage, self.pid, self.request, self.reply = stage, pid, request, reply

    def exchange(self, stage, requests):
        if stage == self.stage and self.request is not None and self.pid in requests:
            requests = {**requests, self.pid: self.request(requests[self.pid])}
        replies = super().exchange(stage, requests)
        if stage == self.stage and self.reply is not None and self.pid in replies:
            replies[self.pid] = self.reply(replies[self.pid])
        return replies


def _flip(data: bytes, offset: int) -> bytes:
    frame = Frame.from_bytes(data)
    payload = bytearray(frame.payload)
    payload[offset] ^= 1
    return Frame(frame.type, frame.round, frame.sender, bytes(payload)).to_bytes()


def _tampered_round(stage, pid, *, quorum=(2, 5), **change):
    proto = make_protocol("ckks-threshold", quorum=quorum, max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, quorum[1])
    transport = _Tamper(Network(), parties, stage=stage, pid=pid, **change)
    out, xs, ws, _ = _run(coord, parties, 0, transport=transport)
    return coord, parties, out, xs, ws


def test_tampered_upload_drops_only_its_client():
    coord, _, out, xs, ws = _tampered_round("thr.upload", 1, reply=lambda d: _flip(d, 8))  # inside the key id
    assert out.included == (0, 2, 3) and "another key" in coord.dropped[1]
    assert np.max(np.abs(out.mean - _reference(xs, ws, (0, 2, 3)))) <= coord.error_bound


def test_tampered_partial_counts_only_its_member_absent():
    # the partial's digest (after the 8-byte length and 16-byte key id, and the digest's length)
    coord, _, out, xs, ws = _tampered_round("thr.partial", member_id(0), reply=lambda d: _flip(d, 8 + 16 + 8))
    assert coord.active_set == (2, 3)  # (0, 1) failed on member 0's partial
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound


def test_tampered_dealing_leaves_its_member_out_of_the_key():
    coord, _, out, xs, ws = _tampered_round("thr.deal", member_id(2), reply=lambda d: d[:-30] + bytes(30))
    assert "MalformedMessageError" in coord.dropped[member_id(2)]
    assert coord.server.key_members == 4 and 2 not in coord.server.dealers
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound


def _tamper_share(data: bytes) -> bytes:
    msg = ThrKeyDelivery.from_bytes(data)
    shares = ThrShamirShares.from_bytes(msg.shares)
    (dealer, rcp, blob), *rest = shares.entries
    blob = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
    forged = ThrShamirShares(shares.round, shares.sender, shares.epoch, ((dealer, rcp, blob), *rest)).to_bytes()
    return ThrKeyDelivery(msg.round, msg.sender, forged, msg.key).to_bytes()


def test_share_tampered_by_the_relay_leaves_only_its_recipient_without_a_key_share():
    coord, parties, out, xs, ws = _tampered_round("thr.key", member_id(1), quorum=(2, 3), request=_tamper_share)
    assert not parties[member_id(1)].has_share and coord.server.dealers == (0, 2)
    assert coord.active_set == (0, 2)
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound


def test_the_server_view_carries_no_secret(monkeypatch):
    dealt: list[np.ndarray] = []
    original = MemberSecret.deal

    def recording(self, points, threshold, prg=None):
        out = original(self, points, threshold, prg)
        dealt.append(out)
        return out

    monkeypatch.setattr(MemberSecret, "deal", recording)
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 3)
    net = Network(record_views=True)
    _run(coord, parties, 0, net=net)
    primes = proto.params.data_primes
    # what the server received, and everything it sent (what it relays)
    received = b"".join(d.data for d in net.views[server_id(0)])
    relayed = b"".join(d.data for pid, views in net.views.items() if pid != server_id(0) for d in views)
    assert len(dealt) == 3
    for shares in dealt:
        for share in shares:
            plain = pack_polys(share, primes)
            assert plain[1000:1064] not in received and plain[1000:1064] not in relayed
    for j in range(3):
        key_share = parties[member_id(j)].state()["key_share"]
        packed = pack_polys(key_share._sigma, primes)
        assert packed[1000:1064] not in received and packed[1000:1064] not in relayed
    # every share the server handles is sealed (AES-GCM: plaintext + 28 bytes), to and from members
    share_msgs = []
    for d in net.views[server_id(0)]:
        if Frame.from_bytes(d.data).type == MsgType.THR_DEALING:
            share_msgs.append(ThrShamirShares.from_bytes(ThrDealing.from_bytes(d.data).shamir_shares))
    for j in range(3):
        for d in net.views[member_id(j)]:
            if Frame.from_bytes(d.data).type == MsgType.THR_KEY_DELIVERY:
                share_msgs.append(ThrShamirShares.from_bytes(ThrKeyDelivery.from_bytes(d.data).shares))
    assert len(share_msgs) == 6
    assert all(len(blob) == len(pack_polys(dealt[0][0], primes)) + 28 for m in share_msgs for _, _, blob in m.entries)
    # the coordinator's own state holds no secret type
    secret_types = (KeyShare, MemberSecret, PrivateKey)

    def walk(obj, depth=0):
        if depth > 4:
            return
        assert not isinstance(obj, secret_types), type(obj)
        items = vars(obj).values() if hasattr(obj, "__dict__") else obj.values() if isinstance(obj, dict) else \
            obj if isinstance(obj, (list, tuple, set)) else ()
        for v in items:
            walk(v, depth + 1)

    walk(coord)


def test_members_refuse_a_replayed_partial_request_and_unknown_stages():
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 3)
    net = Network(record_views=True)
    _run(coord, parties, 0, net=net)
    j = coord.active_set[0]
    member = parties[member_id(j)]
    got = {Frame.from_bytes(d.data).type: d.data for d in net.views[member_id(j)]}
    request = got[MsgType.THR_PARTIAL_REQUEST]
    with pytest.raises(DecryptionRefusedError, match="second partial decryption"):
        member.handle("thr.partial", request)
    poll = got[MsgType.THR_DECRYPT_REQUEST]
    with pytest.raises(DecryptionRefusedError, match="not ready"):
        member.handle("thr.ready", poll)
    with pytest.raises(MalformedMessageError):
        member.handle("thr.nothing", b"")
    with pytest.raises(MalformedMessageError):
        parties[0].handle("thr.partial", request)
    with pytest.raises(ConfigError):
        proto.party(member_id(3))  # only members 0..n-1 exist
    assert proto.site_roles(1, 4) == (member_id(1),) and proto.site_roles(3, 4) == ()


def test_a_request_from_anyone_but_the_server_is_refused():
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    member = proto.party(member_id(0))
    with pytest.raises(MalformedMessageError, match="sender"):
        member.handle("thr.hello", ThrKeygenRequest(0, member_id(1), 1).to_bytes())
    client = proto.party(0)
    with pytest.raises(MalformedMessageError, match="sender"):
        client.handle("thr.upload", ThrUploadRequest(0, member_id(1), np.array([0], dtype=np.uint32), DIM,
                                                     b"k" * 16).to_bytes())


def test_a_restarted_client_gets_the_key_again_next_round():
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    coord = proto.coordinator()
    parties = _sites(proto, CLIENTS, 3)
    _run(coord, parties, 0)
    parties[1] = proto.party(1, identity=parties.keys[1], roster=parties.roster)  # a new process: no key
    out, xs, ws, _ = _run(coord, parties, 1)
    assert out.included == (0, 2, 3) and "does not hold the collective key" in coord.dropped[1]
    out, xs, ws, _ = _run(coord, parties, 2)
    assert out.included == CLIENTS
    assert np.max(np.abs(out.mean - _reference(xs, ws, CLIENTS))) <= coord.error_bound
