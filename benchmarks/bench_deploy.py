"""Deployment engine vs in-process simulator: the same experiment, both ways, side by side.

For every (protocol, number of sites) the script writes one experiment config (``--dataset``
/ ``--model``, ``clients`` = sites, ``sample_fraction`` 1, ``--rounds`` rounds, seed 0) and runs it

* **sim**: ``python -m secfl.cli run CONFIG --out DIR --quiet`` — every party in one process;
* **deploy**: ``secfl deploy server`` (a Flower SuperLink with TLS on 127.0.0.1, certificates
  created once per benchmark) and one ``secfl deploy client --site K`` process per site — real
  processes exchanging every message over gRPC/TLS on loopback.

Each run is a subprocess in its own session with a hard time limit (``--time-limit``); every
process it started (and their descendants) is ended afterwards, also on error or Ctrl-C. From
each ``results.json`` it takes the median over rounds of ``seconds.total`` (and of each phase),
the mean bytes up / down per client and the final accuracy, plus the wall seconds of the whole
command (process start-up and joining included). ``ckks-threshold`` uses the quorum
(n // 2 + 1, n) with n = min(sites, 5): site j < n plays quorum member j.

Rows report sim s/round, deploy s/round, their ratio (the cost of real processes, serialization
through Flower, TLS and polling), bytes per client in both engines (they should nearly agree: both
count the serialized protocol messages) and accuracy in both. A failing row records its error and
the benchmark goes on. Everything runs on one machine, so deploy's sites compete for its cores:
on a small machine the ratio grows with the number of sites for that reason alone.

Usage (writes JSON to ``--out`` and a Markdown table beside it, and prints the table)::

    python benchmarks/bench_deploy.py                       # 5 protocols x {3, 10} sites, 2 rounds
    python benchmarks/bench_deploy.py --sites 3 --protocols plaintext ckks --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secfl.protocols import PROTOCOLS  # noqa: E402
from secfl.runtime.config import dump_toml  # noqa: E402

ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
PHASES = ("train", "setup", "protect", "aggregate", "reveal", "eval", "total")


def secfl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "secfl.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _table() -> dict[int, tuple[int, str, int]]:
    if not Path("/proc").is_dir():
        return {}
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            out[int(entry)] = st
    return out


@dataclass
class Group:
    """Processes this benchmark started, each in its own session; :meth:`stop` ends them and every
    descendant seen while they ran (Flower's SuperLink, SuperNodes, Server/ClientApp processes)."""

    workdir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV,
                                 cwd=self.workdir, start_new_session=True)
        self.procs.append((name, p))
        return p

    def log(self, name: str, tail: int = 1500) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:].strip() if path.exists() else ""

    def track(self) -> None:
        table = _table()
        todo = [p.pid for _, p in self.procs]
        while todo:
            pid = todo.pop()
            for child, (ppid, _, start) in table.items():
                if ppid == pid and child not in self.seen:
                    self.seen[child] = start
                    todo.append(child)

    def wait(self, main: str, limit: float) -> int:
        """Wait for process ``main``; fail early if another one exits with an error."""
        end = time.monotonic() + limit
        procs = dict(self.procs)
        while time.monotonic() < end:
            self.track()
            if (rc := procs[main].poll()) is not None:
                return rc
            for name, p in self.procs:
                if name != main and p.poll() not in (None, 0):
                    raise RuntimeError(f"{name} exited with {p.returncode}: {self.log(name)}")
            time.sleep(0.5)
        raise TimeoutError(f"{main} still running after {limit:g} s: {self.log(main)}")

    def stop(self, grace: float = 25.0) -> list[str]:
        """End everything (Ctrl-C is ignored meanwhile); returns the pids still alive after SIGKILL."""
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._stop(grace)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _stop(self, grace: float) -> list[str]:
        self.track()
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)  # secfl deploy ends its own children on SIGTERM
                except ProcessLookupError:
                    pass
        end = time.monotonic() + grace
        for _, p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        left = []
        for pid, start in self.seen.items():
            st = _stat(pid)
            if st is not None and st[2] == start and st[1] != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                time.sleep(0.2)
                st = _stat(pid)
                if st is not None and st[2] == start and st[1] != "Z":
                    left.append(str(pid))
        return left


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the benchmark like Ctrl-C: its processes are ended first


