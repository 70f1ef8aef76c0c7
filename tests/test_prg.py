"""The CSPRNG: determinism per seed, stream continuity, distribution sanity, key separation."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.crypto.prg import Prg, derive_seed, fresh_seed
from secfl.errors import ConfigError


def test_stream_is_deterministic_and_continuous():
    s = b"\x07" * 32
    a = Prg(s).uint32(15)
    p = Prg(s)
    assert np.array_equal(np.concatenate([p.uint32(10), p.uint32(5)]), a)
    assert not np.array_equal(Prg(fresh_seed()).uint32(15), a)


def test_known_answer_aes256_ctr():
    # AES-256-CTR keystream for the all-zero key, zero nonce/counter (first block = AES_k(0^128)).
    ks = Prg(b"\x00" * 32).bytes(16)
    assert ks.hex() == "dc95c078a2408989ad48a21492842087"


def test_derive_seed_separates_labels_and_contexts():
    s = b"\x09" * 32
    seeds = {derive_seed(s, "a"), derive_seed(s, "b"), derive_seed(s, "a", 1), derive_seed(s, "a", 2)}
    assert len(seeds) == 4 and all(len(x) == 32 for x in seeds)


def test_uniform_below_is_unbiased():
    v = Prg(b"\x05" * 32).uniform_below(70_000, 7)
    counts = np.bincount(v.astype(np.int64), minlength=7)
    expected = v.size / 7
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert v.max() < 7 and chi2 < 22.5  # p ≈ 0.001 for 6 degrees of freedom


def test_normal_moments():
    z = Prg(b"\x06" * 32).normal(200_001)
    assert z.size == 200_001
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.01


@pytest.mark.parametrize("seed", [b"short", b"x" * 33, "x" * 32])
def test_bad_seed(seed):
    with pytest.raises(ConfigError):
        Prg(seed)  # type: ignore[arg-type]
