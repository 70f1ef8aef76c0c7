"""Support for ``tests/test_fuzz_messages.py`` (issue 12, item 8: fuzzing in CI).

- :func:`message_classes` — every :class:`~secfl.protocols.wire.Message` subclass in secfl, found
  by walking ``__subclasses__`` after importing every module that defines messages.
- :data:`FACTORIES` — one valid instance per message type (a new type without a factory fails
  ``test_every_message_type_has_a_factory``).
- Mutations (:class:`BitFlip`, :class:`Truncate`, :class:`Extend`, :class:`Overwrite`,
  :class:`Adjust`, :class:`Swap`, :class:`Duplicate`, :class:`Replay`) and :func:`tamper`, which
  applies one to a frame in a :class:`CrcMode`: CRC left alone, CRC recomputed over the whole
  altered frame, payload re-framed, or a nested frame re-framed inside its re-framed parent.
  Positions are drawn as plain integers and reduced modulo the length when applied, so a mutation
  is independent of the message and can be written down in a regression test.
- :class:`Federation` and :class:`MutatingTransport` — the stage mode: one protocol's parties
  (identity keys and a roster) over :class:`~secfl.protocols.parties.LocalTransport`, with one
  request or reply of one stage tampered with on its way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from hypothesis import strategies as st

from secfl.crypto.identity import new_identities
from secfl.errors import SecFLError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks.client import KEY_HOLDER
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.parties import LocalTransport, Transport
from secfl.protocols.wire import HEADER_BYTES, Frame, Message, MsgType, Writer

# -- discovery ------------------------------------------------------------------------------------

MESSAGE_MODULES = (
    "secfl.protocols.parties",
    "secfl.protocols.plaintext",
    "secfl.protocols.ckks",
    "secfl.protocols.ckks_threshold",
    "secfl.protocols.additive",
    "secfl.protocols.secagg",
    "secfl.fl.fedavg",
    "secfl.runtime.federation",
    "secfl.runtime.flower.site",  # stdlib + secfl only: importable without flwr
)


@functools.lru_cache(maxsize=1)
def message_classes() -> tuple[type[Message], ...]:
    """Every concrete secfl message class (one with a ``TYPE``), sorted by type tag."""
    for name in MESSAGE_MODULES:
        importlib.import_module(name)
    found: set[type[Message]] = set()
    todo = list(Message.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("secfl.") and isinstance(getattr(cls, "TYPE", None), MsgType):
            found.add(cls)
    return tuple(sorted(found, key=lambda c: int(c.TYPE)))


@functools.lru_cache(maxsize=1)
def registry() -> dict[MsgType, type[Message]]:
    return {cls.TYPE: cls for cls in message_classes()}


# -- one valid instance per message type ------------------------------------------------------------


def _bytes(n: int, label: str) -> bytes:
    """``n`` deterministic pseudo-random bytes (different per label)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def _ids(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)


