"""The training pool: ``workers`` spawned processes that train clients and never hang the run.

Each worker is started once with the run's data (``initializer(*initargs)``), then serves
tasks over its own pipe; :meth:`TrainingPool.map` hands a task to each idle worker and waits
on the pipes and the workers' process sentinels together, so:

- a worker that dies (a signal, the out-of-memory killer, a crash in native code) makes
  :meth:`~TrainingPool.map` raise :class:`~secfl.errors.WorkerLostError` at once, naming the
  process and how it ended; no retry (its in-memory state is gone, the run stops);
- the first task to fail (in order of arrival: fail fast) is re-raised here with the worker's
  traceback as its cause, and the pool is closed;
- Ctrl-C interrupts the wait in this process (workers ignore SIGINT) and the pool is ended;
- :meth:`~TrainingPool.close` never blocks for long: idle workers are asked to exit, any
  still running after a few seconds are killed;
- workers exit by themselves when this process dies (:func:`secfl.crypto._procs.exit_with_parent`).

Why not ``concurrent.futures.ProcessPoolExecutor``: on Python 3.11 a worker killed while the
executor spawns another can leave its manager thread joining a worker it never terminated;
``shutdown()`` and interpreter exit then wait forever (the driver hung in ``futex_do_wait``).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, TypeVar

from secfl.crypto._procs import describe_exit, exit_with_parent
from secfl.errors import ConfigError, WorkerLostError

__all__ = ["TrainingPool"]

T = TypeVar("T")

#: seconds idle workers get to exit on :meth:`TrainingPool.close` before they are killed
_CLOSE_GRACE = 5.0


class _RemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _worker_main(conn: Connection, initializer: Callable[..., None],
                 initargs: tuple[Any, ...]) -> None:  # pragma: no cover - runs in a child process
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it ends us
    try:
        initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        _send_error(conn, -1, exc)
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "close":
            return
        _, index, fn, args = msg
        try:
            conn.send(("ok", index, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            _send_error(conn, index, exc)


def _send_error(conn: Connection, index: int, exc: BaseException) -> None:  # pragma: no cover - in a child
    tb = "".join(traceback.format_exception(exc))
    try:
        conn.send(("error", index, (exc, tb)))
    except Exception:  # noqa: BLE001 - the exception itself does not pickle: send its text
        conn.send(("error", index, (None, tb)))


class TrainingPool:
    """``workers`` spawned processes, each started with ``initializer(*initargs)`` (module-level,
    picklable). See the module docstring. A pool whose :meth:`map` failed is closed."""

    def __init__(self, workers: int, initializer: Callable[..., None], *initargs: Any) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        try:
            for i in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, initializer, initargs), daemon=True,
                                   name=f"secfl-train-{i}")
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any]) -> list[T]:
        """``[fn(*args) for args in zip(*iterables)]``, run on the workers (``fn`` module-level)."""
        if not self._procs:
            raise ConfigError("this TrainingPool is closed")
        tasks = list(zip(*iterables, strict=True))
        results: list[Any] = [None] * len(tasks)
        todo = iter(range(len(tasks)))
        busy: dict[int, int] = {}  # worker -> task index
        try:
            for w in range(len(self._procs)):
                if not self._give(w, fn, todo, tasks, busy):
                    break
            while busy:
                ready = wait([self._conns[w] for w in busy] + [self._procs[w].sentinel for w in busy])
                for w in [w for w in busy if self._conns[w] in ready or self._procs[w].sentinel in ready]:
                    results[busy.pop(w)] = self._receive(w)
                    self._give(w, fn, todo, tasks, busy)
        except BaseException:
            self.close(grace=0.0)
            raise
        return results

    def _give(self, w: int, fn: Callable[..., Any], todo: Iterator[int], tasks: list[tuple[Any, ...]],
              busy: dict[int, int]) -> bool:
        """Send worker ``w`` the next task, if any is left."""
        index = next(todo, None)
        if index is None:
            return False
        try:
            self._conns[w].send(("task", index, fn, tasks[index]))
        except OSError:
            self._lost(w)
        busy[w] = index
        return True

    def _receive(self, w: int) -> Any:
        conn = self._conns[w]
        try:
            if not conn.poll():  # the sentinel fired and nothing is left to read
                raise EOFError
            status, _, value = conn.recv()
        except (EOFError, OSError):
            self._lost(w)
        if status == "ok":
            return value
        exc, tb = value
        if exc is None:
            raise RuntimeError(f"a training task failed in worker process {self._procs[w].pid}:\n{tb}")
        exc.__cause__ = _RemoteTraceback(tb)
        raise exc

    def _lost(self, w: int) -> NoReturn:
        proc = self._procs[w]
        proc.join(timeout=2)
        raise WorkerLostError(f"training worker process {proc.pid} {describe_exit(proc.exitcode)}; "
                              "the run cannot continue (rerun it, with fewer workers if memory ran out)")

    def close(self, grace: float = _CLOSE_GRACE) -> None:
        """End the workers (idempotent): ask idle ones to exit, kill any left after ``grace`` s."""
        procs, conns = self._procs, self._conns
        self._procs, self._conns = [], []
        for c in conns:
            try:
                c.send(("close",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        for c in conns:
            c.close()

    def __enter__(self) -> TrainingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
