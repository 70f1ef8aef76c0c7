"""Parties and stage sequences over a transport (issue 11, part 1): the server's stage sequence of
each split protocol, run over the in-process LocalTransport with one party object per site,
gives the plaintext weighted mean within the protocol's bound; the server's messages carry no
secret; dropouts at any stage and tampered replies cost only their sender."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.crypto.ckks import CkksPublicContext, CkksSecretContext
from secfl.errors import MalformedMessageError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks import KEY_HOLDER
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import LocalTransport
from secfl.protocols.wire import Frame, MsgType


def _sites(proto, clients, extra=()):
    """One party object per party id, each built on its own (as a separate site would)."""
    return {pid: proto.party(pid) for pid in (*clients, *extra)}


def _reference(xs, ws, keep):
    keep = list(keep)
    return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()


def test_ckks_stage_sequence_over_local_transport_two_rounds_with_dropouts():
    proto = make_protocol("ckks")
    coord = proto.coordinator()
    clients = (0, 1, 2, 3)
    parties = _sites(proto, clients, (KEY_HOLDER,))
    net = Network(record_views=True)
    rng = np.random.default_rng(0)
    ws = np.array([5.0, 10.0, 15.0, 20.0])
    for rnd, silent in ((0, {}), (1, {"ckks.upload": {2}})):
        xs = rng.uniform(-1, 1, size=(4, 3000))
        for c in clients:
            parties[c].set_input(rnd, xs[c], ws[c])
        out = coord.run_round(RoundSpec(rnd, clients, 3000), LocalTransport(net, parties, silent=silent))
        keep = [c for c in clients if c not in silent.get("ckks.upload", ())]
        assert out.included == tuple(keep)
        assert np.max(np.abs(out.mean - _reference(xs, ws, keep))) <= coord.error_bound
        assert out.total_weight == pytest.approx(ws[keep].sum(), rel=1e-6)
    # what the server received: public context, hellos, sealed keys, ciphertexts, the reveal -- no secret
    seen = {Frame.from_bytes(d.data).type for d in net.views[server_id(0)]}
    assert MsgType.CKKS_SECRET_CONTEXT not in seen and MsgType.CKKS_KEYS in seen
    secret = parties[KEY_HOLDER].state()["secret_context"].to_bytes(include_secret_key=True)
    key_part = secret[len(parties[KEY_HOLDER].state()["secret_context"].public().to_bytes()):]
    for d in net.views[server_id(0)]:
        assert key_part[:64] not in d.data  # the packed secret key never crosses the server in clear
    assert isinstance(coord.server.context, CkksPublicContext)
    assert not isinstance(coord.server.context, CkksSecretContext)
    for p in parties.values():
        getattr(p, "close", lambda: None)()


def test_ckks_tampered_sealed_context_drops_only_that_client():
    proto = make_protocol("ckks")
    coord = proto.coordinator()
    clients = (0, 1, 2)
    parties = _sites(proto, clients, (KEY_HOLDER,))

    class Tamper(LocalTransport):
        def exchange(self, stage, requests):
            if stage == "ckks.upload":
                frame = Frame.from_bytes(requests[1])
                payload = bytearray(frame.payload)
                payload[-20] ^= 1  # inside the sealed context; the CRC is recomputed by re-framing
                requests = {**requests, 1: Frame(frame.type, frame.round, frame.sender, bytes(payload)).to_bytes()}
            return super().exchange(stage, requests)

    xs = np.random.default_rng(1).uniform(-1, 1, size=(3, 50))
    for c in clients:
        parties[c].set_input(0, xs[c], 1.0)
    transport = Tamper(Network(), parties)
    out = coord.run_round(RoundSpec(0, clients, 50), transport)
    assert out.included == (0, 2) and out.dropped == (1,)
    assert "authentication failed" in transport.failures[1]
    assert np.max(np.abs(out.mean - xs[[0, 2]].mean(0))) <= coord.error_bound


def test_a_client_answers_only_its_own_round_once():
    proto = make_protocol("ckks")
    client = proto.party(0)
    with pytest.raises(MalformedMessageError):
        client.handle("ckks.nothing", b"")
    with pytest.raises(MalformedMessageError):
        client.take_input(3)


def test_plaintext_stage_sequence_over_local_transport_with_a_bad_reply():
    proto = make_protocol("plaintext", wire_dtype="float64")
    coord = proto.coordinator()
    parties = _sites(proto, (0, 1, 2))
    xs = np.random.default_rng(2).normal(size=(3, 20))
    ws = np.array([1.0, 2.0, 3.0])
    for c in range(3):
        parties[c].set_input(5, xs[c], ws[c])
    parties[2].set_input(5, np.full(20, np.nan), 1.0)  # refused by its own client: no answer
    transport = LocalTransport(Network(), parties)
    out = coord.run_round(RoundSpec(5, (0, 1, 2), 20), transport)
    assert out.included == (0, 1) and "non-finite" in transport.failures[2]
    assert np.allclose(out.mean, _reference(xs, ws, [0, 1]), atol=1e-12)
