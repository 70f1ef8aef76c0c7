"""``secagg`` — single-server secure aggregation with dropout recovery (SecAgg+).

Bonawitz et al. (CCS 2017) with the sparse random graph of Bell et al. (CCS 2020). Rounds
(spec: ``protocols/secagg.md``; ``RoundSpec.dropouts`` stage names in brackets — a client listed
there goes silent *before* that stage):

  0. [``advertise_keys``] Each client draws two X25519 key pairs — ``c`` (encryption) and ``s``
     (masking) — and sends both public keys (``SA_ADVERTISE_KEYS``). The server builds a random
     k-regular graph over the clients that did (a Harary graph relabelled by a CSPRNG
     permutation) and sends each client its neighbours' keys (``SA_KEY_ROSTER``).
  1. [``share_keys``] Client ``u`` draws a fresh 32-byte self-mask seed ``b_u`` and Shamir-shares
     ``b_u`` and its masking secret key ``s_u`` t-of-k among its neighbours (points ``v + 1``, field
     ``GF(2**31 − 1)``). Each neighbour's pair of shares is sealed with AES-256-GCM under
     ``HKDF(X25519(c_u, c_v))`` (one key per direction, associated data binding round, sender and
     recipient) and sent through the server (``SA_SHARE_KEYS``). The server drops clients left
     with fewer than ``t`` neighbours that shared (repeatedly, until stable) and forwards each
     remaining client the ciphertexts addressed to it (``SA_SHARES_FORWARD``).
  2. [``masked_input``] Client ``u`` encodes ``(x, n)`` as ``d + 1`` integers mod ``2**k`` (the
     weight is the last element) and uploads ``y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv)
     − Σ_{v<u} PRG(s_uv)`` (``SA_MASKED_INPUT``), over the neighbours ``v`` whose shares it received;
     ``s_uv = HKDF(X25519(s_u, s_v))`` is a full 256-bit seed expanded by AES-256-CTR. The server
     adds ``y_u`` to a running sum as it arrives.
  3. [``unmask``] For each surviving client the server asks its neighbours (``SA_UNMASK_REQUEST``)
     for their share of ``b_u`` if ``u`` sent its masked input, of ``s_u`` if it did not — never
     both: a client asked for both shares of one peer, in one request or across two, refuses
     (:class:`~secfl.errors.DecryptionRefusedError`). With ``t`` shares (``SA_UNMASK_RESPONSE``)
     the server subtracts every survivor's self mask and the dropped clients' pairwise masks,
     leaving ``Σ x_u`` mod ``2**k``, which it decodes to the weighted mean. A client with fewer
     than ``t`` answering neighbours aborts the round with
     :class:`~secfl.errors.InsufficientQuorumError` naming it.

Security (semi-honest server and clients; the spec has the proofs' assumptions): the server sees
masked vectors, uniform mod ``2**k``, and learns only the sum of the survivors' inputs. Breaking
client ``u`` needs ``b_u`` *and* ``s_u`` (or ``u``'s pairwise seeds): the server plus at least ``t``
of ``u``'s ``k`` neighbours, or ``t`` colluding neighbours plus the server's view. Requiring
``t > k/2`` means honest neighbours' one-share-per-peer rule denies a server that lies about
dropouts both secrets. The graph is chosen by the server from CSPRNG randomness; a malicious server
choosing the graph (or impersonating clients — no PKI here) is outside this model.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from secfl.crypto.encoding import WeightedEncoder, check_quantization_options
from secfl.crypto.keys import (
    KEY_BYTES,
    SEAL_OVERHEAD,
    PrivateKey,
    PublicKey,
    hkdf,
    info_label,
    open_sealed,
    seal,
    shared_secret,
)
from secfl.crypto.prg import SEED_BYTES, Prg, derive_seed, fresh_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import SHAMIR_PRIME, bytes_to_field, chunks_for, reconstruct_bytes, shamir_split
from secfl.dp import IntegerMechanism
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    DroppedOutError,
    DuplicateSenderError,
    InsecureParametersError,
    InsufficientQuorumError,
    MalformedMessageError,
    ProtocolAbort,
    SecFLError,
)
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload, check_update
from secfl.protocols.dp_encoding import DPEncoder, IntegerDP, round_encoder
from secfl.protocols.hosts import PartyHost, WorkerCrashed, auto_processes, make_host
from secfl.protocols.network import Network, server_id
from secfl.protocols.wire import WIRE_VERSION, Message, MsgType, Reader, Writer

__all__ = [
    "STAGES",
    "SecAggOptions",
    "SecAgg",
    "SecAggClient",
    "DroppedOutError",
    "PhaseClock",
    "add_masks",
    "dither_prg",
    "pair_seed",
    "default_neighbours",
    "default_threshold",
    "harary_graph",
    "SaAdvertiseKeys",
    "SaKeyRoster",
    "SaShareKeys",
    "SaSharesForward",
    "SaMaskedInput",
    "SaUnmaskRequest",
    "SaUnmaskResponse",
]

log = logging.getLogger(__name__)

#: stage names accepted in ``RoundSpec.dropouts``: clients listed go silent before that stage
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")

_CHUNKS = chunks_for(SEED_BYTES)  # 9 field elements per 32-byte secret
_SHARE_PLAIN = struct.Struct("<II")
_PLAIN_BYTES = _SHARE_PLAIN.size + 2 * _CHUNKS * 4
_SEALED_BYTES = _PLAIN_BYTES + SEAL_OVERHEAD
_MASK_LABEL = "secfl/secagg/mask"
_SHARE_LABEL = "secfl/secagg/share-key"
_MAX_CLIENT_ID = SHAMIR_PRIME - 2  # Shamir points are id + 1, which must stay below p


def add_masks(ring: Ring, acc: np.ndarray, seeds: Iterable[tuple[bytes, int]]) -> np.ndarray:
    """``acc += Σ sign·PRG(seed)`` mod ``2**k`` in place (``sign`` is +1 or −1); returns ``acc``."""
    n = acc.shape[0]
    for seed, sign in seeds:
        mask = ring.random(Prg(seed), n)
        if sign > 0:
            ring.add_(acc, mask)
        else:
            ring.sub_(acc, mask)
    return acc


def dither_prg(seed: bytes | None, rnd: int, client: int) -> Prg:
    """A client's stochastic-rounding dither: from ``RoundSpec.seed`` when set (it is not secret),
    else fresh OS randomness."""
    return Prg() if seed is None else Prg(derive_seed(seed, "secagg/dither", rnd, client))


def pair_seed(sk: PrivateKey, peer: PublicKey, rnd: int, u: int, v: int) -> bytes:
    """``s_uv = HKDF(X25519(s_u, s_v), info = label | round | min | max)``: one seed per pair."""
    return hkdf(shared_secret(sk, peer), info=info_label(_MASK_LABEL, rnd, min(u, v), max(u, v)))


#: one helper job of the server's unmasking: (ring, length, round, survivors' self-mask seeds,
#: dropped clients as (id, reconstructed mask-key secret, [(surviving neighbour, its s public key)]))
UnmaskJob = tuple[Ring, int, int, list[bytes], list[tuple[int, bytes, list[tuple[int, bytes]]]]]


def _unmask_job(job: UnmaskJob) -> np.ndarray:
    """The masks one helper removes: ``−Σ PRG(b_u)`` and every dropped client's pairwise masks."""
    ring, length, rnd, self_seeds, dropped = job
    acc = ring.zeros(length)
    add_masks(ring, acc, ((b, -1) for b in self_seeds))
    for u, secret, peers in dropped:
        sk = PrivateKey.from_secret(secret)
        # survivor v added +PRG(s_uv) if v < u and −PRG(s_uv) if v > u: undo it
        add_masks(ring, acc, ((pair_seed(sk, PublicKey(pk), rnd, u, v), -1 if v < u else 1) for v, pk in peers))
    return acc


