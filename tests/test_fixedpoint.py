"""Quantizer: the documented error bound |x̂ - clamp(x)| < Δ, unbiasedness, sums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secfl.crypto.fixedpoint import Quantizer
from secfl.crypto.prg import Prg
from secfl.errors import ConfigError

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 300), elements=finite), st.floats(1e-3, 100.0), st.integers(1, 32))
def test_error_below_one_step(x, clip, bits):
    q = Quantizer(clip, bits)
    codes = q.encode(x, Prg(b"\x01" * 32))
    assert codes.dtype == np.uint64 and int(codes.max()) <= q.levels
    err = np.abs(q.decode(codes) - np.clip(x, -clip, clip))
    assert err.max() < q.step * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 50), st.integers(4, 24))
def test_sum_decodes_within_bound(m, d, bits):
    rng = np.random.default_rng(m * 1000 + d)
    xs = rng.uniform(-2, 2, size=(m, d))
    q = Quantizer(2.0, bits)
    prg = Prg(b"\x02" * 32)
    total = sum(q.encode(x, prg) for x in xs)
    assert int(np.max(total)).bit_length() <= q.sum_bits(m)
    est = q.decode_sum(total, m)
    assert np.abs(est - xs.sum(0)).max() < m * q.step * (1 + 1e-9)


def test_stochastic_rounding_is_unbiased():
    q = Quantizer(1.0, 4)  # coarse: Δ = 2/15
    x = np.full(200_000, 0.3141)
    est = q.decode(q.encode(x, Prg(b"\x03" * 32)))
    # standard error of the mean ≤ Δ/2/√n ≈ 1.5e-4; allow 5 standard errors
    assert abs(est.mean() - 0.3141) < 5 * q.step / 2 / np.sqrt(x.size)
    assert set(np.unique(est).round(6)) <= {round(v, 6) for v in q.decode(np.arange(16))}


def test_extremes_and_clamping():
    q = Quantizer(1.0, 8)
    codes = q.encode(np.array([-5.0, -1.0, 1.0, 7.0]), Prg())
    assert codes.tolist() == [0, 0, 255, 255]


@pytest.mark.parametrize("clip,bits", [(0.0, 8), (-1.0, 8), (float("nan"), 8), (1.0, 0), (1.0, 53)])
def test_bad_parameters_refused(clip, bits):
    with pytest.raises(ConfigError):
        Quantizer(clip, bits)
