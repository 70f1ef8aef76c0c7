"""Where a simulation runs its clients: in this process, or spread over worker processes.

A protocol round drives its clients through a :class:`PartyHost`: ``create`` builds one client
object per id, ``call`` runs one method on many clients (arguments and results are the
protocol's wire bytes, plus each client's own local input), ``run`` runs stateless helper jobs.

- :class:`InlineHost` keeps the client objects in this process and runs calls one after the
  other. Tests and attack experiments can reach a client's state (:meth:`InlineHost.party`).
- :class:`ProcessHost` keeps them in ``processes`` worker processes (spawned once and reused
  for every round of a protocol). Client ``i`` of the sorted ids lives in worker
  ``i mod processes``; a batch call runs on all workers at once. Between calls a worker lets its
  clients do *offline* work for up to ``window`` clients ahead, in id order — the
  precomputation a real client does while it trains (e.g. SecAgg masks, which do not depend on
  the update). A client object opts in with ``prepare() -> bool | None`` (one small step of
  work — True: did a step and holds its result, call again; False: nothing more to do; None: not
  ready yet), a ``prepared`` flag (holds work), and ``release()``
  (drop held work; called when later clients were served first, e.g. it dropped out). Worker
  compute seconds, background work included, are reported back (:attr:`PartyHost.seconds`),
  so per-client cost is measured, not inferred from wall time.

Results never depend on the host. A typed :class:`~secfl.errors.SecFLError` raised by one
client is returned as that client's result (its failure is its own); any other exception in a
worker is a bug and re-raised here as :class:`WorkerCrashed` with the worker's traceback. A
worker that dies fails the call at once with :class:`WorkerCrashed` (the host closes; the next
round opens a new one), and workers exit by themselves when this process dies.

Security: the pipe between this process and a worker carries the simulator's own commands
(a pickled envelope of method name, client id and arguments); what passes between *parties* is
only ever the protocol's bytes, parsed strictly by the receiving client. Client secrets stay in
the worker that owns the client, except where a protocol's server hands its own reconstructed
secrets to a helper job (``run``): those are the server's, computed on the server's behalf.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from secfl.crypto._procs import describe_exit, exit_with_parent
from secfl.errors import ConfigError, SecFLError

__all__ = ["PartyHost", "InlineHost", "ProcessHost", "WorkerCrashed", "WorkerDied", "make_host", "auto_processes"]

#: clients a worker prepares ahead of need (each holds one precomputed mask in memory)
DEFAULT_WINDOW = 8
#: seconds a spawned worker may take to import secfl and report ready
_START_TIMEOUT = 120.0


class WorkerCrashed(RuntimeError):
    """A worker process died, or failed with an exception that is not a typed protocol error (a bug).

    Not a :class:`~secfl.errors.SecFLError` on purpose: protocol rounds treat a SecFLError
    from one client's step as that client's failure (it drops out), while this is the host's
    failure and must end the round."""


class WorkerDied(WorkerCrashed):
    """A worker process died (a signal, the out-of-memory killer): no traceback to show, the
    message says which process and how it ended."""


class PartyHost(ABC):
    """Runs one round's clients. See the module docstring."""

    def __init__(self) -> None:
        #: client compute seconds accumulated since the last :meth:`create`
        self.seconds = 0.0
        #: bumped by every :meth:`create`: a round holding an older epoch lost its clients
        self.epoch = 0

    @property
    @abstractmethod
    def processes(self) -> int: ...

    @abstractmethod
    def create(self, factory: Callable[..., Any], ids: Sequence[int], *args: Any,
               offline: Sequence[int] | None = None) -> int:
        """Replace every client with ``factory(id, *args)`` for ``id`` in ``ids``; returns the new epoch.

        ``offline``: the clients offered offline work, in that order (default: all, by id);
        leave out clients the simulation knows will go silent."""

    @abstractmethod
    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        """``{id: client.method(*args[id])}``; a typed error is returned as that id's value."""

    @abstractmethod
    def run(self, fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
        """``[fn(c) for c in chunks]``, the chunks spread over the workers (``fn`` module-level)."""

    @property
    def alive(self) -> bool:
        """False once closed (or after a worker failed): open a new host."""
        return True

    def party(self, pid: int) -> Any:
        """The client object itself (only where it lives in this process)."""
        raise ConfigError(
            f"client {pid} lives in a worker process ({self.processes} processes); use processes=1 to inspect it"
        )

    def close(self) -> None:  # noqa: B027 - nothing to release in the default
        """Release workers (idempotent)."""


def _invoke(obj: Any, method: str, args: tuple[Any, ...]) -> Any:
    try:
        return getattr(obj, method)(*args)
    except SecFLError as exc:
        return exc


class InlineHost(PartyHost):
    """Clients in this process, run one after the other."""

    def __init__(self) -> None:
        super().__init__()
        self._parties: dict[int, Any] = {}

    @property
    def processes(self) -> int:
        return 1

    def create(self, factory: Callable[..., Any], ids: Sequence[int], *args: Any,
               offline: Sequence[int] | None = None) -> int:
        t = time.perf_counter()
        self._parties = {pid: factory(pid, *args) for pid in ids}
        self.seconds = time.perf_counter() - t
        self.epoch += 1
        return self.epoch

    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        t = time.perf_counter()
        try:
            return {pid: _invoke(self._parties[pid], method, a) for pid, a in args.items()}
        finally:
            self.seconds += time.perf_counter() - t

    def run(self, fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
        return [fn(c) for c in chunks]

    def party(self, pid: int) -> Any:
        return self._parties[pid]


# ------------------------------------------------------------------------------- worker side
def _worker_main(conn: Connection, window: int) -> None:  # pragma: no cover - runs in a child process
    parties: dict[int, Any] = {}
    index: dict[int, int] = {}  # client id -> position in id order
    todo: list[int] = []  # clients still to offer offline work to, in id order
    later: list[int] = []  # clients not ready yet: offered again after the next command
    held: set[int] = set()  # clients holding prepared work not yet consumed
    background = 0.0  # seconds of offline work not yet reported
    exit_with_parent()  # a killed driver leaves no worker behind, even one busy with offline work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it closes us
    conn.send(("ready", os.getpid(), 0.0))
    while True:
        if todo and (len(held) < window or todo[0] in held) and not conn.poll():
            pid = todo[0]
            prepare = getattr(parties[pid], "prepare", None)
            if prepare is None:  # this kind of client has no offline work
                todo = []
                continue
            t = time.perf_counter()
            try:
                step = prepare()
            except SecFLError:
                step = False  # the client reports the same problem when it is called
            background += time.perf_counter() - t
            if step:
                held.add(pid)
            else:
                todo.pop(0)
                if step is None:
                    later.append(pid)
            continue
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if later:
            todo = sorted(later + todo, key=index.__getitem__)
            later = []
        t = time.perf_counter()
        try:
            kind = cmd[0]
            if kind == "close":
                return
            if kind == "create":
                _, factory, ids, args, ahead = cmd
                parties = {pid: factory(pid, *args) for pid in ids}
                index = {pid: i for i, pid in enumerate(ahead)}
                index.update((pid, len(ahead) + i) for i, pid in enumerate(ids) if pid not in index)
                todo, later, held, background = list(ahead), [], set(), 0.0
                out: Any = None
            elif kind == "call":
                _, method, batch = cmd
                out = {}
                for pid, a in batch.items():
                    out[pid] = _invoke(parties[pid], method, a)
                    if not getattr(parties[pid], "prepared", False):
                        held.discard(pid)
                        # clients before it that still hold work were skipped (dropped out): free it
                        for h in [h for h in held if index[h] < index[pid]]:
                            parties[h].release()
                            held.discard(h)
            elif kind == "run":
                _, fn, chunk = cmd
                out = fn(chunk)
            else:
                raise ValueError(f"unknown worker command {kind!r}")
            spent = time.perf_counter() - t + background
            background = 0.0
            conn.send(("ok", out, spent))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("crash", traceback.format_exc(), 0.0))


def _shutdown(procs: list[Any], conns: list[Connection]) -> None:
    for c in conns:
        try:
            c.send(("close",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 5  # one grace period for all workers, then they are killed
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    for c in conns:
        c.close()


class ProcessHost(PartyHost):
    """Clients spread over ``processes`` spawned worker processes (see the module docstring)."""

    def __init__(self, processes: int, window: int = DEFAULT_WINDOW) -> None:
        super().__init__()
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
            raise ConfigError(f"ProcessHost needs processes >= 2, got {processes!r} (use InlineHost for 1)")
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, window), daemon=True, name=f"secfl-host-{i}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._owner: dict[int, int] = {}
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)
        for w, conn in enumerate(self._conns):
            try:
                ready = conn.poll(_START_TIMEOUT) and conn.recv()[0] == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                self.close()
                raise WorkerCrashed(
                    f"secfl worker process {w} did not start (exit code {self._procs[w].exitcode}); spawned "
                    "workers import the main module: guard the script with `if __name__ == '__main__':`, and do "
                    "not run it from stdin (or use processes=1)"
                )

    @property
    def processes(self) -> int:
        return len(self._procs)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def _exchange(self, requests: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        """Send one command to each named worker, then collect every reply."""
        if not self._finalizer.alive:
            raise ConfigError("this ProcessHost is closed")
        out, crash = {}, None
        for w, cmd in requests.items():
            try:
                self._conns[w].send(cmd)
            except OSError:
                self._procs[w].join(timeout=1)
                code = self._procs[w].exitcode
                self.close()  # the workers' state is lost with one of them: the next round starts fresh ones
                raise WorkerDied(f"secfl worker process {w} {describe_exit(code)}") from None
        for w in requests:
            try:
                status, value, spent = self._conns[w].recv()
            except (EOFError, OSError):
                self._procs[w].join(timeout=1)
                code = self._procs[w].exitcode
                self.close()
                raise WorkerDied(f"secfl worker process {w} {describe_exit(code)} before answering") from None
            self.seconds += spent
            if status == "crash":
                crash = crash or value
            out[w] = value
        if crash is not None:
            raise WorkerCrashed(f"a secfl worker process failed:\n{crash}")
        return out

    def create(self, factory: Callable[..., Any], ids: Sequence[int], *args: Any,
               offline: Sequence[int] | None = None) -> int:
        ids = sorted(ids)
        p = self.processes
        self._owner = {pid: i % p for i, pid in enumerate(ids)}
        self.seconds = 0.0
        self.epoch += 1
        ahead = ids if offline is None else [pid for pid in offline if pid in self._owner]
        self._exchange({w: ("create", factory, ids[w::p], args, [pid for pid in ahead if self._owner[pid] == w])
                        for w in range(p)})
        return self.epoch

    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        batches: dict[int, dict[int, tuple[Any, ...]]] = {}
        for pid, a in args.items():
            batches.setdefault(self._owner[pid], {})[pid] = a
        replies = self._exchange({w: ("call", method, b) for w, b in batches.items()})
        merged: dict[int, Any] = {}
        for w in batches:
            merged.update(replies[w])
        return {pid: merged[pid] for pid in args}

    def run(self, fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        p = self.processes
        for start in range(0, len(chunks), p):
            wave = chunks[start : start + p]
            replies = self._exchange({w: ("run", fn, c) for w, c in enumerate(wave)})
            out.extend(replies[w] for w in range(len(wave)))
        return out

    def close(self) -> None:
        self._finalizer()


def auto_processes(clients: int) -> int:
    """The default: one process per core (at most 8) from 100 clients up, else in-process."""
    cores = os.cpu_count() or 1
    return min(cores, 8) if clients >= 100 and cores >= 2 else 1


def make_host(processes: int) -> PartyHost:
    """:class:`InlineHost` for 1, else a :class:`ProcessHost`."""
    return InlineHost() if processes == 1 else ProcessHost(processes)
