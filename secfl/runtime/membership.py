"""Dynamic membership: the federation's population changes between rounds.

``[membership]``: ``initial`` (the client ids active in round 1; default every client) and
``schedule``, a list of ``{round = R, join = [...], leave = [...]}`` applied before round R. From
Python, ``Experiment(..., membership=callback)``: ``callback(round, active) -> new active set``,
called before every round after the schedule. Each round samples ``sample_fraction`` of the
*active* clients (with every client active this is exactly the fixed-population sampling).
results.json records every change (``meta.membership``) and each round's population.

When keys are regenerated (the rule, per protocol):

- ``ckks``: every client holds the shared secret key. A client that **leaves** still holds it, so
  the next round runs under a fresh key pair (new key holder context; every remaining client is
  provisioned again). A client that **joins** is provisioned with the current key.
- ``ckks-threshold``: clients hold only the public collective key: joining clients are provisioned
  with it, leaving ones take nothing secret away; no new key. The quorum members are separate
  parties whose key shares are renewed by the decryption budget (``max_decryptions``) as before;
  changing the quorum itself mid-run is not supported yet.
- ``secagg``, ``additive``, ``plaintext``: keys, masks and shares are fresh every round anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secfl.errors import ConfigError

__all__ = ["MembershipConfig", "Membership", "MembershipCallback"]

#: (round, active clients) -> the active clients for this round
MembershipCallback = Callable[[int, frozenset[int]], Iterable[int]]


def _ids(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{what}: expected a list of client ids, got {value!r}")
    out = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in out):
        raise ConfigError(f"{what}: client ids are integers >= 0, got {list(out)!r}")
    return out


@dataclass(frozen=True)
class MembershipConfig:
    """Who takes part when (module docstring)."""

    initial: tuple[int, ...] | None = None
    schedule: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.initial is not None:
            object.__setattr__(self, "initial", _ids(self.initial, "membership.initial"))
        if isinstance(self.schedule, Mapping) or not hasattr(self.schedule, "__iter__"):
            raise ConfigError("membership.schedule: expected a list of {round, join, leave} tables")
        changes = []
        for i, ch in enumerate(self.schedule):
            what = f"membership.schedule[{i}]"
            if not isinstance(ch, Mapping) or set(ch) - {"round", "join", "leave"} or "round" not in ch:
                raise ConfigError(f"{what}: a table with round and join and/or leave, got {ch!r}")
            r = ch["round"]
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ConfigError(f"{what}.round: an integer >= 1, got {r!r}")
            changes.append({"round": r, "join": list(_ids(ch.get("join", []), f"{what}.join")),
                            "leave": list(_ids(ch.get("leave", []), f"{what}.leave"))})
        object.__setattr__(self, "schedule", tuple(changes))

    def check(self, clients: int) -> None:
        every = set(self.initial or ()) | {c for ch in self.schedule for k in ("join", "leave") for c in ch[k]}
        bad = sorted(c for c in every if c >= clients)
        if bad:
            raise ConfigError(f"membership: client ids {bad} are out of range (clients = {clients}: 0..{clients - 1})")


class Membership:
    """The active population, round by round."""

    def __init__(self, cfg: MembershipConfig, clients: int, callback: MembershipCallback | None = None,
                 active: Iterable[int] | None = None) -> None:
        cfg.check(clients)
        self.cfg, self.clients, self.callback = cfg, clients, callback
        start = active if active is not None else (cfg.initial if cfg.initial is not None else range(clients))
        self.active = frozenset(int(c) for c in start)
        self.changes: list[dict[str, Any]] = []

    def update(self, rnd: int) -> tuple[frozenset[int], frozenset[int]]:
        """Apply round ``rnd``'s (1-based) schedule entries and the callback; returns (joined, left)."""
        before = self.active
        now = set(before)
        for ch in self.cfg.schedule:
            if ch["round"] == rnd:
                now |= set(ch["join"])
                now -= set(ch["leave"])
        if self.callback is not None:
            got = self.callback(rnd, frozenset(now))
            now = set(_ids(got, f"the membership callback's answer for round {rnd}"))
            bad = sorted(c for c in now if c >= self.clients)
            if bad:
                raise ConfigError(f"membership callback: client ids {bad} out of range 0..{self.clients - 1}")
        if not now:
            raise ConfigError(f"membership: no client is active in round {rnd}")
        self.active = frozenset(now)
        joined, left = self.active - before, before - self.active
        if joined or left:
            self.changes.append({"round": rnd, "joined": sorted(joined), "left": sorted(left),
                                 "population": len(self.active)})
        return joined, left

    def ordered(self) -> list[int]:
        return sorted(self.active)
