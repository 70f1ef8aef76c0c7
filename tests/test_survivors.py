"""Tests for the six bugs that survived the default suite when planted (issue 15, item 1): each
fails on the buggy version and passes on the right one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secfl.errors import InvalidUpdateError, MalformedMessageError, ProtocolAbort
from secfl.fl.fedavg import apply_mean, sample_clients
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network
from secfl.runtime.privacy import DPSettings, RunPrivacy


def test_the_runtime_refuses_a_round_with_exactly_min_honest_clients():
    """Each included client needs min_honest *other* clients' shares: with exactly min_honest
    included, each has min_honest - 1 (the off-by-one mutant accepted it, under-noised)."""
    priv = RunPrivacy.create(DPSettings(noise_multiplier=1.0, min_honest=3), clip=1.0, rounds=1, per_round=6,
                             dim=10, integer_protocol=False)
    with pytest.raises(ProtocolAbort, match="min_honest=3"):
        priv.check_survivors(3)
    priv.check_survivors(4)  # 3 others each: enough


def test_the_secret_norm_bound_is_pinned_to_its_closed_form():
    """||s||^2 <= (2n/3)·N + 4n²·√N (mean plus the Hoeffding term); dropping the second term lowered
    sigma_flood by about 13 % at n = 5 without any ratio test noticing."""
    p = make_protocol("ckks-threshold").params
    n, big_n = 5, p.poly_degree
    assert p.secret_norm_sq(n) == pytest.approx(2 * n / 3 * big_n + 4 * n * n * math.sqrt(big_n), rel=1e-15)
    # the flooding sigma of the standard preset, pinned (heuristic: sqrt(12·tau)·2^(s/2)·B_ct)
    assert p.flooding_sigma(5, 5) == pytest.approx(24780226370.648083, rel=1e-12)
    assert p.flooding_sigma(5, 5) == pytest.approx(
        math.sqrt(12 * p.max_decryptions) * 2 ** (p.stat_security_bits / 2) * p.ciphertext_noise_bound(5, 5), rel=1e-15)


def test_a_member_refuses_more_included_clients_than_its_flooding_was_sized_for():
    from relay_support import Relay
    from test_threshold_authentication import CLIENTS, DIM, N, _federation, _inputs

    from secfl.errors import InsufficientQuorumError
    from secfl.protocols.ckks_threshold.messages import ThrPartialRequest
    from secfl.protocols.network import member_id
    from secfl.protocols.parties import LocalTransport

    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    parties, _ = _federation(proto)
    _inputs(parties, 0)

    def shrink(_pid: int, data: bytes) -> bytes:  # the round "has" one client fewer than it includes
        req = ThrPartialRequest.from_bytes(data)
        return ThrPartialRequest(req.round, req.sender, req.clients - 1, req.active_set).to_bytes()

    relay = Relay(LocalTransport(Network(), parties), "thr.partial", on_request=shrink)
    with pytest.raises(InsufficientQuorumError):
        proto.coordinator().run_round(RoundSpec(0, CLIENTS, DIM), relay)
    failures = [relay.failures[member_id(j)] for j in range(N) if member_id(j) in relay.failures]
    assert failures and all("included clients, the round has" in f for f in failures), failures


def test_the_ckks_key_holder_refuses_an_aggregate_naming_non_participants():
    proto = make_protocol("ckks")
    try:
        r = proto.open_round(RoundSpec(0, (0, 1, 2), 8), Network())
        r.setup()
        for c in (0, 1, 2):
            r.receive(c, r.protect(c, np.full(8, 0.1), 1.0))
        data = proto.server.aggregate_message()
        proto.key_holder.expect_round(0, frozenset({0, 1}), 8)  # client 2 is no participant of this round
        with pytest.raises(MalformedMessageError, match="not participants"):
            proto.key_holder.reveal(data, 0)
    finally:
        proto.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_apply_mean_refuses_a_non_finite_mean(bad):
    mean = np.zeros(4)
    mean[2] = bad
    with pytest.raises(InvalidUpdateError, match="non-finite"):
        apply_mean(np.zeros(4, dtype=np.float32), mean)
    with pytest.raises(InvalidUpdateError):
        apply_mean(np.zeros(4, dtype=np.float32), np.zeros(5))


def test_sample_clients_keeps_one_client_when_every_one_would_drop():
    for rnd in range(20):
        chosen, silent = sample_clients(10, 0.5, 1.0, seed=3, rnd=rnd)
        assert len(chosen) == 5 and len(silent) == 4 and silent < set(chosen)
    chosen, silent = sample_clients(10, 1.0, 0.0, seed=3, rnd=0)
    assert chosen == list(range(10)) and not silent
