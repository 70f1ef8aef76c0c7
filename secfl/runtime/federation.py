"""One experiment with every party its own program: the server's loop and one site, over any transport.

The server (:class:`FederationServer`) runs the same FedAvg loop as the simulator, but every
client-side step is a stage request over a :class:`~secfl.protocols.parties.Transport`:

1. ``fl.train`` — ``MODEL_BROADCAST`` to each sampled client → ``TRAIN_DONE`` (its training loss;
   the update and its weight stay at the site, handed to the site's client party);
2. the protocol's own stage sequence (:meth:`~secfl.protocols.parties.Coordinator.run_round`);
3. ``w ← w + server_lr · mean`` and evaluation on the held-out test set.

A :class:`Site` is one data holder's program: its partition of a built-in dataset (or the user's
own file), local training with torch (CUDA, then MPS, then CPU), and the protocol parties it
plays — client ``k`` at site ``k``, plus the roles its protocol assigns (``site_roles``: the
``ckks`` key holder at site 0, quorum members, aggregation servers). Each party object lives in
its site's process only; the server holds the coordinator, which holds public material only.

Under :class:`~secfl.protocols.parties.LocalTransport` this runs in one process
(:func:`local_federation`: tests, benchmarks, threat experiments against a relay); under
:mod:`secfl.runtime.flower` the same objects run in Flower's ServerApp and ClientApps. Either way
the server signs every request and each site its replies when they hold identity keys
(:mod:`secfl.protocols.envelope`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from secfl.crypto.identity import IdentityKey, Roster, new_identities
from secfl.crypto.prg import derive_seed
from secfl.dp.clipping import clip_l2
from secfl.errors import ConfigError, MalformedMessageError, ProtocolAbort, SecFLError
from secfl.fl.codec import ModelCodec
from secfl.fl.data import Dataset, load_dataset
from secfl.fl.fedavg import ModelBroadcast, apply_mean, sample_clients
from secfl.fl.models import build_model, check_model_fits
from secfl.fl.partition import partition
from secfl.fl.training import evaluate_metrics, local_train, select_device
from secfl.protocols import Protocol, RoundSpec, make_protocol
from secfl.protocols.envelope import ServerEnvelopes, SignedParty, SignedTransport, SiteEnvelopes
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import ClientParty, Party, Transport
from secfl.protocols.wire import Message, MsgType, Reader, Writer
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.results import ExperimentResult, RoundRecord
from secfl.runtime.simulator import client_seed, finish_result, protocol_options, protocol_report, single_thread
from secfl.runtime.stopping import EarlyStopping

__all__ = ["TRAIN_STAGE", "TrainDone", "Site", "FederationServer", "site_roles", "TimedTransport",
           "LocalFederation", "local_federation"]

log = logging.getLogger("secfl")

TRAIN_STAGE = "fl.train"
SERVER = server_id(0)


@dataclass(frozen=True)
class TrainDone(Message):
    """Site → server: local training finished (the update stays at the site)."""

    TYPE = MsgType.TRAIN_DONE
    round: int
    sender: int
    train_loss: float
    seconds: float

    def _write(self, w: Writer) -> None:
        w.f64(self.train_loss).f64(self.seconds)

    @classmethod
    def _read(cls, r: Reader, round: int, sender: int) -> TrainDone:
        loss, seconds = r.f64(), r.f64()
        if not (np.isfinite(loss) and np.isfinite(seconds) and seconds >= 0):
            raise MalformedMessageError("TRAIN_DONE: non-finite loss or time")
        return cls(round, sender, loss, seconds)


def site_roles(protocol: Protocol, site: int, sites: int) -> tuple[int, ...]:
    """The party ids site ``site`` plays: its client, plus the protocol's extra roles there."""
    extra = getattr(protocol, "site_roles", None)
    roles: tuple[int, ...] = tuple(extra(site, sites)) if callable(extra) else ()
    return (site, *[r for r in roles if r != site])


def party_roster_of(sites: Roster, protocol: Protocol, count: int) -> Roster:
    """The roster by party id from the roster by site id: every party a site plays (its client
    and its roles, :func:`site_roles`) signs with that site's identity key."""
    return Roster({pid: key for k, key in sites.keys.items() if k < count for pid in site_roles(protocol, k, count)})


