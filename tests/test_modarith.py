"""Vectorized 61-bit modular arithmetic: exactness against Python integers, SEAL's NTT bit for bit,
bit packing round trips."""

from __future__ import annotations

import _sealapi_cpp as sealcpp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.crypto.modarith import (
    MulConst,
    addmod,
    centered,
    intt,
    mul_const,
    mulmod,
    negmod,
    ntt,
    ntt_tables,
    pack_bits,
    packed_size,
    submod,
    to_residues,
    unpack_bits,
)
from secfl.crypto.seal_bridge import seal_primes
from secfl.errors import ConfigError, MalformedMessageError

# primes on both paths: below 2**47 (never re-centred), 2**47..2**50 (re-centred), >= 2**50 (split)
PRIMES = sorted({*seal_primes(4096, (30, 40, 45, 47)), *seal_primes(4096, (49, 50, 54, 60)),
                 *seal_primes(8192, (45, 60)), (1 << 61) - 1})


def _exact(a: np.ndarray, b: np.ndarray, q: int) -> np.ndarray:
    pairs = zip(a.ravel().tolist(), np.broadcast_to(b, a.shape).ravel().tolist(), strict=True)
    return np.array([int(x) * int(y) % q for x, y in pairs], dtype=np.int64).reshape(a.shape)


@pytest.mark.parametrize("q", PRIMES)
def test_mulmod_matches_python_integers(q):
    rng = np.random.default_rng(q % 1000)
    a = rng.integers(0, q, size=4000, dtype=np.int64)
    b = rng.integers(0, q, size=4000, dtype=np.int64)
    # the extremes: 0, 1, q-1 against each other
    edge = np.array([0, 1, q - 1, q - 2, q // 2, (q + 1) // 2], dtype=np.int64)
    a = np.concatenate([a, np.repeat(edge, edge.size)])
    b = np.concatenate([b, np.tile(edge, edge.size)])
    assert np.array_equal(mulmod(a, b, q), _exact(a, b, q))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PRIMES), st.integers(min_value=0), st.lists(st.integers(min_value=0), min_size=1, max_size=40))
def test_mul_const_scalar_property(q, w, values):
    w %= q
    a = np.array([v % q for v in values], dtype=np.int64)
    got = mul_const(a, MulConst.make(w, q))
    assert got.dtype == np.int64
    assert got.tolist() == [v * w % q for v in a.tolist()]


def test_mul_const_accepts_unreduced_input_on_the_split_path():
    q = seal_primes(8192, (60,))[0]
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 61, size=2000, dtype=np.int64)  # up to 2**61 > q
    w = int(rng.integers(0, q))
    assert mul_const(a, MulConst.make(w, q)).tolist() == [int(x) * w % q for x in a.tolist()]


def test_add_sub_neg_and_residues():
    q = seal_primes(4096, (45,))[0]
    rng = np.random.default_rng(4)
    a = rng.integers(0, q, size=1000, dtype=np.int64)
    b = rng.integers(0, q, size=1000, dtype=np.int64)
    assert addmod(a, b, q).tolist() == [(x + y) % q for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert submod(a, b, q).tolist() == [(x - y) % q for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert negmod(np.array([0, 1, q - 1]), q).tolist() == [0, q - 1, 1]
    v = np.array([-5, 0, 7, -(q // 2), q // 2], dtype=np.int64)
    assert to_residues(v, q).tolist() == [x % q for x in v.tolist()]
    assert centered(to_residues(v, q), q).tolist() == v.tolist()


def test_mulconst_refuses_bad_input():
    with pytest.raises(ConfigError):
        MulConst.make(np.array([5, 1 << 40]), 1 << 20)
    with pytest.raises(ConfigError):
        MulConst.make(3, 1 << 62)


@pytest.mark.parametrize("n", [16, 1024, 8192])
@pytest.mark.parametrize("bits", [30, 45, 49, 50, 60])
def test_ntt_matches_seal_bit_for_bit(n, bits):
    q = seal_primes(n, (bits,))[0]
    tables = sealcpp.util.CreateNTTTables(n.bit_length() - 1, [sealcpp.Modulus(q)])
    rng = np.random.default_rng(bits * n)
    polys = rng.integers(0, q, size=(3, n), dtype=np.int64)
    polys[0, :] = q - 1  # the largest residues everywhere
    ref = np.array([sealcpp.util.ntt_negacyclic_harvey(p.tolist(), tables.get()) for p in polys], dtype=np.int64)
    got = ntt(polys, q)
    assert np.array_equal(got, ref)
    inv_ref = np.array([sealcpp.util.inverse_ntt_negacyclic_harvey(p.tolist(), tables.get()) for p in ref],
                       dtype=np.int64) % q
    assert np.array_equal(intt(got, q), polys)
    assert np.array_equal(inv_ref, polys)


def test_ntt_is_negacyclic_multiplication():
    n, q = 64, seal_primes(64, (45,))[0]
    rng = np.random.default_rng(7)
    a = rng.integers(0, q, size=n, dtype=np.int64)
    b = rng.integers(-3, 4, size=n, dtype=np.int64)
    prod = mulmod(ntt(a, q), ntt(to_residues(b, q), q), q)
    exact = [0] * n
    for i in range(n):
        for j in range(n):
            k, sign = (i + j, 1) if i + j < n else (i + j - n, -1)
            exact[k] = (exact[k] + sign * int(a[i]) * int(b[j])) % q
    assert intt(prod, q).tolist() == exact


def test_ntt_batches_and_shapes():
    q = seal_primes(8192, (45,))[0]
    rng = np.random.default_rng(8)
    x = rng.integers(0, q, size=(2, 3, 8192), dtype=np.int64)
    before = x.copy()
    y = ntt(x, q)
    assert y.shape == x.shape
    assert np.array_equal(y[1, 2], ntt(x[1, 2], q))
    assert np.array_equal(x, before)  # input untouched


def test_ntt_tables_refuse_bad_parameters():
    with pytest.raises(ConfigError):
        ntt_tables(100, 97)
    with pytest.raises(ConfigError):
        ntt_tables(16, 101)  # 101 - 1 is not a multiple of 32


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=6), st.data())
def test_pack_unpack_round_trip(width, groups, data):
    count = 8 * groups
    top = (1 << width) - 1
    values = data.draw(st.lists(st.integers(min_value=0, max_value=top), min_size=count, max_size=count))
    arr = np.array(values, dtype=np.uint64)
    blob = pack_bits(arr, width)
    assert len(blob) == packed_size(count, width) == count * width // 8
    assert unpack_bits(blob, width, count).tolist() == values


def test_pack_known_answer_and_strict_length():
    # 8 values of 3 bits, LSB first: 0b001, 0b010, ... -> 3 bytes
    blob = pack_bits(np.arange(1, 9, dtype=np.uint64) & np.uint64(7), 3)
    assert blob == bytes([0b11010001, 0b01011000, 0b00011111])
    with pytest.raises(MalformedMessageError):
        unpack_bits(blob[:-1], 3, 8)
    with pytest.raises(ConfigError):
        pack_bits(np.arange(5, dtype=np.uint64), 8)
