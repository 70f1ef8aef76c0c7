"""The ``secagg`` client party: its two key pairs, its self-mask seed, the shares it holds.

Stages it answers across sites (:meth:`SecAggClient.handle`, request → reply):

- ``secagg.advertise_keys``: ``ROUND_REQUEST`` → ``SA_ADVERTISE_KEYS`` (fresh keys for the round);
- ``secagg.share_keys``: ``SA_KEY_ROSTER`` → ``SA_SHARE_KEYS`` (Shamir shares of ``b_u`` and
  ``s_u``, each pair sealed end to end for its neighbour);
- ``secagg.masked_input``: ``SA_SHARES_FORWARD`` → ``SA_MASKED_INPUT`` (takes the round's input);
- ``secagg.consistency`` (``consistency_check`` only): ``SA_CONSISTENCY_REQUEST`` →
  ``SA_CONSISTENCY_SIGNATURE`` (signs U3; one U3 per round, never two);
- ``secagg.unmask``: ``SA_UNMASK_REQUEST`` (``SA_CHECKED_UNMASK_REQUEST`` with the check) →
  ``SA_UNMASK_RESPONSE`` (one share per peer, never both).

The in-process round calls the same steps one by one (:meth:`advertise`, :meth:`on_roster`,
:meth:`share_keys`, :meth:`on_forward`, :meth:`masked_input`, :meth:`unmask`) through a
:class:`~secfl.protocols.hosts.PartyHost`, which may also run :meth:`prepare` (the mask does not
depend on the update) ahead of the upload.
"""

from __future__ import annotations

import numpy as np

from secfl.crypto.encoding import WeightedEncoder
from secfl.crypto.identity import SIGNATURE_BYTES, IdentityKey, Roster
from secfl.crypto.keys import KEY_BYTES, PrivateKey, PublicKey, open_sealed, seal
from secfl.crypto.prg import Prg, fresh_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import SHAMIR_PRIME, bytes_to_field, shamir_split
from secfl.dp import IntegerMechanism
from secfl.errors import (
    AuthenticationError,
    ConfigError,
    DecryptionRefusedError,
    DroppedOutError,
    DuplicateSenderError,
    InsecureParametersError,
    MalformedMessageError,
    ReplayError,
    SecFLError,
)
from secfl.protocols.base import check_update
from secfl.protocols.dp_encoding import DPEncoder, round_encoder
from secfl.protocols.network import server_id
from secfl.protocols.parties import ClientParty, RoundRequest
from secfl.protocols.secagg.masks import (
    CHUNKS,
    PLAIN_BYTES,
    SHARE_PLAIN,
    add_masks,
    dither_prg,
    pair_seed,
    share_ad,
    share_channel_keys,
)
from secfl.protocols.secagg.messages import (
    SaAdvertiseKeys,
    SaCheckedUnmaskRequest,
    SaConsistencyRequest,
    SaConsistencySignature,
    SaKeyRoster,
    SaMaskedInput,
    SaShareKeys,
    SaSharesForward,
    SaUnmaskRequest,
    SaUnmaskResponse,
    advertise_signed,
    consistency_signed,
)
from secfl.protocols.secagg.options import (
    ADVERTISE_KEYS,
    CONSISTENCY,
    MASKED_INPUT,
    SHARE_KEYS,
    UNMASK,
    SecAggOptions,
    check_client_ids,
)
from secfl.protocols.wire import Reader, Writer

__all__ = ["SecAggClient"]


