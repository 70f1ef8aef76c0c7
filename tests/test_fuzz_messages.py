"""Fuzzing every message type and every stage (issue 12, item 8).

Message mode: one valid instance of every :class:`~secfl.protocols.wire.Message` subclass
(``fuzz_support.factories()``; a new type without a factory fails), serialized, then mutated — bit
flips, truncation, extension, huge values over u32/u64 fields, off-by-n fields, swapped ranges,
duplicated and replayed parts — with the CRC left alone, recomputed over the altered frame,
or the payload (or a frame nested in it) framed again. Parsing may succeed or raise a
:class:`~secfl.errors.SecFLError`; anything else fails. With the CRC left alone, an altered
frame never parses, and a frame that does parse re-encodes to the same bytes (strict format).

Stage mode: each protocol's honest round over ``LocalTransport`` with one party object per
site (identity keys and a roster); at one stage, the request to one party or that party's reply
is mutated on the way. The round must end with a revealed mean or a SecFLError. With the CRC
left alone the tampered message costs its sender (or the round): a tampered request is never
answered, and the mean stays within the coordinator's error bound of the weighted mean of the
clients it says it includes. With a valid CRC a message can be changed undetectably (no MACs yet:
issue 12, item 6), but the mean never leaves the clipping range plus its error bound.

Findings the fuzzers made that need a fix outside the message parsers stay visible as strict
xfail tests (``NOT_CANONICAL`` / ``KNOWN_UNCHECKED`` name the cases the fuzzers skip meanwhile).

Budgets: the default run is small, with a fixed seed per case (CI is reproducible: the same
examples every run); ``-m slow`` runs ten times as many. ``SECFL_FUZZ_SEED=n`` draws another
fixed set, to explore. A case on a reused federation that fails may be reported as "flaky"
(the replay meets a later round); its draws still name the mutation.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import replace

import numpy as np
import pytest
from fuzz_support import (
    DIM,
    SETUPS,
    CrcMode,
    Federation,
    MutatingTransport,
    Overwrite,
    factories,
    honest_stages,
    identities,
    memory_guard,
    message_classes,
    mutations,
    parse_deep,
    protocol,
    tamper,
)
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from secfl.errors import MalformedMessageError, ProtocolAbort, SecFLError
from secfl.protocols.ckks.messages import CkksReveal
from secfl.protocols.network import server_id
from secfl.protocols.parties import RoundRequest, Transport
from secfl.protocols.wire import Message
from secfl.runtime.flower.site import RunFinish

MESSAGE_EXAMPLES = 30  # per message type
STAGE_EXAMPLES = 4  # per (protocol, stage) on a federation that is reused round after round
FRESH_EXAMPLES = 2  # per (protocol, setup stage): a new federation (key generation) every example
SLOW = 10  # the slow budget: this many times the default

#: message types that accept more than one encoding of the same value (see the xfail tests below)
NOT_CANONICAL: set[str] = set()

#: (protocol, stage, direction) whose valid-CRC tampering is known to move the mean out of range; each
#: has a strict xfail test below that starts passing when it is fixed (then remove the entry)
KNOWN_UNCHECKED: set[tuple[str, str, str]] = set()

#: (protocol, stage, direction) where tampering is known to raise an untyped exception, and which;
#: each has a strict xfail test below (remove the entry once it passes)
KNOWN_UNTYPED: dict[tuple[str, str, str], type[BaseException]] = {}

SCALES = [pytest.param(1, id="ci"), pytest.param(SLOW, id="long", marks=pytest.mark.slow)]


def _case_seed(case: str) -> int:
    """A fixed seed per case: reproducible like ``derandomize``, but the cases of one
    parametrized test do not all draw the same examples. ``SECFL_FUZZ_SEED`` (default 0) picks
    another fixed set of examples, to explore beyond CI's."""
    return zlib.crc32(f"{os.environ.get('SECFL_FUZZ_SEED', '0')}/{case}".encode())


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- message mode ----------------------------------------------------------------------------------


def test_every_message_type_has_a_factory_and_round_trips():
    classes = message_classes()
    assert len(classes) >= 47
    missing = [c.__name__ for c in classes if c not in factories()]
    assert not missing, f"message types without a fuzz factory (add one to tests/fuzz_support.py): {missing}"
    assert len({c.TYPE for c in classes}) == len(classes)
    for cls in classes:
        data = factories()[cls]().to_bytes()
        assert parse_deep(cls, data).to_bytes() == data


