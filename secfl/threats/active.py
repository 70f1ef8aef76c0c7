"""Active attacks, measured: a malicious server or a relay against the real protocol objects.

Each attack of :data:`ATTACKS` builds a small federation in this process (real parties with
identity keys and a roster, the real coordinator, :class:`~secfl.protocols.parties.LocalTransport`),
puts a relay between the coordinator and the parties that rewrites the messages of one stage as a
malicious server (or anyone on the path, e.g. a compromised SuperLink) would, runs the round and
reads the outcome off what happened: which party raised which typed error, what reached the
attacker, what it could rebuild from it. Nothing is declared: an attack whose refusal is not
observed is reported :attr:`Outcome.RECOVERED` (fail closed), and the two attacks that must work
(``ckks`` key recovery with ``input='unsafe-float'``, ``secagg`` U3 equivocation without the
consistency check) are there to show that the attacks are real.

1. ``ckks`` — Li–Micciancio key recovery by the server from the aggregate ciphertext and the
   revealed mean (:mod:`secfl.threats.key_recovery`), on ``unsafe-float`` and on the default grid;
   a relay swapping the clients' hello keys; a relay sealing its own secret context to clients.
2. ``ckks-threshold`` — a relay swapping the members' X25519 keys in ``THR_ROSTER``; a server
   asking for partial decryptions of a crafted c1 (the constant 2^40) and of one client's upload.
3. ``additive`` — the coordinator swapping aggregation server 1's key; a relay shifting server 1's
   partial sum.
4. ``secagg`` — a relay swapping neighbour keys in ``SA_KEY_ROSTER``; a server equivocating on U3
   (telling t of client 0's neighbours that it dropped), with and without ``consistency_check``.
5. across sites, every protocol — a relay flipping one byte of one site's training request or
   reply under signed envelopes (:mod:`secfl.protocols.envelope`, :func:`local_federation`).

:func:`run_active` runs them; :func:`active_markdown` and :func:`write_active` render the
``secfl threats --active`` report. The envelope attack needs the sites' program
(:mod:`secfl.runtime.federation`, imported where it runs; the runtime never imports this
package). The tests mirror this catalogue one attack per test
(``tests/test_*_authentication.py``, ``test_envelope.py``, ``test_secagg_consistency.py``,
``test_ckks_key_recovery.py``).

Security: this module attacks; it holds no secret of a real deployment. Every key, share and
nonce is fresh from the protocols' own generators (``PrivateKey.generate``, the CSPRNG behind
them); numpy's generator only draws the clients' synthetic, public updates.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from secfl import errors
from secfl._version import __version__
from secfl.errors import ConfigError, ProtocolAbort, SecFLError
from secfl.protocols import PROTOCOLS, RoundSpec, available, make_protocol
from secfl.protocols.network import MEMBER_BASE, SERVER_BASE, Network, member_id, server_id
from secfl.protocols.parties import LocalTransport, Party, Transport

__all__ = ["Outcome", "ActiveOutcome", "ATTACKS", "ENVELOPE_PROTOCOLS", "run_active", "active_markdown",
           "write_active"]

#: The adversaries of the catalogue, in words.
CURIOUS_SERVER = "honest-but-curious server"
MALICIOUS_SERVER = "malicious server"
RELAY = "relay (server or network)"


class Outcome(str, Enum):
    """What an active attack came away with, measured.

    ``RECOVERED``: the attack got through — the attacker holds a secret key, an individual update
    or shares it should not, or (a tampering attack) its altered message was accepted.
    ``REFUSED``: it got nothing — a typed :class:`~secfl.errors.SecFLError` stopped it (the detail
    names the error and who raised it), or, for key recovery on the default grid, the attack ran
    on everything the server holds and found no key.
    """

    RECOVERED = "recovered"
    REFUSED = "refused"


@dataclass(frozen=True)
class ActiveOutcome:
    """One row of the report: ``protocol`` (or the protocols, across sites), ``attack`` and
    ``adversary`` in words, the measured ``outcome`` and its ``detail`` (who refused with which
    error, or what the attacker holds)."""

    protocol: str
    attack: str
    adversary: str
    outcome: Outcome
    detail: str

    def __post_init__(self) -> None:
        if not isinstance(self.outcome, Outcome):
            raise ConfigError(f"ActiveOutcome.outcome must be an Outcome, got {self.outcome!r}")

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "outcome": self.outcome.value}


# ------------------------------------------------------------------------------------------
# measuring helpers

Rewrite = Callable[[int, bytes], bytes]


class _Relay(Transport):
    """Sits between the coordinator and the parties: ``requests[stage](pid, data)`` rewrites each
    request of that stage, ``replies[stage](pid, data)`` each reply (and may record it). Records
    who was sent each stage's requests and how many replies came back."""

    def __init__(self, inner: Transport, requests: Mapping[str, Rewrite] | None = None,
                 replies: Mapping[str, Rewrite] | None = None) -> None:
        self.inner = inner
        self.requests, self.replies = dict(requests or {}), dict(replies or {})
        self.asked: dict[str, tuple[int, ...]] = {}
        self.answered: dict[str, int] = {}

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        on_request, on_reply = self.requests.get(stage), self.replies.get(stage)
        if on_request is not None:
            requests = {pid: on_request(pid, data) for pid, data in requests.items()}
        self.asked[stage] = tuple(sorted(requests))
        got = self.inner.exchange(stage, requests)
        if on_reply is not None:
            got = {pid: on_reply(pid, data) for pid, data in got.items()}
        self.answered[stage] = len(got)
        return got


