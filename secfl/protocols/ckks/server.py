"""The ``ckks`` server: holds the public context only, adds ciphertexts as they arrive.

It parses every upload strictly and folds it into one running aggregate (SEAL's
``Evaluator.add`` for seeded uploads, residue-wise sums for full ones); no upload is kept once it
is added, and a failing upload costs only its sender. It never holds a secret key: it receives
the public context (``CKKS_PUBLIC_CONTEXT`` / ``CKKS_KEYS``), and relays sealed secret contexts
it cannot open.
"""

from __future__ import annotations

import numpy as np

from secfl.crypto.ckks import CkksAccumulator, CkksParams, CkksPublicContext
from secfl.errors import DuplicateSenderError, MalformedMessageError, ProtocolAbort
from secfl.protocols.ckks.client import KEY_HOLDER
from secfl.protocols.ckks.messages import CkksAggregate, CkksContextMessage, CkksKeys, CkksUpdate
from secfl.protocols.ckks.options import CkksOptions, UploadForm, round_codec
from secfl.protocols.network import server_id

__all__ = ["CkksServer"]

SERVER = server_id(0)


class CkksServer:
    """The aggregator's state: the public context (kept across rounds) and this round's sum."""

    def __init__(self, options: CkksOptions, params: CkksParams) -> None:
        self._opt = options
        self._params = params
        self.context: CkksPublicContext | None = None
        self._acc: CkksAccumulator | None = None
        self._round: tuple[int, frozenset[int], int] | None = None
        self._count = 0
        self.accepted: set[int] = set()

    def accept_public(self, data: bytes, rnd: int) -> None:
        """``CKKS_PUBLIC_CONTEXT`` from the key holder."""
        msg = CkksContextMessage.from_bytes(data, expect_round=rnd, expect_sender=KEY_HOLDER)
        self._set_context(msg.context)

    def _set_context(self, blob: bytes) -> None:
        ctx = CkksPublicContext.from_bytes(blob)
        if ctx.params != self._params:
            raise MalformedMessageError("the key holder's public context has other parameters than configured")
        self.context = ctx

    def accept_keys(self, data: bytes, rnd: int) -> dict[int, tuple[bytes, bytes, bytes]]:
        """``CKKS_KEYS``: keeps the public context (if sent); returns client -> (holder key, sealed
        secret context, the key holder's signature) to relay, unopened."""
        msg = CkksKeys.from_bytes(data, expect_round=rnd, expect_sender=KEY_HOLDER)
        if msg.public_context:
            self._set_context(msg.public_context)
        sigs = msg.signatures or (b"",) * len(msg.sealed)
        return {int(c): (k, s, g) for c, k, s, g in zip(msg.clients, msg.holder_keys, msg.sealed, sigs, strict=True)}

    def open_round(self, rnd: int, participants: frozenset[int], dim: int) -> None:
        if self.context is None:
            raise ProtocolAbort("the server has no CKKS public context (setup did not run)")
        round_codec(self._opt, self._params, dim, len(participants))  # refuses an overflowing round
        self._count = self._params.ciphertexts_for(dim + 1)
        self._acc = CkksAccumulator(self.context, self._count)
        self._round = (rnd, participants, dim)
        self.accepted = set()

    def intake(self, client: int, data: bytes) -> None:
        """Parse one ``CKKS_UPDATE`` strictly and add it (atomically)."""
        if self._acc is None or self._round is None:
            raise ProtocolAbort("setup() must run before receive()")
        rnd, participants, _ = self._round
        if client not in participants:
            raise MalformedMessageError(f"client {client} is not a participant of round {rnd}")
        if client in self.accepted:
            raise DuplicateSenderError(f"client {client} already contributed to round {rnd}")
        msg = CkksUpdate.from_bytes(data, expect_round=rnd, expect_sender=client)
        if self._opt.upload is UploadForm.SEEDED:
            self._acc.add_seeded(msg.ciphertexts)  # parses and loads the whole upload before adding
        else:
            batch = self._acc.context.ciphertexts_from_bytes(msg.ciphertexts, expect_count=self._count)
            self._acc.add(batch)  # only after the whole upload parsed: atomic
        self.accepted.add(client)

    def aggregate_message(self) -> bytes:
        """``CKKS_AGGREGATE`` for the key holder: the included clients and the sum."""
        if self._acc is None or self._round is None or not self.accepted:
            rnd = -1 if self._round is None else self._round[0]
            raise ProtocolAbort(f"round {rnd}: no client update was accepted")
        included = np.asarray(sorted(self.accepted), dtype=np.uint32)
        return CkksAggregate(self._round[0], SERVER, included, self._acc.result().to_bytes()).to_bytes()