def _check_deployable(cfg: ExperimentConfig) -> None:
    if cfg.dp.enabled:
        raise ConfigError("differential privacy is not available across sites yet; run it with `secfl run`")
    if cfg.membership.initial is not None or cfg.membership.schedule:
        raise ConfigError("[membership] schedules run in the simulator; across sites, sites join and leave by"
                          " starting or stopping their program (a site that is gone is a dropout)")
    if cfg.personalize.enabled:
        raise ConfigError("[personalize] is not available across sites yet (each site would fine-tune and report its"
                          " own metrics); run it with `secfl run`")


def _options(cfg: ExperimentConfig, sizes: list[int] | None) -> dict:
    if sizes is None:
        opts = dict(cfg.protocol_options)
        if "max_weight" not in opts:
            raise ConfigError("with a site's own --data the sizes are not public: set protocol_options.max_weight")
        return opts
    return protocol_options(cfg, max(sizes))


class Site:
    """One site's program state: data, model, trainer, and the parties it plays."""

    def __init__(self, cfg: ExperimentConfig, site: int, *, data: Dataset | None = None,
                 parties: Mapping[int, Party] | None = None, identity: IdentityKey | None = None,
                 roster: Roster | None = None) -> None:
        _check_deployable(cfg)
        if not 0 <= site < cfg.clients:
            raise ConfigError(f"site id {site} is out of range: this federation has sites 0..{cfg.clients - 1}")
        self.cfg, self.site = cfg, site
        full = load_dataset(cfg.data, cfg.seed, cfg.task)
        self.task = full.task
        sizes: list[int] | None
        if data is None:
            parts = partition(full.y_train, cfg.clients, cfg.partition, cfg.seed)
            idx = parts[site]
            self.x, self.y = full.x_train[idx], full.y_train[idx]
            sizes = [int(p.size) for p in parts]
        else:
            if data.input_shape != full.input_shape:
                raise ConfigError(f"site {site}: its data has samples of shape {data.input_shape}, the federation's"
                                  f" model takes {full.input_shape}")
            if data.task is not full.task:
                raise ConfigError(f"site {site}: its data is for {data.task.value}, the federation's for"
                                  f" {full.task.value}")
            if full.task.value == "classification" and data.num_classes > full.num_classes:
                raise ConfigError(f"site {site}: its data has {data.num_classes} classes, the federation's model"
                                  f" has {full.num_classes} outputs")
            self.x, self.y = data.x_train, data.y_train
            sizes = None
        self.model = build_model(cfg.model, full.input_shape, full.num_outputs, cfg.seed).cpu()
        self.codec = ModelCodec.from_module(self.model)
        self.device = select_device(cfg.device)
        self.protocol = make_protocol(cfg.protocol, **_options(cfg, sizes))
        party_roster = None
        if roster is not None:
            party_roster = party_roster_of(roster, self.protocol, cfg.clients)
        elif parties is None and getattr(self.protocol, "needs_identities", False):
            raise ConfigError(f"{cfg.protocol} across sites needs this site's identity key and the federation"
                              f" roster (secfl deploy identity / roster; --identity and --roster)")
        if identity is not None and roster is not None and roster.keys.get(site) != identity.public:
            raise ConfigError(f"site {site}: its identity key is not the one the roster lists for site {site}")
        if parties is None:
            parties = {pid: self.protocol.party(pid, identity=identity, roster=party_roster)
                       for pid in site_roles(self.protocol, site, cfg.clients)}
        self.parties = dict(parties)

    def handle(self, party: int, stage: str, request: bytes) -> bytes:
        """Answer one request addressed to one of this site's parties."""
        if stage == TRAIN_STAGE:
            if party != self.site:
                raise MalformedMessageError(f"site {self.site}: a training request for party {party}")
            return self._train(request)
        target = self.parties.get(party)
        if target is None:
            raise MalformedMessageError(f"site {self.site} does not play party {party}")
        return target.handle(stage, request)

    def _train(self, request: bytes) -> bytes:
        msg = ModelBroadcast.from_bytes(request, expect_sender=SERVER)
        if msg.vector.size != self.codec.dim:
            raise MalformedMessageError(f"MODEL_BROADCAST: {msg.vector.size} weights, the model has {self.codec.dim}")
        with single_thread():  # as the simulator trains: the same update, bit for bit (conv kernels
            # reduce in another order with more threads)
            res = local_train(self.model, self.codec, msg.vector, self.x, self.y, self.cfg.train,
                              client_seed(self.cfg.seed, msg.round, self.site), torch.device(self.device),
                              self.task)
        update = res.update
        if self.cfg.clip > 0:
            update, _ = clip_l2(np.asarray(update, dtype=np.float64), self.cfg.clip)
        client = self.parties[self.site]
        if not isinstance(client, ClientParty):
            raise ConfigError(f"site {self.site}: party {self.site} is not a client")
        client.set_input(msg.round, update, float(res.num_examples))
        return TrainDone(msg.round, self.site, res.train_loss, res.seconds).to_bytes()

    def close(self) -> None:
        for p in self.parties.values():
            close = getattr(p, "close", None)
            if callable(close):
                close()
        self.protocol.close()


