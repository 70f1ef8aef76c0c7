"""The ``ckks-threshold`` protocol over real messages: every t-subset decrypts, member dropouts at
every stage, refusals, malformed partials, key rotation, the facade and the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import secfl
from secfl.crypto import threshold as thr
from secfl.crypto.threshold import pack_polys
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    DuplicateSenderError,
    InsufficientQuorumError,
    InvalidUpdateError,
    MalformedMessageError,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.base import Upload
from secfl.protocols.ckks_threshold import (
    STAGES,
    CkksThreshold,
    ThrActiveSet,
    ThrDecryptRequest,
    ThrPartialDecryption,
    ThrShamirShares,
    ThrUpdate,
    _aggregate_digest,
)
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.wire import MsgType

DIM = 300


def _data(k: int = 4, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(k, dim)), rng.integers(20, 400, size=k).astype(np.float64)


def _exact(x: np.ndarray, w: np.ndarray, skip=()) -> np.ndarray:
    keep = [k for k in range(len(x)) if k not in skip]
    return (w[keep, None] * x[keep]).sum(0) / w[keep].sum()


def _round(proto: CkksThreshold, rnd: int, x: np.ndarray, w: np.ndarray, *, dropouts=None, net=None, skip=()):
    net = Network() if net is None else net
    stages = {k: frozenset(v) for k, v in (dropouts or {}).items()}
    spec = RoundSpec(rnd, tuple(range(len(x))), x.shape[1], dropouts=stages)
    r = proto.open_round(spec, net)
    r.setup()
    for c in range(len(x)):
        if c not in skip:
            r.receive(c, r.protect(c, x[c], w[c]))
    return r, r.reveal()


@pytest.fixture(scope="module")
def proto35() -> CkksThreshold:
    return make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)


def test_facade_quorum_3_of_5_with_a_member_dropout():
    x, w = _data()
    res = secfl.secure_mean(x, w, protocol="ckks-threshold", quorum=(3, 5), quorum_dropouts=[1], max_weight=500.0)
    assert np.abs(res.mean - _exact(x, w)).max() < 1e-5
    assert res.included == (0, 1, 2, 3) and res.total_weight == pytest.approx(w.sum(), rel=1e-6)
    params = thr.ThresholdParams.from_preset("standard")
    assert res.bytes_up > 4 * params.ciphertext_bytes  # real serialized uploads, partials, key shares
    assert set(res.seconds) >= {"setup", "protect", "aggregate", "reveal", "total"}


def test_facade_client_dropouts_are_free():
    x, w = _data(5)
    res = secfl.secure_mean(x, w, protocol="ckks-threshold", quorum=(2, 3), dropouts=[0, 3], max_weight=500.0)
    assert res.included == (1, 2, 4)
    assert np.abs(res.mean - _exact(x, w, skip=(0, 3))).max() < 1e-5


def test_every_t_subset_decrypts_within_the_stated_bound(proto35):
    """One key, ten rounds: in each, every member outside one t-subset is offline, so exactly that
    subset decrypts; the error stays within the round's bound."""
    x, w = _data()
    epoch = None
    for rnd, subset in enumerate(itertools.combinations(range(5), 3)):
        offline = set(range(5)) - set(subset)
        r, out = _round(proto35, rnd, x, w, dropouts={"member_decrypt": offline})
        assert r.active_set == subset
        assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound
        assert r.error_bound < 1e-4
        epoch = proto35.epoch if epoch is None else epoch
        assert proto35.epoch == epoch  # the key is reused
    assert all(m.decryptions == 6 for m in proto35.members)  # C(4, 2) = 6 subsets contain each member


@pytest.mark.parametrize("stage", ["member_keygen", "member_shares", "member_decrypt"])
def test_up_to_n_minus_t_member_dropouts_succeed_one_more_fails(stage):
    x, w = _data(3)
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    r, out = _round(proto, 0, x, w, dropouts={stage: {0, 3}})
    assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound
    assert 0 not in r.active_set and 3 not in r.active_set
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    with pytest.raises(InsufficientQuorumError):
        _round(proto, 0, x, w, dropouts={stage: {0, 2, 4}})