def _name(pid: int) -> str:
    if pid >= MEMBER_BASE:
        return f"member {pid - MEMBER_BASE}"
    if pid >= SERVER_BASE:
        return f"server {pid - SERVER_BASE}"
    return f"client {pid}"


def _who(pids: Sequence[int]) -> str:
    """``clients 0–7``, ``members 0, 2``, ``client 3``, ``site 1``: party ids in words."""
    groups: dict[str, list[int]] = {}
    for pid in sorted(pids):
        kind, num = _name(pid).split(" ")
        groups.setdefault(kind, []).append(int(num))
    out = []
    for kind, nums in groups.items():
        if len(nums) == 1:
            out.append(f"{kind} {nums[0]}")
        elif nums == list(range(nums[0], nums[-1] + 1)):
            out.append(f"{kind}s {nums[0]}–{nums[-1]}")
        else:
            out.append(f"{kind}s " + ", ".join(map(str, nums)))
    return " and ".join(out)


def _typed(why: str) -> str | None:
    """The secfl error type a failure line names (``"AuthenticationError: ..."``), else None."""
    for part in why.split(": "):
        cls = getattr(errors, part.strip(), None)
        if isinstance(cls, type) and issubclass(cls, SecFLError):
            return cls.__name__
    return None


def _refusals(failures: Mapping[int, str], parties: Sequence[int]) -> tuple[bool, str]:
    """Whether every party of ``parties`` failed with a typed secfl error, and the errors in
    words (``AuthenticationError at clients 0–7``); parties that did not refuse are named. No
    party at all (the attacked stage never ran) is not a refusal."""
    if not parties:
        return False, "the attacked stage was never reached"
    by_type: dict[str, list[int]] = {}
    accepted = []
    for pid in parties:
        kind = _typed(failures.get(pid, ""))
        if kind is None:
            accepted.append(pid)
        else:
            by_type.setdefault(kind, []).append(pid)
    words = [f"{kind} at {_who(pids)}" for kind, pids in by_type.items()]
    if accepted:
        words.append(f"not refused by {_who(accepted)}")
    return not accepted, "; ".join(words)


def _run(coord: Any, spec: RoundSpec, transport: Transport) -> str:
    """Run one round; the typed error that ended it at the server, or '' when it completed."""
    return _run_why(coord, spec, transport).partition(":")[0]


def _run_why(coord: Any, spec: RoundSpec, transport: Transport) -> str:
    """Run one round; ``"ErrorType: message"`` of the typed error that ended it at the server,
    or '' when it completed."""
    try:
        coord.run_round(spec, transport)
    except SecFLError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _ended(abort: str) -> str:
    return f"the server's round aborted ({abort})" if abort else "the round completed"


@contextmanager
def _captured_logs() -> Iterator[list[str]]:
    """secfl's log lines during the block, kept here instead of printed (parties log refusals
    they handle themselves, e.g. the ``ckks`` key holder skipping a hello it cannot verify)."""
    logger = logging.getLogger("secfl")
    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, propagate = _Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _identities(ids: Sequence[int]) -> tuple[Any, Any]:
    from secfl.crypto.identity import new_identities

    return new_identities(ids)


def _updates(clients: int, dim: int, seed: int) -> np.ndarray:
    """Public synthetic client updates in [-1, 1] (not secrets: numpy's generator is fine)."""
    return np.random.default_rng(seed).uniform(-1, 1, (clients, dim))


# ------------------------------------------------------------------------------------------
# ckks

_CKKS_CLIENTS, _CKKS_DIM = 5, 3000  # ciphertext 0 carries 2048 update reals: all of them revealed