def _factories() -> dict[type[Message], Callable[[], Message]]:
    from secfl.fl.fedavg import ModelBroadcast
    from secfl.protocols import additive as add
    from secfl.protocols import ckks
    from secfl.protocols import ckks_threshold as thr
    from secfl.protocols import secagg as sa
    from secfl.protocols.parties import RoundRequest
    from secfl.protocols.plaintext import PlainUpdate
    from secfl.runtime.federation import TrainDone
    from secfl.runtime.flower.site import RunConfig, RunFinish, SiteHello

    srv, kh, m0 = server_id(0), ckks.KEY_HOLDER, member_id(0)
    sig, key, seed, kid, dig = _bytes(64, "sig"), _bytes(32, "key"), _bytes(32, "seed"), _bytes(16, "kid"), \
        _bytes(32, "digest")
    aggregate = ckks.CkksAggregate(3, srv, _ids(0, 1, 2), _bytes(120, "ct-sum"))
    share = add.AddShare(3, 1, srv, key, add.ShareKind.VECTOR, 16, _bytes(60, "sealed"))
    seed_share = add.AddShare(3, 1, server_id(1), _bytes(32, "eph"), add.ShareKind.SEED, 0, _bytes(60, "sealed-seed"))
    server_key = add.AddServerKey(3, server_id(1), key, sig)
    pubkey_share = thr.ThrPubkeyShare(0, m0, 1, seed, _bytes(96, "b_i"))
    shamir = thr.ThrShamirShares(0, m0, 1, ((0, 1, _bytes(44, "s01")), (0, 2, _bytes(44, "s02"))))
    collective = thr.ThrCollectiveKey(0, srv, 1, (0, 1, 2), _bytes(80, "pk"), ((0, sig), (2, _bytes(64, "sig2"))))
    active = thr.ThrActiveSet(3, srv, kid, (0, 1), (0, 1), dig, 2, _bytes(24, "c1"), sig * 2, _bytes(48, "c1s"))
    return {
        RoundRequest: lambda: RoundRequest(3, srv, _ids(0, 1, 2), 16),
        ModelBroadcast: lambda: ModelBroadcast(3, srv, np.linspace(-1, 1, 16, dtype=np.float32)),
        TrainDone: lambda: TrainDone(3, 1, 0.25, 1.5),
        RunConfig: lambda: RunConfig(0, srv, 'protocol = "secagg"\nrounds = 2\n'),
        SiteHello: lambda: SiteHello(0, 1, _ids(1, server_id(2))),
        RunFinish: lambda: RunFinish(0, srv, 1, "site id taken"),
        PlainUpdate: lambda: PlainUpdate(3, 1, 2.0, np.linspace(-1, 1, 16, dtype=np.float32)),
        ckks.CkksContextMessage: lambda: ckks.CkksContextMessage(0, kh, _bytes(200, "public-context")),
        ckks.CkksSecretContextMessage: lambda: ckks.CkksSecretContextMessage(0, kh, _bytes(200, "secret-ctx")),
        ckks.CkksUpdate: lambda: ckks.CkksUpdate(3, 1, _bytes(120, "ct")),
        ckks.CkksAggregate: lambda: aggregate,
        ckks.CkksHello: lambda: ckks.CkksHello(3, 1, key, sig),
        ckks.CkksKeyRequest: lambda: ckks.CkksKeyRequest(3, srv, True, _ids(0, 2), (key, _bytes(32, "k2")),
                                                         (sig, _bytes(64, "sig2"))),
        ckks.CkksKeys: lambda: ckks.CkksKeys(3, kh, _bytes(100, "pub"), _ids(0, 2), (key, _bytes(32, "k2")),
                                             (_bytes(70, "sealed0"), _bytes(70, "sealed2")), (sig, sig)),
        ckks.CkksUploadRequest: lambda: ckks.CkksUploadRequest(3, srv, _ids(0, 1, 2), 16, key, _bytes(70, "sealed"),
                                                               sig),
        ckks.CkksReveal: lambda: ckks.CkksReveal(3, kh, _ids(0, 1, 2), np.linspace(-1, 1, 16), 6.0, 1e-9),
        ckks.CkksRevealRequest: lambda: ckks.CkksRevealRequest(3, srv, _ids(0, 1, 2), 16, aggregate.to_bytes()),
        thr.ThrMemberHello: lambda: thr.ThrMemberHello(0, m0, 1, key, seed, sig),
        thr.ThrRoster: lambda: thr.ThrRoster(0, srv, 1, 2, _bytes(40, "params"), (0, 1, 2), _bytes(96, "keys"),
                                             _bytes(96, "nonces"), _bytes(192, "sigs")),
        thr.ThrPubkeyShare: lambda: pubkey_share,
        thr.ThrShamirShares: lambda: shamir,
        thr.ThrCollectiveKey: lambda: collective,
        thr.ThrUpdate: lambda: thr.ThrUpdate(3, 1, kid, 2, _bytes(150, "thr-ct"), sig),
        thr.ThrDecryptRequest: lambda: thr.ThrDecryptRequest(3, srv, kid, (0, 1, 2), (dig, _bytes(32, "d2"))),
        thr.ThrReady: lambda: thr.ThrReady(3, m0, kid, dig),
        thr.ThrActiveSet: lambda: active,
        thr.ThrPartialDecryption: lambda: thr.ThrPartialDecryption(3, m0, kid, dig, (0, 1), _bytes(90, "partial")),
        thr.ThrKeygenRequest: lambda: thr.ThrKeygenRequest(0, srv, 1),
        thr.ThrDealing: lambda: thr.ThrDealing(0, m0, pubkey_share.to_bytes(), shamir.to_bytes()),
        thr.ThrKeyDelivery: lambda: thr.ThrKeyDelivery(0, srv, shamir.to_bytes(), collective.to_bytes()),
        thr.ThrKeyAck: lambda: thr.ThrKeyAck(0, m0, 1, kid, True, sig),
        thr.ThrUploadRequest: lambda: thr.ThrUploadRequest(3, srv, _ids(0, 1, 2), 16, kid, collective.to_bytes()),
        thr.ThrPartialRequest: lambda: thr.ThrPartialRequest(3, srv, 3, active.to_bytes()),
        add.AddServerKey: lambda: server_key,
        add.AddShare: lambda: share,
        add.AddIncludedSet: lambda: add.AddIncludedSet(3, server_id(1), _ids(0, 1, 2)),
        add.AddPartialSum: lambda: add.AddPartialSum(3, server_id(1), 3, dig, 40, 17, _bytes(85, "packed")),
        add.AddUploadRequest: lambda: add.AddUploadRequest(3, srv, _ids(0, 1, 2), 16, seed,
                                                           (add.AddServerKey(3, srv, _bytes(32, "k0")).to_bytes(),
                                                            server_key.to_bytes())),
        add.AddUpload: lambda: add.AddUpload(3, 1, (share.to_bytes(), seed_share.to_bytes())),
        add.AddShareBatch: lambda: add.AddShareBatch(3, srv, add.ShareKind.VECTOR, _ids(1, 2),
                                                     (share.to_bytes(), share.to_bytes())),
        sa.SaAdvertiseKeys: lambda: sa.SaAdvertiseKeys(3, 1, key, _bytes(32, "s-pub"), sig),
        sa.SaKeyRoster: lambda: sa.SaKeyRoster(3, srv, 2, (0, 2, 3), _bytes(192, "pairs"), _bytes(192, "sigs")),
        sa.SaShareKeys: lambda: sa.SaShareKeys(3, 1, (0, 2), _bytes(216, "sealed-pairs")),
        sa.SaSharesForward: lambda: sa.SaSharesForward(3, srv, (0, 2), _bytes(216, "fwd-pairs")),
        sa.SaMaskedInput: lambda: sa.SaMaskedInput(3, 1, 40, 17, _bytes(85, "masked")),
        sa.SaUnmaskRequest: lambda: sa.SaUnmaskRequest(3, srv, (0, 2), (3,)),
        sa.SaConsistencyRequest: lambda: sa.SaConsistencyRequest(3, srv, (0, 1, 2)),
        sa.SaConsistencySignature: lambda: sa.SaConsistencySignature(3, 1, sig),
        sa.SaCheckedUnmaskRequest: lambda: sa.SaCheckedUnmaskRequest(3, srv, (0, 2), (3,), (0, 1, 2), (0, 2),
                                                                     _bytes(128, "u3-sigs")),
        sa.SaUnmaskResponse: lambda: sa.SaUnmaskResponse(
            3, 1, (0, 2), np.arange(18, dtype=np.uint64).reshape(2, 9), (3,), np.arange(9, dtype=np.uint64)[None]),
    }