class SecAggClient(ClientParty):
    """Everything one client holds and does in SecAgg+ rounds (client side only).

    A site's client lives across rounds (``SecAggClient(pid, options)``): each
    ``secagg.advertise_keys`` request starts a new round with fresh keys. The simulator builds one
    per round and client with :meth:`for_round`. Round numbers only move forward: a request for
    a round this client already began is refused (no second set of keys and shares per round).
    """

    encoder: WeightedEncoder | DPEncoder
    ring: Ring
    length: int
    _c: PrivateKey
    _s: PrivateKey

    def __init__(self, party_id: int, options: SecAggOptions | None = None,
                 dp: IntegerMechanism | None = None, identity: IdentityKey | None = None,
                 roster: Roster | None = None) -> None:
        check_client_ids([party_id])
        self.party_id = party_id
        self._identity = identity  # signs the round's key advertisement
        self._roster = roster  # the neighbours' advertisements must carry their signatures
        self.id = party_id
        self.server = server_id(0)
        self._options = options  # a site's client builds each round's encoder from these
        self._dp = dp
        self.round = -1  # no round begun yet
        self._reset()

    def _reset(self) -> None:
        """Forget every round state (keys are drawn by :meth:`begin`)."""
        self._dim = 0
        self._n = 0  # participants of the round (the encoder depends on it)
        self._dither_seed: bytes | None = None
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
        self._u3: tuple[int, ...] | None = None  # the U3 this client signed (consistency check)
        #: errors met while answering unmask requests (e.g. a tampered forwarded share)
        self.failures: list[SecFLError] = []

    def __repr__(self) -> str:
        return f"SecAggClient({self.party_id}, round={self.round})"

    def _binding(self) -> bytes:
        """The federation roster's digest (bound into every sealed share's AD), or nothing."""
        return self._roster.digest() if self._roster is not None else b""

    @classmethod
    def for_round(cls, cid: int, rnd: int, encoder: WeightedEncoder | DPEncoder, length: int,
                  dither_seed: bytes | None) -> SecAggClient:
        """The simulator's factory: client ``cid`` with round ``rnd`` already begun."""
        client = cls(cid)
        client.begin(rnd, encoder, length, dither_seed)
        return client

    def begin(self, rnd: int, encoder: WeightedEncoder | DPEncoder, length: int, dither_seed: bytes | None) -> None:
        """Start round ``rnd``: fresh key pairs ``c`` and ``s``, every earlier round's state dropped."""
        if rnd <= self.round:
            raise ReplayError(f"client {self.id} already began round {self.round}; round {rnd} is not later")
        self._reset()
        self.round = rnd
        self.encoder = encoder
        self.ring = encoder.ring
        self.length = length
        self._dither_seed = dither_seed
        self._c = PrivateKey.generate()
        self._s = PrivateKey.generate()

    # -- across sites -----------------------------------------------------------------------
    def handle(self, stage: str, request: bytes) -> bytes:
        if stage == ADVERTISE_KEYS:
            req = RoundRequest.from_bytes(request, expect_sender=self.server)
            n = int(req.participants.size)
            if not bool(np.any(req.participants == self.party_id)):
                raise MalformedMessageError(f"client {self.party_id} is not a participant of round {req.round}")
            options = SecAggOptions() if self._options is None else self._options
            options.graph_parameters(n)  # the round must be one this client's options allow
            encoder = round_encoder(options, n, self._dp)
            self.begin(req.round, encoder, encoder.length(req.dim), None)
            self._dim, self._n = req.dim, n
            return self.advertise()
        if stage == SHARE_KEYS:
            self.on_roster(request)
            return self.share_keys()
        if stage == MASKED_INPUT:
            self.on_forward(request)
            update, weight = self.take_input(self.round)
            vec = check_update(update, self._dim, who=f"client {self.id} update")
            return self.masked_input(vec, weight)
        if stage == CONSISTENCY:
            return self.sign_survivors(request)
        if stage == UNMASK:
            return self.unmask(request)
        raise MalformedMessageError(f"secagg client: unknown stage {stage!r}")


    def save_state(self) -> bytes:
        """The round's state, secrets included (key pairs, self-mask seed, channel keys, sealed
        shares held, what was revealed) and the input; a precomputed mask is not kept. Only for a
        site's client (built with options): the encoder is rebuilt from them."""
        w = Writer().u32(self.party_id).u64(self.round + 1)
        self._save_input(w)
        if self.round < 0:
            return w.getvalue()
        if self._dither_seed is not None:
            raise ConfigError("a simulator-built secagg client (shared dither seed) cannot be saved")
        w.u64(self._dim).u32(self._n).u32(self.threshold).u8(self._forwarded).u8(self.sent_masked_input)
        w.blob(self._c.export_secret()).blob(self._s.export_secret()).blob(self._b or b"")
        w.u32(len(self._peer_c))
        for v in sorted(self._peer_c):
            w.u32(v).blob(self._peer_c[v].raw).blob(self._peer_s[v].raw)
        w.u32(len(self._key_in))
        for v in sorted(self._key_in):
            w.u32(v).blob(self._key_in[v])
        w.u32(len(self._inbox))
        for v in sorted(self._inbox):
            w.u32(v).blob(self._inbox[v])
        w.u32(len(self._revealed))
        for v in sorted(self._revealed):
            w.u32(v).u8(ord(self._revealed[v]))
        w.u8(self._u3 is not None).array(np.asarray(self._u3 or (), dtype=np.uint32))
        return w.getvalue()

    def load_state(self, data: bytes) -> None:
        r = Reader(data, "secagg client state")
        if r.u32() != self.party_id:
            raise MalformedMessageError(f"the saved state is not client {self.party_id}'s")
        rnd = r.u64() - 1
        self._reset()
        self._load_input(r)
        self.round = rnd
        if rnd >= 0:
            self._dim, self._n, self.threshold = r.u64(), r.u32(), r.u32()
            self._forwarded, self.sent_masked_input = bool(r.u8()), bool(r.u8())
            options = SecAggOptions() if self._options is None else self._options
            self.encoder = round_encoder(options, self._n, self._dp)
            self.ring, self.length = self.encoder.ring, self.encoder.length(self._dim)
            self._c, self._s = PrivateKey.from_secret(r.blob(64)), PrivateKey.from_secret(r.blob(64))
            self._b = r.blob(64) or None
            for _ in range(r.u32()):
                v = r.u32()
                self._peer_c[v], self._peer_s[v] = PublicKey(r.blob(KEY_BYTES)), PublicKey(r.blob(KEY_BYTES))
            for _ in range(r.u32()):
                v = r.u32()
                self._key_in[v] = r.blob(64)
            for _ in range(r.u32()):
                v = r.u32()
                self._inbox[v] = r.blob(1 << 16)
            for _ in range(r.u32()):
                v = r.u32()
                self._revealed[v] = chr(r.u8())
            signed = bool(r.u8())
            u3 = tuple(int(v) for v in r.array("uint32").tolist())
            self._u3 = u3 if signed else None
        r.done()

    # 0 -----------------------------------------------------------------------------------
    def advertise(self) -> bytes:
        c, s = self._c.public_key.raw, self._s.public_key.raw
        sig = self._identity.sign(advertise_signed(self.round, self.id, c, s)) if self._identity is not None else b""
        return SaAdvertiseKeys(self.round, self.id, c, s, sig).to_bytes()

    def on_roster(self, data: bytes) -> None:
        msg = SaKeyRoster.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        if self.id in msg.neighbours:
            raise MalformedMessageError("SA_KEY_ROSTER lists the client as its own neighbour")
        if 2 * msg.threshold <= len(msg.neighbours):
            raise InsecureParametersError(
                f"the server asks for a threshold {msg.threshold} ≤ half of the {len(msg.neighbours)} neighbours"
            )
        if self._peer_c:
            raise DuplicateSenderError(f"client {self.id} already has its key roster for round {self.round}")
        if self._roster is not None:  # a relay that swapped a neighbour's keys cannot sign for them
            if not msg.signatures:
                raise AuthenticationError(f"client {self.id}: SA_KEY_ROSTER carries no signatures")
            for i, v in enumerate(msg.neighbours):
                keys = msg.keys[2 * KEY_BYTES * i : 2 * KEY_BYTES * (i + 1)]
                self._roster.verify(v, advertise_signed(self.round, v, keys[:KEY_BYTES], keys[KEY_BYTES:]),
                                    msg.signatures[SIGNATURE_BYTES * i : SIGNATURE_BYTES * (i + 1)],
                                    f"client {self.id}: neighbour {v}'s keys in SA_KEY_ROSTER")
        self.threshold = msg.threshold
        for i, v in enumerate(msg.neighbours):
            base = 2 * KEY_BYTES * i
            self._peer_c[v] = PublicKey(msg.keys[base : base + KEY_BYTES])
            self._peer_s[v] = PublicKey(msg.keys[base + KEY_BYTES : base + 2 * KEY_BYTES])

    # 1 -----------------------------------------------------------------------------------
    def share_keys(self) -> bytes:
        if not self._peer_c:
            raise DroppedOutError(f"client {self.id} has no neighbours (no key roster)")
        if self._b is not None:
            raise DuplicateSenderError(f"client {self.id} already shared its keys in round {self.round}")
        self._b = fresh_seed()
        peers = sorted(self._peer_c)
        secrets_ = np.concatenate([bytes_to_field(self._b), bytes_to_field(self._s.export_secret())])
        shares = shamir_split(secrets_, [v + 1 for v in peers], self.threshold).astype("<u4")
        sealed = []
        for i, v in enumerate(peers):
            k_out, self._key_in[v] = share_channel_keys(self._c, self._peer_c[v], self.round, self.id, v)
            plain = SHARE_PLAIN.pack(self.id, v) + shares[i].tobytes()
            sealed.append(seal(k_out, plain, share_ad(self.round, self.id, v, self._binding())))
        return SaShareKeys(self.round, self.id, tuple(peers), b"".join(sealed)).to_bytes()

    def on_forward(self, data: bytes) -> None:
        msg = SaSharesForward.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        if self._forwarded:
            raise DuplicateSenderError(f"client {self.id} already received its shares for round {self.round}")
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
        plain = open_sealed(self._key_in[peer], sealed, share_ad(self.round, peer, self.id, self._binding()),
                            what=f"share from client {peer}")
        if len(plain) != PLAIN_BYTES:
            raise MalformedMessageError(f"share from client {peer}: {len(plain)} bytes, expected {PLAIN_BYTES}")
        src, dst = SHARE_PLAIN.unpack_from(plain)
        if (src, dst) != (peer, self.id):
            raise MalformedMessageError(f"share from client {peer} names sender {src} and recipient {dst}")
        vals = np.frombuffer(plain, dtype="<u4", offset=SHARE_PLAIN.size).astype(np.uint64)
        if int(vals.max()) >= SHAMIR_PRIME:
            raise MalformedMessageError(f"share from client {peer}: value outside the field")
        return vals.reshape(2, CHUNKS)

    def _checked(self) -> bool:
        return self._options is not None and self._options.consistency_check

    def sign_survivors(self, data: bytes) -> bytes:
        """Consistency check, first half: sign U3 (this client's masked input must be in it), once a round."""
        if not self._checked():
            raise MalformedMessageError(f"client {self.id}: this federation runs secagg without the consistency check")
        if not self.sent_masked_input:
            raise DroppedOutError(f"client {self.id} did not send its masked input; it does not sign U3")
        if self._identity is None or self._roster is None:
            raise ConfigError("secagg.consistency_check needs this client's identity key and the federation roster")
        msg = SaConsistencyRequest.from_bytes(data, expect_round=self.round, expect_sender=self.server)
        u3 = msg.survivors
        if self.id not in u3:
            raise DecryptionRefusedError(f"client {self.id}: the server's U3 leaves out this client's masked input")
        if self._u3 is not None and self._u3 != u3:
            raise DecryptionRefusedError(f"client {self.id} already signed another U3 in round {self.round}")
        self._u3 = u3
        sig = self._identity.sign(consistency_signed(self.round, self._roster.digest(), u3))
        return SaConsistencySignature(self.round, self.id, sig).to_bytes()

    def _check_consistency(self, msg: SaCheckedUnmaskRequest) -> None:
        """Consistency check, second half: the request agrees with the U3 this client signed, and
        at least t of its neighbours signed the same U3 (one verification per needed signer)."""
        if self._roster is None:
            raise ConfigError("secagg.consistency_check needs this client's identity key and the federation roster")
        if self._u3 is None or msg.u3 != self._u3:
            raise DecryptionRefusedError(f"client {self.id}: the unmask request carries another U3 than the one "
                                         "it signed")
        u3 = set(self._u3)
        if not set(msg.survivors) <= u3 or set(msg.dropped) & u3:
            raise DecryptionRefusedError(f"client {self.id}: the unmask request asks for shares that contradict "
                                         "U3 (self-mask shares are for U3, mask-key shares for clients outside it)")
        signed = consistency_signed(self.round, self._roster.digest(), self._u3)
        valid = 0
        for i, v in enumerate(msg.signers):
            if v not in self._peer_c or v not in u3:
                raise DecryptionRefusedError(f"client {self.id}: U3 signature of {v}, not a surviving neighbour")
            try:  # a bad signature (a neighbour that signed another U3) only does not count
                self._roster.verify(v, signed, msg.signature_of(i), f"neighbour {v}'s signature of U3")
            except AuthenticationError:
                continue
            valid += 1
            if valid >= self.threshold:
                return
        raise DecryptionRefusedError(f"client {self.id}: only {valid} neighbours' valid signatures of U3, it needs"
                                     f" {self.threshold}")

    def unmask(self, data: bytes) -> bytes:
        """Answer an unmask request; refuses to give both shares of any peer."""
        if not self.sent_masked_input:
            raise DroppedOutError(f"client {self.id} did not send its masked input; it does not unmask")
        msg: SaUnmaskRequest | SaCheckedUnmaskRequest
        if self._checked():
            msg = SaCheckedUnmaskRequest.from_bytes(data, expect_round=self.round, expect_sender=self.server)
            self._check_consistency(msg)
        else:
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
            return np.stack(rows) if rows else np.zeros((0, CHUNKS), dtype=np.uint64)

        return SaUnmaskResponse(self.round, self.id, tuple(out["b"][0]), block("b"), tuple(out["s"][0]),
                                block("s")).to_bytes()