def _ckks_key_recovery(unsafe: bool) -> ActiveOutcome:
    """The server re-encodes the revealed mean against ciphertext 0 of the aggregate it holds and
    solves for the key; with a key it decrypts client 3's own upload."""
    from secfl.crypto.ckks import CkksPublicContext
    from secfl.facade import secure_mean
    from secfl.protocols.ckks import (
        KEY_HOLDER,
        CkksAggregate,
        CkksContextMessage,
        CkksOptions,
        CkksUpdate,
        round_codec,
    )
    from secfl.protocols.wire import Frame, MsgType
    from secfl.threats.key_recovery import recover_ckks_key

    mode = "unsafe-float" if unsafe else "grid"
    attack = f"Li–Micciancio key recovery from the aggregate and the revealed mean (input={mode!r})"
    kwargs: dict[str, Any] = {"input": "unsafe-float"} if unsafe else {}
    xs = _updates(_CKKS_CLIENTS, _CKKS_DIM, 3)
    ws = np.arange(1, _CKKS_CLIENTS + 1, dtype=np.float64) * 10.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = secure_mean(xs, ws, protocol="ckks", record_views=True, **kwargs)
    warned = any(issubclass(w.category, errors.SecurityWarning) for w in caught)
    net = res.network
    if net is None:
        raise ProtocolAbort("ckks key recovery: secure_mean recorded no network")
    public, aggregate, uploads = None, None, {}
    for d in net.views[server_id(0)]:  # what the server received
        frame = Frame.from_bytes(d.data)
        if frame.type == MsgType.CKKS_PUBLIC_CONTEXT:
            public = CkksPublicContext.from_bytes(CkksContextMessage.from_bytes(d.data).context)
        elif frame.type == MsgType.CKKS_UPDATE:
            uploads[d.sender] = CkksUpdate.from_bytes(d.data).ciphertexts
    for d in net.views[KEY_HOLDER]:  # what the server sent the key holder
        if Frame.from_bytes(d.data).type == MsgType.CKKS_AGGREGATE:
            aggregate = CkksAggregate.from_bytes(d.data).ciphertexts
    if public is None or aggregate is None or 3 not in uploads:
        raise ProtocolAbort("ckks key recovery: the recorded round lacks the server's material")
    options = CkksOptions(max_weight=float(ws.max()), **kwargs)  # what secure_mean used: public
    agg = public.ciphertexts_from_bytes(aggregate)
    vals = public.params.values_per_ciphertext
    sums = np.asarray(res.mean, dtype=np.float64) * (res.total_weight / options.max_weight)
    candidates = [sums[:vals]]  # the decrypted reals as revealed
    codec = round_codec(options, public.params, _CKKS_DIM, _CKKS_CLIENTS)
    if codec.grid:  # and the lifted grid values the key holder actually decrypted
        candidates.append(np.rint(sums[:vals] * codec.grid) / codec.grid * codec.lift)
    key = next((k for k in (recover_ckks_key(public, agg, c) for c in candidates) if k is not None), None)
    ref = (ws[:, None] * xs).sum(0) / ws.sum()
    if key is None:
        err = float(np.max(np.abs(res.mean - ref)))
        return ActiveOutcome(
            "ckks", attack, CURIOUS_SERVER, Outcome.REFUSED,
            f"no error needed: nothing to recover — no ternary key from any of {len(candidates)} candidate "
            f"decryptions; the server holds the ciphertexts, the public context and the mean rounded onto the "
            f"public grid (max |mean − exact weighted mean| = {err:.1e}) and total weight, nothing else"
            + ("" if not warned else "; SecurityWarning raised"))
    got = key.decrypt(public.ciphertexts_from_seeded_bytes(uploads[3]), _CKKS_DIM + 1)
    a = ws[3] / options.max_weight
    err = float(max(np.max(np.abs(got[:_CKKS_DIM] - a * xs[3])), abs(got[_CKKS_DIM] - a)))
    return ActiveOutcome(
        "ckks", attack, CURIOUS_SERVER, Outcome.RECOVERED,
        f"secret key recovered from ciphertext 0; the server decrypted client 3's own upload (max |error| "
        f"{err:.1e} against its weighted update)" + ("; the round warned (SecurityWarning)" if warned else ""))


_CKKS_PARTIES = (0, 1, 2)


def _ckks_federation() -> tuple[Any, dict[int, Party]]:
    from secfl.protocols.ckks import KEY_HOLDER

    proto = make_protocol("ckks", max_weight=1.0)
    keys, roster = _identities((*_CKKS_PARTIES, KEY_HOLDER))
    parties = {p: proto.party(p, identity=keys[p], roster=roster) for p in (*_CKKS_PARTIES, KEY_HOLDER)}
    for c, x in zip(_CKKS_PARTIES, _updates(len(_CKKS_PARTIES), 40, 0), strict=True):
        parties[c].set_input(0, x, 1.0)
    return proto, parties


