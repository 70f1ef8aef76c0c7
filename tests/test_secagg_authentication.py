"""``secagg`` across sites against an active relay (issue 12, item 2): with a federation roster,
every client signs its round keys and checks each neighbour's signature in ``SA_KEY_ROSTER``;
the roster's digest is bound into every sealed share's AD.

Attack: the relay (the server, or anyone on the path) swaps every neighbour's keys in each
client's roster for its own, to open the sealed share pairs (both shares of a client → its
input). Before: accepted. Now: every client refuses (``AuthenticationError``), the round aborts
(``InsufficientQuorumError``).
"""

from __future__ import annotations

import numpy as np
import pytest
from relay_support import Relay

from secfl.crypto.identity import IdentityKey, new_identities
from secfl.crypto.keys import PrivateKey
from secfl.errors import InsufficientQuorumError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network
from secfl.protocols.parties import LocalTransport
from secfl.protocols.secagg.messages import SaKeyRoster, advertise_signed

N, D = 8, 50


def _federation(proto, roster_for=None):
    keys, roster = new_identities(range(N))
    parties = {c: proto.party(c, identity=keys[c], roster=roster if roster_for is None else roster_for)
               for c in range(N)}
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (N, D))
    for c, p in parties.items():
        p.set_input(0, xs[c], 1.0)
    return parties, xs


def _swap_keys(resign: bool):
    """Every neighbour's keys in SA_KEY_ROSTER become the relay's own (re-signed with an identity
    key that is not in the roster, or with the old signatures kept)."""
    c, s_key, identity = PrivateKey.generate(), PrivateKey.generate(), IdentityKey.generate()
    pair = c.public_key.raw + s_key.public_key.raw

    def swap(_pid: int, data: bytes) -> bytes:
        msg = SaKeyRoster.from_bytes(data)
        sigs = msg.signatures
        if resign:
            sigs = b"".join(identity.sign(advertise_signed(msg.round, v, pair[:32], pair[32:])) for v in msg.neighbours)
        return SaKeyRoster(msg.round, msg.sender, msg.threshold, msg.neighbours, pair * len(msg.neighbours),
                           sigs).to_bytes()

    return swap


def test_the_honest_round_passes_with_signatures():
    proto = make_protocol("secagg", max_weight=1.0)
    parties, xs = _federation(proto)
    coord = proto.coordinator()
    out = coord.run_round(RoundSpec(0, tuple(range(N)), D), LocalTransport(Network(), parties))
    assert out.included == tuple(range(N))
    assert np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound


@pytest.mark.parametrize("resign", [False, True])
def test_a_relay_swapping_neighbour_keys_is_detected_and_the_round_aborts(resign):
    proto = make_protocol("secagg", max_weight=1.0)
    parties, _ = _federation(proto)
    relay = Relay(LocalTransport(Network(), parties), "secagg.share_keys", on_request=_swap_keys(resign))
    with pytest.raises(InsufficientQuorumError):
        proto.coordinator().run_round(RoundSpec(0, tuple(range(N)), D), relay)
    assert all("AuthenticationError" in relay.failures[c] for c in range(N)), relay.failures


def test_a_roster_without_signatures_is_refused_when_the_federation_has_identities():
    proto = make_protocol("secagg", max_weight=1.0)
    _, roster = new_identities(range(N))
    parties = {c: proto.party(c, roster=roster) for c in range(N)}  # nobody signs (no identity key)
    for p in parties.values():
        p.set_input(0, np.zeros(D), 1.0)
    transport = LocalTransport(Network(), parties)
    with pytest.raises(InsufficientQuorumError):
        proto.coordinator().run_round(RoundSpec(0, tuple(range(N)), D), transport)
    assert all("carries no signatures" in transport.failures[c] for c in range(N)), transport.failures