class PhaseClock:
    """Accumulates wall seconds per side (``"client"`` / ``"server"``) of a simulated round."""

    def __init__(self) -> None:
        self.seconds = {"client": 0.0, "server": 0.0}

    @contextmanager
    def __call__(self, side: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[side] += time.perf_counter() - t


def default_neighbours(n: int) -> int:
    """Smallest even ``k ≥ 2·ceil(log2 n)``, capped at ``n − 1`` (the complete graph)."""
    if n < 2:
        return 0
    k = 2 * math.ceil(math.log2(n))
    k += k % 2
    return min(k, n - 1)


def default_threshold(k: int) -> int:
    """A strict majority of the neighbours: ``floor(k/2) + 1``."""
    return k // 2 + 1


def harary_graph(nodes: Iterable[int], k: int, prg: Prg | None = None) -> dict[int, frozenset[int]]:
    """A random k-regular graph (Bell et al.): the Harary graph ``H(k, m)`` on a random ring order.

    Nodes sit on a ring in an order drawn from ``prg`` (CSPRNG); each is joined to the ``k/2``
    nearest on each side, plus the opposite node when ``k`` is odd (``m`` must then be even).
    """
    ids = sorted(int(v) for v in nodes)
    m = len(ids)
    if not 0 <= k <= m - 1:
        raise ConfigError(f"a {k}-regular graph needs more than {k} nodes, got {m}")
    if (k * m) % 2:
        raise ConfigError(f"no {k}-regular graph on {m} nodes (k·m must be even)")
    prg = Prg() if prg is None else prg
    order = np.argsort(prg.uint64(m), kind="stable")
    ring = [ids[i] for i in order.tolist()]
    adj: dict[int, set[int]] = {v: set() for v in ids}
    for pos, v in enumerate(ring):
        for off in range(1, k // 2 + 1):
            w = ring[(pos + off) % m]
            adj[v].add(w)
            adj[w].add(v)
        if k % 2:
            w = ring[(pos + m // 2) % m]
            adj[v].add(w)
            adj[w].add(v)
    return {v: frozenset(s) for v, s in adj.items()}


@dataclass(frozen=True)
class SecAggOptions:
    """Options of ``secagg``.

    ``neighbours`` k: degree of the random graph; ``None`` → :func:`default_neighbours` of the
    round's client count (20 for 1000 clients). ``threshold`` t: Shamir threshold, ``t > k/2``
    (security: see the module docstring) and ``t ≤ k``; ``None`` → ``floor(k/2) + 1``. A client
    needs ``t`` neighbours alive at the end, so up to ``k − t`` of anyone's neighbours may drop.
    ``clip_range``, ``bits``, ``modulus_bits``, ``max_weight``: the integer encoding (see
    :class:`~secfl.crypto.encoding.WeightedEncoder`; ``bits=None`` picks the widest that cannot
    wrap for this round's client count).
    ``processes``: where the *simulation* runs its clients (:mod:`secfl.protocols.hosts`): 1 →
    in this process; ``p ≥ 2`` → spread over ``p`` worker processes that also precompute masks
    ahead of the uploads and run the server's mask removal; ``None`` → one per core (at most 8)
    from 100 clients up, else 1. It changes timings, never results.
    """

    neighbours: int | None = None
    threshold: int | None = None
    clip_range: float = 8.0
    bits: int | None = None
    modulus_bits: int = 32
    max_weight: float = 4096.0
    processes: int | None = None

    def __post_init__(self) -> None:
        p = self.processes
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 64):
            raise ConfigError(f"secagg.processes must be None (automatic) or an integer in [1, 64], got {p!r}")
        for name in ("neighbours", "threshold"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"secagg.{name} must be None (automatic) or an integer >= 1, got {v!r}")
        check_quantization_options("secagg", self.clip_range, self.bits, self.modulus_bits, self.max_weight)

    def graph_parameters(self, n: int) -> tuple[int, int]:
        """``(k, t)`` for a round of ``n`` clients, validated (errors name the option)."""
        if n < 3:
            raise ConfigError(f"secagg needs at least 3 clients (got {n}): with 2, each learns the other's update")
        k = default_neighbours(n) if self.neighbours is None else self.neighbours
        if not 2 <= k <= n - 1:
            raise ConfigError(f"secagg.neighbours must be in [2, {n - 1}] for {n} clients, got {k}")
        if (k * n) % 2:
            raise ConfigError(f"secagg.neighbours = {k} with {n} clients: no k-regular graph (k·n is odd)")
        t = default_threshold(k) if self.threshold is None else self.threshold
        if t > k:
            raise ConfigError(f"secagg.threshold = {t} exceeds the {k} neighbours that hold shares")
        if 2 * t <= k:
            raise InsecureParametersError(
                f"secagg.threshold = {t} ≤ k/2 = {k / 2:g}: a server could collect t shares of both a client's "
                f"self-mask seed and its mask key from disjoint halves of its {k} neighbours; use t ≥ {k // 2 + 1}"
            )
        return k, t


# ------------------------------------------------------------------------------------ messages
def _ids(r: Reader, what: str, *, sorted_ids: bool = True) -> list[int]:
    arr = r.array("uint32")
    ids = [int(v) for v in arr.tolist()]
    if len(set(ids)) != len(ids):
        raise MalformedMessageError(f"{what}: repeated party id")
    if sorted_ids and ids != sorted(ids):
        raise MalformedMessageError(f"{what}: party ids must be increasing")
    return ids


@dataclass(frozen=True)
class SaAdvertiseKeys(Message):
    """Client → server: the public halves of its encryption key ``c`` and mask key ``s``."""

    TYPE = MsgType.SA_ADVERTISE_KEYS
    round: int
    sender: int
    c_public: bytes
    s_public: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.c_public).blob(self.s_public)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaAdvertiseKeys:
        c, s = r.blob(KEY_BYTES), r.blob(KEY_BYTES)
        if len(c) != KEY_BYTES or len(s) != KEY_BYTES:
            raise MalformedMessageError(f"SA_ADVERTISE_KEYS: public keys are {KEY_BYTES} bytes")
        if c == s:
            raise MalformedMessageError("SA_ADVERTISE_KEYS: the encryption and mask keys must differ")
        return cls(round, sender, c, s)


@dataclass(frozen=True)
class SaKeyRoster(Message):
    """Server → client: the threshold and each neighbour's id and two public keys."""

    TYPE = MsgType.SA_KEY_ROSTER
    round: int
    sender: int
    threshold: int
    neighbours: tuple[int, ...]
    keys: bytes  # 64 bytes per neighbour: c public ‖ s public

    def _write(self, w: Writer) -> None:
        w.u32(self.threshold).array(np.asarray(self.neighbours, dtype=np.uint32)).blob(self.keys)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaKeyRoster:
        t = r.u32()
        ids = _ids(r, "SA_KEY_ROSTER")
        keys = r.blob(2 * KEY_BYTES * len(ids))
        if len(keys) != 2 * KEY_BYTES * len(ids):
            raise MalformedMessageError("SA_KEY_ROSTER: key block does not match the neighbour count")
        if not 1 <= t <= len(ids):
            raise MalformedMessageError(f"SA_KEY_ROSTER: threshold {t} outside [1, {len(ids)}]")
        return cls(round, sender, t, tuple(ids), keys)


@dataclass(frozen=True)
class _Ciphertexts(Message):
    """Shared layout: a list of (party id, sealed share pair), fixed-size ciphertexts."""

    round: int
    sender: int
    parties: tuple[int, ...]
    sealed: bytes  # len(parties) × _SEALED_BYTES

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.parties, dtype=np.uint32)).blob(self.sealed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int):  # type: ignore[no-untyped-def]
        ids = _ids(r, cls.TYPE.name)
        blob = r.blob(_SEALED_BYTES * len(ids))
        if len(blob) != _SEALED_BYTES * len(ids):
            raise MalformedMessageError(f"{cls.TYPE.name}: ciphertext block does not match the party count")
        return cls(round, sender, tuple(ids), blob)

    def items(self) -> list[tuple[int, bytes]]:
        return [(p, self.sealed[i * _SEALED_BYTES : (i + 1) * _SEALED_BYTES]) for i, p in enumerate(self.parties)]


