"""One site's long-lived program (``secfl deploy client``): its data, model and protocol parties.

Stages it answers, besides the protocol's own and ``fl.train`` (:class:`~secfl.runtime.federation.Site`):

- ``fl.hello``: ``RUN_CONFIG`` (the experiment's TOML) → ``SITE_HELLO`` (site id and the party ids
  it plays). The site builds its :class:`~secfl.runtime.federation.Site` from that config — the
  protocol must be the one the operator pinned with ``--protocol``, if any — and loads its data
  (partition ``site`` of a built-in dataset, or the operator's own file).
- ``fl.finish``: ``RUN_FINISH`` (status, reason): the run is over (or this site was refused, e.g.
  its id is taken); the program exits with that status.

Requests arrive over the local pipe (:mod:`secfl.runtime.flower.ipc`) from the ClientApp that
Flower starts for each message; they are handled one at a time. With an identity key and a roster
the site accepts only requests the server signed and signs every reply
(:mod:`secfl.protocols.envelope`).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secfl.errors import ConfigError, MalformedMessageError, SecFLError
from secfl.protocols.network import server_id
from secfl.protocols.wire import Message, MsgType, Reader, Writer
from secfl.runtime.flower import ipc

__all__ = ["NOT_JOINED", "RunConfig", "SiteHello", "RunFinish", "SiteProgram", "HELLO_STAGE", "FINISH_STAGE"]

log = logging.getLogger("secfl")

HELLO_STAGE = "fl.hello"
FINISH_STAGE = "fl.finish"
_MAX_TEXT = 1 << 20
#: what a site answers to a stage before it joined (e.g. restarted with the same node id)
NOT_JOINED = "before the server's hello"


@dataclass(frozen=True)
class RunConfig(Message):
    """Server → site: the experiment's configuration (TOML text)."""

    TYPE = MsgType.RUN_CONFIG
    round: int
    sender: int
    toml: str

    def _write(self, w: Writer) -> None:
        w.blob(self.toml.encode())

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> RunConfig:
        try:
            return cls(round, sender, r.blob(_MAX_TEXT).decode())
        except UnicodeDecodeError:
            raise MalformedMessageError("RUN_CONFIG: the configuration is not UTF-8") from None


@dataclass(frozen=True)
class SiteHello(Message):
    """Site → server: its site id (the sender) and the party ids it plays."""

    TYPE = MsgType.SITE_HELLO
    round: int
    sender: int
    parties: np.ndarray  # uint32

    def _write(self, w: Writer) -> None:
        w.array(np.asarray(self.parties, dtype=np.uint32))

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> SiteHello:
        parties = r.array("u4")
        if not 1 <= parties.size <= 64 or len(set(parties.tolist())) != parties.size:
            raise MalformedMessageError("SITE_HELLO: 1 to 64 distinct party ids")
        return cls(round, sender, parties)


@dataclass(frozen=True)
class RunFinish(Message):
    """Server → site: the run is over (status 0) or this site is refused (status 1, reason)."""

    TYPE = MsgType.RUN_FINISH
    round: int
    sender: int
    status: int
    reason: str

    def _write(self, w: Writer) -> None:
        w.u8(self.status).blob(self.reason.encode())

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> RunFinish:
        status = r.u8()
        try:
            return cls(round, sender, status, r.blob(_MAX_TEXT).decode())
        except UnicodeDecodeError:
            raise MalformedMessageError("RUN_FINISH: the reason is not UTF-8") from None


