"""Framing: every message type round-trips and rejects truncated or altered bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfl.errors import MalformedMessageError, ReplayError
from secfl.fl.fedavg import ModelBroadcast
from secfl.protocols.plaintext import PlainUpdate
from secfl.protocols.wire import OVERHEAD_BYTES, Frame, MsgType, Reader, Writer

MESSAGES = [
    PlainUpdate(3, 7, 12.0, np.linspace(-1, 1, 17).astype(np.float32)),
    PlainUpdate(0, 0, 1.5, np.arange(5, dtype=np.float64)),
    ModelBroadcast(2, 0x8000_0000, np.ones(9, dtype=np.float32)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = msg.to_bytes()
    back = type(msg).from_bytes(data, expect_round=msg.round, expect_sender=msg.sender)
    assert back.round == msg.round and back.sender == msg.sender
    assert np.array_equal(back.vector, msg.vector) and back.vector.dtype == msg.vector.dtype


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_rejected(msg):
    data = msg.to_bytes()
    for n in range(len(data)):
        with pytest.raises(MalformedMessageError):
            type(msg).from_bytes(data[:n])


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_single_bit_flip_is_rejected(msg):
    data = bytearray(msg.to_bytes())
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(MalformedMessageError):
                type(msg).from_bytes(bytes(bad))


def test_extra_bytes_wrong_type_round_sender():
    data = MESSAGES[0].to_bytes()
    with pytest.raises(MalformedMessageError, match="length"):
        PlainUpdate.from_bytes(data + b"\x00")
    with pytest.raises(MalformedMessageError, match="expected a MODEL_BROADCAST"):
        ModelBroadcast.from_bytes(data)
    with pytest.raises(ReplayError, match="round 3"):
        PlainUpdate.from_bytes(data, expect_round=4)
    with pytest.raises(MalformedMessageError, match="sender"):
        PlainUpdate.from_bytes(data, expect_sender=8)
    with pytest.raises(MalformedMessageError, match="bytes"):
        PlainUpdate.from_bytes("not bytes")  # type: ignore[arg-type]


def test_payload_trailing_bytes_and_unknown_type_rejected():
    good = Writer().f64(1.0).array(np.zeros(2, np.float32)).getvalue()
    frame = Frame(MsgType.PLAIN_UPDATE, 0, 0, good + b"\x01").to_bytes()  # valid CRC, junk payload
    with pytest.raises(MalformedMessageError, match="trailing"):
        PlainUpdate.from_bytes(frame)
    raw = bytearray(Frame(MsgType.PLAIN_UPDATE, 0, 0, good).to_bytes())
    raw[3] = 250  # unknown type tag; recompute the checksum so only the tag is wrong
    import zlib

    raw[-4:] = zlib.crc32(bytes(raw[:-4])).to_bytes(4, "little")
    with pytest.raises(MalformedMessageError, match="unknown message type"):
        Frame.from_bytes(bytes(raw))


def test_integer_payload_where_float_expected_is_rejected():
    payload = Writer().f64(1.0).array(np.zeros(3, np.uint32)).getvalue()
    with pytest.raises(MalformedMessageError, match="float"):
        PlainUpdate.from_bytes(Frame(MsgType.PLAIN_UPDATE, 0, 0, payload).to_bytes())


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_parse_by_accident(blob):
    with pytest.raises(MalformedMessageError):
        PlainUpdate.from_bytes(blob)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.lists(st.floats(allow_nan=False, width=32), max_size=50))
def test_frame_round_trip_property(rnd, sender, values):
    vec = np.asarray(values, dtype=np.float32)
    msg = PlainUpdate(rnd, sender, 2.0, vec)
    data = msg.to_bytes()
    assert len(data) == OVERHEAD_BYTES + 8 + 9 + 4 * vec.size  # header+crc, weight, array header, values
    back = PlainUpdate.from_bytes(data)
    assert (back.round, back.sender, back.weight) == (rnd, sender, 2.0)
    assert np.array_equal(back.vector, vec)


def test_reader_limits():
    r = Reader(Writer().blob(b"x" * 10).getvalue())
    with pytest.raises(MalformedMessageError, match="exceeds"):
        r.blob(max_len=5)
