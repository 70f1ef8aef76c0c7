"""A :class:`~secfl.protocols.parties.Transport` whose parties live in a
:class:`~secfl.protocols.hosts.PartyHost` (worker processes, or this process).

Each party is built once in the worker that owns it (``factory(party_id, *args)``) and kept
across rounds, like a site's process; :meth:`HostTransport.set_inputs` hands each client its
local update (the simulation's stand-in for the client's own training), and
:meth:`HostTransport.exchange` runs ``party.handle(stage, request)`` for a whole stage at once,
spread over the workers. Every request and reply crosses ``net`` (counted, optionally recorded),
and ``silent[stage]`` simulates dropouts as in :class:`~secfl.protocols.parties.LocalTransport`.

Nothing here is specific to one protocol: any ``Protocol.party`` factory whose parties pickle
(spawned workers) can be hosted this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from secfl.errors import ProtocolAbort, SecFLError
from secfl.protocols.hosts import PartyHost
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import Transport

__all__ = ["HostTransport"]


class HostTransport(Transport):
    """Parties ``ids`` built by ``factory(id, *args)`` inside ``host``; see the module docstring."""

    def __init__(self, host: PartyHost, factory: Callable[..., Any], ids: Sequence[int], *args: Any,
                 net: Network | None = None, coordinator: int | None = None,
                 silent: Mapping[str, Iterable[int]] | None = None) -> None:
        self.host = host
        self.net = Network() if net is None else net
        self.coordinator = server_id(0) if coordinator is None else coordinator
        self.silent = {k: frozenset(v) for k, v in (silent or {}).items()}
        self.failures: dict[int, str] = {}
        self._ids = frozenset(int(i) for i in ids)
        # no offline work: a site's party gets its next request only when the stage starts
        self._epoch = host.create(factory, sorted(self._ids), *args, offline=[])

    def _check(self) -> None:
        if self.host.epoch != self._epoch:
            raise ProtocolAbort("the host's parties were replaced; this transport's parties are gone")

    def set_inputs(self, rnd: int, inputs: Mapping[int, tuple[np.ndarray, float]]) -> None:
        """Each client's update and weight for round ``rnd`` (``ClientParty.set_input`` in its worker)."""
        self._check()
        out = self.host.call("set_input", {pid: (rnd, u, w) for pid, (u, w) in inputs.items() if pid in self._ids})
        for pid, res in out.items():
            if isinstance(res, SecFLError):
                self.failures[pid] = f"{type(res).__name__}: {res}"

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        self._check()
        calls: dict[int, tuple[str, bytes]] = {}
        for pid, data in requests.items():
            got = self.net.send(self.coordinator, pid, data)
            if pid not in self._ids:
                self.failures[pid] = f"no party {pid} in this transport"
            elif pid in self.silent.get(stage, frozenset()):
                self.failures[pid] = f"went silent before stage {stage!r} (simulated dropout)"
            else:
                calls[pid] = (stage, got)
        replies: dict[int, bytes] = {}
        for pid, out in self.host.call("handle", calls).items():
            if isinstance(out, SecFLError):
                self.failures[pid] = f"{type(out).__name__}: {out}"
            elif not isinstance(out, bytes):
                self.failures[pid] = f"answered with {type(out).__name__}, not bytes"
            else:
                replies[pid] = self.net.send(pid, self.coordinator, out)
        return replies