def _ckks_hello_swap() -> ActiveOutcome:
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.ckks import CkksKeyRequest, CkksKeys

    attack = "swap every client's hello key for its own, to be sealed the secret context"
    proto, parties = _ckks_federation()
    evil = PrivateKey.generate().public_key.raw
    sealed: list[int] = []

    def swap(_pid: int, data: bytes) -> bytes:
        msg = CkksKeyRequest.from_bytes(data)
        return replace(msg, hellos=(evil,) * len(msg.hellos)).to_bytes()

    def count(_pid: int, data: bytes) -> bytes:
        sealed.append(len(CkksKeys.from_bytes(data).sealed))
        return data

    relay = _Relay(LocalTransport(Network(), parties), {"ckks.keys": swap}, {"ckks.keys": count})
    coord = proto.coordinator()
    try:
        with _captured_logs() as lines:
            abort = _run(coord, RoundSpec(0, _CKKS_PARTIES, 40), relay)
    finally:
        proto.close()
    refused = [c for c in _CKKS_PARTIES if any(f"client {c}'s hello key: the signature does not verify" in line
                                               for line in lines)]
    ok = sum(sealed) == 0 and len(refused) == len(_CKKS_PARTIES)
    return ActiveOutcome(
        "ckks", attack, RELAY, Outcome.REFUSED if ok else Outcome.RECOVERED,
        f"AuthenticationError at the key holder (hello signature of {_who(refused) or 'no client'}, handled and "
        f"logged); {sum(sealed)} secret contexts sealed; {_ended(abort)}")


def _ckks_reseal() -> ActiveOutcome:
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.ckks import CkksUploadRequest

    attack = "seal a secret context of its own to every client, to read their uploads"
    proto, parties = _ckks_federation()

    def reseal(_pid: int, data: bytes) -> bytes:
        msg = CkksUploadRequest.from_bytes(data)
        return replace(msg, holder_key=PrivateKey.generate().public_key.raw).to_bytes() if msg.sealed else data

    relay = _Relay(LocalTransport(Network(), parties), {"ckks.upload": reseal})
    try:
        abort = _run(proto.coordinator(), RoundSpec(0, _CKKS_PARTIES, 40), relay)
    finally:
        proto.close()
    ok, words = _refusals(relay.failures, relay.asked.get("ckks.upload", ()))
    uploads = relay.answered.get("ckks.upload", 0)
    return ActiveOutcome("ckks", attack, RELAY, Outcome.REFUSED if ok and not uploads else Outcome.RECOVERED,
                         f"{words}; {uploads} uploads encrypted under its context; {_ended(abort)}")


# ------------------------------------------------------------------------------------------
# ckks-threshold

_THR_CLIENTS, _THR_DIM, _THR_MEMBERS = (0, 1, 2, 3), 64, 3


def _thr_federation() -> tuple[Any, dict[int, Party]]:
    proto = make_protocol("ckks-threshold", quorum=(2, _THR_MEMBERS), max_weight=100.0)
    ids = (*_THR_CLIENTS, *(member_id(j) for j in range(_THR_MEMBERS)))
    keys, roster = _identities(ids)
    parties = {pid: proto.party(pid, identity=keys[pid], roster=roster) for pid in ids}
    for c, x in zip(_THR_CLIENTS, _updates(len(_THR_CLIENTS), _THR_DIM, 0), strict=True):
        parties[c].set_input(0, x, 100.0)
    return proto, parties


def _thr_roster_swap() -> ActiveOutcome:
    from secfl.crypto.identity import IdentityKey
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.ckks_threshold import ThrRoster
    from secfl.protocols.ckks_threshold.messages import hello_signed

    attack = "swap every other member's X25519 key in THR_ROSTER for its own (re-signed), to open the key shares"
    evil, evil_identity = PrivateKey.generate(), IdentityKey.generate()  # not in the roster

    def swap(pid: int, data: bytes) -> bytes:
        msg = ThrRoster.from_bytes(data)
        keys, sigs = bytearray(msg.public_keys), bytearray(msg.signatures)
        for i, j in enumerate(msg.members):
            if j == pid - member_id(0):
                continue
            keys[32 * i: 32 * (i + 1)] = evil.public_key.raw
            nonce = msg.nonces[32 * i: 32 * (i + 1)]
            sigs[64 * i: 64 * (i + 1)] = evil_identity.sign(hello_signed(msg.epoch, j, msg.params,
                                                                          evil.public_key.raw, nonce))
        return ThrRoster(msg.round, msg.sender, msg.epoch, msg.threshold, msg.params, msg.members, bytes(keys),
                         msg.nonces, bytes(sigs)).to_bytes()

    proto, parties = _thr_federation()
    relay = _Relay(LocalTransport(Network(), parties), {"thr.deal": swap})
    try:
        abort = _run(proto.coordinator(), RoundSpec(0, _THR_CLIENTS, _THR_DIM), relay)
    finally:
        proto.close()
    members = [member_id(j) for j in range(_THR_MEMBERS)]
    ok, words = _refusals(relay.failures, relay.asked.get("thr.deal", ()))
    holding = [m for m in members if getattr(parties[m], "key_id", None) is not None]
    return ActiveOutcome(
        "ckks-threshold", attack, RELAY, Outcome.REFUSED if ok and not holding else Outcome.RECOVERED,
        f"{words}; {len(holding)} members hold a key share; {_ended(abort)}")


