"""secfl's Flower ServerApp: the experiment's server, with every site a Flower SuperNode.

Run configuration (``flwr run … --run-config``): ``config-file`` (the experiment TOML),
``out-dir`` (where ``results.json``, ``rounds.csv``, ``config.toml`` and ``progress.jsonl`` go),
``stage-timeout`` and ``train-timeout`` (seconds), ``join-timeout`` (seconds to wait for the
sites), ``record-file`` (optional: every message the server handles, :mod:`.audit`),
``node-sites`` (optional, under node authentication: ``"node:site …"``, the only site each
authenticated node may play), ``identity-file`` and ``roster-file`` (optional: the server's
identity key and the federation roster; every request is then signed and every reply checked,
:mod:`secfl.protocols.envelope`, and a site's hello must carry its own site's signature). Sequence:

1. wait until the configured number of sites are connected; say hello to each (``fl.hello``:
   the config; the site answers with its id and the party ids it plays). A second node claiming
   a taken site id is refused (``fl.finish`` with status 1).
2. run :class:`~secfl.runtime.federation.FederationServer` over :class:`FlowerTransport`; before
   every round, greet nodes that connected since (a restarted site rejoins under its id).
3. write the results; tell every site the run is over (``fl.finish``, status 0).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from secfl.errors import ConfigError, SecFLError
from secfl.protocols.envelope import ServerEnvelopes, SignedTransport
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import StageTimeouts, Transport
from secfl.runtime.flower.site import FINISH_STAGE, HELLO_STAGE, NOT_JOINED, RunConfig, RunFinish, SiteHello
from secfl.runtime.flower.transport import FlowerTransport

__all__ = ["server_app", "serve", "load_envelope_keys"]

log = logging.getLogger("secfl")

server_app = ServerApp()

#: temporary party ids used to address a node before it has said which parties it plays
_NODE_BASE = 0xF000_0000


class _Sites:
    """Which node plays which site, kept current between rounds."""

    def __init__(self, grid: Grid, transport: FlowerTransport, config_toml: str, sites: int,
                 bound: Mapping[int, int] | None = None, envelopes: ServerEnvelopes | None = None) -> None:
        self.grid, self.transport, self.toml, self.sites = grid, transport, config_toml, sites
        self.envelopes = envelopes
        #: what requests go through: the grid, behind the envelopes when the server signs
        self.channel: Transport = transport if envelopes is None else SignedTransport(transport, envelopes)
        #: node id -> the only site it may play (Flower's node authentication; empty: any)
        self.bound = dict(bound or {})
        self.node_of_site: dict[int, int] = {}
        self.known: set[int] = set()
        self.rejoined: set[int] = set()

    def greet_new(self) -> None:
        for pid, why in self.transport.failures.items():  # a site restarted under the same node id
            if NOT_JOINED in why and pid in self.transport.nodes:
                self.known.discard(self.transport.nodes[pid])
        self.transport.failures.clear()
        new = [n for n in sorted(self.grid.get_node_ids()) if n not in self.known]
        if not new:
            return
        self.known.update(new)
        temp = {_NODE_BASE + i: n for i, n in enumerate(new)}
        self.transport.nodes.update(temp)
        hello = RunConfig(0, server_id(0), self.toml).to_bytes()
        replies = self.channel.exchange(HELLO_STAGE, {pid: hello for pid in temp})
        for pid in temp:
            del self.transport.nodes[pid]
        for pid, data in replies.items():
            node = temp[pid]
            try:
                msg = SiteHello.from_bytes(data)
            except SecFLError as exc:
                log.warning("node %d: bad hello: %s", node, exc)
                continue
            site = int(msg.sender)
            if self.envelopes is not None and self.envelopes.signer_of(pid) != site:
                self._refuse(node, f"this node signed its hello with the key of site {self.envelopes.signer_of(pid)},"
                                   f" not of site {site}")
                continue
            if self.bound and self.bound.get(node) != site:
                self._refuse(node, f"this node authenticated with the key of site {self.bound.get(node)},"
                                   f" not of site {site}")
                continue
            old = self.node_of_site.get(site)
            if old is not None and old in set(self.grid.get_node_ids()) and old != node:
                self._refuse(node, f"site id {site} is already taken by another connected site")
                continue
            if old is not None:
                self.rejoined.add(site)
            self.node_of_site[site] = node
            for party in msg.parties.tolist():
                self.transport.nodes[int(party)] = node
        for pid in set(temp) - set(replies):
            log.warning("node %d did not join: %s", temp[pid], self.transport.failures.get(pid, "no reply"))

    def _refuse(self, node: int, reason: str) -> None:
        pid = _NODE_BASE - 1
        self.transport.nodes[pid] = node
        self.channel.exchange(FINISH_STAGE, {pid: RunFinish(0, server_id(0), 1, reason).to_bytes()})
        del self.transport.nodes[pid]

    def wait_for_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.node_of_site) < self.sites:
            self.greet_new()
            if len(self.node_of_site) >= self.sites:
                break
            if time.monotonic() > deadline:
                raise ConfigError(f"only {len(self.node_of_site)} of {self.sites} sites joined within {timeout:g} s"
                                  f" (sites {sorted(self.node_of_site)})")
            time.sleep(0.5)

    def finish(self, status: int, reason: str) -> None:
        msg = RunFinish(0, server_id(0), status, reason).to_bytes()
        nodes = {site: node for site, node in self.node_of_site.items()}
        temp = {_NODE_BASE + s: n for s, n in nodes.items()}
        self.transport.nodes.update(temp)
        self.channel.exchange(FINISH_STAGE, {pid: msg for pid in temp})


def _node_sites(text: str) -> dict[int, int]:
    """``"node:site node:site"`` (the keys the server registered) -> {node: site}."""
    out = {}
    for item in text.split():
        node, _, site = item.partition(":")
        out[int(node)] = int(site)
    return out


def load_envelope_keys(identity: str, roster: str) -> tuple[Any, Any]:
    """The server's identity key and the federation roster, checked against each other."""
    from secfl.crypto.identity import IdentityKey, Roster

    key, keys = IdentityKey.load(identity), Roster.load(roster)
    if keys.keys.get(server_id(0)) != key.public:
        raise ConfigError(f"{roster}: the roster does not list {identity} as the server's key (rebuild it with"
                          " `secfl deploy roster`)")
    return key, keys


