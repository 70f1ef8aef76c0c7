"""``additive`` across sites against an active relay (issue 12, item 2): with a federation roster,
aggregation servers 1..S−1 (at sites) sign their round keys and clients seal shares only to
signed keys. Attack: the coordinator (server 0) swaps server 1's key for its own, to open both
shares of every client (S = 2: the input). Before: accepted. Now: every client refuses
(``AuthenticationError``) and the round aborts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from relay_support import Relay

from secfl.crypto.identity import new_identities
from secfl.crypto.keys import PrivateKey
from secfl.errors import ProtocolAbort, SecFLError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.additive.messages import AddServerKey, AddUploadRequest
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import LocalTransport

CLIENTS, D = (0, 1, 2), 30
EVIL = PrivateKey.generate()  # the coordinator's own key


def _federation():
    proto = make_protocol("additive", max_weight=1.0)
    ids = (*CLIENTS, server_id(1))
    keys, roster = new_identities(ids)
    parties = {p: proto.party(p, identity=keys[p], roster=roster) for p in ids}
    xs = np.random.default_rng(0).uniform(-1, 1, (len(CLIENTS), D))
    for c in CLIENTS:
        parties[c].set_input(0, xs[c], 1.0)
    return proto, parties, xs


def _swap_server_key(_pid: int, data: bytes) -> bytes:
    """Server 1's key in the upload request becomes the coordinator's own (re-framed)."""
    msg = AddUploadRequest.from_bytes(data)
    one = AddServerKey.from_bytes(msg.server_keys[1])
    forged = replace(one, public_key=EVIL.public_key.raw).to_bytes()
    return replace(msg, server_keys=(msg.server_keys[0], forged, *msg.server_keys[2:])).to_bytes()


def test_the_honest_round_passes_with_signatures():
    proto, parties, xs = _federation()
    coord = proto.coordinator()
    out = coord.run_round(RoundSpec(0, CLIENTS, D), LocalTransport(Network(), parties))
    assert out.included == CLIENTS and np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound


def test_a_coordinator_swapping_a_server_key_gets_no_share():
    proto, parties, _ = _federation()
    relay = Relay(LocalTransport(Network(), parties), "additive.upload", on_request=_swap_server_key)
    with pytest.raises((ProtocolAbort, SecFLError)):
        proto.coordinator().run_round(RoundSpec(0, CLIENTS, D), relay)
    assert all("AuthenticationError" in relay.failures[c] for c in CLIENTS), relay.failures


def _move_partial_sum(pid: int, data: bytes) -> bytes:
    """Moves server 1's partial sum by half the ring (re-framed: the CRC is valid)."""
    from secfl.crypto.ring import Ring
    from secfl.protocols.additive.messages import AddPartialSum

    if pid != server_id(1):
        return data
    msg = AddPartialSum.from_bytes(data)
    ring = Ring(msg.modulus_bits)
    values = ring.unpack(msg.packed, msg.length).copy()
    values[0] = (int(values[0]) + (1 << (msg.modulus_bits - 1))) % (1 << msg.modulus_bits)
    return replace(msg, packed=ring.pack(values)).to_bytes()


def test_a_tampered_partial_sum_fails_the_sanity_check_on_the_mean():
    from secfl.errors import ProtocolAbort

    proto, parties, _ = _federation()
    with pytest.raises(ProtocolAbort, match="beyond the clipping range"):
        proto.coordinator().run_round(RoundSpec(0, CLIENTS, D), Relay(LocalTransport(Network(), parties),
                                                                        "additive.reveal", on_reply=_move_partial_sum))


def test_the_sanity_check_bounds():
    from secfl.crypto.encoding import check_within_clip
    from secfl.errors import ProtocolAbort

    check_within_clip(np.array([-1.0, 1.0 + 1e-4]), 1.0, 1e-4)  # within r + bound
    for bad in (np.array([0.0, 1.01]), np.array([np.nan]), np.array([-np.inf])):
        with pytest.raises(ProtocolAbort):
            check_within_clip(bad, 1.0, 1e-4)