class SiteProgram:
    """Serves the site's pipe; builds the :class:`Site` when the server says hello."""

    def __init__(self, site: int, *, data_path: str | None = None, expect_protocol: str | None = None,
                 identity: str | None = None, roster: str | None = None) -> None:
        from secfl.crypto.identity import IdentityKey, Roster

        self.site_id = site
        from secfl.protocols.envelope import SiteEnvelopes

        self._identity = IdentityKey.load(identity) if identity else None
        self._roster = Roster.load(roster) if roster else None
        self._envelopes = None
        if self._identity is not None and self._roster is not None:
            self._envelopes = SiteEnvelopes(self._identity, site, self._roster)
        self.data_path = data_path
        self.expect_protocol = expect_protocol
        self.site: Any = None  # secfl.runtime.federation.Site, built on hello
        self.finished = threading.Event()
        #: (exit status, message) once finished
        self.outcome: tuple[int, str] = (0, "")
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="secfl-site-")
        os.chmod(self._dir, 0o700)
        self.socket_path = str(Path(self._dir) / "site.sock")
        self._server: socket.socket | None = None

    def start(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.socket_path)
        srv.listen(16)
        self._server = srv
        threading.Thread(target=self._accept, name="secfl-site-pipe", daemon=True).start()

    def _accept(self) -> None:
        if self._server is None:
            raise ConfigError("SiteProgram.start() must run before the pipe accepts requests")
        while not self.finished.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                party, stage, data = ipc.read_request(conn)
                with self._lock:
                    if self._envelopes is None:
                        answer = self.handle(party, stage, data)
                    else:
                        answer = self._envelopes.answer(stage, party, data,
                                                        lambda body: self.handle(party, stage, body))
                ipc.write_answer(conn, True, answer)
            except SecFLError as exc:
                text = f"{type(exc).__name__}: {exc}"
                log.info("site %d: %s", self.site_id, text)
                try:
                    ipc.write_answer(conn, False, text.encode())
                except OSError:
                    pass
            except OSError:
                pass

    def handle(self, party: int, stage: str, data: bytes) -> bytes:
        if stage == HELLO_STAGE:
            return self._hello(data)
        if stage == FINISH_STAGE:
            msg = RunFinish.from_bytes(data, expect_sender=server_id(0))
            self.outcome = (int(msg.status), msg.reason)
            self.finished.set()
            return b""
        if self.site is None:
            raise MalformedMessageError(f"site {self.site_id}: stage {stage!r} {NOT_JOINED}")
        return self.site.handle(party, stage, data)

    def _hello(self, data: bytes) -> bytes:
        from secfl.fl.data import DataConfig, DatasetName, load_dataset
        from secfl.runtime.config import ExperimentConfig, tomllib
        from secfl.runtime.federation import Site

        msg = RunConfig.from_bytes(data, expect_sender=server_id(0))
        try:
            cfg = ExperimentConfig.from_dict(tomllib.loads(msg.toml))
        except tomllib.TOMLDecodeError as exc:
            raise MalformedMessageError(f"RUN_CONFIG: not TOML ({exc})") from None
        try:
            if self.expect_protocol is not None and cfg.protocol != self.expect_protocol:
                raise ConfigError(f"the server runs protocol {cfg.protocol!r}; this site accepts only"
                                  f" {self.expect_protocol!r}")
            own = None
            if self.data_path is not None:
                kind = "mnist-idx" if Path(self.data_path).is_dir() else "npz"
                if not Path(self.data_path).exists():
                    raise ConfigError(f"--data {self.data_path}: no such file or directory")
                own = load_dataset(DataConfig(name=DatasetName(kind), path=self.data_path), cfg.seed)
            if self.site is None:
                self.site = Site(cfg, self.site_id, data=own, identity=self._identity, roster=self._roster)
        except SecFLError as exc:
            self.outcome = (1, f"{type(exc).__name__}: {exc}")
            self.finished.set()
            raise
        return SiteHello(0, self.site_id, np.asarray(sorted(self.site.parties), dtype=np.uint32)).to_bytes()

    def close(self) -> None:
        self.finished.set()
        if self._server is not None:
            self._server.close()
        if self.site is not None:
            self.site.close()
        try:
            os.unlink(self.socket_path)
            os.rmdir(self._dir)
        except OSError:
            pass
