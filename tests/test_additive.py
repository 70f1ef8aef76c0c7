"""``additive``: exact integer sums, the mean's error bound, share uniformity, bad messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

import secfl
from secfl.crypto.prg import Prg
from secfl.errors import (
    ConfigError,
    DuplicateSenderError,
    InsecureParametersError,
    InvalidUpdateError,
    MalformedMessageError,
    ProtocolAbort,
    ReplayError,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.additive import AddShare, ShareKind
from secfl.protocols.base import Upload
from secfl.protocols.network import Network

SEED = b"\x2a" * 32
P_VALUE = 1e-6


def _round(n=6, d=50, *, rnd=0, seed=SEED, record=False, **opts):
    net = Network(record_views=record)
    r = make_protocol("additive", **opts).open_round(RoundSpec(rnd, tuple(range(n)), d, seed=seed), net)
    r.setup()
    return r, net


def _data(n, d, rng_seed=0, scale=1.0):
    prg = Prg(rng_seed.to_bytes(32, "little"))  # test data only; any generator would do
    return prg.normal(n * d).reshape(n, d) * scale, (prg.uniform_below(n, 199) + 1).astype(float)


def _expected_codes(r, x, w, clients):
    ring = r.ring
    total = ring.zeros(r.encoder.length(x.shape[1]))
    for c in clients:
        ring.add_(total, r.encoder.encode(x[c], w[c], r.dither(c)))
    return total


@pytest.mark.parametrize("servers", [2, 3, 5])
def test_integer_sum_is_exact_and_mean_within_bound(servers):
    x, w = _data(7, 300, scale=2.0)
    r, _ = _round(7, 300, servers=servers)
    for c in range(7):
        if c != 4:
            r.receive(c, r.protect(c, x[c], w[c]))
    out = r.reveal()
    keep = [c for c in range(7) if c != 4]
    assert np.array_equal(r.integer_sum, _expected_codes(r, x, w, keep))
    ref = (w[keep, None] * x[keep]).sum(0) / w[keep].sum()
    assert np.abs(out.mean - ref).max() <= r.error_bound
    assert out.included == tuple(keep) and out.dropped == (4,)
    assert out.total_weight == pytest.approx(w[keep].sum(), abs=len(keep) * r.encoder.max_weight / r.encoder.levels)


@pytest.mark.parametrize("modulus_bits,bits", [(64, 40), (24, 12), (32, 8)])
def test_other_moduli_and_widths(modulus_bits, bits):
    x, w = _data(5, 64, rng_seed=3)
    r, _ = _round(5, 64, modulus_bits=modulus_bits, bits=bits, max_weight=256.0)
    for c in range(5):
        r.receive(c, r.protect(c, x[c], w[c]))
    out = r.reveal()
    assert np.array_equal(r.integer_sum, _expected_codes(r, x, w, range(5)))
    ref = (w[:, None] * np.clip(x, -8, 8)).sum(0) / w.sum()
    assert np.abs(out.mean - ref).max() <= r.error_bound


def test_secure_mean_facade_with_dropouts_and_bytes():
    x, w = _data(8, 2000)
    res = secfl.secure_mean(x, w, protocol="additive", servers=3, dropouts=[1, 6], seed=5)
    keep = [0, 2, 3, 4, 5, 7]
    ref = (w[keep, None] * x[keep]).sum(0) / w[keep].sum()
    assert res.included == tuple(keep) and set(res.dropped) == {1, 6}
    assert np.abs(res.mean - ref).max() < 1e-4
    per_param = res.bytes_up / (len(keep) * 2000)
    assert 4.0 < per_param < 4.25  # one 4-byte vector share + two sealed seeds + ~400 B of framing


def test_any_s_minus_one_servers_see_uniform_shares():
    """x = 0 for every client: a coalition of S−1 servers still sees uniform bytes."""
    n, d, servers = 4, 20_000, 3
    r, net = _round(n, d, servers=servers, record=True)
    zeros = np.zeros(d)
    for c in range(n):
        r.receive(c, r.protect(c, zeros, 1.0))
    for client in range(n):
        plain = {}
        for srv in r._servers:
            msgs = [m.data for m in net.views[srv.id] if m.sender == client]
            assert len(msgs) == 1
            kind = ShareKind.VECTOR if srv.index == r.holder(client) else ShareKind.SEED
            k, body = srv.open_share(client, msgs[0], kind)
            plain[srv.index] = srv.share_vector(k, body)
        for coalition in itertools.combinations(range(servers), servers - 1):
            view = np.concatenate([plain[j] for j in coalition]).view(np.uint8)
            assert stats.chisquare(np.bincount(view, minlength=256)).pvalue > P_VALUE
        total = sum(plain[j].astype(np.uint64) for j in range(servers)) % np.uint64(1 << 32)
        assert stats.chisquare(np.bincount(total.astype(np.uint32).view(np.uint8), minlength=256)).pvalue < P_VALUE


def test_tampered_misaddressed_replayed_and_duplicate_shares_cost_only_the_sender():
    x, w = _data(6, 40, rng_seed=1)
    r, _ = _round(6, 40, rnd=3)
    good = {c: r.protect(c, x[c], w[c]) for c in range(6)}
    # client 0: one byte of its sealed vector share flipped -> authentication fails
    parts = list(good[0].parts)
    to, data = parts[0]
    msg = AddShare.from_bytes(data)
    flipped = bytearray(msg.sealed)
    flipped[5] ^= 1
    parts[0] = (to, AddShare(msg.round, msg.sender, msg.recipient, msg.ephemeral, msg.kind, msg.length,
                             bytes(flipped)).to_bytes())
    with pytest.raises(MalformedMessageError, match="authentication failed"):
        r.receive(0, Upload(tuple(parts)))
    with pytest.raises(DuplicateSenderError):  # the rejected client cannot retry in the same round
        r.receive(0, good[0])
    # client 1: shares swapped between servers (misaddressed)
    p = good[1].parts
    with pytest.raises(MalformedMessageError):
        r.receive(1, Upload(((p[0][0], p[1][1]), (p[1][0], p[0][1]))))
    # client 2: a share from another round
    r_old, _ = _round(6, 40, rnd=2)
    with pytest.raises(ReplayError, match="round 2"):
        r.receive(2, r_old.protect(2, x[2], w[2]))
    # client 3: truncated message; client 4: only one of the two shares
    with pytest.raises(MalformedMessageError):
        r.receive(3, Upload(((good[3].parts[0][0], good[3].parts[0][1][:-9]), good[3].parts[1])))
    with pytest.raises(MalformedMessageError, match="exactly one share"):
        r.receive(4, Upload(good[4].parts[:1]))
    r.receive(5, good[5])
    with pytest.raises(DuplicateSenderError):
        r.receive(5, good[5])
    out = r.reveal()
    assert out.included == (5,)
    assert np.abs(out.mean - x[5]).max() <= r.error_bound
    assert np.array_equal(r.integer_sum, _expected_codes(r, x, w, [5]))


def test_servers_agree_on_the_intersection():
    """A client whose seed share only one server accepted is removed from that server's sum."""
    x, w = _data(4, 30, rng_seed=2)
    r, _ = _round(4, 30, servers=3)
    for c in (0, 1, 2):
        r.receive(c, r.protect(c, x[c], w[c]))
    up = r.protect(3, x[3], w[3])
    seed_server = next(s for s in r._servers if s.index != r.holder(3))
    data = dict(up.parts)[seed_server.id]
    kind, plain = seed_server.open_share(3, data, ShareKind.SEED)
    seed_server.accept(3, kind, plain)  # only this server got client 3's share
    out = r.reveal()
    assert out.included == (0, 1, 2) and out.dropped == (3,)
    assert np.array_equal(r.integer_sum, _expected_codes(r, x, w, [0, 1, 2]))
    assert 3 not in seed_server.accepted


