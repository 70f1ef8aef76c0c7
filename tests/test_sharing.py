"""Ring arithmetic mod 2**k, additive sharing and vectorized Shamir: exactness and secrecy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secfl.crypto.prg import Prg, fresh_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import (
    SHAMIR_PRIME,
    additive_combine,
    additive_split,
    bytes_to_field,
    chunks_for,
    expand_share,
    field_to_bytes,
    lagrange_at_zero,
    reconstruct_bytes,
    shamir_reconstruct,
    shamir_split,
    share_bytes,
)
from secfl.errors import ConfigError, InsufficientQuorumError, MalformedMessageError

P_VALUE = 1e-6  # statistical tests fail at most once in a million honest runs


def _chi2_uniform(counts: np.ndarray) -> float:
    """p-value of a chi-square test that ``counts`` come from equiprobable cells."""
    return float(stats.chisquare(counts.ravel()).pvalue)


# ---------------------------------------------------------------------------------- Ring
@pytest.mark.parametrize("bits", [2, 8, 16, 20, 24, 31, 32, 33, 40, 48, 63, 64])
def test_ring_pack_roundtrip_and_width(bits):
    ring = Ring(bits)
    a = ring.random(Prg(b"\x05" * 32), 257)
    assert int(a.max()) <= ring.max_value and a.dtype == ring.dtype
    data = ring.pack(a)
    assert len(data) == 257 * ((bits + 7) // 8)
    assert np.array_equal(ring.unpack(data, 257), a)


def test_ring_wraparound_and_strict_unpack():
    r = Ring(20)
    acc = np.array([r.max_value, 0], dtype=r.dtype)
    r.add_(acc, np.array([2, 1], dtype=r.dtype))
    assert acc.tolist() == [1, 1]
    r.sub_(acc, np.array([2, 2], dtype=r.dtype))
    assert acc.tolist() == [r.max_value, r.max_value]
    with pytest.raises(MalformedMessageError, match="expected 3 elements"):
        r.unpack(b"\x00" * 8, 3)
    with pytest.raises(MalformedMessageError, match="outside"):
        r.unpack(b"\xff\xff\xff", 1)  # 24 bits on the wire, but only 20 allowed
    for bad in (0, 65, True, 3.5):
        with pytest.raises(ConfigError):
            Ring(bad)


@pytest.mark.parametrize("bits", [16, 32, 64])
@pytest.mark.parametrize("parties", [2, 3, 5])
def test_additive_split_combines_exactly(bits, parties):
    ring = Ring(bits)
    x = ring.random(Prg(fresh_seed()), 1000)
    residual, seeds = additive_split(x, ring, parties)
    assert len(seeds) == parties - 1 and all(len(s) == 32 for s in seeds)
    shares = [residual] + [expand_share(s, 1000, ring) for s in seeds]
    assert np.array_equal(additive_combine(shares, ring), x)
    with pytest.raises(ConfigError):
        additive_split(x, ring, 1)


def test_any_s_minus_one_additive_shares_are_uniform():
    """A constant secret vector: every (S−1)-subset of its shares is uniform bytes."""
    ring = Ring(32)
    x = np.full(40_000, 123456, dtype=np.uint32)  # as far from uniform as it gets
    residual, seeds = additive_split(x, ring, 3)
    shares = [residual] + [expand_share(s, x.size, ring) for s in seeds]
    for coalition in itertools.combinations(range(3), 2):
        view = np.concatenate([shares[j] for j in coalition]).view(np.uint8)
        assert _chi2_uniform(np.bincount(view, minlength=256)) > P_VALUE, coalition
    # power check: all S shares together are the (non-uniform) secret
    total = additive_combine(shares, ring).view(np.uint8)
    assert _chi2_uniform(np.bincount(total, minlength=256)) < P_VALUE


# ---------------------------------------------------------------------------------- Shamir
@settings(max_examples=12, deadline=None)
@given(st.integers(1, 5), st.integers(0, 3), st.lists(st.integers(0, SHAMIR_PRIME - 1), min_size=1, max_size=20),
       st.data())
def test_every_t_subset_reconstructs(t, extra, secret, data):
    n = t + extra
    xs = data.draw(st.lists(st.integers(1, SHAMIR_PRIME - 1), min_size=n, max_size=n, unique=True))
    sec = np.asarray(secret, dtype=np.uint64)
    shares = shamir_split(sec, xs, t)
    assert shares.shape == (n, sec.size) and int(shares.max()) < SHAMIR_PRIME
    for subset in itertools.combinations(range(n), t):
        got = shamir_reconstruct([xs[i] for i in subset], shares[list(subset)], t)
        assert np.array_equal(got, sec)


@settings(max_examples=6, deadline=None)
@given(st.integers(2, 4), st.sampled_from([0, 1, SHAMIR_PRIME - 1]))
def test_t_minus_one_shares_reveal_nothing(t, secret):
    """t−1 shares of a fixed secret: jointly uniform (chi-square on their top bits)."""
    m = 30_000
    xs = list(range(1, t))  # t−1 points
    shares = shamir_split(np.full(m, secret, dtype=np.uint64), xs + [t], t)[: t - 1]
    cells = np.zeros(1 << (4 * (t - 1)), dtype=np.int64)
    idx = np.zeros(m, dtype=np.int64)
    for row in shares:  # top 4 bits of each share -> one joint cell
        idx = (idx << 4) | (row >> np.uint64(27)).astype(np.int64)
    np.add.at(cells, idx, 1)
    # (cell 15 of the top 4 bits holds 2**27 − 1 values instead of 2**27: a 1e-8 bias, invisible here)
    assert _chi2_uniform(cells) > P_VALUE
    # power check: t shares of the secret 0 are *not* jointly uniform (they satisfy a linear relation)
    if secret == 0:
        full = shamir_split(np.zeros(m, dtype=np.uint64), [1, 2], 2)
        lam = lagrange_at_zero([1, 2])
        assert np.all((full[0] * lam[0] + full[1] * lam[1]) % np.uint64(SHAMIR_PRIME) == 0)
        joint = ((full[0] >> np.uint64(27)).astype(np.int64) << 4) | (full[1] >> np.uint64(27)).astype(np.int64)
        assert _chi2_uniform(np.bincount(joint, minlength=256)) < P_VALUE


def test_shamir_refuses_bad_input():
    with pytest.raises(InsufficientQuorumError, match="fewer than the threshold 3"):
        shamir_reconstruct([1, 2], np.zeros((2, 4), dtype=np.uint64), 3)
    with pytest.raises(ConfigError, match="distinct"):
        shamir_split(np.zeros(2, np.uint64), [1, 1, 2], 2)
    with pytest.raises(ConfigError, match="points"):
        shamir_split(np.zeros(2, np.uint64), [0, 1], 2)
    with pytest.raises(ConfigError, match="threshold"):
        shamir_split(np.zeros(2, np.uint64), [1, 2], 3)
    with pytest.raises(ConfigError, match="field elements"):
        shamir_split(np.array([SHAMIR_PRIME], np.uint64), [1, 2], 2)
    with pytest.raises(MalformedMessageError, match="below"):
        shamir_reconstruct([1, 2], np.full((2, 1), SHAMIR_PRIME, dtype=np.uint64), 2)


def test_byte_secrets_roundtrip_and_tamper_detection():
    assert chunks_for(32) == 9 and chunks_for(16) == 5
    for _ in range(5):
        s = fresh_seed()
        assert field_to_bytes(bytes_to_field(s), 32) == s
    s = fresh_seed()
    xs = [11, 22, 33, 44, 55]
    sh = share_bytes(s, xs, 3)
    assert sh.shape == (5, 9)
    for subset in itertools.combinations(range(5), 3):
        assert reconstruct_bytes([xs[i] for i in subset], sh[list(subset)], 3) == s
    bad = sh.copy()
    bad[0, 8] = (bad[0, 8] + 1) % SHAMIR_PRIME  # a corrupted share gives garbage the decoder refuses
    with pytest.raises(MalformedMessageError):
        for subset in itertools.combinations(range(5), 3):
            if 0 in subset:
                reconstruct_bytes([xs[i] for i in subset], bad[list(subset)], 3)
    with pytest.raises(MalformedMessageError):
        field_to_bytes(np.full(9, 1 << 30, dtype=np.uint64), 32)


# ---------------------------------------------------------------------------------- weighted encoding
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(3, 24), st.floats(0.1, 10.0), st.data())
def test_weighted_encoding_decodes_within_its_bound(m, d, bits, clip, data):
    from secfl.crypto.encoding import WeightedEncoder

    enc = WeightedEncoder(clip, bits, 40, 100.0, m)
    xs = data.draw(st.lists(st.lists(st.floats(-2 * clip, 2 * clip), min_size=d, max_size=d), min_size=m, max_size=m))
    ws = data.draw(st.lists(st.floats(25.0, 100.0), min_size=m, max_size=m))
    x, w = np.asarray(xs), np.asarray(ws)
    total = enc.ring.zeros(d + 1)
    for k in range(m):
        codes = enc.encode(x[k], w[k], Prg(fresh_seed()))
        assert codes.shape == (d + 1,) and int(codes.max()) <= enc.levels
        enc.ring.add_(total, codes)
    mean, total_weight, bound = enc.decode(total, m)
    ref = (w[:, None] * np.clip(x, -clip, clip)).sum(0) / w.sum()
    assert np.abs(mean - ref).max() <= bound
    assert abs(total_weight - w.sum()) <= m * 100.0 / enc.levels + 1e-9


def test_encoding_overflow_and_weight_checks():
    from secfl.crypto.encoding import WeightedEncoder, auto_bits
    from secfl.errors import InsecureParametersError, InvalidUpdateError

    assert auto_bits(32, 1000) == 22 and auto_bits(32, 10) == 28 and auto_bits(64, 10) == 30
    WeightedEncoder(8.0, 22, 32, 10.0, 1024)  # 1024 · (2**22 − 1) < 2**32
    with pytest.raises(InsecureParametersError, match=r"1025 clients × \(2\*\*22 − 1\)"):
        WeightedEncoder(8.0, 22, 32, 10.0, 1025)
    enc = WeightedEncoder(8.0, 22, 32, 10.0, 4)
    with pytest.raises(InvalidUpdateError, match="max_weight"):
        enc.encode(np.zeros(3), 11.0, Prg())
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidUpdateError):
            enc.encode(np.zeros(3), bad, Prg())