@dataclass(frozen=True)
class SaShareKeys(_Ciphertexts):
    """Client u → server: for each neighbour v, ``AES-GCM_{k_{u→v}}(u, v, [b_u]_v, [s_u]_v)``."""

    TYPE = MsgType.SA_SHARE_KEYS


@dataclass(frozen=True)
class SaSharesForward(_Ciphertexts):
    """Server → client v: the ciphertexts addressed to v, by sender u."""

    TYPE = MsgType.SA_SHARES_FORWARD


@dataclass(frozen=True)
class SaMaskedInput(Message):
    """Client → server: the masked encoding ``y_u`` (``ceil(k/8)`` bytes per element)."""

    TYPE = MsgType.SA_MASKED_INPUT
    round: int
    sender: int
    modulus_bits: int
    length: int
    packed: bytes

    def _write(self, w: Writer) -> None:
        w.u8(self.modulus_bits).u64(self.length).blob(self.packed)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaMaskedInput:
        return cls(round, sender, r.u8(), r.u64(), r.blob())


@dataclass(frozen=True)
class SaUnmaskRequest(Message):
    """Server → client v: neighbours whose self-mask share (``survivors``) or mask-key share
    (``dropped``) it wants."""

    TYPE = MsgType.SA_UNMASK_REQUEST
    round: int
    sender: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.survivors, dtype=np.uint32)).array(np.asarray(self.dropped, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaUnmaskRequest:
        return cls(round, sender, tuple(_ids(r, "SA_UNMASK_REQUEST")), tuple(_ids(r, "SA_UNMASK_REQUEST")))


@dataclass(frozen=True)
class SaUnmaskResponse(Message):
    """Client v → server: its shares of ``b_u`` for survivors and of ``s_u`` for dropped peers."""

    TYPE = MsgType.SA_UNMASK_RESPONSE
    round: int
    sender: int
    survivors: tuple[int, ...]
    b_shares: np.ndarray  # (len(survivors), 9) field elements
    dropped: tuple[int, ...]
    s_shares: np.ndarray  # (len(dropped), 9)

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.survivors, dtype=np.uint32))
        w.array(np.asarray(self.b_shares, dtype=np.uint32).reshape(-1))
        w.array(np.asarray(self.dropped, dtype=np.uint32))
        w.array(np.asarray(self.s_shares, dtype=np.uint32).reshape(-1))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SaUnmaskResponse:
        out = []
        for _ in range(2):
            ids = _ids(r, "SA_UNMASK_RESPONSE")
            vals = r.array("uint32", length=len(ids) * _CHUNKS)
            if vals.size and int(vals.max()) >= SHAMIR_PRIME:
                raise MalformedMessageError("SA_UNMASK_RESPONSE: share value outside the field")
            out.append((tuple(ids), vals.astype(np.uint64).reshape(len(ids), _CHUNKS)))
        return cls(round, sender, out[0][0], out[0][1], out[1][0], out[1][1])