def test_configuration_is_validated_and_overflow_refused():
    with pytest.raises(ConfigError, match="servers"):
        make_protocol("additive", servers=1)
    with pytest.raises(ConfigError, match="clip_range"):
        make_protocol("additive", clip_range=-1.0)
    with pytest.raises(ConfigError, match="no option"):
        make_protocol("additive", neighbours=3)
    proto = make_protocol("additive", bits=22)  # fine for 1000 clients, wraps for 1100
    proto.open_round(RoundSpec(0, tuple(range(1000)), 4), Network())
    with pytest.raises(InsecureParametersError, match=r"1100 clients × \(2\*\*22 − 1\).*≥ 2\*\*32"):
        proto.open_round(RoundSpec(0, tuple(range(1100)), 4), Network())
    with pytest.raises(InsecureParametersError, match="headroom"):
        make_protocol("additive", bits=32, modulus_bits=32)
    with pytest.raises(ConfigError, match="stage dropouts"):
        make_protocol("additive").open_round(RoundSpec(0, (0, 1), 4, dropouts={"x": frozenset({1})}), Network())


def test_weight_above_max_is_refused_by_the_client_and_round_goes_on():
    x, w = _data(3, 10)
    w[1] = 5000.0
    res = secfl.secure_mean(x, w, protocol="additive", max_weight=1000.0)
    assert "max_weight" in res.dropped[1] and res.included == (0, 2)
    r, _ = _round(2, 10)
    with pytest.raises(InvalidUpdateError, match="non-finite"):
        r.protect(0, np.full(10, np.nan), 1.0)
    with pytest.raises(ProtocolAbort, match="no client"):
        r.reveal()


def test_unseeded_rounds_use_fresh_dither():
    r1, _ = _round(2, 10, seed=None)
    assert not np.array_equal(r1.dither(0).uint32(4), r1.dither(0).uint32(4))
    r2, _ = _round(2, 10)
    assert np.array_equal(r2.dither(0).uint32(4), r2.dither(0).uint32(4))
    assert not np.array_equal(r2.dither(0).uint32(4), r2.dither(1).uint32(4))


def test_late_upload_and_second_reveal_are_refused():
    x, w = _data(3, 10)
    r, _ = _round(3, 10)
    ups = {c: r.protect(c, x[c], w[c]) for c in range(3)}
    r.receive(0, ups[0])
    r.receive(1, ups[1])
    r.reveal()
    with pytest.raises(ProtocolAbort, match="after the servers agreed"):
        r.receive(2, ups[2])
    with pytest.raises(ProtocolAbort, match="already"):
        r.reveal()
    assert set(r.seconds) == {"client", "server"}
