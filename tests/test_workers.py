"""Worker processes cannot hang or outlive the run: a dead worker fails the run at once with a
typed error, Ctrl-C ends the pool, and workers exit when their driver is killed."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from secfl.crypto._procs import describe_exit
from secfl.errors import SecFLError, WorkerLostError
from secfl.runtime.workers import TrainingPool

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- process table
def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else (int(fields[1]), fields[0])


def _children(pid: int, marker: bytes = b"multiprocessing") -> list[int]:
    """Live children of ``pid`` started by multiprocessing (workers, resource tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None and st[0] == pid:
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _workers(pid: int, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := _children(pid, b"spawn_main")) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} workers started"
        time.sleep(0.05)
    return found


def _gone_after(pids: list[int], timeout: float) -> float:
    """Seconds until every pid has exited (fails the test after ``timeout``)."""
    t = time.monotonic()
    while alive := [p for p in pids if _stat(p) is not None]:
        assert time.monotonic() - t < timeout, f"processes {alive} still running after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - t


class _Driver:
    """A driver in its own process group (so the test can end it and anything it left)."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.errors.append), daemon=True)]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def stderr(self) -> list[str]:
        """The driver's stderr lines (call once it has exited)."""
        self._readers[1].join(timeout=10)
        return [part for line in self.errors for part in line.split("\r") if part.strip()]

    def wait_line(self, start: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"driver printed no line starting {start!r} in {timeout} s") from None
            if line.lstrip().startswith(start):
                return line

    def end(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the driver's group: anything left behind
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    return ["-m", "secfl.cli", "run", "--protocol", "plaintext", "--workers", "2", "--clients", "4", "--rounds",
            "400", "--dataset", "synthetic", "--set", "data.synthetic_samples=400", "--epochs", "1",
            "--out", str(tmp_path / "out"), *extra]


# ----------------------------------------------------------------------------- in-process pool
def _no_init() -> None:
    pass


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fail(x: int) -> int:
    raise ValueError(f"task {x} fails")


def test_pool_maps_in_order_and_reraises_task_errors():
    pool = TrainingPool(2, _no_init)
    try:
        pids = pool.map(_nap, [0.0] * 6)
        assert set(pids) <= set(pool.pids)
        with pytest.raises(ValueError, match="task [12] fails"):  # the first failure to arrive
            pool.map(_fail, [1, 2])
        with pytest.raises(SecFLError, match="closed"):  # a failed map closes the pool
            pool.map(_nap, [0.0])
    finally:
        pool.close()
    assert _children(os.getpid(), b"spawn_main") == []


def test_a_worker_killed_mid_task_fails_the_map_at_once():
    pool = TrainingPool(2, _no_init)
    workers = pool.pids
    try:
        pool.map(_nap, [0.0, 0.0])  # both started
        killed: list[float] = []
        timer = threading.Timer(0.5, lambda: (os.kill(workers[0], signal.SIGKILL), killed.append(time.monotonic())))
        timer.start()
        with pytest.raises(WorkerLostError, match=f"process {workers[0]} was killed by SIGKILL"):
            pool.map(_nap, [30.0, 30.0, 30.0])
        waited = time.monotonic() - killed[0]
    finally:
        pool.close()
    assert waited < 3.0, f"the map noticed the dead worker after {waited:.1f} s"
    assert _gone_after(workers, 5.0) < 5.0  # the surviving worker was ended with the pool


def test_describe_exit():
    assert describe_exit(-9).startswith("was killed by SIGKILL")
    assert describe_exit(1) == "exited with status 1"


# ----------------------------------------------------------------------------- the CLI run
def test_a_killed_training_worker_ends_the_run_with_one_line(tmp_path):
    driver = _Driver(_cli(tmp_path))
    try:
        driver.wait_line("1 ")  # round 1 done: the workers are up
        worker = _workers(driver.proc.pid, 2)[0]
        os.kill(worker, signal.SIGKILL)
        t = time.monotonic()
        code = driver.proc.wait(timeout=20)
        waited = time.monotonic() - t
    finally:
        driver.end()
    err = driver.stderr()
    assert code == 2
    assert err[-1].startswith(f"secfl: error: WorkerLostError: training worker process {worker} was killed by SIGKILL")
    assert not [line for line in err if "Traceback" in line]
    assert waited < 10.0, f"the run failed {waited:.1f} s after the worker was killed"


def test_training_workers_exit_when_the_driver_is_killed(tmp_path):
    driver = _Driver(_cli(tmp_path))
    try:
        driver.wait_line("1 ")
        _workers(driver.proc.pid, 2)
        left = _children(driver.proc.pid)  # workers and the resource tracker
        os.kill(driver.proc.pid, signal.SIGKILL)
        assert _gone_after(left, 10.0) < 10.0
    finally:
        driver.end()


# ----------------------------------------------------------------------------- busy workers
_BUSY = {
    # training pool workers in a 60 s task
    "pool": "from secfl.runtime.workers import TrainingPool\n"
            "import os, time\n"
            "pool = TrainingPool(2, os.getpid)\n"
            "pool.map(time.sleep, [0, 0])\n"
            "print('ready', flush=True)\n"
            "pool.map(time.sleep, [60, 60])\n",
    # secagg host workers in a 60 s helper job
    "host": "from secfl.protocols.hosts import ProcessHost\n"
            "import time\n"
            "host = ProcessHost(2)\n"
            "print('ready', flush=True)\n"
            "host.run(time.sleep, [60, 60])\n",
    # a ProcessPoolExecutor started like CkksEncryptor's (workers share its call queue: no EOF)
    "executor": "from concurrent.futures import ProcessPoolExecutor\n"
                "import multiprocessing, os, time\n"
                "from secfl.crypto._procs import worker_initializer\n"
                "ex = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'),\n"
                "                         initializer=worker_initializer, initargs=(None,))\n"
                "list(ex.map(time.sleep, [0.5, 0.5]))\n"
                "print('ready', flush=True)\n"
                "list(ex.map(time.sleep, [60, 60]))\n",
}


@pytest.mark.parametrize("kind", sorted(_BUSY))
def test_busy_workers_exit_when_the_driver_is_killed(kind):
    driver = _Driver(["-c", _BUSY[kind]])
    try:
        driver.wait_line("ready")
        workers = _workers(driver.proc.pid, 2)
        left = _children(driver.proc.pid)
        time.sleep(0.3)  # the workers are inside their 60 s task
        os.kill(driver.proc.pid, signal.SIGKILL)
        assert _gone_after(left, 5.0) < 5.0
        assert all(_stat(w) is None for w in workers)
    finally:
        driver.end()


def test_ctrl_c_ends_a_busy_pool_at_once():
    driver = _Driver(["-c", _BUSY["pool"]])
    try:
        driver.wait_line("ready")
        workers = _workers(driver.proc.pid, 2)
        time.sleep(0.3)
        t = time.monotonic()
        os.killpg(driver.proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: workers ignore it
        driver.proc.wait(timeout=10)
        assert time.monotonic() - t < 5.0
        assert _gone_after(workers, 5.0) < 5.0
        assert any("KeyboardInterrupt" in line for line in driver.stderr())
    finally:
        driver.end()


def test_a_dead_secagg_worker_is_one_line_from_the_cli(monkeypatch, capsys):
    import secfl.cli as cli
    from secfl.protocols.hosts import WorkerDied

    def dies(args):
        raise WorkerDied("secfl worker process 1 was killed by SIGKILL (e.g. by the out-of-memory killer)")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, dies))
    assert cli.main(["run", "--protocol", "secagg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["secfl: error: WorkerDied: secfl worker process 1 was killed by SIGKILL (e.g. by the out-of-memory"
                   " killer)"]


def _with_func(parser: Any, func: Any) -> Any:
    parse = parser.parse_args

    def parse_args(argv: Any = None) -> Any:
        args = parse(argv)
        args.func = func
        return args

    parser.parse_args = parse_args
    return parser
