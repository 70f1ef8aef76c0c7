"""Party hosts: clients in this process or in worker processes give the same answers."""

from __future__ import annotations

import pytest

from secfl.errors import ConfigError, MalformedMessageError
from secfl.protocols.hosts import InlineHost, ProcessHost, WorkerCrashed, WorkerDied, auto_processes, make_host


class Party:
    """A toy client with offline work: ``prepare`` fills ``steps`` one at a time."""

    def __init__(self, pid: int, scale: int) -> None:
        self.pid, self.scale = pid, scale
        self.ready = False
        self.steps: list[int] = []
        self.released = 0
        self.used = False
        self.done = False  # prepare() said there is nothing more to do

    def open(self) -> None:
        self.ready = True

    def prepare(self) -> bool | None:
        if self.used:
            return False
        if not self.ready:
            return None
        if len(self.steps) == 3:
            self.done = True
            return False
        self.steps.append(len(self.steps))
        return True

    @property
    def prepared(self) -> bool:
        return bool(self.steps) and not self.used

    def release(self) -> None:
        self.steps = []
        self.released += 1

    def use(self, x: int) -> bytes:
        self.used = True
        return f"{self.pid}:{x * self.scale}:{len(self.steps)}".encode()

    def fail(self) -> None:
        raise MalformedMessageError(f"party {self.pid} refuses")

    def crash(self) -> None:
        raise ZeroDivisionError("a bug")

    def state(self) -> tuple[int, int]:
        return len(self.steps), self.released

    def finished(self) -> bool:
        return self.done


def _double(chunk: list[int]) -> int:
    return 2 * sum(chunk)


@pytest.fixture(scope="module")
def procs():
    host = ProcessHost(2)
    yield host
    host.close()


@pytest.mark.parametrize("kind", ["inline", "process"])
def test_calls_and_typed_errors(kind, procs):
    host = InlineHost() if kind == "inline" else procs
    epoch = host.create(Party, [5, 1, 3, 2], 10)
    assert host.epoch == epoch
    out = host.call("use", {1: (1,), 2: (2,), 5: (5,)})
    assert list(out) == [1, 2, 5]  # the caller's order
    assert [v.decode().split(":")[:2] for v in out.values()] == [["1", "10"], ["2", "20"], ["5", "50"]]
    errs = host.call("fail", {3: ()})
    assert isinstance(errs[3], MalformedMessageError) and "party 3 refuses" in str(errs[3])
    assert sorted(host.run(_double, [[1, 2], [3], [4]])) == [6, 6, 8]
    assert host.seconds >= 0
    assert host.create(Party, [0], 1) == epoch + 1


def test_worker_bug_is_reported_with_its_traceback(procs):
    procs.create(Party, [0, 1], 1)
    with pytest.raises(WorkerCrashed, match="ZeroDivisionError"):
        procs.call("crash", {0: ()})
    assert procs.call("use", {1: (3,)})[1].startswith(b"1:3")  # the worker survives a bug report


def test_offline_work_runs_ahead_in_the_given_order_and_is_released(procs):
    procs.create(Party, list(range(6)), 1, offline=[4, 0, 2])
    assert all(s == (0, 0) for s in procs.call("state", {i: () for i in range(6)}).values())  # not ready yet
    procs.call("open", {i: () for i in range(6)})
    import time

    # wait until every offered client has *finished* its offline work (prepare() returned False),
    # not merely reached 3 steps: under load a worker could otherwise still be on client 4 when
    # client 0 is used, and offer it work again after its release (seen once: (0, 2) != (0, 1))
    deadline = time.monotonic() + 60
    while not all(procs.call("finished", {i: () for i in (0, 2, 4)}).values()):
        assert time.monotonic() < deadline, "offline work did not finish within 60 s"
        time.sleep(0.02)
    states = procs.call("state", {i: () for i in range(6)})
    assert states[0][0] == states[2][0] == states[4][0] == 3
    assert states[1] == states[3] == states[5] == (0, 0)  # not offered offline work
    # client 0 (worker 0) is used after 4 in the offline order: 4's held work is released
    assert procs.call("use", {0: (1,)})[0] == b"0:1:3"
    assert procs.call("state", {4: ()})[4] == (0, 1)
    assert procs.call("use", {1: (1,)})[1] == b"1:1:0"  # no precomputation: done on demand


def test_inline_party_access_and_process_refusal(procs):
    inline = InlineHost()
    inline.create(Party, [7], 2)
    assert inline.party(7).scale == 2
    procs.create(Party, [7], 2)
    with pytest.raises(ConfigError, match="worker process"):
        procs.party(7)


def test_closed_host_and_bad_sizes():
    host = ProcessHost(2)
    host.close()
    host.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        host.create(Party, [0], 1)
    with pytest.raises(ConfigError, match="processes >= 2"):
        ProcessHost(1)
    assert isinstance(make_host(1), InlineHost)
    assert auto_processes(10) == 1
    assert 1 <= auto_processes(1000) <= 8


SCRIPT = """
import numpy as np
import secfl

x = np.linspace(-1, 1, 100 * 4).reshape(100, 4)
res = secfl.secure_mean(x, np.ones(100), protocol="secagg", seed=1)
print("MEAN", float(np.abs(res.mean - x.mean(0)).max()))
"""


@pytest.mark.parametrize("how", ["unguarded-file", "stdin"])
def test_automatic_processes_fall_back_when_workers_cannot_spawn(tmp_path, how):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    cmd, stdin = ([sys.executable, str(script)], None) if how == "unguarded-file" else ([sys.executable, "-"], SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("MEAN")]
    assert len(lines) == 1 and float(lines[0].split()[1]) < 0.01  # one result, computed in-process
    assert "clients run in this process" in out.stderr


def test_a_killed_worker_fails_the_round_and_the_next_round_starts_fresh_workers():
    import numpy as np

    from secfl.protocols import RoundSpec, make_protocol
    from secfl.protocols.network import Network

    proto = make_protocol("secagg", processes=2)
    try:
        x = np.linspace(-1, 1, 6 * 5).reshape(6, 5)
        rnd = proto.open_round(RoundSpec(0, tuple(range(6)), 5), Network())
        rnd.setup()
        host = rnd._host
        host._procs[1].kill()
        host._procs[1].join(timeout=10)
        with pytest.raises(WorkerDied, match="worker process 1 was killed by SIGKILL"):
            for c in range(6):
                rnd.receive(c, rnd.protect(c, x[c], 1.0))
        assert not host.alive
        rnd = proto.open_round(RoundSpec(1, tuple(range(6)), 5), Network())
        rnd.setup()
        for c in range(6):
            rnd.receive(c, rnd.protect(c, x[c], 1.0))
        assert np.abs(rnd.reveal().mean - x.mean(0)).max() <= rnd.error_bound
    finally:
        proto.close()