def _thr_crafted(one_client: bool) -> ActiveOutcome:
    from secfl.crypto.threshold import ciphertext_digests, pack_polys, unpack_polys
    from secfl.protocols.ckks_threshold.messages import ThrActiveSet, ThrPartialRequest, aggregate_digest

    proto, parties = _thr_federation()
    params = proto.params
    primes = np.array(params.data_primes, dtype=np.uint64)[:, None]

    def with_c1(msg: ThrActiveSet, polys: np.ndarray) -> ThrActiveSet:
        digest = aggregate_digest(ciphertext_digests(polys, msg.key_id))  # consistent with the new c1
        return replace(msg, c1=pack_polys(polys, params.data_primes), digest=digest)

    def craft(msg: ThrActiveSet) -> ThrActiveSet:
        if one_client:  # only client 0's own, validly signed upload: its update alone would be decrypted
            own = msg.client_c1[: len(msg.c1)]
            crafted = with_c1(msg, unpack_polys(own, (msg.count,), params.data_primes, params.poly_degree))
            return replace(crafted, included=msg.included[:1], signatures=msg.signatures[:64], client_c1=own)
        real = unpack_polys(msg.c1, (msg.count,), params.data_primes, params.poly_degree)
        return with_c1(msg, np.full_like(real, 1 << 40) % primes)  # c1 = the constant 2^40

    def rewrite(_pid: int, data: bytes) -> bytes:
        req = ThrPartialRequest.from_bytes(data)
        msg = craft(ThrActiveSet.from_bytes(req.active_set))
        return ThrPartialRequest(req.round, req.sender, req.clients, msg.to_bytes()).to_bytes()

    relay = _Relay(LocalTransport(Network(), parties), {"thr.partial": rewrite})
    try:
        abort = _run(proto.coordinator(), RoundSpec(0, _THR_CLIENTS, _THR_DIM), relay)
    finally:
        proto.close()
    ok, words = _refusals(relay.failures, relay.asked.get("thr.partial", ()))
    partials = relay.answered.get("thr.partial", 0)
    attack = ("ask for partial decryptions of client 0's upload alone" if one_client else
              "ask for partial decryptions of a crafted c1 (the constant 2^40), to learn the key shares")
    return ActiveOutcome("ckks-threshold", attack, MALICIOUS_SERVER,
                         Outcome.REFUSED if ok and not partials else Outcome.RECOVERED,
                         f"{words}; {partials} partial decryptions returned; {_ended(abort)}")


# ------------------------------------------------------------------------------------------
# additive

_ADD_CLIENTS, _ADD_DIM = (0, 1, 2), 30


def _add_federation() -> tuple[Any, dict[int, Party]]:
    proto = make_protocol("additive", max_weight=1.0)
    ids = (*_ADD_CLIENTS, server_id(1))
    keys, roster = _identities(ids)
    parties = {p: proto.party(p, identity=keys[p], roster=roster) for p in ids}
    for c, x in zip(_ADD_CLIENTS, _updates(len(_ADD_CLIENTS), _ADD_DIM, 0), strict=True):
        parties[c].set_input(0, x, 1.0)
    return proto, parties


def _add_key_swap() -> ActiveOutcome:
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.additive import AddServerKey, AddUploadRequest

    attack = "swap aggregation server 1's key for its own, to open both shares of every client"
    evil = PrivateKey.generate()

    def swap(_pid: int, data: bytes) -> bytes:
        msg = AddUploadRequest.from_bytes(data)
        forged = replace(AddServerKey.from_bytes(msg.server_keys[1]), public_key=evil.public_key.raw).to_bytes()
        return replace(msg, server_keys=(msg.server_keys[0], forged, *msg.server_keys[2:])).to_bytes()

    proto, parties = _add_federation()
    relay = _Relay(LocalTransport(Network(), parties), {"additive.upload": swap})
    try:
        abort = _run(proto.coordinator(), RoundSpec(0, _ADD_CLIENTS, _ADD_DIM), relay)
    finally:
        proto.close()
    ok, words = _refusals(relay.failures, relay.asked.get("additive.upload", ()))
    uploads = relay.answered.get("additive.upload", 0)
    return ActiveOutcome("additive", attack, MALICIOUS_SERVER + " (coordinator)",
                         Outcome.REFUSED if ok and not uploads else Outcome.RECOVERED,
                         f"{words}; {uploads} clients sent shares; {_ended(abort)}")


