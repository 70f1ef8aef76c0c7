"""Threat models as data: named coalitions of semi-honest corrupted parties.

A :class:`ThreatModel` is a symbolic :class:`~secfl.protocols.exposure.Coalition` (counts such as
``"t"`` or ``"n-1"`` resolve per protocol and deployment) plus whether clients add
differential-privacy noise before protecting their updates. :data:`THREAT_MODELS` holds the
presets ``secfl threats`` runs; build your own with :class:`ThreatModel` directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from secfl.errors import ConfigError
from secfl.protocols.exposure import Coalition

__all__ = ["ThreatModel", "THREAT_MODELS", "DEFAULT_THREAT_MODELS", "threat_model"]


@dataclass(frozen=True)
class ThreatModel:
    """A named adversary. ``dp``: clients clip their update and add a Gaussian noise share (each
    the full σ, so the guarantee survives any collusion) before protecting it."""

    name: str
    coalition: Coalition
    dp: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(ch in self.name for ch in " ,|\n"):
            raise ConfigError(f"threat model name must be non-empty without spaces, commas or '|', got {self.name!r}")
        if not isinstance(self.coalition, Coalition):
            raise ConfigError(f"threat model {self.name!r}: coalition must be a Coalition, got {self.coalition!r}")


THREAT_MODELS: dict[str, ThreatModel] = {
    m.name: m
    for m in (
        ThreatModel("client", Coalition(clients=1),
                    description="one curious client: it sees the aggregate (the next global model) only"),
        ThreatModel("server", Coalition(servers=1),
                    description="the honest-but-curious server (additive: one of the S servers)"),
        ThreatModel("server+client", Coalition(servers=1, clients=1),
                    description="the server colluding with one other client"),
        ThreatModel("server+t-clients", Coalition(servers=1, clients="t"),
                    description="the server with t other clients (secagg: t of the target's neighbours; t is the "
                                "protocol's threshold, 0 where it has none)"),
        ThreatModel("servers+quorum", Coalition(servers="all", members="t"),
                    description="every aggregation server with t quorum members (ckks: the key holder)"),
        ThreatModel("server+n-1", Coalition(servers=1, clients="n-1"),
                    description="the server with every client but the target (subtraction attack)"),
        ThreatModel("server+n-1+dp", Coalition(servers=1, clients="n-1"), dp=True,
                    description="as server+n-1, with each client adding Gaussian DP noise before protection"),
    )
}

#: The presets ``secfl threats`` runs by default, in column order.
DEFAULT_THREAT_MODELS: tuple[str, ...] = tuple(THREAT_MODELS)


def threat_model(name: str) -> ThreatModel:
    """The preset called ``name`` (:class:`ConfigError` listing the presets otherwise)."""
    try:
        return THREAT_MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown threat model {name!r}; presets: {', '.join(THREAT_MODELS)}") from None
