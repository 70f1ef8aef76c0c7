"""``secfl deploy server`` and ``secfl deploy client``: Flower's processes, started and ended for you.

Server: starts Flower's SuperLink with TLS on ``--address`` (``flower-superlink``), submits secfl's
Flower app (a two-file app bundle written to a private directory; the code is the installed
``secfl``) with ``flwr run``, prints each round as the ServerApp finishes it, and stops the
SuperLink when the run ends. Client: starts the site's program (:class:`SiteProgram`) and a
SuperNode (:mod:`secfl.runtime.flower.supernode`) that connects to the server over TLS, and exits
when the server says the run is over — or, with a one-line message and a nonzero status, when
the server cannot be reached, goes away, refuses the site, or the site's data does not fit.
Every child process is in its own process group and is ended on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secfl.errors import ConfigError, ProtocolAbort

__all__ = ["deploy_server", "deploy_client", "parse_address"]

_FAB_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "secfl-app"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "secfl"

[tool.flwr.app.components]
serverapp = "secfl_server:server_app"
clientapp = "secfl_client:client_app"

[tool.flwr.app.config]
config-file = ""
out-dir = ""
stage-timeout = 120.0
train-timeout = 600.0
join-timeout = 300.0
record-file = ""
node-sites = ""
identity-file = ""
roster-file = ""
"""


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _env(home: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", FLWR_HOME=str(home),
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")  # Flower's own knob (default 1 s per task)
    return env


def _need(certs: Path, names: tuple[str, ...]) -> None:
    missing = [n for n in names if not (certs / n).is_file()]
    if missing:
        raise ConfigError(f"{certs}: missing {', '.join(missing)} (create them with `secfl deploy certs {certs}`)")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Children:
    """Child processes, each in its own session (ended with its parent on Linux); all ended on
    :meth:`stop`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        fh = log.open("wb")
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def stop(self, grace: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ProtocolAbort(f"the SuperLink exited at start ({' / '.join(tail)})")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise ProtocolAbort(f"the SuperLink did not listen on {host}:{port} within {timeout:g} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deploy_server(config: str, address: str, certs: str, out: str, *, stage_timeout: float = 120.0,
                  train_timeout: float = 600.0, join_timeout: float = 300.0, record: str | None = None,
                  authorized_keys: str | None = None, identity: str | None = None, roster: str | None = None,
                  on_round: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run the whole experiment with Flower; returns ``out``. Raises a typed error on failure.

    ``authorized_keys``: a directory of ``site-K.pub`` files. Flower's SuperNode authentication is
    then on: only nodes holding one of these keys connect, and each plays only its own site.
    ``identity`` / ``roster``: the server's identity key and the federation roster; every request
    is then signed and every reply checked (:mod:`secfl.protocols.envelope`). Required by the
    protocols whose parties sign (all but ``plaintext``)."""
    from secfl.protocols import get_protocol
    from secfl.runtime.config import ExperimentConfig, load_toml
    from secfl.runtime.flower.certs import authorized_sites
    from secfl.runtime.flower.server_app import load_envelope_keys

    cfg_path = Path(config).resolve()
    cfg = ExperimentConfig.from_dict(load_toml(str(cfg_path)))  # refuse a bad config before starting anything
    if (identity is None) != (roster is None):
        raise ConfigError("--identity and --roster go together (the server signs with one, checks with the other)")
    if identity is None and getattr(get_protocol(cfg.protocol), "needs_identities", False):
        raise ConfigError(f"{cfg.protocol} across sites needs the server's identity key and the federation roster"
                          " (secfl deploy identity DIR --server / secfl deploy roster DIR; --identity, --roster)")
    if identity is not None and roster is not None:
        identity, roster = str(Path(identity).resolve()), str(Path(roster).resolve())
        load_envelope_keys(identity, roster)  # refuse bad keys before starting anything
    site_keys = authorized_sites(authorized_keys) if authorized_keys else {}
    stray = sorted(k for k in site_keys if k >= cfg.clients)
    if stray:
        raise ConfigError(f"--authorized-keys lists site(s) {stray}; this federation has sites 0..{cfg.clients - 1}")
    host, port = parse_address(address)
    cert_dir = Path(certs).resolve()
    _need(cert_dir, ("ca.crt", "server.crt", "server.key"))
    out_dir = Path(out).resolve()
    if (out_dir / "results.json").exists() or (out_dir / "progress.jsonl").exists():
        raise ConfigError(f"{out_dir} already holds a run; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="secfl-server-"))
    os.chmod(work, 0o700)
    home, fab = work / "flwr_home", work / "app"
    home.mkdir()
    fab.mkdir()
    (fab / "pyproject.toml").write_text(_FAB_PYPROJECT)
    (fab / "secfl_server.py").write_text("from secfl.runtime.flower import server_app as _s\n\n"
                                         "server_app = _s.server_app\n")
    (fab / "secfl_client.py").write_text("from secfl.runtime.flower import client_app as _c\n\n"
                                         "client_app = _c.client_app\n")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "secfl"\n\n[superlink.secfl]\naddress = "{host}:{port}"\n'
        f'root-certificates = "{cert_dir / "ca.crt"}"\n')
    env = _env(home)
    bindir = Path(sys.executable).parent
    kids = _Children()
    try:
        tls = ["--ssl-ca-certfile", str(cert_dir / "ca.crt"), "--ssl-certfile", str(cert_dir / "server.crt"),
               "--ssl-keyfile", str(cert_dir / "server.key")]
        auth = ["--enable-supernode-auth"] if site_keys else []
        link = kids.start([str(bindir / "flower-superlink"), *tls, "--host", host, "--port", str(port),
                           "--disable-runtime-dependency-installation", *auth], env, out_dir / "superlink.log")
        _wait_port(host, port, link, 60.0, out_dir / "superlink.log")
        nodes = {_register(bindir, env, key): site for site, key in site_keys.items()}
        run_cfg = (f'config-file="{cfg_path}" out-dir="{out_dir}" stage-timeout={float(stage_timeout)} '
                   f"train-timeout={float(train_timeout)} join-timeout={float(join_timeout)}")
        if nodes:
            run_cfg += ' node-sites="' + " ".join(f"{n}:{s}" for n, s in sorted(nodes.items())) + '"'
        if record:
            run_cfg += f' record-file="{Path(record).resolve()}"'
        if identity is not None:
            run_cfg += f' identity-file="{identity}" roster-file="{roster}"'
        sub = subprocess.run([str(bindir / "flwr"), "run", str(fab), "secfl", "--run-config", run_cfg,
                              "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
        try:
            run_id = int(json.loads(sub.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise ProtocolAbort(f"flwr run failed: {(sub.stdout + sub.stderr).strip()[-500:]}") from None
        seen = 0
        limit = join_timeout + cfg.rounds * (train_timeout + 8 * stage_timeout) + 60
        end = time.monotonic() + limit
        status = ""
        while time.monotonic() < end:
            seen = _report_progress(out_dir, seen, on_round)
            ls = subprocess.run([str(bindir / "flwr"), "ls", "--run-id", str(run_id), "--format", "json"], env=env,
                                capture_output=True, text=True, timeout=60)
            try:
                status = str(json.loads(ls.stdout)["runs"][0]["status"])
            except (ValueError, KeyError, IndexError, TypeError):
                status = ""
            if status.startswith("finished"):
                break
            if link.poll() is not None:
                raise ProtocolAbort("the SuperLink stopped during the run (see superlink.log)")
            time.sleep(1.0)
        _report_progress(out_dir, seen, on_round)
        error = out_dir / "error.txt"
        if error.exists():
            raise ProtocolAbort(error.read_text().splitlines()[0])
        if not (out_dir / "results.json").exists():
            raise ProtocolAbort(f"the run ended without results (status {status or 'unknown'}; see {out_dir})")
        return out_dir
    finally:
        kids.stop()
        shutil.rmtree(work, ignore_errors=True)


def _register(bindir: Path, env: dict[str, str], key: Path) -> int:
    """Register one site's public key with the SuperLink (``flwr supernode register``): its node id."""
    sub = subprocess.run([str(bindir / "flwr"), "supernode", "register", str(key), "secfl", "--format", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    try:
        return int(json.loads(sub.stdout)["node-id"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{key}: Flower did not register this key ({(sub.stdout + sub.stderr).strip()[-300:]})"
                          ) from None


def _report_progress(out: Path, seen: int, on_round: Callable[[dict[str, Any]], None] | None) -> int:
    path = out / "progress.jsonl"
    if not path.exists():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        if on_round is not None and line.strip():
            on_round(json.loads(line))
    return len(lines)


def deploy_client(server: str, certs: str, site: int, *, data: str | None = None, protocol: str | None = None,
                  connect_timeout: float = 60.0, log_dir: str | None = None,
                  auth_key: str | None = None, identity: str | None = None,
                  roster: str | None = None) -> tuple[int, str]:
    """Run site ``site`` until the server ends the run: ``(exit status, message)``. ``auth_key``:
    the site's node-authentication private key (``secfl deploy node-key``), for a server that
    requires it. ``identity`` / ``roster``: the site's identity key file and the federation
    roster (``secfl deploy identity`` / ``roster``), for protocols whose parties sign."""
    from secfl.runtime.flower.site import SiteProgram

    host, port = parse_address(server)
    cert_dir = Path(certs).resolve()
    _need(cert_dir, ("ca.crt",))
    if not 0 < connect_timeout <= 86_400:
        raise ConfigError(f"--connect-timeout must be in (0, 86400] seconds, got {connect_timeout}")
    if isinstance(site, bool) or not isinstance(site, int) or site < 0:
        raise ConfigError(f"--site must be an integer >= 0, got {site!r}")
    if data is not None and not Path(data).exists():
        raise ConfigError(f"--data {data}: no such file or directory")
    if auth_key is not None and not Path(auth_key).is_file():
        raise ConfigError(f"--auth-key {auth_key}: no such file")
    for flag, path in (("--identity", identity), ("--roster", roster)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    program = SiteProgram(site, data_path=data, expect_protocol=protocol, identity=identity, roster=roster)
    program.start()
    logs = Path(log_dir) if log_dir else Path(program.socket_path).parent
    logs.mkdir(parents=True, exist_ok=True)
    env = _env(Path(program.socket_path).parent / "flwr_home")
    kids = _Children()
    try:
        node_cfg = f'secfl-site={site} secfl-socket="{program.socket_path}"'
        node = kids.start([sys.executable, "-m", "secfl.runtime.flower.supernode", "--superlink", f"{host}:{port}",
                           "--root-certificates", str(cert_dir / "ca.crt"), "--node-config", node_cfg,
                           "--host", "127.0.0.1", "--port", str(_free_port()),
                           "--max-wait-time", str(float(connect_timeout)),
                           *(["--auth-supernode-private-key", str(Path(auth_key).resolve())] if auth_key else [])],
                          env, logs / f"supernode-{site}.log")
        while not program.finished.wait(0.2):
            if node.poll() is not None:
                if _auth_refused(logs / f"supernode-{site}.log"):
                    return 1, (f"the server at {host}:{port} refuses this site's node key (node authentication:"
                               " pass --auth-key with the key whose .pub the server registered for this site)")
                joined = program.site is not None
                what = "lost the server" if joined else "cannot reach the server"
                return 1, (f"{what} at {host}:{port} (no connection for {connect_timeout:g} s; check the address,"
                           f" that the server runs, and that its certificate is valid and signed by"
                           f" {cert_dir / 'ca.crt'})")
        status, reason = program.outcome
        if status == 0:
            return 0, f"site {site}: the server ended the run ({reason})"
        return 1, f"site {site}: {reason}"
    finally:
        kids.stop()
        program.close()


def _auth_refused(log: Path) -> bool:
    """Whether the SuperNode stopped because the SuperLink refused its authentication."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return any(marker in text for marker in ("[code: 2001]", "[code: 2004]", "Failed to activate SuperNode",
                                             "SuperNode authentication is enabled"))