def _add_partial_sum() -> ActiveOutcome:
    from secfl.crypto.ring import Ring
    from secfl.protocols.additive import AddPartialSum

    attack = "shift aggregation server 1's partial sum by half the ring, to plant a crafted mean"

    def shift(pid: int, data: bytes) -> bytes:
        if pid != server_id(1):
            return data
        msg = AddPartialSum.from_bytes(data)
        ring = Ring(msg.modulus_bits)
        values = ring.unpack(msg.packed, msg.length).copy()
        values[0] = (int(values[0]) + (1 << (msg.modulus_bits - 1))) % (1 << msg.modulus_bits)
        return replace(msg, packed=ring.pack(values)).to_bytes()

    proto, parties = _add_federation()
    relay = _Relay(LocalTransport(Network(), parties), replies={"additive.reveal": shift})
    try:
        why = _run_why(proto.coordinator(), RoundSpec(0, _ADD_CLIENTS, _ADD_DIM), relay)
    finally:
        proto.close()
    kind, _, message = why.partition(": ")
    return ActiveOutcome("additive", attack, RELAY, Outcome.REFUSED if kind else Outcome.RECOVERED,
                         f"{kind} at server 0 (the coordinator): {message.split(':')[0]}; no mean revealed"
                         if kind else "the shifted partial sum was accepted: a crafted mean was revealed")


# ------------------------------------------------------------------------------------------
# secagg

_SA_N, _SA_DIM = 8, 40


def _sa_federation(check: bool = False) -> tuple[Any, dict[int, Party]]:
    proto = make_protocol("secagg", max_weight=1.0, consistency_check=check)
    keys, roster = _identities(range(_SA_N))
    parties = {c: proto.party(c, identity=keys[c], roster=roster) for c in range(_SA_N)}
    for c, x in enumerate(_updates(_SA_N, _SA_DIM, 1)):
        parties[c].set_input(0, x, 1.0)
    return proto, parties


def _sa_key_swap() -> ActiveOutcome:
    from secfl.crypto.identity import IdentityKey
    from secfl.crypto.keys import PrivateKey
    from secfl.protocols.secagg.messages import SaKeyRoster, advertise_signed
    from secfl.protocols.secagg.options import SHARE_KEYS

    attack = "swap every neighbour's keys in SA_KEY_ROSTER for its own (re-signed), to open the sealed shares"
    c_key, s_key, identity = PrivateKey.generate(), PrivateKey.generate(), IdentityKey.generate()
    pair = c_key.public_key.raw + s_key.public_key.raw

    def swap(_pid: int, data: bytes) -> bytes:
        msg = SaKeyRoster.from_bytes(data)
        sigs = b"".join(identity.sign(advertise_signed(msg.round, v, pair[:32], pair[32:])) for v in msg.neighbours)
        return SaKeyRoster(msg.round, msg.sender, msg.threshold, msg.neighbours, pair * len(msg.neighbours),
                           sigs).to_bytes()

    proto, parties = _sa_federation()
    relay = _Relay(LocalTransport(Network(), parties), {SHARE_KEYS: swap})
    try:
        abort = _run(proto.coordinator(), RoundSpec(0, tuple(range(_SA_N)), _SA_DIM), relay)
    finally:
        proto.close()
    ok, words = _refusals(relay.failures, relay.asked.get(SHARE_KEYS, ()))
    shared = relay.answered.get(SHARE_KEYS, 0)
    return ActiveOutcome("secagg", attack, RELAY, Outcome.REFUSED if ok and not shared else Outcome.RECOVERED,
                         f"{words}; {shared} clients sent sealed shares; {_ended(abort)}")


