"""Start ``secfl deploy server`` and ``secfl deploy client`` as real processes on 127.0.0.1 (TLS with
certificates the test creates), bounded in time, and make sure none is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secfl.runtime.config import dump_toml
from secfl.runtime.flower.certs import write_certs, write_identity, write_roster

#: sites 0..IDENTITIES-1 get an identity key (and every site the roster)
IDENTITIES = 10
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secfl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "secfl.cli", *args]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Deployment:
    root: Path
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    before: set[int] = field(default_factory=lambda: live_pids())

    def __post_init__(self) -> None:
        self.certs = self.root / "certs"
        if not (self.certs / "ca.crt").exists():
            write_certs(self.certs)
        self.out = self.root / "out"
        self.ids = self.root / "ids"  # each site's identity key and the federation roster
        if not (self.ids / "roster.toml").exists():
            for k in range(IDENTITIES):
                write_identity(self.ids, k)
            write_identity(self.ids, None)  # the server's: it signs every request
            write_roster(self.ids)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, name: str, cmd: list[str]) -> Proc:
        log = self.root / f"{name}.log"
        fh = log.open("w")
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=self.root,
                             start_new_session=True)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def server(self, config: dict[str, Any], *extra: str, stage_timeout: float = 30.0, identity: bool = True) -> Proc:
        path = self.root / "exp.toml"
        path.write_text(dump_toml(config))
        ids = ["--identity", str(self.ids / "server.identity"), "--roster", str(self.ids / "roster.toml")]
        return self.start("server", secfl_cmd("deploy", "server", str(path), "--address", self.address, "--certs",
                                              str(self.certs), "--out", str(self.out), "--quiet",
                                              "--stage-timeout", str(stage_timeout), "--train-timeout", "60",
                                              "--join-timeout", "150", *(ids if identity else []), *extra))

    def client(self, site: int, *extra: str, name: str | None = None, certs: Path | None = None,
               address: str | None = None, connect_timeout: float = 60.0, identity: bool = True) -> Proc:
        ids = ["--identity", str(self.ids / f"site-{site}.identity"), "--roster", str(self.ids / "roster.toml")]
        return self.start(name or f"site{site}", secfl_cmd(
            "deploy", "client", "--server", address or self.address, "--certs", str(certs or self.certs),
            "--site", str(site), "--connect-timeout", str(connect_timeout),
            *(ids if identity and site < IDENTITIES else []), *extra))

    def wait(self, proc: Proc, timeout: float) -> int:
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.name} still running after {timeout:g} s:\n{proc.output()[-3000:]}") from None

    def progress(self) -> list[dict[str, Any]]:
        path = self.out / "progress.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> list[str]:
        """End everything this deployment started; returns the command lines still alive after."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        return leftovers(self.before)


def live_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def leftovers(before: set[int], wait: float = 15.0) -> list[str]:
    """Processes started since ``before`` that belong to Flower or secfl's CLI and are still alive
    (after up to ``wait`` s of grace); zombies do not count."""
    end = time.monotonic() + wait
    while True:
        found = []
        for pid in live_pids() - before - {os.getpid()}:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            except OSError:
                continue
            cmd = raw.replace(b"\0", b" ").decode(errors="replace")
            if state != "Z" and any(n in cmd for n in ("flwr", "flower", "secfl.cli", "bin/secfl ")):
                found.append(f"{pid}: {cmd}")
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.5)