class TimedTransport(Transport):
    """Wraps a transport and records wall seconds per stage (:attr:`seconds`)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}

    @property
    def failures(self) -> dict[int, str]:  # type: ignore[override]
        return self.inner.failures

    def exchange(self, stage: str, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        t = time.perf_counter()
        try:
            return self.inner.exchange(stage, requests)
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t


def _phases(stage_seconds: Mapping[str, float], protocol_total: float, upload_stage: str) -> dict[str, float]:
    names = list(stage_seconds)
    cut = names.index(upload_stage) if upload_stage in names else len(names)
    setup = sum(stage_seconds[n] for n in names[:cut])
    protect = stage_seconds.get(upload_stage, 0.0)
    reveal = sum(stage_seconds[n] for n in names[cut + 1:])
    return {"setup": setup, "protect": protect, "aggregate": max(0.0, protocol_total - setup - protect - reveal),
            "reveal": reveal}


class FederationServer:
    """The server's program: sampling, training requests, the protocol's stages, FedAvg, evaluation.

    ``transport.net`` (a :class:`~secfl.protocols.network.Network`) counts the bytes of every
    request and reply; results are what ``secfl run`` writes.
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        _check_deployable(cfg)
        self.cfg = cfg
        self.data = load_dataset(cfg.data, cfg.seed, cfg.task)
        parts = partition(self.data.y_train, cfg.clients, cfg.partition, cfg.seed)
        self.sizes = [int(p.size) for p in parts]
        self.protocol = make_protocol(cfg.protocol, **_options(cfg, self.sizes))
        self.coordinator = self.protocol.coordinator()  # type: ignore[attr-defined]
        self.model = build_model(cfg.model, self.data.input_shape, self.data.num_outputs, cfg.seed).cpu()
        check_model_fits(self.model, self.data.input_shape, self.data.num_outputs,
                         regression=self.data.task.value == "regression")
        self.codec = ModelCodec.from_module(self.model)
        self.device = select_device(cfg.device)

    def run(self, transport: Transport, net: Network, on_round: Callable[[RoundRecord], None] | None = None,
            before_round: Callable[[int], None] | None = None) -> ExperimentResult:
        """All rounds; ``before_round(rnd)`` runs first in each (e.g. to greet rejoining sites)."""
        cfg = self.cfg
        global_vec = self.codec.to_vector(self.model).astype(np.float32)
        seed_bytes = derive_seed(int(cfg.seed).to_bytes(32, "little"), "experiment")
        upload_stage = getattr(self.coordinator, "UPLOAD_STAGE", f"{cfg.protocol}.upload")
        records: list[RoundRecord] = []
        stopping = EarlyStopping(cfg.stop)
        stopped: tuple[int, str] | None = None
        for rnd in range(cfg.rounds):
            t_round = time.perf_counter()
            if before_round is not None:
                before_round(rnd)
            chosen, _ = sample_clients(cfg.clients, cfg.sample_fraction, 0.0, cfg.seed, rnd)
            sent0, recv0 = dict(net.sent), dict(net.received)
            timed = TimedTransport(transport)
            wire = ModelBroadcast(rnd, SERVER, global_vec).to_bytes()
            t = time.perf_counter()
            replies = timed.exchange(TRAIN_STAGE, {c: wire for c in chosen})
            t_train = time.perf_counter() - t
            dropped: dict[int, str] = {}
            losses = []
            for c in chosen:
                try:
                    losses.append(TrainDone.from_bytes(replies[c], expect_round=rnd, expect_sender=c).train_loss)
                except KeyError:
                    dropped[c] = transport.failures.get(c, "no reply to the training request")
                except SecFLError as exc:
                    dropped[c] = f"{type(exc).__name__}: {exc}"
            trained = tuple(c for c in chosen if c not in dropped)
            timed.seconds.clear()
            t = time.perf_counter()
            try:
                if not trained:
                    raise ProtocolAbort("no client finished training")
                spec = RoundSpec(rnd, trained, self.codec.dim, seed=derive_seed(seed_bytes, "round", rnd))
                out = self.coordinator.run_round(spec, timed)
                global_vec = apply_mean(global_vec, out.mean, cfg.server_lr)
                for c in out.dropped:
                    dropped.setdefault(c, getattr(self.coordinator, "dropped", {}).get(c, "dropped by the protocol"))
            except SecFLError as exc:
                log.warning("round %d aborted, global model unchanged: %s", rnd + 1, exc)
                for c in chosen:
                    dropped.setdefault(c, f"round aborted: {exc}")
            phases = _phases(timed.seconds, time.perf_counter() - t, upload_stage)
            t = time.perf_counter()
            metrics = evaluate_metrics(self.model, self.codec, global_vec, self.data.x_test, self.data.y_test,
                                       torch.device(self.device), self.data.task)
            t_eval = time.perf_counter() - t
            ups = [net.sent.get(c, 0) - sent0.get(c, 0) for c in chosen]
            downs = [net.received.get(c, 0) - recv0.get(c, 0) for c in chosen]
            rec = RoundRecord(
                round=rnd + 1, accuracy=metrics.get("accuracy"), loss=metrics["loss"], metrics=metrics,
                train_loss=float(np.mean(losses)) if losses else float("nan"),
                clients=list(chosen), dropped=sorted(dropped),
                dropped_reasons={str(k): v for k, v in sorted(dropped.items())},
                bytes_up_per_client=float(np.mean(ups)), bytes_down_per_client=float(np.mean(downs)),
                model_bytes_down_per_client=float(len(wire)),
                seconds={"train": t_train, **phases, "eval": t_eval, "total": time.perf_counter() - t_round},
            )
            records.append(rec)
            if on_round is not None:
                on_round(rec)
            reason = stopping.update(rnd + 1, metrics)
            if reason is not None:
                stopped = (rnd + 1, reason)
                break
        result = ExperimentResult.build(cfg, records, **protocol_report(self.protocol, records),
                                        model_vector=global_vec, dim=self.codec.dim,
                                        dataset=self.data.name, client_sizes=self.sizes, device=str(self.device),
                                        engine="sites")
        finish_result(result, cfg, self.model, self.codec, self.data, stopped)
        return result

    def close(self) -> None:
        self.protocol.close()