def _share_ad(rnd: int, src: int, dst: int) -> bytes:
    return b"secfl/secagg/share" + struct.pack("<BIII", WIRE_VERSION, rnd, src, dst)


# ------------------------------------------------------------------------------------ client
class SecAggClient:
    """Everything one client holds and does in a SecAgg+ round (client side only)."""

    def __init__(self, cid: int, rnd: int, encoder: WeightedEncoder | DPEncoder, length: int,
                 dither_seed: bytes | None) -> None:
        self.id = cid
        self.round = rnd
        self.server = server_id(0)
        self.encoder = encoder
        self.ring = encoder.ring
        self.length = length
        self._dither_seed = dither_seed
        self._c = PrivateKey.generate()
        self._s = PrivateKey.generate()
        self._b: bytes | None = None
        self.threshold = 0
        self._peer_c: dict[int, PublicKey] = {}
        self._peer_s: dict[int, PublicKey] = {}
        self._key_in: dict[int, bytes] = {}  # v -> key of the channel v → self
        self._inbox: dict[int, bytes] = {}  # v -> sealed shares v sent to self
        self._revealed: dict[int, str] = {}  # peer -> "b" or "s": what this client already gave away
        self._forwarded = False
        self._mask: np.ndarray | None = None  # the total mask, computed ahead (offline work) ...
        self._mask_todo: list[int] = []  # ... still missing these terms (-1: the self mask)
        self.sent_masked_input = False
        #: errors met while answering unmask requests (e.g. a tampered forwarded share)
        self.failures: list[SecFLError] = []

    # 0 -----------------------------------------------------------------------------------
    def advertise(self) -> bytes:
        return SaAdvertiseKeys(self.round, self.id, self._c.public_key.raw, self._s.public_key.raw).to_bytes()

    def on_roster(self, data: bytes) -> None:
        msg = SaKeyRoster.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        if self.id in msg.neighbours:
            raise MalformedMessageError("SA_KEY_ROSTER lists the client as its own neighbour")
        if 2 * msg.threshold <= len(msg.neighbours):
            raise InsecureParametersError(
                f"the server asks for a threshold {msg.threshold} ≤ half of the {len(msg.neighbours)} neighbours"
            )
        self.threshold = msg.threshold
        for i, v in enumerate(msg.neighbours):
            base = 2 * KEY_BYTES * i
            self._peer_c[v] = PublicKey(msg.keys[base : base + KEY_BYTES])
            self._peer_s[v] = PublicKey(msg.keys[base + KEY_BYTES : base + 2 * KEY_BYTES])

    # 1 -----------------------------------------------------------------------------------
    def share_keys(self) -> bytes:
        if not self._peer_c:
            raise DroppedOutError(f"client {self.id} has no neighbours (no key roster)")
        self._b = fresh_seed()
        peers = sorted(self._peer_c)
        secrets_ = np.concatenate([bytes_to_field(self._b), bytes_to_field(self._s.export_secret())])
        shares = shamir_split(secrets_, [v + 1 for v in peers], self.threshold).astype("<u4")
        sealed = []
        for i, v in enumerate(peers):
            # one 64-byte derivation per pair: the first half keys lo → hi, the second hi → lo
            z = shared_secret(self._c, self._peer_c[v])
            lo, hi = min(self.id, v), max(self.id, v)
            pair = hkdf(z, 64, info=info_label(_SHARE_LABEL, self.round, lo, hi))
            k_out, self._key_in[v] = (pair[:32], pair[32:]) if self.id == lo else (pair[32:], pair[:32])
            plain = _SHARE_PLAIN.pack(self.id, v) + shares[i].tobytes()
            sealed.append(seal(k_out, plain, _share_ad(self.round, self.id, v)))
        return SaShareKeys(self.round, self.id, tuple(peers), b"".join(sealed)).to_bytes()

    def on_forward(self, data: bytes) -> None:
        msg = SaSharesForward.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        for u, ct in msg.items():
            if u not in self._peer_c:
                raise MalformedMessageError(f"SA_SHARES_FORWARD carries a share from {u}, not a neighbour")
            self._inbox[u] = ct
        self._forwarded = True

    @property
    def active_neighbours(self) -> list[int]:
        """Neighbours whose shares reached this client: exactly those it masks with."""
        return sorted(self._inbox)

    # 2 -----------------------------------------------------------------------------------
    def dither(self) -> Prg:
        """The rounding dither (see :func:`dither_prg`)."""
        return dither_prg(self._dither_seed, self.round, self.id)

    def _mask_step(self, mask: np.ndarray, b_seed: bytes) -> None:
        """Add one more term of the total mask (the self mask, or one neighbour's pair mask)."""
        v = self._mask_todo.pop()
        if v < 0:
            add_masks(self.ring, mask, [(b_seed, 1)])
        else:
            seed = pair_seed(self._s, self._peer_s[v], self.round, self.id, v)
            add_masks(self.ring, mask, [(seed, 1 if self.id < v else -1)])

    def _started_mask(self) -> tuple[np.ndarray, bytes]:
        """The mask being computed and the self-mask seed (starts the computation if needed)."""
        if self._b is None:
            raise DroppedOutError(f"client {self.id} never shared its keys this round")
        if self._mask is None:
            self._mask = self.ring.zeros(self.length)
            self._mask_todo = [*reversed(self.active_neighbours), -1]
        return self._mask, self._b

    def _total_mask(self) -> np.ndarray:
        """``PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)`` over the active neighbours."""
        mask, b_seed = self._started_mask()
        while self._mask_todo:
            self._mask_step(mask, b_seed)
        self._mask = None
        return mask

    @property
    def prepared(self) -> bool:
        """Whether (part of) the total mask is already computed (see :meth:`prepare`)."""
        return self._mask is not None

    def prepare(self) -> bool | None:
        """Offline work, one step at a time: the total mask does not depend on the update.

        ``None`` until the shares were forwarded (the active neighbours are known); ``True``
        after adding one term (call again); ``False`` when the mask is complete or was used."""
        if self.sent_masked_input:
            return False
        if not self._forwarded:
            return None
        mask, b_seed = self._started_mask()
        if not self._mask_todo:
            return False
        self._mask_step(mask, b_seed)
        return True

    def release(self) -> None:
        """Forget a precomputed mask (it is recomputed if the client uploads after all)."""
        self._mask, self._mask_todo = None, []

    def masked_input(self, update: np.ndarray, weight: float) -> bytes:
        if self._b is None:
            raise DroppedOutError(f"client {self.id} never shared its keys this round")
        if self.sent_masked_input:
            raise DuplicateSenderError(f"client {self.id} already sent its masked input")
        y = self.encoder.encode(update, weight, self.dither())
        self.ring.add_(y, self._total_mask())
        self.sent_masked_input = True
        return SaMaskedInput(self.round, self.id, self.ring.bits, self.length, self.ring.pack(y)).to_bytes()

    # 3 -----------------------------------------------------------------------------------
    def open_share(self, peer: int) -> np.ndarray:
        """Decrypt the share pair ``peer`` sent: ``(2, 9)`` field elements (row 0: b, row 1: s)."""
        sealed = self._inbox[peer]
        plain = open_sealed(self._key_in[peer], sealed, _share_ad(self.round, peer, self.id),
                            what=f"share from client {peer}")
        if len(plain) != _PLAIN_BYTES:
            raise MalformedMessageError(f"share from client {peer}: {len(plain)} bytes, expected {_PLAIN_BYTES}")
        src, dst = _SHARE_PLAIN.unpack_from(plain)
        if (src, dst) != (peer, self.id):
            raise MalformedMessageError(f"share from client {peer} names sender {src} and recipient {dst}")
        vals = np.frombuffer(plain, dtype="<u4", offset=_SHARE_PLAIN.size).astype(np.uint64)
        if int(vals.max()) >= SHAMIR_PRIME:
            raise MalformedMessageError(f"share from client {peer}: value outside the field")
        return vals.reshape(2, _CHUNKS)

    def unmask(self, data: bytes) -> bytes:
        """Answer an unmask request; refuses to give both shares of any peer."""
        if not self.sent_masked_input:
            raise DroppedOutError(f"client {self.id} did not send its masked input; it does not unmask")
        msg = SaUnmaskRequest.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        both = set(msg.survivors) & set(msg.dropped)
        if both:
            raise DecryptionRefusedError(
                f"client {self.id} refuses: asked for both the self-mask share and the mask-key share of "
                f"client(s) {sorted(both)}"
            )
        for kind, peers in (("b", msg.survivors), ("s", msg.dropped)):
            for u in peers:
                if u not in self._inbox:
                    raise MalformedMessageError(f"unmask request names {u}, whose share client {self.id} never got")
                if self._revealed.get(u, kind) != kind:
                    raise DecryptionRefusedError(
                        f"client {self.id} refuses: it already revealed its other share of client {u}"
                    )
        out: dict[str, tuple[list[int], list[np.ndarray]]] = {"b": ([], []), "s": ([], [])}
        for kind, peers in (("b", msg.survivors), ("s", msg.dropped)):
            row = 0 if kind == "b" else 1
            for u in peers:
                try:
                    pair = self.open_share(u)
                except SecFLError as exc:  # a tampered share costs only that share
                    self.failures.append(exc)
                    continue
                self._revealed[u] = kind
                out[kind][0].append(u)
                out[kind][1].append(pair[row])

        def block(kind: str) -> np.ndarray:
            rows = out[kind][1]
            return np.stack(rows) if rows else np.zeros((0, _CHUNKS), dtype=np.uint64)

        return SaUnmaskResponse(self.round, self.id, tuple(out["b"][0]), block("b"), tuple(out["s"][0]),
                                block("s")).to_bytes()


