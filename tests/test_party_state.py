"""``ProtocolRound.party_state``: what each party holds of its own, for attack experiments."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network, member_id, server_id

N, D = 5, 6


def _run(name: str, **opts):
    proto = make_protocol(name, **opts)
    rnd = proto.open_round(RoundSpec(0, tuple(range(N)), D, seed=b"\x02" * 32), Network())
    rnd.setup()
    x = np.linspace(-0.5, 0.5, N * D).reshape(N, D)
    for c in range(N):
        rnd.receive(c, rnd.protect(c, x[c], 1.0))
    rnd.reveal()
    return proto, rnd


def test_plaintext_parties_hold_nothing():
    _, rnd = _run("plaintext")
    assert all(rnd.party_state(p) == {} for p in (0, server_id(0), member_id(0)))


def test_ckks_key_holder_and_clients_hold_the_secret_context_the_server_nothing():
    proto, rnd = _run("ckks")
    try:
        held = rnd.party_state(member_id(0))["secret_context"]
        assert held.context_id == rnd.party_state(0)["secret_context"].context_id
        assert rnd.party_state(server_id(0)) == {}
    finally:
        proto.close()


def test_threshold_members_hold_their_own_key_share_only():
    proto, rnd = _run("ckks-threshold", quorum=(2, 3))
    shares = [rnd.party_state(member_id(j)).get("key_share") for j in range(3)]
    assert all(s is not None for s in shares) and len({id(s) for s in shares}) == 3
    assert rnd.party_state(server_id(0)) == {} and rnd.party_state(0) == {}


def test_additive_servers_hold_their_aggregator():
    _, rnd = _run("additive", servers=3)
    for j in range(3):
        assert rnd.party_state(server_id(j))["aggregator"].id == server_id(j)
    assert rnd.party_state(0) == {}


@pytest.mark.parametrize("processes", [1, 2])
def test_secagg_server_holds_the_graph_clients_their_state_in_process(processes):
    proto, rnd = _run("secagg", processes=processes)
    try:
        srv = rnd.party_state(server_id(0))
        assert set(srv["graph"]) == set(range(N)) and srv["active"] == frozenset(range(N))
        client = rnd.party_state(3)
        if processes == 1:
            assert client["client"].id == 3
        else:  # the client lives in a worker process: its state is not reachable from here
            assert client == {}
    finally:
        proto.close()
