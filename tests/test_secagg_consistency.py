"""``secagg``'s optional consistency check (issue 12 item 2; Bonawitz et al. 2017, round
ConsistencyCheck): clients sign the set U3 of counted masked inputs, and a client releases shares
only for a U3 that at least t of its neighbours signed, and only shares consistent with it.

Attack: a malicious server equivocates, telling some of client 0's neighbours that client 0
dropped (asking them for its mask-key shares) while it kept client 0's masked input. Without the
check those clients answer; with it they refuse (``DecryptionRefusedError``): the equivocation is
detected by exactly the clients it was tried on.
"""

from __future__ import annotations

import numpy as np
import pytest
from relay_support import Relay

from secfl.crypto.identity import new_identities
from secfl.errors import ConfigError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network
from secfl.protocols.parties import LocalTransport
from secfl.protocols.secagg.messages import (
    SaCheckedUnmaskRequest,
    SaConsistencyRequest,
    SaUnmaskRequest,
    SaUnmaskResponse,
)
from secfl.protocols.secagg.options import CONSISTENCY, UNMASK

N, D = 8, 40
LIED_TO = (3, 4)  # the clients told that client 0 dropped


def _run(check: bool, transport_for=lambda t: t, silent=None):
    proto = make_protocol("secagg", max_weight=1.0, consistency_check=check)
    keys, roster = new_identities(range(N))
    parties = {c: proto.party(c, identity=keys[c], roster=roster) for c in range(N)}
    xs = np.random.default_rng(1).uniform(-1, 1, (N, D))
    for c, p in parties.items():
        p.set_input(0, xs[c], 1.0)
    coord = proto.coordinator()
    transport = transport_for(LocalTransport(Network(), parties, silent=silent))
    try:
        out = coord.run_round(RoundSpec(0, tuple(range(N)), D), transport)
    finally:
        proto.close()
    return out, coord, transport, xs


def test_an_honest_round_with_the_check_reveals_the_mean():
    out, coord, _, xs = _run(True)
    assert out.included == tuple(range(N))
    assert np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound
    assert set(coord.server.u3_signatures) == set(range(N))


def test_a_client_silent_at_the_check_still_counts_and_the_round_goes_on():
    out, coord, _, xs = _run(True, silent={CONSISTENCY: {5}})
    assert out.included == tuple(range(N))  # its masked input counts; it is not asked to unmask
    assert 5 in coord.unmask_failures and 5 not in coord.server.answered
    assert np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound


def _equivocate(pid: int, data: bytes) -> bytes:
    """Tell LIED_TO that client 0 dropped: its self-mask share request becomes a mask-key share one."""
    if pid not in LIED_TO:
        return data
    try:
        m = SaCheckedUnmaskRequest.from_bytes(data)
        return SaCheckedUnmaskRequest(m.round, m.sender, tuple(u for u in m.survivors if u != 0),
                                      tuple(sorted({*m.dropped, 0})), tuple(u for u in m.u3 if u != 0),
                                      m.signers, m.signatures).to_bytes()
    except Exception:
        m = SaUnmaskRequest.from_bytes(data)
        return SaUnmaskRequest(m.round, m.sender, tuple(u for u in m.survivors if u != 0),
                               tuple(sorted({*m.dropped, 0}))).to_bytes()


def _equivocate_u3(pid: int, data: bytes) -> bytes:
    if pid not in LIED_TO:
        return data
    m = SaConsistencyRequest.from_bytes(data)
    return SaConsistencyRequest(m.round, m.sender, tuple(u for u in m.survivors if u != 0)).to_bytes()


def _leaked(replies: dict[int, tuple[int, ...]]):
    """A relay hook that records which clients' mask-key shares each reply carries."""
    def hook(pid: int, data: bytes) -> bytes:
        replies[pid] = SaUnmaskResponse.from_bytes(data).dropped
        return data
    return hook


def test_without_the_check_the_lied_to_clients_hand_over_mask_key_shares():
    replies: dict[int, tuple[int, ...]] = {}
    _run(False, transport_for=lambda t: Relay(t, UNMASK, on_request=_equivocate, on_reply=_leaked(replies)))
    # they answered the forged request: client 0's mask-key shares left them (a malicious server
    # keeps them; this honest one refuses replies it did not ask for)
    assert all(0 in replies[c] for c in LIED_TO)


@pytest.mark.parametrize("how", ["request", "signed_u3"])
def test_with_the_check_the_lied_to_clients_refuse(how):
    if how == "request":  # the unmask request contradicts the U3 they signed
        wrap = lambda t: Relay(t, UNMASK, on_request=_equivocate)  # noqa: E731
    else:  # they are asked to sign another U3: too few neighbours signed that one
        class Both(Relay):
            def exchange(self, stage, requests):
                if stage == CONSISTENCY:
                    requests = {p: _equivocate_u3(p, d) for p, d in requests.items()}
                return super().exchange(stage, requests)

        wrap = lambda t: Both(t, UNMASK, on_request=_equivocate)  # noqa: E731
    out, coord, transport, xs = _run(True, transport_for=wrap)
    for c in LIED_TO:
        assert "DecryptionRefusedError" in coord.unmask_failures[c], coord.unmask_failures
    assert not coord.server.s_shares.get(0)  # no mask-key share of client 0 left any honest client
    # the others still unmask everyone (their U3 carries enough valid signatures): the round completes
    assert out.included == tuple(range(N))
    assert np.abs(out.mean - xs.mean(0)).max() <= coord.error_bound


def test_the_simulator_refuses_the_check_it_cannot_run():
    proto = make_protocol("secagg", consistency_check=True)
    with pytest.raises(ConfigError, match="across sites"):
        proto.open_round(RoundSpec(0, tuple(range(N)), D), Network())
    with pytest.raises(ConfigError, match="true or false"):
        make_protocol("secagg", consistency_check=1)