# ------------------------------------------------------------------------------------ server
class _Server:
    """The aggregation server's side: graph, ciphertext relay, running sum, reconstruction."""

    def __init__(self, rnd: int, k: int, t: int, ring: Ring, length: int) -> None:
        self.id = server_id(0)
        self.round = rnd
        self.k = k
        self.t = t
        self.ring = ring
        self.length = length
        self.c_pk: dict[int, bytes] = {}
        self.s_pk: dict[int, bytes] = {}
        self.graph: dict[int, frozenset[int]] = {}
        self.shared: dict[int, dict[int, bytes]] = {}  # u -> {v: sealed for v}
        self.active: set[int] = set()  # U2 after pruning: clients that may send masked input
        self.sum = ring.zeros(length)
        self.masked: set[int] = set()  # U3
        self.b_shares: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.s_shares: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.requested: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self.answered: set[int] = set()
        self.excluded: dict[int, str] = {}

    # 0
    def on_advertise(self, client: int, data: bytes) -> None:
        if client in self.c_pk:
            raise DuplicateSenderError(f"client {client} already advertised keys")
        msg = SaAdvertiseKeys.from_bytes(data, expect_round=self.round, expect_sender=client)
        if msg.c_public in self.c_pk.values() or msg.s_public in self.s_pk.values():
            raise MalformedMessageError(f"client {client} advertised a public key another client already uses")
        PublicKey(msg.c_public).validate()
        PublicKey(msg.s_public).validate()
        self.c_pk[client] = msg.c_public
        self.s_pk[client] = msg.s_public

    def build_graph(self) -> None:
        nodes = sorted(self.c_pk)
        m = len(nodes)
        k = min(self.k, m - 1)
        if (k * m) % 2:
            k -= 1
        if k < self.t:
            raise InsufficientQuorumError(
                f"only {m} clients advertised keys: each would have {max(k, 0)} neighbours, fewer than the "
                f"threshold {self.t}"
            )
        self.k = k
        self.graph = harary_graph(nodes, k)

    def roster(self, u: int) -> bytes:
        peers = sorted(self.graph[u])
        keys = b"".join(self.c_pk[v] + self.s_pk[v] for v in peers)
        return SaKeyRoster(self.round, self.id, self.t, tuple(peers), keys).to_bytes()

    # 1
    def on_share_keys(self, client: int, data: bytes) -> None:
        if client not in self.graph:
            raise MalformedMessageError(f"client {client} did not advertise keys in round {self.round}")
        if client in self.shared:
            raise DuplicateSenderError(f"client {client} already shared its keys")
        msg = SaShareKeys.from_bytes(data, expect_round=self.round, expect_sender=client)
        if set(msg.parties) != set(self.graph[client]):
            raise MalformedMessageError(f"client {client} must send one share to each of its {self.k} neighbours")
        self.shared[client] = dict(msg.items())

    def prune(self) -> None:
        """Keep the clients that shared keys and still have ≥ t neighbours that did too."""
        alive = set(self.shared)
        changed = True
        while changed:
            changed = False
            for u in sorted(alive):
                holders = len(self.graph[u] & alive)
                if holders < self.t:
                    alive.discard(u)
                    self.excluded[u] = (
                        f"excluded after share_keys: only {holders} of its neighbours shared keys, fewer than the "
                        f"threshold {self.t}"
                    )
                    changed = True
        self.active = alive

    def forward(self, v: int) -> bytes:
        senders = sorted(self.graph[v] & self.active)
        blob = b"".join(self.shared[u][v] for u in senders)
        return SaSharesForward(self.round, self.id, tuple(senders), blob).to_bytes()

    # 2
    def on_masked_input(self, client: int, data: bytes) -> None:
        if client in self.masked:
            raise DuplicateSenderError(f"client {client} already sent its masked input")
        msg = SaMaskedInput.from_bytes(data, expect_round=self.round, expect_sender=client)
        if client not in self.active:
            raise MalformedMessageError(f"client {client} is not in the active set of round {self.round}")
        if msg.modulus_bits != self.ring.bits or msg.length != self.length:
            raise MalformedMessageError(
                f"SA_MASKED_INPUT: {msg.length} elements mod 2**{msg.modulus_bits}, expected {self.length} "
                f"mod 2**{self.ring.bits}"
            )
        y = self.ring.unpack(msg.packed, self.length, what="SA_MASKED_INPUT")
        self.ring.add_(self.sum, y)
        self.masked.add(client)

    # 3
    @property
    def dropped(self) -> set[int]:
        return self.active - self.masked

    def unmask_request(self, v: int) -> bytes:
        survivors = frozenset(self.graph[v] & self.masked)
        dropped = frozenset(self.graph[v] & self.dropped)
        self.requested[v] = (survivors, dropped)
        return SaUnmaskRequest(self.round, self.id, tuple(sorted(survivors)), tuple(sorted(dropped))).to_bytes()

    def on_unmask_response(self, v: int, data: bytes) -> None:
        if v in self.answered:
            raise DuplicateSenderError(f"client {v} already answered the unmask request")
        if v not in self.requested:
            raise MalformedMessageError(f"client {v} was not asked to unmask")
        msg = SaUnmaskResponse.from_bytes(data, expect_round=self.round, expect_sender=v)
        want_b, want_s = self.requested[v]
        if not set(msg.survivors) <= want_b or not set(msg.dropped) <= want_s:
            raise MalformedMessageError(f"client {v} answered with shares that were not requested")
        self.answered.add(v)
        for u, row in zip(msg.survivors, msg.b_shares, strict=True):
            self.b_shares.setdefault(u, []).append((v + 1, row))
        for u, row in zip(msg.dropped, msg.s_shares, strict=True):
            self.s_shares.setdefault(u, []).append((v + 1, row))

    def _reconstruct(self, u: int, pool: dict[int, list[tuple[int, np.ndarray]]], what: str) -> bytes:
        got = pool.get(u, [])
        if len(got) < self.t:
            raise InsufficientQuorumError(
                f"round {self.round}: only {len(got)} of client {u}'s neighbours returned a share of its {what}, "
                f"fewer than the threshold {self.t}; the round cannot be unmasked"
            )
        xs = [x for x, _ in got[: self.t]]
        try:
            return reconstruct_bytes(xs, np.stack([row for _, row in got[: self.t]]), self.t, SEED_BYTES)
        except MalformedMessageError as exc:
            raise ProtocolAbort(f"round {self.round}: client {u}'s {what} shares are inconsistent: {exc}") from None

    def unmask(self, host: PartyHost | None = None) -> np.ndarray:
        """Remove every mask; returns ``Σ_{u ∈ U3} x_u`` mod ``2**k``.

        The mask regeneration is spread over ``host``'s workers (the server's own helpers); the
        reconstructed secrets go only to them."""
        # check the quorum of every client first, so an abort happens before any expensive work
        for u in sorted(self.masked):
            if len(self.b_shares.get(u, [])) < self.t:
                self._reconstruct(u, self.b_shares, "self-mask seed")
        for u in sorted(self.dropped):
            if len(self.s_shares.get(u, [])) < self.t:
                self._reconstruct(u, self.s_shares, "mask key")
        self_seeds = [self._reconstruct(u, self.b_shares, "self-mask seed") for u in sorted(self.masked)]
        dropped: list[tuple[int, bytes, list[tuple[int, bytes]]]] = []
        for u in sorted(self.dropped):
            secret = self._reconstruct(u, self.s_shares, "mask key")
            try:
                sk = PrivateKey.from_secret(secret)
            except ConfigError as exc:
                raise ProtocolAbort(f"client {u}'s mask key could not be rebuilt: {exc}") from None
            if sk.public_key.raw != self.s_pk[u]:
                raise ProtocolAbort(f"client {u}'s reconstructed mask key does not match its advertised public key")
            dropped.append((u, secret, [(v, self.s_pk[v]) for v in sorted(self.graph[u] & self.masked)]))
        helpers = 1 if host is None else host.processes
        jobs: list[UnmaskJob] = [
            (self.ring, self.length, self.round, self_seeds[i::helpers], dropped[i::helpers]) for i in range(helpers)
        ]
        parts = [_unmask_job(j) for j in jobs] if host is None else host.run(_unmask_job, jobs)
        total = np.array(self.sum, copy=True)
        for part in parts:
            self.ring.add_(total, part)
        return total


