"""The plaintext protocol and the secure_mean facade: weighted mean, dropouts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secfl
from secfl.errors import (
    ConfigError,
    DuplicateSenderError,
    InvalidUpdateError,
    MalformedMessageError,
    ProtocolAbort,
    ReplayError,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.base import Upload
from secfl.protocols.network import Network, server_id
from secfl.protocols.plaintext import PlainUpdate


def _round(n=3, dim=4, rnd=0, **opts):
    net = Network()
    return make_protocol("plaintext", **opts).open_round(RoundSpec(rnd, tuple(range(n)), dim), net), net


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 64), st.data())
def test_weighted_mean_equals_numpy(n, dim, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, dim))
    w = rng.integers(1, 500, size=n).astype(float)
    res = secfl.secure_mean(x, w, wire_dtype="float64")
    assert np.allclose(res.mean, (w[:, None] * x).sum(0) / w.sum(), rtol=1e-12, atol=1e-12)
    res32 = secfl.secure_mean(x, w)  # float32 on the wire: the reference uses the same rounding
    ref32 = (w[:, None] * x.astype(np.float32).astype(np.float64)).sum(0) / w.sum()
    assert np.allclose(res32.mean, ref32, rtol=1e-12, atol=1e-12)
    assert res.bytes_up > 8 * n * dim and res.bytes_down == 0


def test_dropouts_are_excluded():
    x = np.arange(12.0).reshape(4, 3)
    w = [1.0, 2.0, 3.0, 4.0]
    res = secfl.secure_mean(x, w, dropouts=[1, 3], wire_dtype="float64")
    expected = (1 * x[0] + 3 * x[2]) / 4
    assert np.allclose(res.mean, expected) and res.included == (0, 2) and set(res.dropped) == {1, 3}


def test_nan_client_dropped_round_completes():
    x = np.ones((3, 5))
    x[1, 2] = np.nan
    res = secfl.secure_mean(x, [1, 1, 1])
    assert res.included == (0, 2) and "non-finite" in res.dropped[1]
    assert np.allclose(res.mean, 1.0)


def test_server_rejects_nan_inf_even_if_client_skips_its_check():
    rnd, _ = _round()
    rnd.receive(0, rnd.protect(0, np.ones(4), 1.0))
    for c, bad in ((1, np.nan), (2, np.inf)):
        v = np.ones(4, np.float32)
        v[0] = bad
        forged = PlainUpdate(0, c, 1.0, v).to_bytes()
        with pytest.raises(InvalidUpdateError, match="non-finite"):
            rnd.receive(c, Upload(((server_id(0), forged),)))
    out = rnd.reveal()  # the accepted client is not lost
    assert out.included == (0,) and np.allclose(out.mean, 1.0)


def test_wrong_length_replay_duplicate_and_sender_spoofing():
    rnd, _ = _round(dim=4, rnd=5)
    with pytest.raises(InvalidUpdateError, match="length 4"):
        rnd.protect(0, np.ones(3), 1.0)
    forged_len = PlainUpdate(5, 0, 1.0, np.ones(3, np.float32)).to_bytes()
    with pytest.raises(InvalidUpdateError, match="length 4"):
        rnd.receive(0, Upload(((server_id(0), forged_len),)))
    old = PlainUpdate(4, 1, 1.0, np.ones(4, np.float32)).to_bytes()
    with pytest.raises(ReplayError, match="round 4"):
        rnd.receive(1, Upload(((server_id(0), old),)))
    up = rnd.protect(2, np.ones(4), 1.0)
    rnd.receive(2, up)
    with pytest.raises(DuplicateSenderError):
        rnd.receive(2, up)
    with pytest.raises(MalformedMessageError, match="sender"):
        rnd.receive(0, up)  # client 0 replays client 2's bytes
    with pytest.raises(MalformedMessageError, match="not a participant"):
        rnd.receive(9, up)


def test_bad_weights_and_range():
    rnd, _ = _round(max_abs=1.0)
    for w in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidUpdateError, match="weight"):
            rnd.protect(0, np.ones(4), w)
    forged = PlainUpdate(0, 1, 1.0, np.full(4, 2.0, np.float32)).to_bytes()
    with pytest.raises(InvalidUpdateError, match="range"):
        rnd.receive(1, Upload(((server_id(0), forged),)))


def test_no_client_accepted_aborts():
    rnd, _ = _round()
    with pytest.raises(ProtocolAbort):
        rnd.reveal()


def test_options_are_validated():
    with pytest.raises(ConfigError, match="allowed"):
        make_protocol("plaintext", nonsense=1)
    with pytest.raises(ConfigError, match="wire_dtype"):
        make_protocol("plaintext", wire_dtype="float16")
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_protocol("rot13")


def test_bytes_counted_from_messages():
    x = np.zeros((3, 100), dtype=np.float32)
    res = secfl.secure_mean(x)
    one = len(PlainUpdate(0, 0, 1.0, x[0]).to_bytes())
    assert res.bytes_up == 3 * one
    assert set(res.seconds) >= {"setup", "protect", "aggregate", "reveal", "total"}
