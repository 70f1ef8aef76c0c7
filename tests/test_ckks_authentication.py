"""``ckks`` provisioning across sites against an active relay (issue 12, item 2): with a federation
roster, each client signs its one-time hello key and the key holder seals the secret context only
to a signed hello; the key holder signs its one-time key (bound to the client's) and a client opens
only a context sealed under it.

Attacks: (a) the relay swaps a client's hello key for its own, to be sealed the secret context
(the key: every update). Before: the key holder sealed to the relay. Now: it refuses that client.
(b) the relay seals a context of its own to a client, to read its update. Now: the client refuses.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from relay_support import Relay

from secfl.crypto.identity import new_identities
from secfl.crypto.keys import PrivateKey
from secfl.errors import InsufficientQuorumError, ProtocolAbort
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks.client import KEY_HOLDER
from secfl.protocols.ckks.messages import CkksKeyRequest, CkksUploadRequest
from secfl.protocols.network import Network
from secfl.protocols.parties import LocalTransport

CLIENTS, D = (0, 1, 2), 40


def _federation():
    proto = make_protocol("ckks", max_weight=1.0)
    keys, roster = new_identities((*CLIENTS, KEY_HOLDER))
    parties = {p: proto.party(p, identity=keys[p], roster=roster) for p in (*CLIENTS, KEY_HOLDER)}
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (len(CLIENTS), D))
    for c in CLIENTS:
        parties[c].set_input(0, xs[c], 1.0)
    return proto, parties, xs


def test_the_honest_round_passes_with_signatures():
    proto, parties, xs = _federation()
    coord = proto.coordinator()
    out = coord.run_round(RoundSpec(0, CLIENTS, D), LocalTransport(Network(), parties))
    assert out.included == CLIENTS and np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound


def test_a_relay_swapping_hello_keys_is_sealed_nothing():
    proto, parties, _ = _federation()
    evil = PrivateKey.generate().public_key.raw

    def swap(_pid: int, data: bytes) -> bytes:
        msg = CkksKeyRequest.from_bytes(data)
        return replace(msg, hellos=(evil,) * len(msg.hellos)).to_bytes()

    relay = Relay(LocalTransport(Network(), parties), "ckks.keys", on_request=swap)
    coord = proto.coordinator()
    with pytest.raises((ProtocolAbort, InsufficientQuorumError)):
        coord.run_round(RoundSpec(0, CLIENTS, D), relay)
    assert all("not provisioned" in coord.dropped[c] for c in CLIENTS), coord.dropped


def test_a_client_refuses_a_context_sealed_by_anyone_but_the_key_holder():
    proto, parties, _ = _federation()

    def reseal(_pid: int, data: bytes) -> bytes:  # the relay's own one-time key in place of the key holder's
        msg = CkksUploadRequest.from_bytes(data)
        return replace(msg, holder_key=PrivateKey.generate().public_key.raw).to_bytes() if msg.sealed else data

    relay = Relay(LocalTransport(Network(), parties), "ckks.upload", on_request=reseal)
    coord = proto.coordinator()
    with pytest.raises((ProtocolAbort, InsufficientQuorumError)):
        coord.run_round(RoundSpec(0, CLIENTS, D), relay)
    assert all("AuthenticationError" in relay.failures[c] for c in CLIENTS), relay.failures
