"""``ckks`` — CKKS homomorphic encryption: the server adds ciphertexts and holds no secret key.

The common HE-FL setup (as in NVIDIA FLARE's HE mode): one CKKS key pair shared by the client
side, the server holding only public material. Parties: clients ``0..K-1``, the server
``server_id(0)``, and the key holder ``member_id(0)``, a client-side party that generates the
keys and decrypts the aggregate (it stands for "any client": every client holds the same key).

Rounds (spec: ``protocols/ckks.md``):
  0. (once per key, in the first round's ``setup``) the key holder generates the keys (SEAL's
     ``KeyGenerator``), sends ``CKKS_PUBLIC_CONTEXT`` (parameters + public key, no secret key,
     no relinearization or Galois keys) to the server, and ``CKKS_SECRET_CONTEXT`` to every
     client the first time it takes part (provisioning, over the clients' confidential channel).
  1. Each client k computes a_k = n_k / max_weight (or n_k for quantized input), rounds
     (a_k x_k, a_k) onto the round's public grid (default ``grid`` input), encrypts that vector
     with the shared secret key (SEAL's encoder and symmetric ``Encryptor``:
     the same ciphertext form as public-key encryption, twice as fast, less noise) and sends
     ``CKKS_UPDATE`` to the server.
  2. The server parses each upload strictly and adds it into one running aggregate
     (residue-wise mod each prime: SEAL's ``Evaluator.add``); no upload is kept after it is
     folded in.
  3. The server sends ``CKKS_AGGREGATE`` (ciphertexts + the list of included clients) to the key
     holder, who decrypts (SEAL's ``Decryptor``) (S_x, S_w) = (sum a_k x_k, sum a_k), rounds them
     back onto the grid (exact: the grid step exceeds twice the noise bound) and reveals S_x / S_w.

Security: the server sees only ciphertexts under a key it does not have (IND-CPA under RLWE at
the preset's security level); no individual update or weight is visible to it. Every client
and the key holder can decrypt every ciphertext: a single client (or the key holder) colluding
with the server — which sees every upload — reads every individual update. The server is
assumed honest-but-curious: a malicious server could hand the key holder one client's
ciphertext as "the aggregate". CKKS is approximate: the revealed mean carries an error bounded
by ``error_bound`` (set on the round by ``reveal``; analysis in the spec). Whoever holds both a
ciphertext and its noisy decryption can recover the key (Li-Micciancio); the revealed mean reaches
the server, so by default (``grid``, and ``quantized``) it is rounded to a noise-free function of the
inputs. ``input='unsafe-float'`` reveals the noisy decryption and warns every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from secfl.crypto.ckks import (
    CkksAccumulator,
    CkksEncryptor,
    CkksParams,
    CkksPreset,
    CkksPublicContext,
    CkksSecretContext,
)
from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload
from secfl.protocols.ckks_encoding import InputKind, SlotCodec, warn_noisy_reveal
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.wire import Message, MsgType, Reader, Writer

__all__ = [
    "InputKind",
    "UploadForm",
    "CkksOptions",
    "CkksContextMessage",
    "CkksSecretContextMessage",
    "CkksUpdate",
    "CkksAggregate",
    "Ckks",
    "KEY_HOLDER",
]

#: Party id of the key holder.
KEY_HOLDER = member_id(0)
_MAX_BLOB = 1 << 34


class UploadForm(str, Enum):
    """How a client's ciphertexts travel.

    SEEDED (default): SEAL's seeded symmetric ciphertexts -- ``c0`` plus the 64-byte PRNG seed
    from which SEAL regenerates ``c1 = a`` on the server: half the bytes, the same client time,
    and a server that loads every ciphertext through SEAL (``Evaluator.add``) instead of adding
    parsed residues (≈ 3× its time: 0.125 against 0.042 s per 10^6-parameter upload). FULL: both
    polynomials, bit-packed.
    """

    SEEDED = "seeded"
    FULL = "full"


@dataclass(frozen=True)
class CkksOptions:
    """Options of the ``ckks`` protocol.

    ``preset``: parameter set (:class:`~secfl.crypto.ckks.CkksPreset`, default ``compact``);
    ``params``: a custom :class:`~secfl.crypto.ckks.CkksParams` (or a dict of its fields),
    overriding the preset; ``scale_bits``: override just the scale.
    ``clip_range``: clients' values must lie within +-clip_range (the overflow check uses it).
    ``max_weight``: public bound on a client's weight n_k; a larger weight is refused.
    ``input``: :class:`InputKind` (``grid``, default; ``quantized``; ``unsafe-float``).
    ``workers``: encryption processes per client, this one included (1: no pool; n: n - 1 pool
    processes -- the client's own -- each loading its secret context once). ``upload``:
    :class:`UploadForm` (default seeded: half the bytes).
    """

    preset: CkksPreset = CkksPreset.COMPACT
    params: CkksParams | None = None
    scale_bits: int | None = None
    clip_range: float = 100.0
    max_weight: float = 1e4
    input: InputKind = InputKind.GRID
    workers: int = 1
    upload: UploadForm = UploadForm.SEEDED

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "upload", UploadForm(self.upload))
        except ValueError:
            allowed = [u.value for u in UploadForm]
            raise ConfigError(f"ckks.upload must be one of {allowed}, got {self.upload!r}") from None
        try:
            object.__setattr__(self, "preset", CkksPreset(self.preset))
        except ValueError:
            allowed = [p.value for p in CkksPreset]
            raise ConfigError(f"ckks.preset must be one of {allowed}, got {self.preset!r}") from None
        allowed_inputs = [k.value for k in (InputKind.GRID, InputKind.QUANTIZED, InputKind.UNSAFE_FLOAT)]
        if self.input in (InputKind.FLOAT, InputKind.FLOAT.value):
            raise ConfigError("ckks.input='float' would reveal the noisy CKKS decryption, from which the server can"
                              " recover the key (Li-Micciancio); use 'grid' (the default: noise removed exactly) or,"
                              " knowingly, 'unsafe-float'")
        try:
            object.__setattr__(self, "input", InputKind(self.input))
        except ValueError:
            raise ConfigError(f"ckks.input must be one of {allowed_inputs}, got {self.input!r}") from None
        if isinstance(self.params, dict):
            fields = {"poly_degree", "coeff_bits", "scale_bits", "complex_packing"}
            unknown = sorted(set(self.params) - fields)
            if unknown:
                raise ConfigError(f"ckks.params has unknown field(s) {unknown}; allowed: {sorted(fields)}")
            object.__setattr__(self, "params", CkksParams(**self.params))
        if self.params is not None and not isinstance(self.params, CkksParams):
            raise ConfigError(f"ckks.params must be CkksParams, a dict of its fields, or None; got {self.params!r}")
        if self.scale_bits is not None and (not isinstance(self.scale_bits, int) or isinstance(self.scale_bits, bool)):
            raise ConfigError(f"ckks.scale_bits must be an integer or None, got {self.scale_bits!r}")
        for name in ("clip_range", "max_weight"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"ckks.{name} must be a finite number > 0, got {value!r}")
        if self.max_weight < 1:
            raise ConfigError(f"ckks.max_weight must be >= 1 (weights are sample counts), got {self.max_weight}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ConfigError(f"ckks.workers must be an integer >= 1, got {self.workers!r}")
        self.resolved_params()  # validate now (security bound)

    def resolved_params(self) -> CkksParams:
        """The parameter set in force (custom params, else the preset; scale override applied)."""
        base = self.params if self.params is not None else CkksParams.from_preset(self.preset)
        if self.scale_bits is None:
            return base
        return CkksParams(base.poly_degree, base.coeff_bits, self.scale_bits, base.complex_packing)

    def max_abs(self) -> float:
        """Largest |value| a client encrypts before any grid lift (the overflow check's max|value|)."""
        if self.input is InputKind.QUANTIZED:
            return float(self.max_weight) * float(self.clip_range)
        return max(float(self.clip_range), 1.0)  # a_k <= 1 travels in the weight slot


# --------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class CkksContextMessage(Message):
    """Key holder → server: the public context (parameters + public key, never a secret key)."""

    TYPE = MsgType.CKKS_PUBLIC_CONTEXT
    round: int
    sender: int
    context: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.context)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksContextMessage:
        return cls(round, sender, r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class CkksSecretContextMessage(Message):
    """Key holder → client (provisioning, confidential channel): the secret context."""

    TYPE = MsgType.CKKS_SECRET_CONTEXT
    round: int
    sender: int
    context: bytes

    def __repr__(self) -> str:  # key material: never printed
        return f"CkksSecretContextMessage(round={self.round}, sender={self.sender}, <{len(self.context)} secret bytes>)"

    def _write(self, w: Writer) -> None:
        w.blob(self.context)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksSecretContextMessage:
        return cls(round, sender, r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class CkksUpdate(Message):
    """Client → server: the encrypted (a_k x_k, a_k) (``CkksCiphertexts.to_bytes``)."""

    TYPE = MsgType.CKKS_UPDATE
    round: int
    sender: int
    ciphertexts: bytes

    def _write(self, w: Writer) -> None:
        w.blob(self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksUpdate:
        return cls(round, sender, r.blob(_MAX_BLOB))


@dataclass(frozen=True)
class CkksAggregate(Message):
    """Server → key holder: the clients included and the sum of their ciphertexts."""

    TYPE = MsgType.CKKS_AGGREGATE
    round: int
    sender: int
    included: np.ndarray  # uint32, sorted, distinct
    ciphertexts: bytes

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.included, dtype=np.uint32)).blob(self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> CkksAggregate:
        included = r.array("u4")
        if included.size == 0 or bool(np.any(np.diff(included.astype(np.int64)) <= 0)):
            raise MalformedMessageError("CKKS_AGGREGATE: the included clients must be a non-empty sorted set")
        return cls(round, sender, included, r.blob(_MAX_BLOB))


# --------------------------------------------------------------------------------------------
# the round


class _CkksRound(ProtocolRound):
    def __init__(self, spec: RoundSpec, net: Network, proto: Ckks) -> None:
        super().__init__(spec, net)
        opt = proto.options
        self._proto = proto
        self._opt = opt
        self._params = proto.params
        k = len(spec.clients)
        params = self._params
        self._codec = SlotCodec.for_round(opt, spec.dim, k,
                                          lambda m: params.sum_error_bound(k, m, symmetric=True),
                                          lambda m: params.check_overflow(k, m))
        self._max_abs = self._codec.max_abs()
        params.check_overflow(k, self._max_abs)  # InsecureParametersError names the bound
        if opt.input is InputKind.QUANTIZED:
            bound = params.sum_error_bound(k, self._max_abs, symmetric=True)
            if bound >= 0.5:
                raise ConfigError(
                    f"ckks quantized input rounds the decrypted sums to integers, which needs the error bound"
                    f" below 0.5; with {k} clients it is {bound:.3g} (raise scale_bits or pick a larger preset)"
                )
        if opt.input is InputKind.UNSAFE_FLOAT:
            warn_noisy_reveal("ckks", spec.round)
        self._count = self._params.ciphertexts_for(spec.dim + 1)
        self._server = server_id(0)
        self._participants = frozenset(spec.clients)
        self._accepted: set[int] = set()
        self._acc: CkksAccumulator | None = None
        #: bound on |revealed mean - exact weighted mean| per coordinate, set by reveal()
        self.error_bound: float | None = None

    def party_state(self, party: int) -> dict[str, Any]:
        """The key holder, and every provisioned client: the shared secret context."""
        return self._proto._party_state(party)

    def setup(self) -> None:
        self._proto._provision(self.spec, self.net)
        self._acc = CkksAccumulator(self._proto._server_context(), self._count)

    # -- client side ------------------------------------------------------------------------------

    def protect(self, client: int, update: np.ndarray, weight: float) -> Upload:
        if self._acc is None:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before protect()")
        encryptor = self._proto._client_encryptor(client)
        values = self._codec.encode(update, weight, f"client {client}")
        if self._opt.upload is UploadForm.SEEDED:
            msg = CkksUpdate(self.spec.round, client, encryptor.encrypt_seeded_to_bytes(values))
        else:
            msg = CkksUpdate(self.spec.round, client, encryptor.encrypt_to_bytes(values))
        return Upload(((self._server, msg.to_bytes()),))

    # -- server side ------------------------------------------------------------------------------

    def receive(self, client: int, upload: Upload) -> None:
        if self._acc is None:
            raise ProtocolAbort(f"round {self.spec.round}: setup() must run before receive()")
        data = self.single_message(client, upload, self._accepted, self._server)
        msg = CkksUpdate.from_bytes(data, expect_round=self.spec.round, expect_sender=client)
        if self._opt.upload is UploadForm.SEEDED:
            self._acc.add_seeded(msg.ciphertexts)  # parses and loads the whole upload before adding
        else:
            batch = self._acc.context.ciphertexts_from_bytes(msg.ciphertexts, expect_count=self._count)
            self._acc.add(batch)  # only after the whole upload parsed: atomic
        self._accepted.add(client)

    # -- reveal (server -> key holder) ----------------------------------------------------------------

    def reveal(self) -> Revealed:
        if self._acc is None or not self._accepted:
            raise ProtocolAbort(f"round {self.spec.round}: no client update was accepted")
        included = tuple(sorted(self._accepted))
        agg = CkksAggregate(self.spec.round, self._server, np.asarray(included, dtype=np.uint32),
                            self._acc.result().to_bytes())
        data = self.net.send(self._server, KEY_HOLDER, agg.to_bytes())
        return self._key_holder_reveal(data)

    def _key_holder_reveal(self, data: bytes) -> Revealed:
        holder = self._proto._holder_context()
        msg = CkksAggregate.from_bytes(data, expect_round=self.spec.round, expect_sender=self._server)
        included = tuple(int(c) for c in msg.included)
        if not set(included) <= self._participants:
            raise MalformedMessageError("CKKS_AGGREGATE names clients that are not participants of this round")
        cts = holder.public().ciphertexts_from_bytes(msg.ciphertexts, expect_count=self._count)
        values = holder.decrypt(cts, self.spec.dim + 1)
        bound = self._params.sum_error_bound(len(included), self._max_abs, symmetric=True)
        mean, weight, self.error_bound = self._codec.decode(values, bound, self.spec.round)
        dropped = tuple(sorted(self._participants - set(included)))
        return Revealed(mean, weight, included, dropped)


# --------------------------------------------------------------------------------------------
# the protocol


class Ckks(Protocol):
    """CKKS aggregation; keys are generated once (first round) and kept for later rounds.

    State by party: the key holder's :class:`CkksSecretContext`; the server's
    :class:`CkksPublicContext` (parsed from the bytes it received — it never holds a secret
    key); the clients' context (parsed from the provisioning message). :meth:`close` ends the
    encryption process pool.
    """

    name = "ckks"
    summary = "CKKS homomorphic encryption: the server adds ciphertexts; a key holder decrypts the aggregate"
    reveals_to = "key holder (member 0; every client holds the same key)"
    Options = CkksOptions

    def __init__(self, options: CkksOptions | None = None) -> None:
        super().__init__(options)
        self.params: CkksParams = self.options.resolved_params()
        self._holder: CkksSecretContext | None = None
        self._server: CkksPublicContext | None = None
        self._client_secret: bytes | None = None
        self._client: CkksSecretContext | None = None
        self._provisioned: set[int] = set()
        self._encryptor: CkksEncryptor | None = None

    def open_round(self, spec: RoundSpec, net: Network) -> ProtocolRound:
        return _CkksRound(spec, net, self)

    def _provision(self, spec: RoundSpec, net: Network) -> None:
        """Setup messages: keys once; the secret context to each client the first time it appears."""
        if self._holder is None:
            self._holder = CkksSecretContext.generate(self.params)
            msg = CkksContextMessage(spec.round, KEY_HOLDER, self._holder.public().to_bytes())
            data = net.send(KEY_HOLDER, server_id(0), msg.to_bytes())
            got = CkksContextMessage.from_bytes(data, expect_round=spec.round, expect_sender=KEY_HOLDER)
            self._server = CkksPublicContext.from_bytes(got.context)
        secret: bytes | None = None
        for client in spec.clients:
            if client in self._provisioned:
                continue
            if secret is None:
                secret = self._holder.to_bytes(include_secret_key=True)
            data = net.send(KEY_HOLDER, client, CkksSecretContextMessage(spec.round, KEY_HOLDER, secret).to_bytes())
            got_secret = CkksSecretContextMessage.from_bytes(data, expect_round=spec.round, expect_sender=KEY_HOLDER)
            if self._client is None:
                # every client receives identical bytes; in this simulation they share one parsed copy
                self._client = CkksSecretContext.from_bytes(got_secret.context)
                self._client_secret = got_secret.context
            elif got_secret.context != self._client_secret:
                raise ProtocolAbort("clients received different CKKS secret contexts")
            self._provisioned.add(client)

    def _party_state(self, party: int) -> dict[str, Any]:
        if party == KEY_HOLDER and self._holder is not None:
            return {"secret_context": self._holder}
        if party in self._provisioned and self._client is not None:
            return {"secret_context": self._client}
        return {}

    def _server_context(self) -> CkksPublicContext:
        if self._server is None:
            raise ProtocolAbort("the server has no CKKS public context (setup did not run)")
        return self._server

    def _holder_context(self) -> CkksSecretContext:
        if self._holder is None:
            raise ProtocolAbort("the key holder has no keys (setup did not run)")
        return self._holder

    def _client_encryptor(self, client: int) -> CkksEncryptor:
        if client not in self._provisioned or self._client is None:
            raise ProtocolAbort(f"client {client} holds no CKKS key (not provisioned in setup)")
        if self._encryptor is None:
            self._encryptor = CkksEncryptor(self._client, workers=self.options.workers)
        return self._encryptor

    def close(self) -> None:
        if self._encryptor is not None:
            self._encryptor.close()
            self._encryptor = None
