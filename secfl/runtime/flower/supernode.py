"""``python -m secfl.runtime.flower.supernode ARGS``: Flower's SuperNode, run so that it ends.

Runs ``flower-supernode`` (same arguments) in this process, with two changes that Flower 1.42
offers no flag for, both measured on this machine:

- an idle SuperNode polls its SuperLink every 3 s, and waits for a reply in steps of 0.5 s (fixed
  sleeps); here every such wait is at most ``SECFL_POLL`` seconds (default 0.1), which takes
  seconds off every stage of a protocol (the SuperExec's own poll is set through Flower's
  ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` by :mod:`secfl.runtime.flower.launch`);
- when it gives up reconnecting (``--max-retries``) its fleet loop returns but a non-daemon
  thread keeps the process alive forever; here the process then exits with status 3, so the
  site's program learns that the server is gone.
"""

from __future__ import annotations

import os
import sys
import time
import types


def _patch_poll(interval: float) -> None:
    import flwr.supernode.start_client_internal as sci

    real = time

    def sleep(seconds: float) -> None:
        real.sleep(min(seconds, interval))

    shim = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    shim.sleep = sleep
    if hasattr(sci, "time"):
        sci.time = shim  # type: ignore[assignment]


def main() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    from flwr.supernode.cli.flower_supernode import flower_supernode

    _patch_poll(float(os.environ.get("SECFL_POLL", "0.1")))
    sys.argv[0] = "flower-supernode"
    code = 3
    try:
        flower_supernode()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - report and exit, whatever Flower raised
        print(f"SuperNode stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 4
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
