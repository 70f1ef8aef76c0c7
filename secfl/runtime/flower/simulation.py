"""The same secfl app on Flower's simulation engine (Ray): many simulated sites over the cores.

``secfl deploy simulate CONFIG --out OUT`` runs secfl's ServerApp (:func:`~.server_app.serve`:
the stage sequence over Flower's grid, unchanged) with ``clients`` simulated SuperNodes; node
``k`` plays site ``k`` (Flower's ``partition-id``). Flower runs a simulated ClientApp afresh for
every message on a pool of Ray actors, so a site cannot keep a live program between stages as
it does in deployment (:mod:`.site`). Instead each message rebuilds the site's data and model
(cached per actor: they are fixed by the configuration) and restores the site's parties from
the node's own Flower context (``context.state``), where :meth:`~secfl.protocols.parties.Party.save_state`
put them after the previous stage.

Protocols whose parties can be saved run here: ``plaintext`` and ``secagg`` (the others hold
SEAL contexts or key shares that refuse to leave their process; they fail at the hello with a
:class:`~secfl.errors.ConfigError`).

Security: in deployment ``context.state`` lives in the site's own SuperNode; in simulation it
lives in the simulation engine's process, which plays every site. A simulation is one trust
domain by construction: it measures protocols and scale, not separation. The server side still
receives only what it receives in deployment (the same ServerApp and transport).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from secfl.errors import ConfigError, MalformedMessageError, SecFLError
from secfl.protocols.network import server_id
from secfl.runtime.flower.site import FINISH_STAGE, HELLO_STAGE, NOT_JOINED, RunConfig, SiteHello

__all__ = ["sim_client_app", "simulate", "check_simulated", "SIMULATED_PROTOCOLS"]

log = logging.getLogger("secfl")

RECORD = "secfl"
#: protocols whose parties can be saved between messages (see :meth:`Party.save_state`)
SIMULATED_PROTOCOLS = ("plaintext", "secagg")

sim_client_app = ClientApp()


def check_simulated(protocol: str) -> None:
    """Raise :class:`ConfigError` unless ``protocol``'s parties can be saved between messages."""
    if protocol not in SIMULATED_PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r} does not run on Flower's simulation engine (its parties keep"
                          f" live state); use one of {', '.join(SIMULATED_PROTOCOLS)}, or `secfl deploy`")


@lru_cache(maxsize=512)
def _site(toml: str, site: int) -> Any:
    """Site ``site``'s data, model and protocol (no party state) for this configuration."""
    from secfl.runtime.config import ExperimentConfig, tomllib
    from secfl.runtime.federation import Site

    try:
        cfg = ExperimentConfig.from_dict(tomllib.loads(toml))
    except tomllib.TOMLDecodeError as exc:
        raise MalformedMessageError(f"RUN_CONFIG: not TOML ({exc})") from None
    check_simulated(cfg.protocol)
    return Site(cfg, site, parties={})


def _answer(site_id: int, state: dict[str, Any], party: int, stage: str, data: bytes) -> bytes:
    if stage == HELLO_STAGE:
        msg = RunConfig.from_bytes(data, expect_sender=server_id(0))
        site = _site(msg.toml, site_id)
        parties = {pid: site.protocol.party(pid) for pid in _roles(site)}
        state.clear()
        state["toml"] = msg.toml
        state.update({f"party-{pid}": p.save_state() for pid, p in parties.items()})
        return SiteHello(0, site_id, np.asarray(sorted(parties), dtype=np.uint32)).to_bytes()
    if stage == FINISH_STAGE:
        return b""
    if "toml" not in state:
        raise MalformedMessageError(f"site {site_id}: stage {stage!r} {NOT_JOINED}")
    site = _site(str(state["toml"]), site_id)
    key = f"party-{party}"
    if key not in state:
        raise MalformedMessageError(f"site {site_id} does not play party {party}")
    target = site.protocol.party(party)
    target.load_state(bytes(state[key]))
    site.parties = {party: target}
    try:
        return site.handle(party, stage, data)
    finally:
        state[key] = target.save_state()
        site.parties = {}


def _roles(site: Any) -> tuple[int, ...]:
    from secfl.runtime.federation import site_roles

    return site_roles(site.protocol, site.site, site.cfg.clients)


@sim_client_app.query("secfl")
def _simulated_site(msg: Message, context: Context) -> Message:
    rec = msg.content[RECORD]
    site_id = int(context.node_config["partition-id"])
    saved = context.state.get(RECORD)
    state: dict[str, Any] = dict(saved) if saved is not None else {}
    try:
        answer = _answer(site_id, state, int(rec["party"]), str(rec["stage"]), bytes(rec["data"]))  # type: ignore[arg-type]
        reply = ConfigRecord({"data": answer})
    except SecFLError as exc:
        reply = ConfigRecord({"error": f"{type(exc).__name__}: {exc}"})
    context.state[RECORD] = ConfigRecord(state)
    return Message(RecordDict({RECORD: reply}), reply_to=msg)


def simulate(config: str | Path, out: str | Path, *, cpus: int | None = None, cpus_per_client: float = 1.0,
             gpus_per_client: float = 0.0, stage_timeout: float = 300.0, train_timeout: float = 600.0,
             join_timeout: float = 300.0) -> Path:
    """Run the experiment in ``config`` with one simulated site per client; results in ``out``.

    ``cpus``: Ray's CPU pool (default: all cores); each simulated ClientApp takes
    ``cpus_per_client`` of them (and ``gpus_per_client`` of a GPU, for CUDA training)."""
    try:
        import ray  # noqa: F401
        from flwr.simulation import run_simulation
    except ImportError:
        raise ConfigError('Flower\'s simulation engine is not installed: pip install "secfl[simulation]"') from None
    from secfl.runtime.config import ExperimentConfig, load_toml

    cfg = ExperimentConfig.from_dict(load_toml(str(config)))
    check_simulated(cfg.protocol)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").unlink(missing_ok=True)
    for name, value in {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
                        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_DEDUP_LOGS": "0"}.items():
        os.environ.setdefault(name, value)
    rc = {"config-file": str(Path(config).resolve()), "out-dir": str(out.resolve()),
          "stage-timeout": stage_timeout, "train-timeout": train_timeout, "join-timeout": join_timeout,
          "record-file": ""}
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        from secfl.runtime.flower.server_app import serve

        serve(grid, rc, engine="flower-simulation")

    run_simulation(server_app=app, client_app=sim_client_app, num_supernodes=cfg.clients,
                   backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
                                   "init_args": {"num_cpus": cpus or os.cpu_count() or 1,
                                                 "include_dashboard": False, "log_to_driver": False}})
    error = out / "error.txt"
    if error.exists():
        raise ConfigError(f"the simulated run failed: {error.read_text().splitlines()[0]}")
    if not (out / "results.json").exists():
        raise ConfigError("the simulated run ended without results (see Flower's log above)")
    return out