def make_config(protocol: str, sites: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {"protocol": protocol, "model": args.model, "clients": sites, "rounds": args.rounds,
                           "seed": 0, "sample_fraction": 1.0, "data": {"name": args.dataset}}
    if protocol == "ckks-threshold":
        n = min(sites, 5)
        cfg["protocol_options"] = {"quorum": [n // 2 + 1, n]}
    return cfg


def summarize(results: Path, wall: float) -> dict[str, Any]:
    res = json.loads(results.read_text())
    rounds = res["rounds"]
    return {
        "s_per_round": statistics.median(r["seconds"]["total"] for r in rounds),
        "phases_median_s": {ph: statistics.median(r["seconds"].get(ph, 0.0) for r in rounds) for ph in PHASES},
        "bytes_up_per_client": statistics.fmean(r["bytes_up_per_client"] for r in rounds),
        "bytes_down_per_client": statistics.fmean(r["bytes_down_per_client"] for r in rounds),
        "accuracy": res["final"]["accuracy"],
        "dropped": sorted({c for r in rounds for c in r["dropped"]}),
        "engine": res.get("meta", {}).get("engine"),
        "device": res.get("meta", {}).get("device"),
        "wall_s": wall,
    }


def run_sim(config: Path, work: Path, limit: float) -> dict[str, Any]:
    group, out = Group(work), work / "out"
    try:
        t = time.perf_counter()
        group.start("sim", secfl_cmd("run", str(config), "--out", str(out), "--quiet"))
        if (rc := group.wait("sim", limit)) != 0:
            raise RuntimeError(f"secfl run exited with {rc}: {group.log('sim')}")
        return summarize(out / "results.json", time.perf_counter() - t)
    finally:
        if left := group.stop():
            print(f"warning: processes left behind by sim: {left}", file=sys.stderr)


def run_deploy(config: Path, work: Path, certs: Path, sites: int, protocol: str, args: argparse.Namespace
               ) -> dict[str, Any]:
    group, out, address = Group(work), work / "out", f"127.0.0.1:{free_port()}"
    try:
        t = time.perf_counter()
        group.start("server", secfl_cmd("deploy", "server", str(config), "--address", address, "--certs",
                                        str(certs), "--out", str(out), "--quiet",
                                        "--stage-timeout", str(args.stage_timeout),
                                        "--join-timeout", str(args.join_timeout)))
        for k in range(sites):
            group.start(f"site{k}", secfl_cmd("deploy", "client", "--server", address, "--certs", str(certs),
                                              "--site", str(k), "--protocol", protocol,
                                              "--connect-timeout", str(args.join_timeout),
                                              "--identity", str(certs / f"site-{k}.identity"),
                                              "--roster", str(certs / "roster.toml")))
        if (rc := group.wait("server", args.time_limit)) != 0:
            raise RuntimeError(f"secfl deploy server exited with {rc}: {group.log('server')}")
        wall = time.perf_counter() - t
        for k in range(sites):  # each site exits once the server has told it the run is over
            if group.wait(f"site{k}", 60) != 0:
                raise RuntimeError(f"site {k} failed: {group.log(f'site{k}')}")
        return summarize(out / "results.json", wall)
    finally:
        if left := group.stop():
            print(f"warning: processes left behind by deploy: {left}", file=sys.stderr)


def machine() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return {"cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "flwr": version("flwr"), "secfl": version("secfl"), "torch": version("torch"),
            "tenseal": version("tenseal"), "git": git.stdout.strip() or None,
            "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _f(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def markdown(report: dict[str, Any]) -> str:
    a = report["args"]
    lines = [f"deploy vs sim — {a['dataset']}/{a['model']}, {a['rounds']} round(s), seed 0; median s/round "
             f"(seconds.total), mean bytes per client per round; {report['machine']['cpu_count']} CPUs, "
             f"flwr {report['machine']['flwr']}", "",
             "| protocol | sites | sim s/round | deploy s/round | deploy/sim | up B/client sim | up deploy "
             "| down B/client sim | down deploy | acc sim | acc deploy | wall s sim | wall s deploy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        s, d = row.get("sim") or {}, row.get("deploy") or {}
        ratio = d["s_per_round"] / s["s_per_round"] if s and d and s["s_per_round"] > 0 else None
        lines.append(
            f"| {row['protocol']} | {row['sites']} | {_f(s.get('s_per_round'), '.2f')} "
            f"| {_f(d.get('s_per_round'), '.2f')} | {_f(ratio, '.2f')} "
            f"| {_f(s.get('bytes_up_per_client'), ',.0f')} | {_f(d.get('bytes_up_per_client'), ',.0f')} "
            f"| {_f(s.get('bytes_down_per_client'), ',.0f')} | {_f(d.get('bytes_down_per_client'), ',.0f')} "
            f"| {_f(s.get('accuracy'), '.4f')} | {_f(d.get('accuracy'), '.4f')} "
            f"| {_f(s.get('wall_s'), '.1f')} | {_f(d.get('wall_s'), '.1f')} |")
    errors = [f"- {r['protocol']} × {r['sites']}: {k}: {v.splitlines()[0][:300] if v else v}"
              for r in report["rows"] for k, v in r.get("errors", {}).items()]
    if report.get("interrupted"):
        lines += ["", "interrupted: rows without figures did not finish"]
    return "\n".join(lines + (["", "errors:", *errors] if errors else [])) + "\n"


def write(report: dict[str, Any], out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    return md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sites", type=int, nargs="+", default=[3, 10], help="numbers of sites (default: 3 10)")
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                   help="protocols (default: all five)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2)")
    p.add_argument("--dataset", default="digits", help="dataset (default digits)")
    p.add_argument("--model", default="cnn", help="model (default cnn)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy.json",
                   help="JSON output; a .md table is written beside it (default benchmarks/results/deploy.json)")
    p.add_argument("--stage-timeout", type=float, default=120.0, help="deploy server --stage-timeout (120 s)")
    p.add_argument("--join-timeout", type=float, default=300.0,
                   help="deploy server --join-timeout and sites' --connect-timeout (300 s)")
    p.add_argument("--time-limit", type=float, default=1800.0, help="hard limit per run, sim or deploy (1800 s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started with SIGINT ignored (`&`)
    signal.signal(signal.SIGTERM, _interrupt)
    report: dict[str, Any] = {"benchmark": "deploy-vs-sim", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "machine": machine(), "rows": []}
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        root = Path(tmp)
        certs = root / "certs"
        subprocess.run(secfl_cmd("deploy", "certs", str(certs)), env=ENV, check=True, capture_output=True)
        for k in range(max(args.sites)):  # each site's identity key, and the roster every site holds
            subprocess.run(secfl_cmd("deploy", "identity", str(certs), "--site", str(k)), env=ENV, check=True,
                           capture_output=True)
        subprocess.run(secfl_cmd("deploy", "roster", str(certs)), env=ENV, check=True, capture_output=True)
        try:
            for sites in args.sites:
                for protocol in args.protocols:
                    cfg = make_config(protocol, sites, args)
                    row: dict[str, Any] = {"protocol": protocol, "sites": sites, "config": cfg, "errors": {}}
                    report["rows"].append(row)
                    work = root / f"{protocol}-{sites}"
                    work.mkdir()
                    config = work / "exp.toml"
                    config.write_text(dump_toml(cfg))
                    for engine in ("sim", "deploy"):
                        print(f"{protocol} × {sites} sites: {engine} …", file=sys.stderr, flush=True)
                        (work / engine).mkdir()
                        try:
                            row[engine] = (run_sim(config, work / engine, args.time_limit) if engine == "sim" else
                                           run_deploy(config, work / engine, certs, sites, protocol, args))
                        except Exception as exc:  # one failing row does not stop the benchmark
                            row[engine] = None
                            row["errors"][engine] = f"{type(exc).__name__}: {exc}"
                            print(f"  failed: {row['errors'][engine][:500]}", file=sys.stderr)
                    s, d = row.get("sim"), row.get("deploy")
                    row["ratio_deploy_sim"] = (d["s_per_round"] / s["s_per_round"]
                                               if s and d and s["s_per_round"] > 0 else None)
                    write(report, args.out)  # a partial report survives an interrupted benchmark
        except KeyboardInterrupt:
            interrupted = True
            report["interrupted"] = True
    report["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(write(report, args.out))
    print(f"results: {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