@functools.lru_cache(maxsize=1)
def factories() -> dict[type[Message], Callable[[], Message]]:
    return _factories()


# -- where the fields are ---------------------------------------------------------------------------

#: offsets of the frame header's version, type, round, sender and length fields
HEADER_FIELDS = (2, 3, 4, 8, 12)


@dataclass(frozen=True)
class Layout:
    """Where a payload's fixed-width fields start (u8/u32/u64/f64, blob lengths, array headers),
    and the nested frames it carries as blobs: ``(length prefix offset, start, end)``."""

    fields: tuple[int, ...] = ()
    nested: tuple[tuple[int, int, int], ...] = ()


class _TrackingWriter(Writer):
    """A :class:`Writer` that records the offset of every field it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[int] = []
        self.nested: list[tuple[int, int, int]] = []

    def _at(self) -> int:
        return sum(len(p) for p in self._parts)

    def u8(self, v: int) -> Writer:
        self.fields.append(self._at())
        return super().u8(v)

    def u32(self, v: int) -> Writer:
        self.fields.append(self._at())
        return super().u32(v)

    def u64(self, v: int) -> Writer:
        self.fields.append(self._at())
        return super().u64(v)

    def f64(self, v: float) -> Writer:
        self.fields.append(self._at())
        return super().f64(v)

    def array(self, a: np.ndarray) -> Writer:
        at = self._at()
        self.fields.extend((at, at + 1))  # dtype code, element count
        return super().array(a)

    def blob(self, b: bytes) -> Writer:
        at = self._at()
        self.fields.append(at)
        inner = payload_layout(bytes(b))
        if inner is not None:  # a frame carried inside this one
            start = at + 8
            self.nested.append((at, start, start + len(b)))
            self.fields.extend(start + f for f in (*HEADER_FIELDS, *(HEADER_BYTES + g for g in inner.fields)))
        return super().blob(b)


def payload_layout(frame: bytes) -> Layout | None:
    """The layout of a well-formed frame's payload (None when ``frame`` is not one of ours)."""
    if len(frame) < HEADER_BYTES + 4 or frame[:2] != b"SF":
        return None
    try:
        head = Frame.from_bytes(frame)
        cls = registry().get(head.type)
        if cls is None:
            return None
        msg = cls.from_bytes(frame)
    except SecFLError:
        return None
    w = _TrackingWriter()
    msg._write(w)
    if w.getvalue() != bytes(head.payload):  # not re-encoded the same: positions unknown
        return Layout()
    return Layout(tuple(w.fields), tuple(w.nested))