def _sa_equivocation(check: bool) -> ActiveOutcome:
    """The server tells t of client 0's neighbours that client 0 dropped (asking for shares of
    its mask key s_0) while it keeps client 0's masked input; it rebuilds s_0 from what leaks."""
    from secfl.crypto.keys import PrivateKey
    from secfl.crypto.prg import SEED_BYTES
    from secfl.crypto.sharing import reconstruct_bytes
    from secfl.protocols.secagg.messages import (
        SaAdvertiseKeys,
        SaCheckedUnmaskRequest,
        SaUnmaskRequest,
        SaUnmaskResponse,
    )
    from secfl.protocols.secagg.options import ADVERTISE_KEYS, UNMASK

    proto, parties = _sa_federation(check)
    coord = proto.coordinator()
    s_public: dict[int, bytes] = {}
    leaked: dict[int, np.ndarray] = {}  # neighbour -> its share of s_0
    b_shares: list[int] = []  # neighbours that returned a share of b_0 (its self-mask seed)
    lied_to: list[int] = []

    def advertised(pid: int, data: bytes) -> bytes:
        s_public[pid] = SaAdvertiseKeys.from_bytes(data).s_public
        return data

    def equivocate(pid: int, data: bytes) -> bytes:
        if not lied_to:  # the server's own graph and threshold: t neighbours of client 0
            lied_to.extend(sorted(coord.server.graph[0])[: coord.server.t])
        if pid not in lied_to:
            return data
        if check:
            m = SaCheckedUnmaskRequest.from_bytes(data)
            return SaCheckedUnmaskRequest(m.round, m.sender, tuple(u for u in m.survivors if u != 0),
                                          tuple(sorted({*m.dropped, 0})), tuple(u for u in m.u3 if u != 0),
                                          m.signers, m.signatures).to_bytes()
        r = SaUnmaskRequest.from_bytes(data)
        return SaUnmaskRequest(r.round, r.sender, tuple(u for u in r.survivors if u != 0),
                               tuple(sorted({*r.dropped, 0}))).to_bytes()

    def keep(pid: int, data: bytes) -> bytes:
        msg = SaUnmaskResponse.from_bytes(data)
        for u, row in zip(msg.dropped, msg.s_shares, strict=True):
            if u == 0:
                leaked[pid] = row
        b_shares.extend(pid for u in msg.survivors if u == 0)
        return data

    relay = _Relay(LocalTransport(Network(), parties), {UNMASK: equivocate},
                   {ADVERTISE_KEYS: advertised, UNMASK: keep})
    try:
        abort = _run(coord, RoundSpec(0, tuple(range(_SA_N)), _SA_DIM), relay)
    finally:
        proto.close()
    t = coord.server.t
    told = f"told {_who(lied_to)} that client 0 dropped"
    if not leaked:
        ok, words = _refusals({v: coord.unmask_failures.get(v, "") for v in lied_to}, lied_to)
        return ActiveOutcome("secagg", f"equivocate on U3 ({told}); consistency_check={check}", MALICIOUS_SERVER,
                             Outcome.REFUSED if ok else Outcome.RECOVERED,
                             f"{words}; 0 shares of client 0's mask key released; {_ended(abort)}")
    rebuilt = "; s_0 not rebuilt"
    if len(leaked) >= t:
        pts = sorted(leaked)[:t]
        s_0 = PrivateKey.from_secret(reconstruct_bytes([v + 1 for v in pts], np.stack([leaked[v] for v in pts]), t,
                                                       SEED_BYTES))
        if s_0.public_key.raw == s_public.get(0):
            rebuilt = "; the server rebuilt s_0 (it matches client 0's advertised public key)"
    masked = ("x_0 stays masked by its self-mask seed b_0" if len(b_shares) < t
              else "the server also holds t shares of b_0: x_0 is readable")
    return ActiveOutcome("secagg", f"equivocate on U3 ({told}); consistency_check={check}", MALICIOUS_SERVER,
                         Outcome.RECOVERED,
                         f"no error: {_who(sorted(leaked))} released shares of client 0's mask key s_0 "
                         f"({len(leaked)} shares; t = {t}) while the server keeps its masked input{rebuilt}; "
                         f"{len(b_shares)} shares of b_0 came back, so {masked}; {_ended(abort)}")


# ------------------------------------------------------------------------------------------
# across sites: signed envelopes

#: The protocols the envelope attack runs across sites.
ENVELOPE_PROTOCOLS = ("plaintext", "ckks", "ckks-threshold", "additive", "secagg")

_TINY = {"clients": 4, "rounds": 1, "data": {"name": "synthetic", "synthetic_samples": 240},
         "train": {"epochs": 1, "batch_size": 16}}