def _envelopes(rc: Mapping[str, Any], protocol: Any, sites: int) -> ServerEnvelopes | None:
    from secfl.runtime.federation import site_roles

    identity, roster = str(rc.get("identity-file", "")), str(rc.get("roster-file", ""))
    if not identity:
        return None
    key, keys = load_envelope_keys(identity, roster)
    owner = {pid: k for k in range(sites) for pid in site_roles(protocol, k, sites)}
    return ServerEnvelopes(key, keys, owner.get)


def _write_progress(out: Path, rec: Any) -> None:
    with (out / "progress.jsonl").open("a") as fh:
        fh.write(json.dumps(asdict(rec)) + "\n")


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, context.run_config, engine="flower")


def serve(grid: Grid, rc: Mapping[str, Any], *, engine: str) -> None:
    """The whole experiment over ``grid`` (run configuration ``rc``, keys as above)."""
    from secfl.runtime.config import ExperimentConfig, dump_toml, load_toml
    from secfl.runtime.federation import FederationServer

    out = Path(str(rc["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    timeouts = StageTimeouts(float(rc["stage-timeout"]), {"fl.train": float(rc["train-timeout"])})
    net = Network()
    record = str(rc.get("record-file", ""))
    transport = FlowerTransport(grid, {}, timeouts, net, record=Path(record) if record else None)
    sites: _Sites | None = None
    try:
        cfg = ExperimentConfig.from_dict(load_toml(str(rc["config-file"])))
        toml_text = dump_toml(cfg.to_dict())
        (out / "config.toml").write_text(toml_text)
        server = FederationServer(cfg)
        sites = _Sites(grid, transport, toml_text, cfg.clients, _node_sites(str(rc.get("node-sites", ""))),
                       _envelopes(rc, server.protocol, cfg.clients))
        sites.wait_for_all(float(rc["join-timeout"]))
        forget = getattr(server.coordinator, "forget", None)

        def before_round(_rnd: int) -> None:
            sites.greet_new()
            for site in sorted(sites.rejoined):
                if callable(forget):
                    forget(site)
            sites.rejoined.clear()

        try:
            result = server.run(sites.channel, net, on_round=lambda rec: _write_progress(out, rec),
                                before_round=before_round)
        finally:
            server.close()
        result.meta["engine"] = engine
        result.write(out)
        sites.finish(0, "the experiment is over")
    except BaseException as exc:
        (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        if sites is not None:
            sites.finish(1, f"the server stopped: {type(exc).__name__}: {exc}")
        raise