def _check_parse(cls: type[Message], original: bytes, data: bytes, mode: CrcMode) -> None:
    """Success or a SecFLError (anything else propagates); no silent acceptance."""
    with memory_guard():
        try:
            msg = parse_deep(cls, data)
        except SecFLError:
            return
    if mode is CrcMode.KEEP:
        assert data == original, "an altered frame parsed with its original CRC"
    if cls.__name__ not in NOT_CANONICAL:
        assert msg.to_bytes() == data, "parsed, but does not re-encode to the same bytes (not strict)"


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("cls", message_classes(), ids=lambda c: c.__name__)
def test_mutated_message_parses_or_raises_a_typed_error(cls, scale):
    original = factories()[cls]().to_bytes()

    @_settings(MESSAGE_EXAMPLES * scale)
    @seed(_case_seed(cls.__name__))
    @given(mutation=mutations(), mode=st.sampled_from(CrcMode), nested=st.integers(0, 7))
    def check(mutation, mode, nested):
        _check_parse(cls, original, tamper(original, mutation, mode, nested), mode)

    check()


def test_one_flipped_bit_anywhere_is_refused():
    """A valid frame with one bit flipped anywhere (header, payload or CRC) is refused, naming
    the checksum or the field that no longer fits."""
    for cls in message_classes():
        data = factories()[cls]().to_bytes()
        for pos in range(0, 8 * len(data), 13):
            bad = bytearray(data)
            bad[pos // 8] ^= 1 << (pos % 8)
            with pytest.raises(MalformedMessageError):
                cls.from_bytes(bytes(bad))


# -- stage mode ------------------------------------------------------------------------------------

#: each protocol's stages: an honest first round, and a later round (``test_stage_lists_are_current``)
STAGES = {
    "plaintext": (("plaintext.upload",), ("plaintext.upload",)),
    "ckks": (("ckks.hello", "ckks.keys", "ckks.upload", "ckks.reveal"), ("ckks.upload", "ckks.reveal")),
    "ckks-threshold": (("thr.hello", "thr.deal", "thr.key", "thr.upload", "thr.ready", "thr.partial"),
                       ("thr.upload", "thr.ready", "thr.partial")),
    "additive": (("additive.keys", "additive.upload", "additive.seeds", "additive.vectors", "additive.reveal"),) * 2,
    "secagg": (("secagg.advertise_keys", "secagg.share_keys", "secagg.masked_input", "secagg.unmask"),) * 2,
}


def _cases() -> list:
    """(protocol, stage, fresh): every later-round stage on a reused federation, and every
    first-round-only stage plus the first later-round stage (which carries the keys the first
    time) on a fresh federation."""
    out = []
    for name, (first, later) in STAGES.items():
        if first != later:
            fresh = [s for s in first if s not in later] + [later[0]]
            out += [pytest.param(name, s, True, id=f"{name}:{s}:first") for s in fresh]
        out += [pytest.param(name, s, False, id=f"{name}:{s}") for s in later]
    return out


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_lists_are_current(name):
    assert honest_stages(name) == STAGES[name], "a protocol's stages changed: update STAGES here"


class _Sessions:
    """One federation per protocol, reused across examples (a round aborted: built afresh)."""

    def __init__(self) -> None:
        self._feds: dict[str, Federation] = {}

    def get(self, name: str) -> Federation:
        if name not in self._feds:
            fed = Federation(name)
            fed.run_round()  # key generation and provisioning, honestly
            self._feds[name] = fed
        return self._feds[name]

    def reset(self, name: str) -> None:
        fed = self._feds.pop(name, None)
        if fed is not None:
            fed.close()

    def close(self) -> None:
        for name in list(self._feds):
            self.reset(name)


@pytest.fixture(scope="module")
def sessions():
    s = _Sessions()
    yield s
    s.close()


def _check_round(fed: Federation, mt: MutatingTransport, mode: CrcMode, rnd: int, out) -> None:
    assert mt.target is not None, f"stage {mt.stage!r} never ran (stages: {mt.stages})"
    strict = mode is CrcMode.KEEP or not mt.changed
    if strict and mt.changed and mt.direction == "request":
        assert not mt.answered, f"party {mt.target:#x} answered a request whose CRC no longer matches"
    if out is None:
        return
    clients = fed.setup.clients
    assert out.mean.shape == (DIM,) and np.isfinite(out.mean).all()
    assert out.included and set(out.included) <= set(clients)
    bound = fed.error_bound()
    if strict:
        err = float(np.abs(out.mean - fed.reference(rnd, out.included)).max())
        assert err <= bound, f"tampered {mt.direction} moved the mean by {err:.3g} > bound {bound:.3g}"
    elif (fed.name, mt.stage, mt.direction) not in KNOWN_UNCHECKED:
        # the reported bound may itself have been tampered with (CKKS_REVEAL carries it): at most 1e-3
        peak = float(np.abs(out.mean).max())
        limit = (fed.setup.clip + min(bound, 1e-3)) * (1 + 1e-9)
        assert peak <= limit, f"tampered {mt.direction}: mean {peak:.6g} beyond the clipping range"


# -- findings kept visible ---------------------------------------------------------------------------


class _RevealRewriter(Transport):
    """Rewrites the key holder's CKKS_REVEAL: the same round, sender, set and bound (a valid frame,
    as an on-path attacker without TLS, or a faulty key holder, would send), another mean."""

    def __init__(self, inner: Transport, mean: np.ndarray) -> None:
        self.inner, self.mean = inner, mean

    @property
    def failures(self):  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage, requests):
        replies = self.inner.exchange(stage, requests)
        if stage == "ckks.reveal":
            replies = {pid: replace(CkksReveal.from_bytes(data), mean=self.mean).to_bytes()
                       for pid, data in replies.items()}
        return replies


