"""Worker processes that end with their parent.

A spawned worker that waits on a queue or pipe which other processes also hold open never
sees its parent die: killed drivers left their workers running. :func:`exit_with_parent`,
called first thing in a worker, starts a daemon thread that waits on the parent's sentinel
(:func:`multiprocessing.parent_process`, closed by the kernel when the parent dies however it
dies) and checks ``os.getppid()``; once the parent is gone it ends the worker with
``os._exit``. Portable (no ``prctl``): Linux's ``PR_SET_PDEATHSIG`` fires when the *thread*
that started the worker ends, which would kill a pool's workers when the thread that happened
to spawn them returns.

:func:`worker_initializer` wraps a ``ProcessPoolExecutor`` initializer with this guard and
leaves Ctrl-C to the parent (which ends its pool); :func:`describe_exit` words an exit code.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["exit_with_parent", "worker_initializer", "describe_exit", "ORPHAN_EXIT_CODE"]

#: exit status of a worker that ended because its parent died
ORPHAN_EXIT_CODE = 70
#: seconds between ``os.getppid()`` checks (the sentinel wakes the watcher at once)
_POLL = 0.5

_guard_lock = threading.Lock()
_guarded = False


def exit_with_parent() -> None:
    """End this process as soon as its parent process is gone (idempotent)."""
    global _guarded
    with _guard_lock:
        if _guarded:
            return
        _guarded = True
    watcher = threading.Thread(target=_watch, args=(multiprocessing.parent_process(), os.getppid()),
                               name="secfl-parent-watch", daemon=True)
    watcher.start()


def _watch(parent: Any, ppid: int) -> None:  # pragma: no cover - runs in a worker process
    while os.getppid() == ppid and (parent is None or parent.is_alive()):
        if parent is None:
            time.sleep(_POLL)
        else:
            parent.join(_POLL)  # returns early when the parent's sentinel closes
    os._exit(ORPHAN_EXIT_CODE)


def worker_initializer(init: Callable[..., None] | None, *args: Any) -> None:  # pragma: no cover - in a worker
    """``ProcessPoolExecutor`` initializer: the parent-death guard, SIGINT ignored (Ctrl-C is
    the parent's to handle; it ends the pool), then ``init(*args)``."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init is not None:
        init(*args)


def describe_exit(code: int | None) -> str:
    """``"was killed by SIGKILL"``, ``"exited with status 1"``, … for a process exit code."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (e.g. by the out-of-memory killer)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    if code == ORPHAN_EXIT_CODE:
        return "ended because its parent process is gone"
    return f"exited with status {code}"
