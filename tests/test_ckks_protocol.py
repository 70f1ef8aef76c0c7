"""The ``ckks`` protocol: weighted mean within the documented bound, dropouts, key handling across
rounds, what the server holds, strict parsing of uploads, refused parameter sets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secfl
from secfl.crypto.ckks import CkksParams, CkksPublicContext, CkksSecretContext, seeded_nbytes
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    DuplicateSenderError,
    InsecureParametersError,
    InvalidUpdateError,
    MalformedMessageError,
    ProtocolAbort,
    ReplayError,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.base import Upload
from secfl.protocols.ckks import KEY_HOLDER, CkksUpdate
from secfl.protocols.network import Network, server_id
from secfl.protocols.wire import Frame, MsgType


def _run(proto, net, xs, ws, rnd=0, skip=()):
    spec = RoundSpec(rnd, tuple(range(len(xs))), xs.shape[1])
    r = proto.open_round(spec, net)
    r.setup()
    for c in range(len(xs)):
        if c not in skip:
            r.receive(c, r.protect(c, xs[c], ws[c]))
    return r, r.reveal()


def _reference(xs, ws, keep):
    keep = list(keep)
    return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 6), st.integers(1, 2 * 2048 + 3), st.integers(0, 2**32 - 1))
def test_mean_equals_plaintext_weighted_mean_within_bound(clients, dim, seed):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-100, 100, size=(clients, dim))
    ws = rng.integers(1, 10_000, size=clients).astype(float)
    proto = make_protocol("ckks")
    try:
        r, rev = _run(proto, Network(), xs, ws)
    finally:
        proto.close()
    ref = _reference(xs, ws, range(clients))
    assert r.error_bound is not None and r.error_bound > 0
    assert np.max(np.abs(rev.mean - ref)) <= r.error_bound
    assert rev.included == tuple(range(clients)) and rev.dropped == ()
    assert rev.total_weight == pytest.approx(ws.sum(), rel=1e-3)


def test_secure_mean_facade_and_dropouts_excluded():
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(5, 3000))
    ws = np.array([10.0, 200.0, 35.0, 4000.0, 1.0])
    res = secfl.secure_mean(xs, ws, protocol="ckks", dropouts=[1, 3])
    assert res.included == (0, 2, 4) and set(res.dropped) == {1, 3}
    ref = _reference(xs, ws, [0, 2, 4])
    assert np.max(np.abs(res.mean - ref)) < 1e-3
    assert res.total_weight == pytest.approx(46.0, rel=1e-3)
    # uploads are ciphertexts: 2 ciphertexts of 27648 bytes for 3001 reals, plus framing
    per_upload = 2 * 27648 + 20 + 8 + 22
    assert res.bytes_up >= 3 * per_upload


def test_keys_persist_across_rounds_and_provisioning_is_counted_once():
    proto = make_protocol("ckks")
    net = Network(record_views=True)
    xs = np.random.default_rng(1).normal(size=(3, 100))
    ws = np.ones(3)
    _run(proto, net, xs, ws, rnd=0)
    holder = proto._holder
    sent_after_first = net.sent[KEY_HOLDER]
    secret_len = len(holder.to_bytes(include_secret_key=True))
    public_len = len(holder.public().to_bytes())
    assert sent_after_first >= 3 * secret_len + public_len  # secret context to 3 clients + public to server
    _run(proto, net, xs, ws, rnd=1)
    assert proto._holder is holder  # same keys
    # round 1 added only the aggregate's trip to the key holder; no more key material sent
    assert net.sent[KEY_HOLDER] == sent_after_first
    xs4 = np.random.default_rng(2).normal(size=(4, 100))
    _run(proto, net, xs4, np.ones(4), rnd=2)  # client 3 is new: provisioned now, once
    assert sent_after_first < net.sent[KEY_HOLDER] < sent_after_first + 2 * secret_len
    types_to_server = {Frame.from_bytes(d.data).type for d in net.views[server_id(0)]}
    assert types_to_server == {MsgType.CKKS_PUBLIC_CONTEXT, MsgType.CKKS_UPDATE}
    secrets_to = {d.recipient for r_, v in net.views.items() for d in v
                  if Frame.from_bytes(d.data).type == MsgType.CKKS_SECRET_CONTEXT}
    assert secrets_to == {0, 1, 2, 3}
    proto.close()


def test_the_server_side_holds_only_public_material():
    proto = make_protocol("ckks")
    net = Network(record_views=True)
    xs = np.ones((2, 10))
    _run(proto, net, xs, np.ones(2))
    server_ctx = proto._server
    assert isinstance(server_ctx, CkksPublicContext) and not isinstance(server_ctx, CkksSecretContext)
    with pytest.raises(DecryptionRefusedError):
        server_ctx.decrypt(server_ctx.encrypt(np.ones(3)))
    for delivery in net.views[server_id(0)]:  # nothing the server received carries a secret key
        frame = Frame.from_bytes(delivery.data)
        if frame.type == MsgType.CKKS_PUBLIC_CONTEXT:
            blob = frame.payload[8:]
            CkksPublicContext.from_bytes(blob)
            with pytest.raises(MalformedMessageError):
                CkksSecretContext.from_bytes(blob)
    proto.close()


def _open(n=3, dim=50, rnd=0, **opts):
    proto = make_protocol("ckks", **opts)
    net = Network()
    r = proto.open_round(RoundSpec(rnd, tuple(range(n)), dim), net)
    r.setup()
    return proto, net, r


def test_truncated_tampered_replayed_and_duplicate_uploads_raise_and_cost_only_the_sender():
    proto, net, r = _open()
    x = np.full(50, 0.5)
    good = r.protect(0, x, 1.0)
    r.receive(0, good)
    with pytest.raises(DuplicateSenderError):
        r.receive(0, good)
    data = r.protect(1, x, 1.0).parts[0][1]
    with pytest.raises(MalformedMessageError):
        r.receive(1, Upload(((server_id(0), data[:-5]),)))  # truncated
    flipped = bytearray(data)
    flipped[100] ^= 0x10
    with pytest.raises(MalformedMessageError, match="checksum"):
        r.receive(1, Upload(((server_id(0), bytes(flipped)),)))  # altered in transit
    msg = CkksUpdate.from_bytes(data)
    ct = bytearray(msg.ciphertexts)
    ct[20:27] = b"\xff" * 7  # a coefficient >= q, re-framed with a valid CRC
    with pytest.raises(MalformedMessageError, match="not reduced"):
        r.receive(1, Upload(((server_id(0), CkksUpdate(0, 1, bytes(ct)).to_bytes()),)))
    with pytest.raises(MalformedMessageError, match="count"):
        short = msg.ciphertexts[:20 - 4] + (0).to_bytes(4, "little") + msg.ciphertexts[20:]
        r.receive(1, Upload(((server_id(0), CkksUpdate(0, 1, short).to_bytes()),)))
    with pytest.raises(ReplayError):
        r.receive(1, Upload(((server_id(0), CkksUpdate(7, 1, msg.ciphertexts).to_bytes()),)))
    with pytest.raises(MalformedMessageError, match="sender"):
        r.receive(2, Upload(((server_id(0), data),)))  # client 1's message replayed by client 2
    with pytest.raises(MalformedMessageError, match="participant"):
        r.receive(9, good)
    other = CkksSecretContext.generate("compact").public().encrypt(np.zeros(51)).to_bytes()
    with pytest.raises(MalformedMessageError, match="another key"):
        r.receive(1, Upload(((server_id(0), CkksUpdate(0, 1, other).to_bytes()),)))
    r.receive(1, r.protect(1, x, 3.0))  # the rejected attempts cost nothing already accepted
    rev = r.reveal()
    assert rev.included == (0, 1) and rev.dropped == (2,)
    assert np.max(np.abs(rev.mean - 0.5)) <= r.error_bound
    proto.close()


def test_client_side_validation():
    proto, net, r = _open()
    with pytest.raises(InvalidUpdateError, match="outside"):
        r.protect(0, np.full(50, 101.0), 1.0)  # beyond clip_range=100
    with pytest.raises(InvalidUpdateError, match="non-finite"):
        r.protect(0, np.full(50, np.nan), 1.0)
    with pytest.raises(InvalidUpdateError, match="exceeds"):
        r.protect(0, np.zeros(50), 20_000.0)  # beyond max_weight=1e4
    with pytest.raises(InvalidUpdateError):
        r.protect(0, np.zeros(49), 1.0)
    with pytest.raises(ProtocolAbort, match="no client update"):
        r.reveal()
    proto.close()


def test_overflowing_or_insecure_parameters_are_refused():
    with pytest.raises(InsecureParametersError, match="128-bit"):
        make_protocol("ckks", params={"poly_degree": 2048, "coeff_bits": [60], "scale_bits": 30})
    with pytest.raises(InsecureParametersError, match="overflow bound"):
        _open(n=3, clip_range=1e6)  # 3 x 1e6 x sqrt(2) x 2^35 > 2^53
    limit = CkksParams.from_preset("compact").max_clients(100.0)
    proto = make_protocol("ckks")
    with pytest.raises(InsecureParametersError, match="overflow bound"):
        proto.open_round(RoundSpec(0, tuple(range(limit + 1)), 10), Network())
    proto.open_round(RoundSpec(0, tuple(range(limit)), 10), Network())
    with pytest.raises(ConfigError, match="preset"):
        make_protocol("ckks", preset="huge")
    with pytest.raises(ConfigError, match="no option"):
        make_protocol("ckks", key_size=3)
    with pytest.raises(ConfigError):
        make_protocol("ckks", clip_range=-1.0)
    with pytest.raises(ConfigError, match="unknown field"):
        make_protocol("ckks", params={"poly_degree": 4096, "bits": [60]})


def test_all_maximum_updates_at_the_client_limit_do_not_overflow():
    """Every client at +clip_range and at max_weight, as many clients as the check allows: the
    worst case for wrap-around still decrypts correctly."""
    opts = dict(clip_range=4.0, max_weight=100.0, scale_bits=46)
    params = make_protocol("ckks", **opts).params
    k = params.max_clients(4.0)
    assert 20 < k < 200
    xs = np.full((k, 2100), 4.0)
    xs[::2] *= -1.0  # half at -clip (the weight slot stays at +1)
    proto = make_protocol("ckks", **opts)
    r, rev = _run(proto, Network(), xs, np.full(k, 100.0))
    proto.close()
    ref = _reference(xs, np.full(k, 100.0), range(k))
    assert np.max(np.abs(rev.mean - ref)) <= r.error_bound
    xs_pos = np.full((k, 2100), 4.0)
    proto = make_protocol("ckks", **opts)
    r, rev = _run(proto, Network(), xs_pos, np.full(k, 100.0))
    proto.close()
    assert np.max(np.abs(rev.mean - 4.0)) <= r.error_bound


def test_quantized_input_is_exact():
    rng = np.random.default_rng(11)
    xs = rng.integers(-1000, 1001, size=(6, 3000)).astype(np.int64)
    ws = rng.integers(1, 500, size=6).astype(float)
    res = secfl.secure_mean(xs, ws, protocol="ckks", input="quantized", clip_range=1000.0, max_weight=500.0,
                            scale_bits=20, dropouts=[2])
    keep = [0, 1, 3, 4, 5]
    sums = (ws[keep, None].astype(np.int64) * xs[keep]).sum(0)
    assert np.array_equal(res.mean, sums / ws[keep].sum())  # bit for bit
    assert res.total_weight == ws[keep].sum()
    with pytest.raises(ConfigError, match="error bound"):
        _open(input="quantized", clip_range=10.0, max_weight=10.0, scale_bits=8)  # too coarse to round
    proto, net, r = _open(input="quantized", clip_range=1000.0, max_weight=500.0, scale_bits=20)
    with pytest.raises(InvalidUpdateError, match="integer"):
        r.protect(0, np.full(50, 0.5), 1.0)
    with pytest.raises(InvalidUpdateError, match="integer weight"):
        r.protect(0, np.ones(50), 1.5)
    proto.close()


def test_options_accept_a_custom_parameter_dict_and_workers():
    proto = make_protocol("ckks", params={"poly_degree": 4096, "coeff_bits": [60], "scale_bits": 38})
    assert proto.params.poly_degree == 4096 and proto.params.scale_bits == 38
    xs = np.random.default_rng(3).uniform(-1, 1, size=(2, 9000))
    r, rev = _run(proto, Network(), xs, np.array([3.0, 1.0]))
    assert np.max(np.abs(rev.mean - _reference(xs, np.array([3.0, 1.0]), [0, 1]))) <= r.error_bound
    proto.close()
    proto = make_protocol("ckks", workers=2)
    xs = np.random.default_rng(4).uniform(-1, 1, size=(2, 30 * 2048))
    r, rev = _run(proto, Network(), xs, np.array([1.0, 1.0]))
    proto.close()
    assert np.max(np.abs(rev.mean - xs.mean(0))) <= r.error_bound


def test_protect_before_setup_and_unprovisioned_clients_abort():
    proto = make_protocol("ckks")
    r = proto.open_round(RoundSpec(0, (0, 1), 5), Network())
    with pytest.raises(ProtocolAbort):
        r.protect(0, np.zeros(5), 1.0)
    r.setup()
    with pytest.raises(ProtocolAbort, match="not provisioned"):
        r.protect(5, np.zeros(5), 1.0)
    proto.close()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("upload", ["seeded", "full"])
def test_both_upload_forms_give_the_mean_and_seeded_halves_the_bytes(upload, workers):
    xs = np.random.default_rng(9).uniform(-1, 1, size=(3, 30 * 2048))
    ws = np.array([1.0, 2.0, 3.0])
    proto = make_protocol("ckks", upload=upload, workers=workers)
    net = Network()
    try:
        r, rev = _run(proto, net, xs, ws)
    finally:
        proto.close()
    assert np.max(np.abs(rev.mean - _reference(xs, ws, range(3)))) <= r.error_bound
    size = len(CkksUpdate.from_bytes(r.protect(0, xs[0], 1.0).parts[0][1]).ciphertexts)
    count = proto.params.ciphertexts_for(xs.shape[1] + 1)
    full = 20 + count * proto.params.ciphertext_bytes
    assert size == (seeded_nbytes(proto.params, count) if upload == "seeded" else full)
    if upload == "seeded":
        assert 0.5 < size / full < 0.51  # c0 and a 65-byte seed instead of c1


def test_seeded_uploads_are_parsed_strictly_and_cost_only_the_sender():
    xs = np.random.default_rng(10).uniform(-1, 1, size=(3, 5000))
    proto = make_protocol("ckks")
    net = Network()
    spec = RoundSpec(0, (0, 1, 2), xs.shape[1])
    r = proto.open_round(spec, net)
    r.setup()
    good = r.protect(0, xs[0], 1.0)
    msg = CkksUpdate.from_bytes(good.parts[0][1])
    body = bytearray(msg.ciphertexts)
    bad_type = bytearray(body)
    bad_type[-65] = 9  # the last ciphertext's PRNG type
    for broken in (bytes(body[:-1]), bytes(bad_type)):
        forged = CkksUpdate(0, 1, broken).to_bytes()
        with pytest.raises(MalformedMessageError):
            r.receive(1, Upload(((server_id(0), forged),)))
    out_of_range = bytearray(body)
    out_of_range[20:27] = b"\xff" * 7  # the first c0 coefficient above its prime
    with pytest.raises(MalformedMessageError, match="not reduced"):
        r.receive(1, Upload(((server_id(0), CkksUpdate(0, 1, bytes(out_of_range)).to_bytes()),)))
    r.receive(0, good)
    r.receive(1, r.protect(1, xs[1], 1.0))  # the rejected attempts cost client 1 nothing
    rev = r.reveal()
    proto.close()
    assert rev.included == (0, 1)
    assert np.max(np.abs(rev.mean - xs[:2].mean(0))) <= r.error_bound
