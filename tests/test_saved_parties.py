"""``Party.save_state`` / ``load_state``: a party rebuilt from its saved bytes before every stage
(as Flower's simulation engine runs it) gives the same round as a live one; a saved state is
parsed strictly; parties whose secrets must not leave their process refuse to be saved."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.errors import ConfigError, MalformedMessageError, SecFLError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network
from secfl.protocols.parties import LocalTransport, Party

N, D = 12, 40


class _Reloaded(Party):
    """Party ``pid`` restored from ``store`` for each request, saved back after it."""

    def __init__(self, proto, store: dict[int, bytes], pid: int) -> None:
        self.proto, self.store, self.party_id = proto, store, pid

    def handle(self, stage: str, request: bytes) -> bytes:
        party = self.proto.party(self.party_id)
        party.load_state(self.store[self.party_id])
        try:
            return party.handle(stage, request)
        finally:
            self.store[self.party_id] = party.save_state()


def _round(name: str, updates: np.ndarray, **opts):
    proto = make_protocol(name, **opts)
    store = {}
    for c in range(N):
        party = proto.party(c)
        party.set_input(0, updates[c], 1.0 + c)
        store[c] = party.save_state()
    transport = LocalTransport(Network(), lambda pid: _Reloaded(proto, store, pid))
    out = proto.coordinator().run_round(RoundSpec(0, tuple(range(N)), D, seed=b"\x01" * 32), transport)
    return out, store


@pytest.mark.parametrize("name, opts, tol", [("plaintext", {"wire_dtype": "float64"}, 1e-12),
                                             ("secagg", {"max_weight": float(N)}, None)])
def test_a_party_rebuilt_before_every_stage_gives_the_weighted_mean(name, opts, tol):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (N, D))
    w = 1.0 + np.arange(N)
    out, _ = _round(name, x, **opts)
    ref = (w[:, None] * x).sum(0) / w.sum()
    assert out.included == tuple(range(N))
    if tol is None:  # secagg: the encoder's own bound (3·r·m / (L·B̂)), from the revealed weight
        from secfl.protocols.dp_encoding import round_encoder

        proto = make_protocol(name, **opts)
        enc = round_encoder(proto.options, N, None)
        tol = enc.error_bound(N, w.sum() / opts["max_weight"])
    assert np.abs(out.mean - ref).max() <= tol


def test_a_secagg_client_saved_mid_round_keeps_its_secrets_and_refusals():
    x = np.zeros((N, D))
    _, store = _round("secagg", x, max_weight=float(N))
    proto = make_protocol("secagg", max_weight=float(N))
    saved = store[3]
    again = proto.party(3)
    again.load_state(saved)
    assert again.save_state() == saved  # a faithful round trip
    assert again.round == 0 and again.sent_masked_input
    assert len(again._inbox) == len(again._peer_c) > 0
    with pytest.raises(MalformedMessageError, match="not client 4's"):
        proto.party(4).load_state(saved)


@pytest.mark.parametrize("cut", [0, 5, 37, -1])
def test_a_truncated_or_extended_state_is_refused(cut):
    _, store = _round("secagg", np.zeros((N, D)), max_weight=float(N))
    saved = store[2]
    bad = saved[:cut] if cut >= 0 else saved + b"\x00"
    with pytest.raises(SecFLError):
        make_protocol("secagg", max_weight=float(N)).party(2).load_state(bad)


@pytest.mark.parametrize("name, pid", [("ckks", 0), ("ckks-threshold", 0), ("additive", 0)])
def test_parties_holding_process_bound_secrets_refuse_to_be_saved(name, pid):
    opts = {"quorum": [2, 3]} if name == "ckks-threshold" else {}
    party = make_protocol(name, **opts).party(pid)
    with pytest.raises(ConfigError, match="cannot leave its process"):
        party.save_state()
    with pytest.raises(ConfigError):
        party.load_state(b"")
