"""``secagg`` (SecAgg+): exact sums, dropouts at every stage, aborts, refusals, uniformity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import secfl
from secfl.crypto.prg import Prg
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    DuplicateSenderError,
    InsecureParametersError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
    ReplayError,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.base import Upload
from secfl.protocols.network import Network, server_id
from secfl.protocols.secagg import (
    STAGES,
    DroppedOutError,
    SaKeyRoster,
    SaMaskedInput,
    SaUnmaskRequest,
    default_neighbours,
    default_threshold,
    dither_prg,
    harary_graph,
)

SEED = b"\x11" * 32
P_VALUE = 1e-6
SERVER = server_id(0)


def _data(n, d, rng_seed=0, scale=1.0):
    prg = Prg(rng_seed.to_bytes(32, "little"))  # test data only; any generator would do
    return prg.normal(n * d).reshape(n, d) * scale, (prg.uniform_below(n, 299) + 1).astype(float)


def _run(x, w, *, drops=None, silent=(), seed=SEED, rnd=0, record=False, reveal=True, **opts):
    n, d = x.shape
    net = Network(record_views=record)
    dropouts = {k: frozenset(v) for k, v in (drops or {}).items()}
    r = make_protocol("secagg", **opts).open_round(RoundSpec(rnd, tuple(range(n)), d, seed=seed, dropouts=dropouts),
                                                   net)
    r.setup()
    # the clients the test itself takes out before their masked input: only they may be dropped
    gone = set(silent).union(*(v for k, v in dropouts.items() if k != "unmask"))
    for c in range(n):
        if c in silent:
            continue
        try:
            up = r.protect(c, x[c], w[c])
        except DroppedOutError:
            if c not in gone:
                raise  # a client the test did not drop: a failure, not a dropout
            continue
        r.receive(c, up)
    out = r.reveal() if reveal else None
    r.expected_included = tuple(c for c in range(n) if c not in gone)  # from the test's inputs
    return r, out, net


def _expected(r, x, w, clients):
    ring = r.ring
    total = ring.zeros(r.encoder.length(x.shape[1]))
    for c in clients:
        ring.add_(total, r.encoder.encode(x[c], w[c], dither_prg(r.spec.seed, r.spec.round, c)))
    return total


def _check(r, out, x, w):
    keep = list(r.expected_included)  # not out.included: that would check the protocol against itself
    assert out.included == tuple(keep)
    assert np.array_equal(r.integer_sum, _expected(r, x, w, keep))
    ref = (w[keep, None] * x[keep]).sum(0) / w[keep].sum()
    assert np.abs(out.mean - ref).max() <= r.error_bound


def test_exact_sum_without_dropouts():
    x, w = _data(10, 300, scale=2.0)
    r, out, _ = _run(x, w)
    assert out.included == tuple(range(10)) and out.dropped == ()
    assert (r.k, r.t) == (9, 5)  # from the threat model (γ = 0.2, δ = 0.1): the complete graph at n = 10
    _check(r, out, x, w)


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_at_each_stage_are_recovered(stage):
    x, w = _data(12, 100, rng_seed=1)
    r, out, _ = _run(x, w, drops={stage: {2, 7}})
    if stage == "unmask":  # their masked inputs arrived: they count, their shares are missing
        assert out.included == tuple(range(12))
    else:
        assert out.included == tuple(c for c in range(12) if c not in (2, 7))
    _check(r, out, x, w)


@pytest.mark.parametrize("processes", [1, 2])
def test_dropouts_at_every_stage_at_once_plus_silent_uploaders(processes):
    x, w = _data(24, 80, rng_seed=2)  # k = 10, t = 6: anyone may lose 4 neighbours
    drops = {"advertise_keys": {0}, "share_keys": {5}, "masked_input": {9}, "unmask": {12}}
    r, out, _ = _run(x, w, drops=drops, silent={3}, processes=processes)
    assert out.included == tuple(c for c in range(24) if c not in (0, 5, 9, 3))
    assert set(out.dropped) == {0, 3, 5, 9}
    _check(r, out, x, w)


@pytest.mark.parametrize("processes", [1, 2])
def test_facade_with_dropouts_and_processes(processes):
    x, w = _data(9, 500, rng_seed=3)
    res = secfl.secure_mean(x, w, protocol="secagg", dropouts=[4], seed=1, processes=processes,
                            stage_dropouts={"share_keys": [6]})
    keep = [0, 1, 2, 3, 5, 7, 8]
    assert res.included == tuple(keep)
    assert "share_keys" in res.dropped[6] and 4 in res.dropped
    ref = (w[keep, None] * x[keep]).sum(0) / w[keep].sum()
    assert np.abs(res.mean - ref).max() < 1e-4


def test_too_many_dropouts_at_unmask_abort_with_the_reason():
    x, w = _data(10, 20)
    with pytest.raises(InsufficientQuorumError, match="fewer than the threshold 5"):
        _run(x, w, drops={"unmask": {0, 1, 2, 3, 4}})


def test_too_many_dropouts_before_masks_abort_or_exclude():
    x, w = _data(5, 20)  # complete graph, k = 4, t = 3
    with pytest.raises(InsufficientQuorumError, match="share_keys"):
        _run(x, w, drops={"share_keys": {0, 1}})
    with pytest.raises(InsufficientQuorumError, match="advertised keys"):
        _run(x, w, drops={"advertise_keys": {0, 1, 2}})
    r, out, _ = _run(x, w, drops={"masked_input": {0}})  # each survivor keeps exactly t = 3 share holders
    assert out.included == (1, 2, 3, 4)
    _check(r, out, x, w)
    with pytest.raises(InsufficientQuorumError, match="fewer than the threshold 3"):
        _run(x, w, drops={"masked_input": {0}, "unmask": {1}})


def test_server_prunes_clients_left_with_too_few_share_holders():
    x, w = _data(8, 10)
    r, _, _ = _run(x, w, reveal=False, neighbours=4, threshold=3)
    srv = r.server
    ring = sorted(srv.graph[0])  # a client whose neighbours we silence by hand
    srv.shared = {u: v for u, v in srv.shared.items() if u not in ring[:2]}
    srv.prune()
    assert 0 not in srv.active and "fewer than the threshold 3" in srv.excluded[0]
    assert all(len(srv.graph[u] & srv.active) >= 3 for u in srv.active)


def test_client_refuses_both_shares_of_one_peer():
    x, w = _data(6, 10)
    r, _, net = _run(x, w, reveal=False)
    v = 0
    cl = r.client(v)
    u, u2 = cl.active_neighbours[:2]
    both = SaUnmaskRequest(0, SERVER, (u,), (u,)).to_bytes()
    with pytest.raises(DecryptionRefusedError, match="both"):
        cl.unmask(both)
    cl.unmask(SaUnmaskRequest(0, SERVER, (u,), ()).to_bytes())  # b_u share: fine
    cl.unmask(SaUnmaskRequest(0, SERVER, (u,), ()).to_bytes())  # the same again: harmless
    with pytest.raises(DecryptionRefusedError, match="already revealed"):
        cl.unmask(SaUnmaskRequest(0, SERVER, (u2,), (u,)).to_bytes())
    with pytest.raises(MalformedMessageError, match="never got"):
        cl.unmask(SaUnmaskRequest(0, SERVER, (v,), ()).to_bytes())
    with pytest.raises(ReplayError):
        cl.unmask(SaUnmaskRequest(1, SERVER, (u,), ()).to_bytes())
    out = r.reveal()  # the honest server's requests never ask for both; the round completes
    _check(r, out, x, w)


def test_masked_vector_is_uniform_to_the_server():
    n, d = 5, 20_000
    x, w = np.zeros((n, d)), np.ones(n)
    r, out, net = _run(x, w, record=True)
    got = [m for m in net.views[SERVER] if m.sender == 0 and SaMaskedInput.TYPE.value == m.data[3]]
    assert len(got) == 1
    msg = SaMaskedInput.from_bytes(got[0].data)
    y = r.ring.unpack(msg.packed, msg.length)
    assert stats.chisquare(np.bincount(y.view(np.uint8), minlength=256)).pvalue > P_VALUE
    codes = r.encoder.encode(x[0], 1.0, r.client(0).dither())  # the unmasked codes are far from uniform
    assert stats.chisquare(np.bincount(codes.view(np.uint8), minlength=256)).pvalue < P_VALUE
    assert np.abs(out.mean).max() <= r.error_bound


def test_bad_masked_inputs_cost_only_their_sender():
    x, w = _data(12, 30, rng_seed=4)  # k = 8, t = 5: anyone may lose 3 neighbours
    net = Network()
    r = make_protocol("secagg").open_round(RoundSpec(4, tuple(range(12)), 30, seed=SEED), net)
    r.setup()
    ups = {c: r.protect(c, x[c], w[c]) for c in range(12)}
    data = {c: ups[c].parts[0][1] for c in ups}
    with pytest.raises(MalformedMessageError):  # truncated
        r.receive(0, Upload(((SERVER, data[0][:-7]),)))
    m = SaMaskedInput.from_bytes(data[1])
    with pytest.raises(MalformedMessageError, match="expected 31"):  # wrong length
        r.receive(1, Upload(((SERVER, SaMaskedInput(4, 1, 32, 30, m.packed[:-4]).to_bytes()),)))
    with pytest.raises(ReplayError, match="round 3"):
        r.receive(2, Upload(((SERVER, SaMaskedInput(3, 2, m.modulus_bits, m.length, m.packed).to_bytes()),)))
    with pytest.raises(MalformedMessageError, match="sender"):  # client 3 sends client 1's message
        r.receive(3, Upload(((SERVER, data[1]),)))
    with pytest.raises(MalformedMessageError, match="one message"):
        r.receive(3, Upload(()))
    for c in range(3, 12):
        r.receive(c, ups[c])
    with pytest.raises(DuplicateSenderError):
        r.receive(5, ups[5])
    out = r.reveal()  # 0, 1, 2 count as dropped: their pairwise masks are removed
    r.expected_included = tuple(range(3, 12))
    _check(r, out, x, w)


def test_tampered_forwarded_share_costs_one_share_only():
    x, w = _data(10, 40, rng_seed=5)
    r, _, _ = _run(x, w, reveal=False)
    v = 3
    cl = r.client(v)
    u = cl.active_neighbours[0]
    bad = bytearray(cl._inbox[u])
    bad[20] ^= 0x80
    cl._inbox[u] = bytes(bad)
    with pytest.raises(MalformedMessageError, match="authentication failed"):
        cl.open_share(u)
    out = r.reveal()
    assert len(cl.failures) == 1
    _check(r, out, x, w)


def test_options_are_validated():
    with pytest.raises(InsecureParametersError, match="t ≥ 5"):
        make_protocol("secagg", threshold=4).open_round(RoundSpec(0, tuple(range(10)), 3), Network())
    with pytest.raises(ConfigError, match="exceeds"):
        make_protocol("secagg", threshold=10).open_round(RoundSpec(0, tuple(range(10)), 3), Network())
    with pytest.raises(ConfigError, match="at least 3 clients"):
        make_protocol("secagg").open_round(RoundSpec(0, (0, 1), 3), Network())
    with pytest.raises(ConfigError, match="neighbours"):
        make_protocol("secagg", neighbours=10).open_round(RoundSpec(0, tuple(range(10)), 3), Network())
    with pytest.raises(ConfigError, match="odd"):
        make_protocol("secagg", neighbours=3).open_round(RoundSpec(0, tuple(range(9)), 3), Network())
    with pytest.raises(ConfigError, match="unknown"):
        make_protocol("secagg").open_round(RoundSpec(0, (0, 1, 2), 3, dropouts={"later": frozenset({1})}),
                                           Network())
    with pytest.raises(ConfigError, match="processes"):
        make_protocol("secagg", processes=0)
    with pytest.raises(InsecureParametersError, match="wrap"):
        make_protocol("secagg", bits=30).open_round(RoundSpec(0, tuple(range(10)), 3), Network())


def test_client_refuses_a_roster_with_a_minority_threshold():
    x, w = _data(6, 5)
    r, _, _ = _run(x, w, reveal=False)
    cl = r.client(0)
    weak = SaKeyRoster(0, SERVER, 2, (1, 2, 3, 4), bytes(64 * 4)).to_bytes()
    with pytest.raises(InsecureParametersError, match="threshold"):
        cl.on_roster(weak)


@pytest.mark.parametrize("n,k", [(10, 4), (11, 4), (10, 5), (7, 6), (200, 16)])
def test_harary_graph_is_k_regular_symmetric_and_random(n, k):
    g = harary_graph(range(n), k)
    assert all(len(nb) == k and v not in nb for v, nb in g.items())
    assert all(v in g[u] for v, nb in g.items() for u in nb)
    if n >= 10 and k < n - 1:
        assert any(harary_graph(range(n), k) != g for _ in range(3))
    with pytest.raises(ConfigError):
        harary_graph(range(7), 3)


def test_defaults():
    assert [default_neighbours(n) for n in (3, 4, 10, 100, 1000)] == [2, 3, 8, 14, 20]
    assert [default_threshold(k) for k in (2, 3, 8, 20)] == [2, 2, 5, 11]


@pytest.mark.slow
def test_two_hundred_clients_ten_percent_dropout_at_every_stage():
    n, d = 200, 2000
    x, w = _data(n, d, rng_seed=7)
    picks = list(range(3, n, n // 20))[:20]  # spread over the ring order the server draws
    drops = {s: set(picks[5 * i : 5 * i + 5]) for i, s in enumerate(STAGES)}
    r, out, _ = _run(x, w, drops=drops, processes=2)
    assert len(out.included) == n - 15
    _check(r, out, x, w)


def test_late_inputs_and_second_reveal_are_refused():
    x, w = _data(6, 10)
    net = Network()
    r = make_protocol("secagg").open_round(RoundSpec(0, tuple(range(6)), 10, seed=SEED), net)
    r.setup()
    ups = {c: r.protect(c, x[c], w[c]) for c in range(6)}
    for c in range(5):
        r.receive(c, ups[c])
    out = r.reveal()
    with pytest.raises(ProtocolAbort, match="after unmasking started"):
        r.receive(5, ups[5])  # client 5 was unmasked as dropped: its input must never be added
    with pytest.raises(ProtocolAbort, match="already"):
        r.reveal()
    assert out.included == (0, 1, 2, 3, 4)
    assert set(r.seconds) == {"client", "server"} and all(v > 0 for v in r.seconds.values())


def test_corrupted_shares_abort_with_a_typed_error(monkeypatch):
    import secrets as pysecrets

    from secfl.crypto.sharing import SHAMIR_PRIME
    from secfl.protocols.secagg import SecAggClient

    real = SecAggClient.open_share

    def corrupt(self, peer):
        pair = real(self, peer).copy()
        pair[:, 8] = (pair[:, 8] + np.uint64(1 + pysecrets.randbelow(SHAMIR_PRIME - 1))) % np.uint64(SHAMIR_PRIME)
        return pair

    x, w = _data(6, 10)
    r, _, _ = _run(x, w, reveal=False)
    monkeypatch.setattr(SecAggClient, "open_share", corrupt)
    with pytest.raises(ProtocolAbort, match="inconsistent"):
        r.reveal()


def test_setup_messages_are_checked_strictly():
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.secagg import SaAdvertiseKeys, SaShareKeys, _Server

    x, w = _data(6, 5)
    r, _, _ = _run(x, w, reveal=False)
    srv, cl = r.server, r.client(0)
    with pytest.raises(DuplicateSenderError):
        srv.on_advertise(0, cl.advertise())
    fresh = [PrivateKey.generate().public_key.raw for _ in range(3)]
    s2 = _Server(0, 4, 3, r.ring, 6)
    s2.on_advertise(0, cl.advertise())
    with pytest.raises(MalformedMessageError, match="another client"):  # key reuse across clients
        s2.on_advertise(1, SaAdvertiseKeys(0, 1, cl._c.public_key.raw, fresh[0]).to_bytes())
    with pytest.raises(MalformedMessageError, match="invalid X25519"):
        s2.on_advertise(2, SaAdvertiseKeys(0, 2, bytes(32), fresh[1]).to_bytes())
    with pytest.raises(MalformedMessageError, match="must differ"):
        s2.on_advertise(3, SaAdvertiseKeys(0, 3, fresh[2], fresh[2]).to_bytes())
    with pytest.raises(ReplayError):
        s2.on_advertise(4, SaAdvertiseKeys(7, 4, fresh[0], fresh[1]).to_bytes())
    # share_keys: unknown client, duplicate, wrong neighbour set
    with pytest.raises(MalformedMessageError, match="did not advertise"):
        srv.on_share_keys(99, b"")
    with pytest.raises(DuplicateSenderError):
        srv.on_share_keys(0, b"")
    del srv.shared[0]
    wrong = sorted(set(range(1, 6)) - set(srv.graph[0]))[:1] or [0]
    with pytest.raises(MalformedMessageError, match="one share to each"):
        srv.on_share_keys(0, SaShareKeys(0, 0, tuple(wrong), bytes(108 * len(wrong))).to_bytes())
    with pytest.raises(MalformedMessageError, match="does not match"):
        srv.on_share_keys(0, SaShareKeys(0, 0, (1, 2), bytes(100)).to_bytes())


def test_known_answer_mask_seed_derivation():
    """Pins the pairwise-mask derivation (RFC 7748 §6.1 keys, round 7, pair (3, 9)): a change to
    labels, HKDF or the PRG would silently break interoperability between versions."""
    from secfl.crypto.keys import PrivateKey, hkdf, info_label, shared_secret
    from secfl.protocols import secagg

    h = bytes.fromhex
    a = PrivateKey.from_secret(h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    b = PrivateKey.from_secret(h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    seed = hkdf(shared_secret(a, b.public_key), info=info_label(secagg._MASK_LABEL, 7, 3, 9))
    assert seed.hex() == "3d2d4604028fcb0f48ffde59a4c368878a7669f3210f19de6587715435cdfb6d"
    assert Prg(seed).uint32(4).tolist() == [3275103787, 884679172, 1430025705, 3586659478]