def test_quorum_dropouts_option_beyond_n_minus_t_fails_with_nothing_decoded():
    x, w = _data(3)
    with pytest.raises(InsufficientQuorumError, match="threshold is 3; nothing was decoded"):
        secfl.secure_mean(x, w, protocol="ckks-threshold", quorum=(3, 5), quorum_dropouts=[0, 1, 2])


def test_member_silent_after_the_active_set_is_fixed_retries_with_a_disjoint_set():
    """A member that goes silent after being chosen: the members who answered never answer again
    for this ciphertext, so the server needs a whole new disjoint active set."""
    x, w = _data(3)
    proto = make_protocol("ckks-threshold", quorum=(2, 5), max_weight=500.0)
    r, out = _round(proto, 0, x, w, dropouts={"member_partial": {0}})
    assert r.active_set == (2, 3)  # (0, 1) failed; 1 answered and is spent
    assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    with pytest.raises(InsufficientQuorumError, match="member 0 went silent"):
        _round(proto, 0, x, w, dropouts={"member_partial": {0}})


def test_a_second_partial_decryption_of_the_same_ciphertext_is_refused():
    x, w = _data(3)
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    net = Network(record_views=True)
    r, _ = _round(proto, 0, x, w, net=net)
    member = proto.members[r.active_set[0]]
    request = next(d.data for d in net.views[member.party] if d.data[3] == MsgType.THR_ACTIVE_SET)
    with pytest.raises(DecryptionRefusedError, match="second partial decryption"):
        member.on_active_set(request, 0, 3)
    # the same ciphertexts with another active set: still refused
    msg = ThrActiveSet.from_bytes(request)
    other = ThrActiveSet(0, server_id(0), msg.key_id, (member.index, 2 if member.index != 2 else 1), msg.included,
                         msg.digest, msg.count, msg.c1, msg.signatures, msg.client_c1).to_bytes()
    with pytest.raises(DecryptionRefusedError):
        member.on_active_set(other, 0, 3)
    # and the member does not even say it is ready for them
    poll = next(d.data for d in net.views[member.party] if d.data[3] == MsgType.THR_DECRYPT_REQUEST)
    assert member.on_decrypt_request(poll, 0) is None


def test_malformed_or_mismatched_partials_count_their_member_absent(monkeypatch):
    x, w = _data(3)
    proto = make_protocol("ckks-threshold", quorum=(2, 6), max_weight=500.0)
    real = proto.members[0].on_active_set

    def garbage(data, rnd, k):
        good = ThrPartialDecryption.from_bytes(real(data, rnd, k))
        return ThrPartialDecryption(rnd, good.sender, good.key_id, b"\x00" * 32, good.active, good.partial).to_bytes()

    monkeypatch.setattr(proto.members[0], "on_active_set", garbage)
    monkeypatch.setattr(proto.members[2], "on_active_set", lambda data, rnd, k: b"not a message")
    r, out = _round(proto, 0, x, w)
    assert r.active_set == (4, 5)  # (0, 1) failed on member 0, (2, 3) on member 2
    assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound
    proto = make_protocol("ckks-threshold", quorum=(3, 5), max_weight=500.0)
    monkeypatch.setattr(proto.members[1], "on_active_set", lambda data, rnd, k: b"junk")
    with pytest.raises(InsufficientQuorumError, match="member 1: MalformedMessageError"):
        _round(proto, 0, x, w)


def test_decryption_budget_rotates_keys_and_members_enforce_it():
    x, w = _data(2, dim=50)
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_decryptions=2, max_weight=500.0)
    ids = []
    for rnd in range(3):
        _, out = _round(proto, rnd, x, w)
        assert np.abs(out.mean - _exact(x, w)).max() < 1e-4
        ids.append(proto.server_key().key_id)
    assert ids[0] == ids[1] != ids[2] and proto.epoch == 2
    # a member at its budget refuses a fresh ciphertext
    member = proto.members[0]
    member.decryptions = proto.params.max_decryptions
    key = proto.server_key()
    c1 = key.encrypt(np.zeros(4))[:, 1]
    digests = thr.ciphertext_digests(c1, key.key_id)
    packed = pack_polys(c1, key.params.data_primes)
    req = ThrActiveSet(9, server_id(0), key.key_id, (0, 1), (0,), _aggregate_digest(digests), 1,
                       packed, b"\x00" * 64, packed).to_bytes()
    with pytest.raises(DecryptionRefusedError, match="budget"):
        member.on_active_set(req, 9, 2)


