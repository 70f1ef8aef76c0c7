"""Parsing before allocating (issue 12, item 7): a count, length or dimension read from the wire
is checked against the bytes actually present (and a sane upper bound) before anything sized by
it is allocated, and a bad one raises :class:`MalformedMessageError` -- never ``MemoryError``.

Every case builds a valid message with the package's own constructors, patches a count field
with ``struct.pack_into`` (re-framing it so the CRC still matches: the count check, not the
checksum, must refuse it), and parses it under ``tracemalloc``: the peak allocation of the
parse must stay below :data:`LIMIT`. Counts are both absurd (0xFFFFFFFF, 2**63) and merely
large (an allocation that would succeed, and that the memory check would see).
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from secfl.crypto import ckks
from secfl.crypto.modarith import unpack_bits
from secfl.crypto.ring import Ring
from secfl.crypto.threshold import MAX_MEMBERS, CollectivePublicKey, ThresholdParams, unpack_polys
from secfl.errors import MalformedMessageError
from secfl.fl.fedavg import ModelBroadcast
from secfl.protocols.additive.messages import (
    AddIncludedSet,
    AddPartialSum,
    AddShare,
    AddShareBatch,
    AddUpload,
    AddUploadRequest,
    ShareKind,
)
from secfl.protocols.additive.options import MAX_SERVERS
from secfl.protocols.ckks.messages import (
    CkksAggregate,
    CkksHello,
    CkksKeyRequest,
    CkksKeys,
    CkksReveal,
    CkksRevealRequest,
    CkksUpdate,
    CkksUploadRequest,
)
from secfl.protocols.ckks_threshold.messages import (
    ThrActiveSet,
    ThrCollectiveKey,
    ThrDecryptRequest,
    ThrPartialDecryption,
    ThrRoster,
    ThrShamirShares,
    ThrUpdate,
    ThrUploadRequest,
)
from secfl.protocols.parties import RoundRequest
from secfl.protocols.plaintext import PlainUpdate
from secfl.protocols.secagg.masks import CHUNKS, SEALED_BYTES
from secfl.protocols.secagg.messages import (
    SaKeyRoster,
    SaMaskedInput,
    SaShareKeys,
    SaUnmaskRequest,
    SaUnmaskResponse,
)
from secfl.protocols.wire import HEADER_BYTES, Frame, Message, MsgType, Reader, Writer
from secfl.runtime.flower.site import RunConfig, SiteHello

LIMIT = 4 << 20  # bytes a refused parse may allocate at its peak
HUGE32 = 0xFFFF_FFFF
HUGE64 = 1 << 63
MANY = (1 << 20) + 1  # one more id than any id list accepts
U32 = np.uint32


def refused(parse: Callable[[], Any], match: str | None = None) -> MalformedMessageError:
    """``parse()`` raises MalformedMessageError (matching ``match``) with a small peak allocation."""
    tracemalloc.start()
    try:
        with pytest.raises(MalformedMessageError, match=match) as info:
            parse()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < LIMIT, f"the refused parse allocated {peak} bytes at its peak"
    assert "checksum" not in str(info.value)  # the count check fired, not the CRC
    return info.value


def patched(msg: Message, offset: int, fmt: str, value: int) -> bytes:
    """``msg``'s frame with ``struct.pack_into(fmt, payload, offset, value)``, re-framed (valid CRC)."""
    frame = Frame.from_bytes(msg.to_bytes())
    payload = bytearray(frame.payload)
    struct.pack_into(fmt, payload, offset, value)
    return Frame(frame.type, frame.round, frame.sender, bytes(payload)).to_bytes()


# --------------------------------------------------------------------------------------------
# CKKS ciphertexts and contexts


@pytest.fixture(scope="module")
def sk() -> ckks.CkksSecretContext:
    return ckks.CkksSecretContext.generate(ckks.CkksPreset.COMPACT)


@pytest.fixture(scope="module")
def pub(sk: ckks.CkksSecretContext) -> ckks.CkksPublicContext:
    ctx = sk.public()
    ckks.seeded_nbytes(ctx.params, 1)  # SEAL's primes computed (and cached) outside the measurement
    return ctx