@dataclass
class LocalFederation:
    """Every site of an experiment in this process, each behind its own envelopes (its own
    identity key), and the server's envelopes: :meth:`transport` is what the server talks through."""

    sites: list[Site]
    parties: dict[int, Party]
    envelopes: ServerEnvelopes | None

    def transport(self, net: Network, **kwargs: object) -> Transport:
        """A :class:`~secfl.protocols.parties.LocalTransport` over ``net`` (``kwargs``: its options,
        e.g. ``silent``), signed when the federation has identities."""
        from secfl.protocols.parties import LocalTransport

        inner = LocalTransport(net, self.parties, **kwargs)  # type: ignore[arg-type]
        return inner if self.envelopes is None else SignedTransport(inner, self.envelopes)

    def close(self) -> None:
        for s in self.sites:
            s.close()


def local_federation(cfg: ExperimentConfig, *, envelopes: bool = True) -> LocalFederation:
    """Build every site of ``cfg`` in this process, each with a fresh identity key of its own
    (the server has one too): what a deployment has. ``envelopes=False`` leaves the messages
    unsigned (the protocols' own signed key advertisements stay): only to measure what the
    envelopes cost."""
    keys, roster = new_identities([*range(cfg.clients), SERVER])
    sites = [Site(cfg, k, identity=keys[k], roster=roster) for k in range(cfg.clients)]
    parties: dict[int, Party] = {}
    for s in sites:
        env = SiteEnvelopes(keys[s.site], s.site, roster)
        for pid in s.parties:
            party = _SiteParty(s, pid)
            parties[pid] = SignedParty(pid, party.handle, env) if envelopes else party
    owner = {pid: s.site for s in sites for pid in s.parties}
    return LocalFederation(sites, parties, ServerEnvelopes(keys[SERVER], roster, owner.get) if envelopes else None)


class _SiteParty(Party):
    """One party id of a site, as the site's program answers for it."""

    def __init__(self, site: Site, pid: int) -> None:
        self.site, self.party_id = site, pid

    def handle(self, stage: str, request: bytes) -> bytes:
        return self.site.handle(self.party_id, stage, request)