def test_server_never_sees_a_shamir_share_in_the_clear(monkeypatch):
    dealt: list[np.ndarray] = []
    original = thr.MemberSecret.deal

    def recording(self, points, threshold, prg=None):
        out = original(self, points, threshold, prg)
        dealt.append(out)
        return out

    monkeypatch.setattr(thr.MemberSecret, "deal", recording)
    x, w = _data(2, dim=20)
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    net = Network(record_views=True)
    _round(proto, 0, x, w, net=net)
    server_bytes = b"".join(d.data for d in net.views[server_id(0)])
    primes = proto.params.data_primes
    assert len(dealt) == 3
    for shares in dealt:
        for share in shares:
            plain = pack_polys(share, primes)
            assert plain[1000:1064] not in server_bytes
    # every share message the server relays is sealed: ciphertext length = plaintext + 28
    share_msgs = [ThrShamirShares.from_bytes(d.data) for d in net.views[server_id(0)]
                  if d.data[3] == MsgType.THR_SHAMIR_SHARES]
    assert share_msgs and all(len(blob) == len(pack_polys(dealt[0][0], primes)) + 28
                              for m in share_msgs for _, _, blob in m.entries)


class _TamperingRelay(Network):
    """A relay that flips one bit of the first sealed share it forwards to member 1."""

    def send(self, sender: int, recipient: int, data: bytes) -> bytes:
        data = super().send(sender, recipient, data)
        if sender == server_id(0) and recipient == member_id(1) and data[3] == MsgType.THR_SHAMIR_SHARES:
            msg = ThrShamirShares.from_bytes(data)
            (dealer, rcp, blob), *rest = msg.entries
            blob = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
            data = ThrShamirShares(msg.round, msg.sender, msg.epoch, ((dealer, rcp, blob), *rest)).to_bytes()
        return data


def test_tampered_share_leaves_its_recipient_without_a_key_share():
    x, w = _data(2, dim=20)
    proto = make_protocol("ckks-threshold", quorum=(2, 3), max_weight=500.0)
    r, out = _round(proto, 0, x, w, net=_TamperingRelay())
    assert not proto.members[1].has_share and proto.dealers == (0, 2)
    assert r.active_set == (0, 2)
    assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound


def test_server_rejects_bad_uploads(proto35):
    x, w = _data(3)
    net = Network()
    spec = RoundSpec(100, (0, 1, 2), DIM)
    r = proto35.open_round(spec, net)
    r.setup()
    up = r.protect(0, x[0], w[0])
    (to, data), = up.parts
    with pytest.raises(MalformedMessageError):
        r.receive(0, Upload(((to, data[:-5]),)))
    msg = ThrUpdate.from_bytes(data)
    other_key = ThrUpdate(msg.round, 0, b"\x01" * 16, msg.count, msg.ciphertexts, msg.signature).to_bytes()
    with pytest.raises(MalformedMessageError, match="another key"):
        r.receive(0, Upload(((to, other_key),)))
    r.receive(0, up)
    with pytest.raises(DuplicateSenderError):
        r.receive(0, up)
    with pytest.raises(InvalidUpdateError):
        r.protect(1, np.full(DIM, 1e3), 10.0)
    with pytest.raises(MalformedMessageError):
        r.receive(7, up)
    r.receive(1, r.protect(1, x[1], w[1]))
    out = r.reveal()
    assert out.included == (0, 1) and out.dropped == (2,)
    assert np.abs(out.mean - _exact(x, w, skip=(2,))).max() <= r.error_bound