# -- mutations -------------------------------------------------------------------------------------

_U32 = st.integers(0, 2**32 - 1)
HUGE = (0xFFFFFFFF, 2**63, 2**64 - 1, 2**32, 2**31, 2**34 + 1, 0, 1)


def _window(raw: int, width: int, n: int, fields: tuple[int, ...], aligned: bool) -> tuple[int, int]:
    """A ``width``-byte window inside ``n`` bytes: at a field start when ``aligned``."""
    width = min(width, n)
    start = fields[raw % len(fields)] if aligned and fields else raw % n
    return min(start, n - width), width


class Mutation:
    """One change to a byte string; ``fields`` are the field offsets in that string."""

    def apply(self, data: bytes, fields: tuple[int, ...] = ()) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        return bytes(self._apply(buf, fields))

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        raise NotImplementedError


@dataclass(frozen=True)
class BitFlip(Mutation):
    bits: tuple[int, ...]

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        for b in self.bits:
            pos = b % (8 * len(buf))
            buf[pos // 8] ^= 1 << (pos % 8)
        return buf


@dataclass(frozen=True)
class Truncate(Mutation):
    keep: int

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        return buf[: self.keep % len(buf)]


@dataclass(frozen=True)
class Extend(Mutation):
    """Insert ``extra`` at ``at`` (None: append, i.e. trailing bytes)."""

    at: int | None
    extra: bytes

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        at = len(buf) if self.at is None else self.at % (len(buf) + 1)
        return buf[:at] + bytearray(self.extra) + buf[at:]


@dataclass(frozen=True)
class Overwrite(Mutation):
    """Write ``value`` (little-endian, ``width`` bytes) over a field, or anywhere."""

    at: int
    width: int
    value: int
    aligned: bool = True

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        start, width = _window(self.at, self.width, len(buf), fields, self.aligned)
        buf[start : start + width] = (self.value % 2**64).to_bytes(8, "little")[:width]
        return buf


@dataclass(frozen=True)
class Adjust(Mutation):
    """Add ``delta`` to a little-endian field (off-by-one lengths, counts, ids)."""

    at: int
    width: int
    delta: int
    aligned: bool = True

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        start, width = _window(self.at, self.width, len(buf), fields, self.aligned)
        v = (int.from_bytes(buf[start : start + width], "little") + self.delta) % 2 ** (8 * width)
        buf[start : start + width] = v.to_bytes(width, "little")
        return buf


@dataclass(frozen=True)
class Swap(Mutation):
    """Swap two non-overlapping ranges of the same length."""

    a: int
    b: int
    n: int

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        if len(buf) < 2:
            return buf
        n = 1 + self.n % min(len(buf) // 2, 4096)
        a = self.a % (len(buf) - 2 * n + 1)
        b = a + n + self.b % (len(buf) - a - 2 * n + 1)
        buf[a : a + n], buf[b : b + n] = buf[b : b + n], buf[a : a + n]
        return buf


@dataclass(frozen=True)
class Duplicate(Mutation):
    """Insert a copy of a range at another position (a part replayed twice)."""

    start: int
    n: int
    at: int

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        n = 1 + self.n % min(len(buf), 4096)
        s = self.start % (len(buf) - n + 1)
        at = self.at % (len(buf) + 1)
        return buf[:at] + buf[s : s + n] + buf[at:]


@dataclass(frozen=True)
class Replay(Mutation):
    """Copy a range over another range of the same length (a part replayed in place)."""

    src: int
    dst: int
    n: int

    def _apply(self, buf: bytearray, fields: tuple[int, ...]) -> bytearray:
        n = 1 + self.n % min(len(buf), 4096)
        s, d = self.src % (len(buf) - n + 1), self.dst % (len(buf) - n + 1)
        buf[d : d + n] = buf[s : s + n]
        return buf


def mutations() -> st.SearchStrategy[Mutation]:
    return st.one_of(
        st.builds(BitFlip, st.lists(_U32, min_size=1, max_size=8).map(tuple)),
        st.builds(Truncate, _U32),
        st.builds(Extend, st.one_of(st.none(), _U32), st.binary(min_size=1, max_size=64)),
        st.builds(Overwrite, _U32, st.sampled_from((4, 8)), st.sampled_from(HUGE), st.booleans()),
        st.builds(Adjust, _U32, st.sampled_from((1, 4, 8)), st.integers(-70, 70).filter(bool), st.booleans()),
        st.builds(Swap, _U32, _U32, _U32),
        st.builds(Duplicate, _U32, _U32, _U32),
        st.builds(Replay, _U32, _U32, _U32),
    )


class CrcMode(str, Enum):
    """How a mutated frame is framed again."""

    KEEP = "keep"  # the whole frame altered, CRC untouched: must never parse
    RECRC = "recrc"  # the whole frame (header too) altered, then its CRC recomputed
    REFRAME = "reframe"  # the payload altered, then framed again (valid length and CRC)
    NESTED = "nested"  # a frame carried inside the payload altered and framed again, then its parent


def _crc(body: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(body))


def tamper(frame: bytes, mutation: Mutation, mode: CrcMode, nested: int = 0) -> bytes:
    """``frame`` with ``mutation`` applied in ``mode`` (see :class:`CrcMode`)."""
    layout = payload_layout(frame) or Layout()
    whole = (*HEADER_FIELDS, *(HEADER_BYTES + f for f in layout.fields))
    if mode is CrcMode.KEEP:
        return mutation.apply(frame, whole)
    if mode is CrcMode.RECRC:
        body = mutation.apply(frame[:-4], whole)
        return body + _crc(body)
    head, payload = frame[:HEADER_BYTES], frame[HEADER_BYTES:-4]
    if mode is CrcMode.NESTED and layout.nested:
        lo, start, end = layout.nested[nested % len(layout.nested)]
        inner = tamper(payload[start:end], mutation, CrcMode.REFRAME)
        payload = payload[:lo] + struct.pack("<Q", len(inner)) + inner + payload[end:]
    else:
        payload = mutation.apply(payload, layout.fields)
    body = head[:12] + struct.pack("<Q", len(payload)) + payload
    return body + _crc(body)


def parse_deep(cls: type[Message], data: bytes) -> Message:
    """Parse ``data`` as ``cls``, then every frame it carries (as its receivers would)."""
    msg = cls.from_bytes(data)
    for value in vars(msg).values():
        for blob in value if isinstance(value, tuple) else (value,):
            if isinstance(blob, (bytes, bytearray)) and blob[:2] == b"SF" and len(blob) >= HEADER_BYTES + 4:
                inner = registry().get(Frame.from_bytes(blob).type)
                if inner is not None:
                    parse_deep(inner, blob)
    return msg


# -- memory guard ----------------------------------------------------------------------------------


@contextlib.contextmanager
def memory_guard(headroom: int = 6 << 30) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``headroom`` while the body runs,
    so that a parser allocating by a size read from the wire fails with MemoryError instead of
    swapping the machine (the cap is lifted afterwards)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * resource.getpagesize()
        old = resource.getrlimit(resource.RLIMIT_AS)
        cap = vsize + headroom
        if old[1] != resource.RLIM_INFINITY:
            cap = min(cap, old[1])
        resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
    except (ImportError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


# -- stage mode ------------------------------------------------------------------------------------

DIM = 16


@dataclass(frozen=True)
class Setup:
    options: Mapping[str, Any]
    clients: tuple[int, ...]
    extra: tuple[int, ...] = ()
    clip: float = 1.0  # every input lies within ±clip (the protocol's clip_range / max_abs)


SETUPS: dict[str, Setup] = {
    "plaintext": Setup({"max_abs": 1.0}, (0, 1, 2)),
    "ckks": Setup({"max_weight": 4.0, "clip_range": 1.0}, (0, 1, 2), (KEY_HOLDER,)),
    "ckks-threshold": Setup({"quorum": (2, 3), "max_weight": 4.0, "clip_range": 1.0}, (0, 1, 2),
                            tuple(member_id(j) for j in range(3))),
    "additive": Setup({"max_weight": 4.0, "clip_range": 1.0}, (0, 1, 2), (server_id(1),)),
    "secagg": Setup({"max_weight": 4.0, "clip_range": 1.0}, (0, 1, 2, 3)),
}


@functools.cache
def protocol(name: str) -> Any:
    return make_protocol(name, **SETUPS[name].options)


@functools.cache
def identities(name: str) -> tuple[Any, Any]:
    s = SETUPS[name]
    return new_identities((*s.clients, *s.extra))


def inputs(name: str, rnd: int) -> tuple[np.ndarray, np.ndarray]:
    """Round ``rnd``'s updates (within ±0.9) and weights 1, 2, 3, ... (public max 4). The same in
    every round, so that an example replayed on a reused federation meets the same values."""
    n = len(SETUPS[name].clients)
    return np.random.default_rng([12, 8]).uniform(-0.9, 0.9, (n, DIM)), np.arange(1.0, n + 1)


class Federation:
    """One protocol's parties, each built on its own with its identity key and the roster, and
    the server's coordinator. Rounds are numbered on from 0."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.setup = SETUPS[name]
        proto = protocol(name)
        keys, roster = identities(name)
        self.parties = {pid: proto.party(pid, identity=keys[pid], roster=roster)
                        for pid in (*self.setup.clients, *self.setup.extra)}
        self.coord = proto.coordinator()
        self.next_round = 0

    def run_round(self, wrap: Callable[[Transport], Transport] = lambda t: t) -> tuple[int, Any]:
        """One round over ``wrap(LocalTransport)``: ``(round, Revealed)``; SecFLError propagates."""
        rnd = self.next_round
        self.next_round += 1
        xs, ws = inputs(self.name, rnd)
        for i, c in enumerate(self.setup.clients):
            self.parties[c].set_input(rnd, xs[i], float(ws[i]))
        transport = wrap(LocalTransport(Network(), self.parties))
        return rnd, self.coord.run_round(RoundSpec(rnd, self.setup.clients, DIM), transport)

    def reference(self, rnd: int, included: tuple[int, ...]) -> np.ndarray:
        xs, ws = inputs(self.name, rnd)
        keep = [self.setup.clients.index(c) for c in included]
        return (ws[keep, None] * xs[keep]).sum(0) / ws[keep].sum()

    def error_bound(self) -> float:
        bound = getattr(self.coord, "error_bound", None)
        return 1e-6 if bound is None else float(bound)  # plaintext: float32 on the wire

    def close(self) -> None:
        for p in self.parties.values():
            getattr(p, "close", lambda: None)()


@dataclass
class MutatingTransport(Transport):
    """Passes every exchange to ``inner``; at ``stage`` it tampers with the request to one party
    (``direction == "request"``) or that party's reply (``"reply"``), chosen by ``pick``."""

    inner: Transport
    stage: str
    direction: str
    pick: Callable[[list[int]], int]
    change: Callable[[bytes], bytes]
    target: int | None = None
    original: bytes | None = None
    mutated: bytes | None = None
    answered: bool | None = None  # did the target answer a tampered request
    stages: list[str] = field(default_factory=list)

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    @property
    def changed(self) -> bool:
        return self.mutated is not None and self.mutated != self.original

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        self.stages.append(stage)
        hit = stage == self.stage and self.target is None
        if hit and self.direction == "request" and requests:
            self.target = self.pick(sorted(requests))
            self.original = requests[self.target]
            self.mutated = self.change(self.original)
            requests = {**requests, self.target: self.mutated}
        replies = self.inner.exchange(stage, requests)
        if hit and self.direction == "request" and self.target is not None:
            self.answered = self.target in replies
        if hit and self.direction == "reply" and replies:
            self.target = self.pick(sorted(replies))
            self.original = replies[self.target]
            self.mutated = self.change(self.original)
            replies = {**replies, self.target: self.mutated}
        return replies


class Recorder(Transport):
    """Records the stage names of the exchanges it passes on."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.stages: list[str] = []

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        self.stages.append(stage)
        return self.inner.exchange(stage, requests)


@functools.cache
def honest_stages(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stage sequence of an honest first round and of an honest second round."""
    fed = Federation(name)
    try:
        out = []
        for _ in range(2):
            made: list[Recorder] = []

            def wrap(inner: Transport, made: list[Recorder] = made) -> Transport:
                made.append(Recorder(inner))
                return made[-1]

            fed.run_round(wrap)
            out.append(tuple(made[0].stages))
        return out[0], out[1]
    finally:
        fed.close()