def with_count(blob: bytes, count: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into("<I", out, 16, count)  # after the 16-byte context id
    return bytes(out)


@pytest.mark.parametrize("count", [HUGE32, 4096, 0])
def test_seeded_ciphertexts_check_the_count_before_the_accumulator(sk, pub, count):
    blob = with_count(sk.encrypt_seeded_to_bytes(np.zeros(10)), count)
    err = refused(lambda: pub.ciphertexts_from_seeded_bytes(blob), "count|bytes")
    assert str(count) in str(err)


def test_seeded_ciphertexts_check_header_against_expected_count(sk, pub):
    blob = with_count(sk.encrypt_seeded_to_bytes(np.zeros(10)), HUGE32)
    refused(lambda: pub.ciphertexts_from_seeded_bytes(blob, expect_count=1), "count 4294967295, expected 1")
    good = sk.encrypt_seeded_to_bytes(np.zeros(10))
    refused(lambda: pub.ciphertexts_from_seeded_bytes(good, expect_count=HUGE32), "expected 4294967295")
    refused(lambda: pub.ciphertexts_from_seeded_bytes(good[:-1]), "bytes")
    refused(lambda: pub.ciphertexts_from_seeded_bytes(good[:10]), "truncated")
    other = ckks.CkksSecretContext.generate(ckks.CkksPreset.COMPACT).public()
    refused(lambda: other.ciphertexts_from_seeded_bytes(good), "another key")
    assert len(pub.ciphertexts_from_seeded_bytes(good)) == 1  # the valid blob still parses


def test_seeded_upload_into_an_accumulator(sk, pub):
    acc = ckks.CkksAccumulator(pub, 1)
    blob = with_count(sk.encrypt_seeded_to_bytes(np.zeros(10)), HUGE32)
    refused(lambda: acc.add_seeded(blob), "count")


@pytest.mark.parametrize("count", [HUGE32, 4096])
def test_full_ciphertexts_check_the_count(sk, pub, count):
    blob = with_count(pub.encrypt(np.zeros(10)).to_bytes(), count)
    refused(lambda: pub.ciphertexts_from_bytes(blob), "polynomial data")
    refused(lambda: ckks.CkksCiphertexts.from_bytes(pub, blob), "polynomial data")


def test_contexts_check_parameters_and_key_length(sk, pub):
    data = bytearray(pub.to_bytes())
    struct.pack_into("<I", data, 8, 1 << 31)  # poly_degree
    refused(lambda: ckks.CkksPublicContext.from_bytes(bytes(data)), "parameters refused")
    data = bytearray(pub.to_bytes())
    data[ckks._CTX_HEAD.size] = 255  # number of primes
    refused(lambda: ckks.CkksPublicContext.from_bytes(bytes(data)), "parameter")
    refused(lambda: ckks.CkksPublicContext.from_bytes(pub.to_bytes()[:-8]), "bytes of polynomial data")
    secret = sk.to_bytes(include_secret_key=True)
    refused(lambda: ckks.CkksSecretContext.from_bytes(secret[:-8]), "bytes of keys")


def test_bit_unpacking_checks_the_length_first():
    refused(lambda: ckks._unpack_bits(np.zeros(0, dtype=np.uint8), 54, 1 << 40), "packed values")
    refused(lambda: ckks._unpack_polys(b"", HUGE32, 2, (12289,), 2048, "polys"), "polynomial data")
    refused(lambda: unpack_bits(b"", 60, 1 << 40), "expected")
    refused(lambda: Ring(32).unpack(b"", 1 << 62), "elements")
    refused(lambda: Ring(24).unpack(b"abc", 1 << 40), "elements")


# --------------------------------------------------------------------------------------------
# threshold CKKS


@pytest.fixture(scope="module")
def thr_params() -> ThresholdParams:
    return ThresholdParams.from_preset("standard")


@pytest.mark.parametrize("lead", [(HUGE32, 2), (1 << 62, 1 << 62), (HUGE32,), (-1,)])
def test_threshold_polynomials_check_the_length_first(thr_params, lead):
    p = thr_params
    refused(lambda: unpack_polys(b"", lead, p.data_primes, p.poly_degree, "THR_UPDATE"), "THR_UPDATE")
    refused(lambda: unpack_polys(b"\x00" * 64, lead, p.data_primes, p.poly_degree, "THR_UPDATE"), "THR_UPDATE")


def test_threshold_parameters_and_collective_key(thr_params):
    p = thr_params
    raw = bytearray(p.to_bytes())
    raw[11] = 255  # number of primes
    refused(lambda: ThresholdParams.from_bytes(bytes(raw)), "malformed header")
    raw = bytearray(p.to_bytes())
    struct.pack_into("<I", raw, 0, 1 << 31)  # poly_degree
    refused(lambda: ThresholdParams.from_bytes(bytes(raw)), "refused")
    key = CollectivePublicKey(p, b"\x01" * 32, np.zeros((len(p.primes), p.poly_degree), dtype=np.int64)).to_bytes()
    refused(lambda: CollectivePublicKey.from_bytes(key[:-8]), "collective key")


# --------------------------------------------------------------------------------------------
# framing


def test_frame_length_field():
    data = bytearray(PlainUpdate(0, 1, 1.0, np.zeros(4)).to_bytes())
    for value in (HUGE64, HUGE32):
        struct.pack_into("<Q", data, HEADER_BYTES - 8, value)
        refused(lambda: Frame.from_bytes(bytes(data)), "length mismatch")


def test_reader_checks_lengths_against_the_bytes_left():
    blob = bytearray(Writer().blob(b"abc").getvalue())
    struct.pack_into("<Q", blob, 0, HUGE64)
    refused(lambda: Reader(bytes(blob)).blob(), "truncated")
    arr = bytearray(Writer().array(np.zeros(3)).getvalue())
    struct.pack_into("<Q", arr, 1, HUGE64)
    refused(lambda: Reader(bytes(arr)).array(), "truncated")
    refused(lambda: Reader(bytes(arr)).array("f8", length=3), "expected 3 values")
    r = Reader(b"\x00" * 16, "TEST")
    refused(lambda: r.count(3, 8, "items"), "3 items of at least 8 bytes each, but only 16")
    refused(lambda: r.count(HUGE32, 1, "items", most=64), "at most 64")
    assert r.count(2, 8, "items") == 2 and r.remaining == 16


# --------------------------------------------------------------------------------------------
# messages: (valid message, payload offset of a count / length field, struct format, value, match)

KEY = b"\x07" * 32
SIG = b"\x05" * 64
KID = b"\x05" * 16
DIG = b"\x06" * 32

CASES: list[tuple[str, Message, int, str, int, str]] = [
    # plaintext and FedAvg: f64 weight, then the array (dtype u8, count u64)
    ("PlainUpdate", PlainUpdate(0, 1, 1.0, np.zeros(4)), 9, "<Q", HUGE64, "truncated"),
    ("PlainUpdate-2^40", PlainUpdate(0, 1, 1.0, np.zeros(4)), 9, "<Q", 1 << 40, "truncated"),
    ("ModelBroadcast", ModelBroadcast(0, 1, np.zeros(4, dtype=np.float32)), 1, "<Q", HUGE64, "truncated"),
    # RoundRequest: ids array (count at 1), dim u64 after three ids
    ("RoundRequest-ids", RoundRequest(0, 1, np.arange(1, 4, dtype=U32), 10), 1, "<Q", HUGE64, "truncated"),
    ("RoundRequest-dim", RoundRequest(0, 1, np.arange(1, 4, dtype=U32), 10), 21, "<Q", HUGE64, "update length"),
    # ckks
    ("CkksAggregate-ids", CkksAggregate(0, 1, np.arange(1, 3, dtype=U32), b"ct"), 1, "<Q", HUGE64, "truncated"),
    ("CkksAggregate-blob", CkksAggregate(0, 1, np.arange(1, 3, dtype=U32), b"ct"), 17, "<Q", HUGE64, "limit"),
    ("CkksUpdate", CkksUpdate(0, 1, b"ct"), 0, "<Q", 1 << 30, "truncated"),
    ("CkksHello", CkksHello(0, 1, KEY), 0, "<Q", HUGE64, "limit"),
    ("CkksKeyRequest-ids", CkksKeyRequest(0, 1, True, np.arange(1, 3, dtype=U32), (KEY, KEY)), 2, "<Q", HUGE64,
     "truncated"),
    ("CkksKeys-ids", CkksKeys(0, 1, b"pub", np.arange(1, 2, dtype=U32), (KEY,), (b"s",)), 12, "<Q", HUGE64,
     "truncated"),
    ("CkksUploadRequest-ids", CkksUploadRequest(0, 1, np.arange(1, 3, dtype=U32), 10), 1, "<Q", HUGE64,
     "truncated"),
    ("CkksUploadRequest-dim", CkksUploadRequest(0, 1, np.arange(1, 3, dtype=U32), 10), 17, "<Q", HUGE64,
     "update length"),
    ("CkksReveal-mean", CkksReveal(0, 1, np.arange(1, 3, dtype=U32), np.zeros(5), 1.0, 0.1), 18, "<Q", HUGE64,
     "truncated"),
    ("CkksRevealRequest-blob", CkksRevealRequest(0, 1, np.arange(1, 3, dtype=U32), 10, b"agg"), 25, "<Q", HUGE64,
     "limit"),
    # ckks-threshold
    ("ThrRoster-params", ThrRoster(0, 1, 0, 2, b"p", (0, 1), KEY * 2, KEY * 2, KEY * 4), 8, "<Q", HUGE64, "limit"),
    ("ThrRoster-members", ThrRoster(0, 1, 0, 2, b"p", (0, 1), KEY * 2, KEY * 2, KEY * 4), 18, "<Q", HUGE64,
     "truncated"),
    ("ThrShamirShares-huge", ThrShamirShares(0, 1, 0, ((0, 1, b"x"),)), 4, "<I", HUGE32, "at most"),
    ("ThrShamirShares-many", ThrShamirShares(0, 1, 0, ((0, 1, b"x"),)), 4, "<I", MAX_MEMBERS, "bytes are left"),
    ("ThrCollectiveKey", ThrCollectiveKey(0, 1, 0, (0, 1), b"key"), 5, "<Q", HUGE64, "truncated"),
    ("ThrUpdate-blob", ThrUpdate(0, 1, KID, 1, b"ct", SIG), 28, "<Q", 1 << 30, "truncated"),
    ("ThrDecryptRequest", ThrDecryptRequest(0, 1, KID, (0, 1), (DIG,)), 25, "<Q", HUGE64, "truncated"),
    ("ThrActiveSet", ThrActiveSet(0, 1, KID, (0, 1), (2, 3), DIG, 1, b"c1", SIG * 2, b"c1" * 2), 25, "<Q", HUGE64,
     "truncated"),
    ("ThrPartialDecryption", ThrPartialDecryption(0, 1, KID, DIG, (0, 1), b"d"), 65, "<Q", HUGE64, "truncated"),
    ("ThrUploadRequest", ThrUploadRequest(0, 1, np.arange(1, 3, dtype=U32), 10, KID), 1, "<Q", HUGE64,
     "truncated"),
    # additive
    ("AddIncludedSet", AddIncludedSet(0, 1, np.arange(1, 3, dtype=U32)), 1, "<Q", HUGE64, "truncated"),
    ("AddUpload-huge", AddUpload(0, 1, (b"a", b"b")), 0, "<I", HUGE32, "at most"),
    ("AddUpload-many", AddUpload(0, 1, (b"a", b"b")), 0, "<I", MAX_SERVERS, "bytes are left"),
    ("AddUploadRequest-keys", AddUploadRequest(0, 1, np.arange(1, 3, dtype=U32), 10, b"", (KEY, KEY)), 33, "<I",
     MAX_SERVERS, "bytes are left"),
    ("AddShareBatch-blob", AddShareBatch(0, 1, ShareKind.SEED, np.arange(1, 3, dtype=U32), (b"a", b"b")), 22,
     "<Q", 1 << 30, "truncated"),
    ("AddShare-sealed", AddShare(0, 1, 2, KEY, ShareKind.VECTOR, 4, b"s"), 53, "<Q", HUGE64, "limit"),
    ("AddPartialSum-packed", AddPartialSum(0, 1, 2, DIG, 32, 4, b"p"), 53, "<Q", 1 << 30, "truncated"),
    # secagg
    ("SaKeyRoster-ids", SaKeyRoster(0, 1, 1, (1, 2), KEY * 4), 5, "<Q", HUGE64, "truncated"),
    ("SaShareKeys-ids", SaShareKeys(0, 1, (1, 2), b"\x00" * 2 * SEALED_BYTES), 1, "<Q", HUGE64, "truncated"),
    ("SaUnmaskRequest", SaUnmaskRequest(0, 1, (1, 2), (3,)), 1, "<Q", HUGE64, "truncated"),
    ("SaUnmaskResponse-shares", SaUnmaskResponse(0, 1, (1,), np.zeros((1, CHUNKS)), (), np.zeros((0, CHUNKS))),
     14, "<Q", HUGE64, f"expected {CHUNKS} values"),
    ("SaMaskedInput", SaMaskedInput(0, 1, 32, 4, b"\x00" * 16), 9, "<Q", HUGE64, "truncated"),
    # site messages (secfl.runtime.flower.site)
    ("SiteHello", SiteHello(0, 1, np.arange(1, 3, dtype=U32)), 1, "<Q", HUGE64, "truncated"),
    ("RunConfig", RunConfig(0, 1, "x = 1"), 0, "<Q", HUGE64, "limit"),
]


@pytest.mark.parametrize(("msg", "offset", "fmt", "value", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_message_counts_are_checked_before_allocating(msg, offset, fmt, value, match):
    cls = type(msg)
    assert cls.from_bytes(msg.to_bytes()).round == msg.round  # the unpatched message parses
    data = patched(msg, offset, fmt, value)
    refused(lambda: cls.from_bytes(data), match)


# id lists over the cap: refused before anything is built for them (a tuple of a million Python
# ints, or an int64 copy, would already exceed LIMIT)
BIG_IDS = np.arange(MANY, dtype=U32)

BIG_CASES: list[tuple[str, Callable[[], Message]]] = [
    ("ThrCollectiveKey", lambda: ThrCollectiveKey(0, 1, 0, BIG_IDS, b"k")),  # type: ignore[arg-type]
    ("ThrDecryptRequest", lambda: ThrDecryptRequest(0, 1, KID, BIG_IDS, (DIG,))),  # type: ignore[arg-type]
    ("AddIncludedSet", lambda: AddIncludedSet(0, 1, BIG_IDS)),
    ("SaUnmaskRequest", lambda: SaUnmaskRequest(0, 1, BIG_IDS, ())),  # type: ignore[arg-type]
    ("SaShareKeys", lambda: SaShareKeys(0, 1, BIG_IDS, b"")),  # type: ignore[arg-type]
    ("CkksAggregate", lambda: CkksAggregate(0, 1, BIG_IDS, b"ct")),
    ("RoundRequest", lambda: RoundRequest(0, 1, BIG_IDS, 10)),
    ("CkksKeyRequest-no-keys", lambda: CkksKeyRequest(0, 1, True, np.arange(1, 100_001, dtype=U32), ())),
    ("CkksKeys-no-keys", lambda: CkksKeys(0, 1, b"", np.arange(1, 100_001, dtype=U32), (), ())),
]


@pytest.mark.parametrize("make", [c[1] for c in BIG_CASES], ids=[c[0] for c in BIG_CASES])
def test_long_id_lists_are_refused_before_building_anything(make):
    msg = make()
    data = msg.to_bytes()
    refused(lambda: type(msg).from_bytes(data), "at most|non-empty sorted|bytes are left")


def test_every_message_type_with_a_count_is_covered():
    covered = {type(c[1]).TYPE for c in CASES}
    wanted = {MsgType.PLAIN_UPDATE, MsgType.ROUND_REQUEST, MsgType.CKKS_AGGREGATE, MsgType.CKKS_KEY_REQUEST,
              MsgType.CKKS_KEYS, MsgType.CKKS_UPLOAD_REQUEST, MsgType.CKKS_REVEAL, MsgType.CKKS_REVEAL_REQUEST,
              MsgType.THR_ROSTER, MsgType.THR_SHAMIR_SHARES, MsgType.THR_COLLECTIVE_KEY, MsgType.THR_UPDATE,
              MsgType.THR_DECRYPT_REQUEST, MsgType.THR_ACTIVE_SET, MsgType.THR_PARTIAL_DECRYPTION,
              MsgType.THR_UPLOAD_REQUEST, MsgType.ADD_INCLUDED_SET, MsgType.ADD_UPLOAD, MsgType.ADD_UPLOAD_REQUEST,
              MsgType.ADD_SHARE_BATCH, MsgType.ADD_SHARE, MsgType.ADD_PARTIAL_SUM, MsgType.SA_KEY_ROSTER,
              MsgType.SA_SHARE_KEYS, MsgType.SA_UNMASK_REQUEST, MsgType.SA_UNMASK_RESPONSE, MsgType.SA_MASKED_INPUT,
              MsgType.SITE_HELLO}
    assert wanted <= covered, sorted(t.name for t in wanted - covered)


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_file_promising_huge_dims_is_refused_before_reading(tmp_path, gz):
    import gzip
    import struct

    from secfl.errors import ConfigError
    from secfl.fl.data import read_idx

    raw = b"\x00\x00\x08\x03" + struct.pack(">III", 1 << 15, 1 << 15, 1 << 15) + b"abc"
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ConfigError, match="IDX"):
        read_idx(path)