def test_quantized_input_is_exact():
    rng = np.random.default_rng(5)
    x = rng.integers(-50, 51, size=(3, 200)).astype(np.float64)
    w = np.array([3.0, 10.0, 7.0])
    res = secfl.secure_mean(x, w, protocol="ckks-threshold", quorum=(2, 3), input="quantized", max_weight=100.0)
    assert np.array_equal(res.mean, (w[:, None] * x).sum(0) / w.sum())


def test_options_are_validated():
    for bad in [{"quorum": (0, 3)}, {"quorum": (4, 3)}, {"quorum": (2,)}, {"quorum_dropouts": [5]},
                {"clip_range": -1}, {"max_weight": 0.5}, {"preset": "tiny"}, {"input": "bits"},
                {"params": {"poly_degree": 8192, "coeff_bits": (45, 45, 60), "scale_bits": 64, "nope": 1}}]:
        with pytest.raises(ConfigError):
            make_protocol("ckks-threshold", **bad)
    with pytest.raises(ConfigError, match="allowed"):
        make_protocol("ckks-threshold", threshold=3)
    proto = make_protocol("ckks-threshold", params={"poly_degree": 8192, "coeff_bits": (45, 45, 60), "scale_bits": 60},
                          stat_security_bits=40)
    assert proto.params.scale_bits == 60 and proto.params.stat_security_bits == 40
    with pytest.raises(ConfigError, match="dropout stages"):
        proto.open_round(RoundSpec(0, (0,), 5, dropouts={"share_keys": frozenset({1})}), Network())
    with pytest.raises(ConfigError, match="outside"):
        proto.open_round(RoundSpec(0, (0,), 5, dropouts={"member_decrypt": frozenset({9})}), Network())
    assert set(STAGES) == {"member_keygen", "member_shares", "member_decrypt", "member_partial"}


def test_decrypt_request_and_messages_parse_strictly():
    good = ThrDecryptRequest(0, server_id(0), b"k" * 16, (1, 2), (b"d" * 32,)).to_bytes()
    assert ThrDecryptRequest.from_bytes(good).digests == (b"d" * 32,)
    with pytest.raises(MalformedMessageError):
        ThrDecryptRequest.from_bytes(ThrDecryptRequest(0, server_id(0), b"k" * 16, (2, 1), (b"d" * 32,)).to_bytes())
    with pytest.raises(MalformedMessageError):
        ThrDecryptRequest.from_bytes(ThrDecryptRequest(0, server_id(0), b"k" * 15, (1,), (b"d" * 32,)).to_bytes())
    with pytest.raises(MalformedMessageError):
        ThrDecryptRequest.from_bytes(ThrDecryptRequest(0, server_id(0), b"k" * 16, (1,), (b"d" * 31,)).to_bytes())


def test_cli_run_end_to_end(tmp_path):
    """`secfl run --protocol ckks-threshold` trains as well as plaintext at the same seed."""
    from secfl.cli import main

    common = ["--dataset", "synthetic", "--clients", "4", "--rounds", "3", "--quiet", "--set",
              "data.synthetic_samples=300"]
    assert main(["run", "--protocol", "plaintext", "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["run", "--protocol", "ckks-threshold", "--out", str(tmp_path / "thr"), *common]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    sec = json.loads((tmp_path / "thr" / "results.json").read_text())
    assert sec["config"]["protocol"] == "ckks-threshold"
    assert abs(sec["final"]["accuracy"] - plain["final"]["accuracy"]) <= 0.02
    assert all(r["dropped"] == [] for r in sec["rounds"])


@pytest.mark.slow
def test_keygen_and_decryption_with_ten_members():
    x, w = _data(10, dim=20_000)
    proto = make_protocol("ckks-threshold", quorum=(6, 10), max_weight=500.0)
    r, out = _round(proto, 0, x, w, dropouts={"member_decrypt": {1, 5, 9}, "member_keygen": {7}})
    assert np.abs(out.mean - _exact(x, w)).max() <= r.error_bound
    assert len(proto.dealers) == 9 and len(r.active_set) == 6