def _envelope_tamper(protocols: Sequence[str]) -> ActiveOutcome:
    """One round per protocol and direction under :func:`local_federation`; the relay flips a
    byte in the middle of site 1's training request (or its reply)."""
    from secfl.protocols.envelope import SignedTransport
    from secfl.runtime.config import ExperimentConfig
    from secfl.runtime.federation import TRAIN_STAGE, FederationServer, local_federation

    def flip(pid: int, data: bytes) -> bytes:
        if pid != 1:
            return data
        out = bytearray(data)
        out[len(out) // 2] ^= 0x01
        return bytes(out)

    errors_seen: dict[str, set[str]] = {"request": set(), "reply": set()}
    missed: list[str] = []
    for name in protocols:
        extra = {"protocol_options": {"quorum": [2, 3]}} if name == "ckks-threshold" else {}
        cfg = ExperimentConfig.from_dict({**_TINY, "protocol": name, **extra})
        for direction in ("request", "reply"):
            fed = local_federation(cfg)
            if fed.envelopes is None:
                raise ConfigError("local_federation built no envelopes: the attack needs signed messages")
            net = Network()
            rewrite = {TRAIN_STAGE: flip}
            relay = _Relay(LocalTransport(net, fed.parties), rewrite if direction == "request" else None,
                           rewrite if direction == "reply" else None)
            transport = SignedTransport(relay, fed.envelopes)
            server = FederationServer(cfg)
            try:
                got = server.run(transport, net).rounds[0]
            finally:
                server.close()
                fed.close()
            kind = _typed(transport.failures.get(1, ""))
            others = [c for c in got.clients if c != 1]
            if kind is None or got.dropped != [1] or not others:
                missed.append(f"{name} {direction}")
            else:
                errors_seen[direction].add(kind)
    label = ("all protocols" if tuple(protocols) == ENVELOPE_PROTOCOLS else ", ".join(protocols)) + " across sites"
    attack = "flip one byte of site 1's training request, or of its reply, under signed envelopes"
    if missed:
        return ActiveOutcome(label, attack, RELAY, Outcome.RECOVERED, "accepted or not dropped: " + ", ".join(missed))
    req, rep = (", ".join(sorted(errors_seen[d])) for d in ("request", "reply"))
    return ActiveOutcome(label, attack, RELAY, Outcome.REFUSED,
                         f"{req} at site 1 (request) and {rep} at the server (reply), under each of "
                         f"{len(protocols)} protocols; site 1 dropped, the round went on with the others")


# ------------------------------------------------------------------------------------------
# the catalogue

#: protocol -> its active attacks, in report order (the envelope attack runs across all).
ATTACKS: dict[str, tuple[Callable[[], ActiveOutcome], ...]] = {
    "plaintext": (),
    "ckks": (lambda: _ckks_key_recovery(True), lambda: _ckks_key_recovery(False), _ckks_hello_swap, _ckks_reseal),
    "ckks-threshold": (_thr_roster_swap, lambda: _thr_crafted(False), lambda: _thr_crafted(True)),
    "additive": (_add_key_swap, _add_partial_sum),
    "secagg": (_sa_key_swap, lambda: _sa_equivocation(False), lambda: _sa_equivocation(True)),
}


def run_active(protocols: tuple[str, ...] | None = None, *,
               progress: Callable[[str], None] | None = None) -> list[ActiveOutcome]:
    """Run every active attack on ``protocols`` (default: all that this installation can run;
    unknown names are refused, unavailable ones skipped) and the envelope attack across sites on
    them; one measured :class:`ActiveOutcome` per attack. ``progress`` gets a line per attack."""
    if protocols is not None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise ConfigError(f"protocols: unknown {unknown or 'empty selection'}; known: {sorted(PROTOCOLS)}")
    can = available()
    chosen = tuple(p for p in PROTOCOLS if (protocols is None or p in protocols) and p in can)
    jobs: list[Callable[[], ActiveOutcome]] = [a for p in chosen for a in ATTACKS[p]]
    sites = tuple(p for p in ENVELOPE_PROTOCOLS if p in chosen)
    if sites:
        jobs.append(lambda: _envelope_tamper(sites))
    out = []
    for job in jobs:
        t = time.perf_counter()
        with _captured_logs():
            row = job()
        out.append(row)
        if progress is not None:
            progress(f"{row.protocol}: {row.attack}: {row.outcome.value} ({time.perf_counter() - t:.1f} s)")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def active_markdown(outcomes: Sequence[ActiveOutcome]) -> str:
    """The Markdown table: protocol | adversary | attack | outcome | detail."""
    rows = ["| protocol | adversary | attack | outcome | detail |", "|---|---|---|---|---|"]
    for o in outcomes:
        rows.append("| " + " | ".join(_cell(v) for v in (f"`{o.protocol}`" if o.protocol in PROTOCOLS else o.protocol,
                                                           o.adversary, o.attack, f"**{o.outcome.value}**",
                                                           o.detail)) + " |")
    return "\n".join(rows) + "\n"


def write_active(outcomes: Sequence[ActiveOutcome], out: str | Path) -> list[Path]:
    """``active.md`` and ``active.json`` into ``out`` (created)."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    files = [path / "active.md", path / "active.json"]
    files[0].write_text(active_markdown(outcomes))
    files[1].write_text(json.dumps({"secfl_version": __version__, "attacks": [o.to_dict() for o in outcomes]},
                                   indent=2))
    return files