# ------------------------------------------------------------------------------------ round
class _SecAggRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, options: SecAggOptions, host: PartyHost,
                 dp: IntegerMechanism | None = None) -> None:
        super().__init__(spec, net)
        self._host = host
        self._epoch = -1
        unknown = sorted(set(spec.dropouts) - set(STAGES))
        if unknown:
            raise ConfigError(f"secagg dropout stages are {list(STAGES)}; unknown: {unknown}")
        bad = sorted(c for c in spec.clients if not 0 <= c <= _MAX_CLIENT_ID)
        if bad:
            raise ConfigError(f"secagg client ids must be in [0, {_MAX_CLIENT_ID}], got {bad[:5]}")
        self._participants = frozenset(spec.clients)
        for stage, who in spec.dropouts.items():
            if not set(who) <= self._participants:
                outside = sorted(set(who) - self._participants)
                raise ConfigError(f"dropouts[{stage!r}] names clients outside the round: {outside}")
        self._opt = options
        n = len(spec.clients)
        self.k, self.t = options.graph_parameters(n)
        self.encoder = round_encoder(options, n, dp)
        self.ring = self.encoder.ring
        self._length = self.encoder.length(spec.dim)
        self._server = _Server(spec.round, self.k, self.t, self.ring, self._length)
        self._gone: dict[int, str] = {}  # client -> why it cannot take part any more
        self._setup_done = False
        self._revealing = False
        self._clock = PhaseClock()
        self._protect_host_seconds = 0.0  # host seconds inside protect(), timed by its caller
        #: client -> why its unmask answer was not used (its masked input still counts)
        self.unmask_failures: dict[int, str] = {}
        #: filled by reveal()
        self.integer_sum: np.ndarray | None = None
        self.error_bound: float | None = None

    @property
    def seconds(self) -> dict[str, float]:
        """Compute seconds spent inside setup() and reveal(), split into client and server side
        (``protect`` is client work and ``receive`` server work: their callers time them).

        Client seconds are the clients' own compute as the host measured it, including masks
        precomputed in worker processes ahead of ``protect``; server seconds are wall time."""
        client = max(0.0, self._host.seconds - self._protect_host_seconds) if self._epoch >= 0 else 0.0
        return {"client": client, "server": self._clock.seconds["server"]}

    def _call(self, method: str, args: dict[int, tuple]) -> dict[int, object]:
        """Run ``method`` on many clients through the host (a typed error is that client's result)."""
        if self._host.epoch != self._epoch:
            raise ProtocolAbort(f"round {self.spec.round}: a later round of this protocol replaced its clients")
        return self._host.call(method, args)

    @property
    def processes(self) -> int:
        """Processes this round's clients run in (1: this process)."""
        return self._host.processes

    def _silent(self, stage: str) -> frozenset[int]:
        return frozenset(self.spec.dropouts.get(stage, frozenset()))

    def client(self, cid: int) -> SecAggClient:
        """The client-side state of ``cid`` (tests and attack experiments; ``processes = 1`` only)."""
        party: SecAggClient = self._host.party(cid)
        return party

    @property
    def server(self) -> _Server:
        return self._server

    def party_state(self, party: int) -> dict[str, Any]:
        """The server: its graph and active set; client ``c``: its client object (keys, shares
        received, self-mask seed) while it lives in this process (``processes = 1``)."""
        if party == self._server.id:
            return {"graph": self._server.graph, "active": frozenset(self._server.active)}
        if self._host.processes == 1 and self._epoch >= 0 and party in self._participants:
            try:
                return {"client": self._host.party(party)}
            except KeyError:  # silent before advertise_keys: it holds nothing
                return {}
        return {}

    # -------------------------------------------------------------------------- rounds 0-1
    def setup(self) -> None:
        if self._setup_done:
            raise ProtocolAbort("setup() already ran for this round")
        self._setup_done = True
        rnd, srv, net, clock = self.spec.round, self._server, self.net, self._clock
        # 0. advertise keys (each client draws its two key pairs; the server reads them in order)
        speaking = [c for c in self.spec.clients if c not in self._silent("advertise_keys")]
        for c in self.spec.clients:
            if c not in speaking:
                self._gone[c] = "went silent before advertise_keys"
        late = self._silent("share_keys") | self._silent("masked_input")
        self._epoch = self._host.create(SecAggClient, speaking, rnd, self.encoder, self._length, self.spec.seed,
                                        offline=[c for c in sorted(speaking) if c not in late])
        adverts = self._call("advertise", {c: () for c in speaking})
        for c in sorted(speaking):
            try:
                with clock("server"):
                    srv.on_advertise(c, net.send(c, srv.id, _ok(adverts[c])))
            except SecFLError as exc:
                self._gone[c] = f"advertise_keys rejected: {exc}"
        with clock("server"):
            srv.build_graph()
            rosters = {u: (net.send(srv.id, u, srv.roster(u)),) for u in sorted(srv.graph)}
        for u, out in self._call("on_roster", rosters).items():
            if isinstance(out, SecFLError):
                self._gone[u] = f"key roster rejected: {out}"
        # 1. share keys
        sharing = [u for u in sorted(srv.graph) if u not in self._silent("share_keys") and u not in self._gone]
        for u in sorted(srv.graph):
            if u in self._silent("share_keys"):
                self._gone[u] = "went silent before share_keys"
        shared = self._call("share_keys", {u: () for u in sharing})
        for u in sharing:
            try:
                with clock("server"):
                    srv.on_share_keys(u, net.send(u, srv.id, _ok(shared[u])))
            except SecFLError as exc:
                self._gone[u] = f"share_keys rejected: {exc}"
        with clock("server"):
            srv.prune()
        self._gone.update(srv.excluded)
        if not srv.active:
            raise InsufficientQuorumError(
                f"round {rnd}: no client kept {self.t} neighbours through share_keys; nothing can be aggregated"
            )
        with clock("server"):
            forwards = {v: (net.send(srv.id, v, srv.forward(v)),) for v in sorted(srv.active)}
        for v, out in self._call("on_forward", forwards).items():
            if isinstance(out, SecFLError):
                self._gone[v] = f"shares forward rejected: {out}"

    # -------------------------------------------------------------------------- round 2
    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if client not in self._participants:
            raise ConfigError(f"client {client} is not a participant of round {self.spec.round}")
        if not self._setup_done:
            raise ProtocolAbort("run setup() before protect()")
        if client in self._gone:
            raise DroppedOutError(f"client {client}: {self._gone[client]}")
        if client in self._silent("masked_input"):
            raise DroppedOutError(f"client {client} went silent before masked_input (simulated)")
        vec = check_update(update, self.spec.dim, who=f"client {client} update")
        before = self._host.seconds
        try:
            data = _ok(self._call("masked_input", {client: (vec, weight)})[client])
        finally:
            self._protect_host_seconds += self._host.seconds - before
        return Upload(((self._server.id, data),))

    def receive(self, client: int, upload: Upload) -> None:
        if client not in self._participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {self.spec.round}")
        if self._revealing:
            # the active set is fixed once unmasking starts: a late input could be combined with a
            # mask key already reconstructed for its sender
            raise ProtocolAbort(f"client {client}'s masked input arrived after unmasking started; refused")
        parts = self.deliver(client, upload)
        if len(parts) != 1 or parts[0][0] != self._server.id:
            raise MalformedMessageError(f"client {client}: expected exactly one message to the server")
        self._server.on_masked_input(client, parts[0][1])

    # -------------------------------------------------------------------------- round 3
    def reveal(self) -> Revealed:
        srv, net = self._server, self.net
        if self._revealing:
            raise ProtocolAbort(f"round {self.spec.round} was already unmasked")
        self._revealing = True
        if not srv.masked:
            raise ProtocolAbort(f"round {self.spec.round}: no masked input was accepted")
        silent, clock = self._silent("unmask"), self._clock
        with clock("server"):
            asked = {v: (net.send(srv.id, v, srv.unmask_request(v)),) for v in sorted(srv.masked)}
        answers = self._call("unmask", {v: req for v, req in asked.items() if v not in silent})
        for v, out in answers.items():
            try:
                with clock("server"):
                    srv.on_unmask_response(v, net.send(v, srv.id, _ok(out)))
            except SecFLError as exc:  # a refusing or malformed answer costs that answer only
                self.unmask_failures[v] = f"{type(exc).__name__}: {exc}"
        with clock("server"):
            total = srv.unmask(None if self._host.processes == 1 else self._host)
        self.integer_sum = total
        count = len(srv.masked)
        mean, total_weight, bound = self.encoder.decode(total, count)
        self.error_bound = bound
        included = tuple(sorted(srv.masked))
        dropped = tuple(sorted(self._participants - srv.masked))
        return Revealed(mean, total_weight, included, dropped)