def test_ckks_coordinator_refuses_a_revealed_mean_beyond_the_clipping_range():
    fed = Federation("ckks")
    try:
        _, out = fed.run_round(lambda t: _RevealRewriter(t, np.full(DIM, 4.8e278)))
    except ProtocolAbort:
        return
    finally:
        fed.close()
    assert np.abs(out.mean).max() <= fed.setup.clip, "the coordinator applied a mean of 4.8e278"


def test_additive_aggregator_refuses_an_update_length_it_cannot_hold():
    keys, roster = identities("additive")
    aggregator = protocol("additive").party(server_id(1), identity=keys[server_id(1)], roster=roster)
    request = RoundRequest(0, server_id(0), np.asarray(SETUPS["additive"].clients, dtype=np.uint32), 2**34)
    with memory_guard():
        try:
            aggregator.handle("additive.keys", request.to_bytes())
        except SecFLError:
            pass


def test_run_finish_reason_that_is_not_utf8_is_refused():
    data = RunFinish(0, server_id(0), 1, "site id taken").to_bytes()
    bad = tamper(data, Overwrite(1 + 8, 1, 0x80, aligned=False), CrcMode.REFRAME)
    try:
        msg = RunFinish.from_bytes(bad)
    except MalformedMessageError:
        return
    assert msg.to_bytes() == bad, f"RUN_FINISH accepted a reason that is not UTF-8: {msg.reason!r}"


# -- stage mode: the fuzzer ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name, stage, fresh", _cases())
def test_tampered_stage_costs_only_its_sender(name, stage, fresh, scale, sessions):
    examples = (FRESH_EXAMPLES if fresh else STAGE_EXAMPLES) * scale

    @_settings(examples)
    @seed(_case_seed(f"{name}/{stage}/{fresh}"))
    @given(data=st.data())
    def check(data):
        direction = data.draw(st.sampled_from(("request", "reply")), label="direction")
        mode = data.draw(st.sampled_from(CrcMode), label="mode")
        mutation = data.draw(mutations(), label="mutation")
        nested = data.draw(st.integers(0, 7), label="nested")
        fed = Federation(name) if fresh else sessions.get(name)
        made: list[MutatingTransport] = []

        def wrap(inner):
            made.append(MutatingTransport(
                inner, stage, direction,
                pick=lambda ids: ids[data.draw(st.integers(0, len(ids) - 1), label="party")],
                change=lambda b: tamper(b, mutation, mode, nested)))
            return made[-1]

        known = KNOWN_UNTYPED.get((name, stage, direction), SecFLError)
        rnd, out = fed.next_round, None
        try:
            with memory_guard():
                rnd, out = fed.run_round(wrap)
        except (SecFLError, known):
            if not fresh:
                sessions.reset(name)
        finally:
            if fresh:
                fed.close()
        _check_round(fed, made[0], mode, rnd, out)

    check()


def test_setups_cover_every_protocol_with_parties():
    from secfl.protocols import PROTOCOLS

    assert set(SETUPS) == set(STAGES) == set(PROTOCOLS)
