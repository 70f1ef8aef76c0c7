"""Aggregation protocols: one module per protocol, all behind :class:`Protocol`.

The registry maps stable protocol names to their classes; modules are imported lazily so
that, e.g., ``plaintext`` works without loading TenSEAL.
"""

from __future__ import annotations

import importlib
from typing import Any

from secfl.errors import ConfigError
from secfl.protocols.base import Protocol, ProtocolRound, Revealed, RoundSpec, Upload, build_options

__all__ = [
    "Protocol", "ProtocolRound", "Revealed", "RoundSpec", "Upload",
    "PROTOCOLS", "get_protocol", "make_protocol", "available",
]

#: stable name -> "module:Class"
PROTOCOLS: dict[str, str] = {
    "plaintext": "secfl.protocols.plaintext:Plaintext",
    "ckks": "secfl.protocols.ckks:Ckks",
    "ckks-threshold": "secfl.protocols.ckks_threshold:CkksThreshold",
    "additive": "secfl.protocols.additive:Additive",
    "secagg": "secfl.protocols.secagg:SecAgg",
}


def get_protocol(name: str) -> type[Protocol]:
    """The protocol class registered under ``name``."""
    target = PROTOCOLS.get(name)
    if target is None:
        raise ConfigError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ConfigError(f"protocol {name!r} is not implemented in this version of secfl") from None
        raise
    klass: type[Protocol] = getattr(mod, cls)
    return klass


def make_protocol(name: str, **options: Any) -> Protocol:
    """Instantiate protocol ``name`` with its options (unknown option names are refused)."""
    klass = get_protocol(name)
    return klass(build_options(klass.Options, name, options))


def available() -> dict[str, str]:
    """name -> one-line summary, for every protocol this installation can run."""
    out: dict[str, str] = {}
    for name in PROTOCOLS:
        try:
            out[name] = get_protocol(name).summary
        except ConfigError:
            continue
    return out