def _ok(result: object) -> bytes:
    """A client's reply through the host: its bytes, or its typed error raised here."""
    if isinstance(result, SecFLError):
        raise result
    if not isinstance(result, bytes):
        raise MalformedMessageError(f"a client answered with {type(result).__name__}, not bytes")
    return result


class SecAgg(IntegerDP, Protocol):
    """SecAgg+: pairwise + self masks on a random k-regular graph, dropout recovery by Shamir."""

    name = "secagg"
    summary = "SecAgg+ masking on a random k-regular graph; one server; survives dropouts at every stage"
    reveals_to = "server"
    Options = SecAggOptions

    def __init__(self, options: SecAggOptions | None = None) -> None:
        super().__init__(options)
        self._host: PartyHost | None = None
        self._spawn_failed = False

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        want = self.options.processes or auto_processes(len(spec.clients))
        if self.options.processes is None and self._spawn_failed:
            want = 1
        if want > 1 and (self._host is None or self._host.processes != want or not self._host.alive):
            self.close()
            try:
                self._host = make_host(want)
            except WorkerCrashed as exc:
                if self.options.processes is not None:
                    raise
                # automatic choice only: an unguarded script or one read from stdin cannot spawn workers
                log.warning("secagg: clients run in this process instead of %d workers: %s", want,
                            str(exc).splitlines()[0])
                self._spawn_failed, want = True, 1
        host: PartyHost = make_host(1) if want == 1 or self._host is None else self._host
        return _SecAggRound(spec, net, self.options, host, self._dp)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None
