"""The in-process federated simulator: rounds of local training + a protocol round + FedAvg.

Each round: sample clients → broadcast the global model (a real serialized message) → local
training (in this process, or in a process pool with ``workers > 1``) → optional L2 clipping →
the protocol's round (setup, protect, receive, reveal; see :mod:`secfl.protocols.base`) →
``w ← w + server_lr · mean`` → evaluation on the held-out test set (accuracy and cross-entropy
for classification; MSE, MAE and R² for regression) → the stopping rule (``[stop]``, or the
``on_round`` callback raising :class:`~secfl.runtime.stopping.StopRun`).

Reproducibility: client sampling, dropout draws, training seeds and the quantization dither all
derive from ``config.seed``; client training runs single-threaded in every worker and in this
process, so on CPU a seed gives bit-identical models whatever the worker count. Cryptographic
keys, masks and shares stay fresh (never seeded); protocols whose decryption adds noise
(CKKS) therefore differ run to run within their documented error bound.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secfl._version import __version__
from secfl.crypto.prg import derive_seed
from secfl.dp.clipping import clip_l2
from secfl.errors import ConfigError, ProtocolAbort
from secfl.fl.codec import ModelCodec
from secfl.fl.data import Dataset, Task, load_dataset
from secfl.fl.fedavg import ModelBroadcast, apply_mean, sample_clients
from secfl.fl.models import ModelSpec, build_model, check_model_fits, describe_model
from secfl.fl.partition import partition
from secfl.fl.training import LocalResult, evaluate_metrics, local_train, select_device
from secfl.protocols import RoundSpec, get_protocol, make_protocol
from secfl.protocols.base import upload_one, weight_precision
from secfl.protocols.network import Network, server_id
from secfl.runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.membership import Membership, MembershipCallback
from secfl.runtime.personalize import split_sites, summarize
from secfl.runtime.privacy import RunPrivacy
from secfl.runtime.results import ExperimentResult, RoundRecord
from secfl.runtime.stopping import EarlyStopping, StopRun
from secfl.runtime.workers import TrainingPool

__all__ = ["Experiment", "UpdateHook", "client_seed", "protocol_options", "finish_result", "StopRun"]

log = logging.getLogger("secfl")

#: (round, client, update) -> update; lets tests and attack experiments inject misbehaviour.
UpdateHook = Callable[[int, int, np.ndarray], np.ndarray]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def protocol_report(protocol: Any, records: Sequence[RoundRecord]) -> dict[str, Any]:
    """``{"protocol_parameters": …}`` for results.json when the protocol derives parameters per
    round size (secagg: its graph and failure probabilities), for the first round's size."""
    report = getattr(getattr(protocol, "options", None), "graph_report", None)
    if not callable(report) or not records or len(records[0].clients) < 3:
        return {}
    return {"protocol_parameters": report(len(records[0].clients))}


def client_seed(seed: int, rnd: int, client: int) -> int:
    """The training seed of ``client`` in round ``rnd`` (minibatch order), from the experiment seed."""
    return int(np.random.SeedSequence([seed, rnd, client, 0x5EC]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def protocol_options(cfg: ExperimentConfig, largest_client: int) -> dict[str, Any]:
    """The configured protocol options, plus a public weight bound when the protocol takes one
    and the user set none: 1 under DP (every weight is 1), else the largest client's size."""
    opts = dict(cfg.protocol_options)
    fields = {f.name for f in dataclasses.fields(get_protocol(cfg.protocol).Options)}
    if "max_weight" in fields and "max_weight" not in opts:
        opts["max_weight"] = 1.0 if cfg.dp.enabled else float(largest_client)
    return opts


def precision_report(cfg: ExperimentConfig, opts: dict[str, Any], largest_client: int) -> dict[str, float]:
    """``meta.precision``: the protocol's public weight bound against the largest weight a round
    can use (1 under DP, else the largest client's size) and the bits of precision the difference
    gives up; a warning when it is a bit or more (only a ``max_weight`` set by hand can be loose)."""
    if "max_weight" not in opts:
        return {}
    cost = weight_precision(opts["max_weight"], 1.0 if cfg.dp.enabled else float(largest_client))
    if cost["bits_given_up"] >= 1:
        log.warning("protocol_options.max_weight %g is above the largest weight a client can have (%g): the encoding"
                    " gives up %.1f bits of precision (leave it unset for the tight bound)", cost["max_weight"],
                    cost["largest_weight"], cost["bits_given_up"])
    return cost


def finish_result(result: ExperimentResult, cfg: ExperimentConfig, model: nn.Module, codec: ModelCodec,
                  data: Dataset, stopped: tuple[int, str] | None, *, given_model: bool = False) -> None:
    """What every engine adds to a result: the task, the model used, why the run stopped, and the
    final model as an artefact (``model`` gets the final weights)."""
    cls = type(model)
    spec = ModelSpec(name=f"{cls.__module__}:{cls.__qualname__}") if given_model else cfg.model
    codec.load_vector(model, result.model_vector)
    model.cpu()
    result.meta["task"] = data.task.value
    result.meta["model"] = describe_model(spec, model)
    result.final["stopped_at"] = None if stopped is None else stopped[0]
    result.final["stop_reason"] = f"ran all {cfg.rounds} rounds" if stopped is None else stopped[1]
    if not given_model:  # a module passed in cannot be rebuilt from a spec: only model.npy
        from secfl.runtime.artifacts import model_info

        result.model, result.model_info = model, model_info(cfg.model, data)


def _add_personalization(result: ExperimentResult, evaluations: list[dict[str, Any]]) -> None:
    if evaluations:
        result.meta["personalization"] = evaluations
        result.final["personalized"] = evaluations[-1]


@dataclass
class _ClientWork:
    """Everything a worker needs to train any client (sent once per worker)."""

    x: np.ndarray
    y: np.ndarray
    parts: list[np.ndarray]
    model: nn.Module
    train: Any
    device: str
    task: Task = Task.CLASSIFICATION


_WORK: _ClientWork | None = None
_CODEC: ModelCodec | None = None


def _set_work(work: _ClientWork, codec: ModelCodec) -> None:
    global _WORK, _CODEC
    _WORK, _CODEC = work, codec


def _init_worker(work: _ClientWork) -> None:
    torch.set_num_threads(1)
    # torch pickles tensors for multiprocessing through shared memory: without a private copy
    # every worker would train the same parameter storage at once (a silent data race).
    model = copy.deepcopy(work.model)
    _set_work(dataclasses.replace(work, model=model), ModelCodec.from_module(model))


def _train_one(client: int, global_vector: np.ndarray, seed: int) -> LocalResult:
    if _WORK is None or _CODEC is None:
        raise ProtocolAbort("worker used before initialisation")
    idx = _WORK.parts[client]
    with single_thread():
        return local_train(_WORK.model, _CODEC, global_vector, _WORK.x[idx], _WORK.y[idx], _WORK.train, seed,
                           torch.device(_WORK.device), _WORK.task)


@dataclass
class Experiment:
    """A federated experiment. ``Experiment(config).run()`` → :class:`ExperimentResult`.

    ``model``: any ``torch.nn.Module`` to train instead of ``config.model`` (its parameters and
    buffers are what the protocol protects). ``dataset``: a :class:`~secfl.fl.data.Dataset`
    instead of ``config.data``. ``update_hook``: called on each client's update before it is
    protected (fault injection for tests and attack studies). ``membership``: called before every
    round with (round, active clients), returns the active clients (dynamic membership,
    :mod:`secfl.runtime.membership`).
    """

    config: ExperimentConfig = field(default_factory=ExperimentConfig)
    model: nn.Module | None = None
    dataset: Dataset | None = None
    update_hook: UpdateHook | None = None
    membership: MembershipCallback | None = None
    _privacy: RunPrivacy | None = field(default=None, init=False, repr=False)

    def run(self, on_round: Callable[[RoundRecord], bool | None] | None = None, *,
            out: str | Path | None = None, resume: bool = False) -> ExperimentResult:
        """Run every round (or until the stopping rule or ``on_round`` stops it: raising
        :class:`StopRun` or returning ``True`` ends the run after that round, result kept).

        ``out``: after every round write a checkpoint and the results so far there
        (:mod:`secfl.runtime.checkpoint`); ``resume``: continue from ``out``'s checkpoint."""
        cfg = self.config
        checkpoint = None
        if resume:
            if out is None:
                raise ConfigError("resume needs the output folder of the run to resume")
            checkpoint = load_checkpoint(out)
            if checkpoint.config != cfg.to_dict():
                raise ConfigError(f"{out}: the checkpoint was written by another configuration")
        data = self.dataset if self.dataset is not None else load_dataset(cfg.data, cfg.seed, cfg.task)
        if cfg.task is not Task.AUTO and data.task is not cfg.task:
            raise ConfigError(f"task = {cfg.task.value!r}, but the dataset given is for {data.task.value}")
        parts = partition(data.y_train, cfg.clients, cfg.partition, cfg.seed)
        site_tests: list[np.ndarray] | None = None
        if cfg.personalize.enabled:  # each site's held-out part never reaches training
            parts, site_tests = split_sites(parts, cfg.personalize.holdout, cfg.seed)
        model = self.model if self.model is not None else build_model(
            cfg.model, data.input_shape, data.num_outputs, cfg.seed)
        model = model.cpu()
        check_model_fits(model, data.input_shape, data.num_outputs, regression=data.task is Task.REGRESSION)
        codec = ModelCodec.from_module(model)
        device = select_device(cfg.device)
        work = _ClientWork(data.x_train, data.y_train, parts, model, cfg.train, str(device), data.task)
        global_vec = codec.to_vector(model).astype(np.float32)
        largest = max(int(p.size) for p in parts)
        opts = protocol_options(cfg, largest)
        precision = precision_report(cfg, opts, largest)
        protocol = make_protocol(cfg.protocol, **opts)
        seed_bytes = derive_seed(int(cfg.seed).to_bytes(32, "little"), "experiment")
        self._privacy = None
        if cfg.dp.enabled:
            per_round = max(1, int(round(cfg.sample_fraction * cfg.clients)))
            integer = bool(getattr(protocol, "integer_domain", False))
            if integer and not hasattr(protocol, "with_dp"):
                raise ConfigError(f"protocol {cfg.protocol!r} does not support differential privacy yet")
            self._privacy = RunPrivacy.create(cfg.dp, clip=cfg.clip, rounds=cfg.rounds, per_round=per_round,
                                              dim=codec.dim, integer_protocol=integer,
                                              modulus_bits=getattr(protocol, "modulus_bits", None))
            if integer:
                protocol = protocol.with_dp(self._privacy.mechanism)  # type: ignore[attr-defined]
        sizes = [int(p.size) for p in parts]
        log.info("secfl %s: %s, %s/%s, %d clients (sizes %d..%d), dim %d, device %s",
                 __version__, cfg.protocol, data.name, cfg.model.name, cfg.clients, min(sizes), max(sizes),
                 codec.dim, device)
        pool = None
        if cfg.workers > 1:
            pool = TrainingPool(cfg.workers, _init_worker, work)
        else:
            _set_work(work, codec)
        records: list[RoundRecord] = []
        stopping = EarlyStopping(cfg.stop)
        stopped: tuple[int, str] | None = None
        personalized: list[dict[str, Any]] = []
        site_models: dict[int, nn.Module] = {}
        members = Membership(cfg.membership, cfg.clients, self.membership)
        start = 0
        if checkpoint is not None:
            start, records, global_vec = checkpoint.rounds_done, list(checkpoint.records), checkpoint.global_vec
            state = dict(checkpoint.stopping)
            personalized = list(state.pop("personalization", []))
            members = Membership(cfg.membership, cfg.clients, self.membership, active=state.pop("active"))
            members.changes = list(state.pop("membership_changes"))
            done = state.pop("stopped", None)
            stopped = None if done is None else (int(done[0]), str(done[1]))
            stopping = EarlyStopping(cfg.stop, **state)
            if self._privacy is not None:
                self._privacy.restore(checkpoint.privacy_steps)
            log.info("resuming %s after round %d", out, start)

        def save(rnd_done: int) -> None:
            if out is None:
                return
            state = {**{k: v for k, v in asdict(stopping).items() if k != "config"},
                     "stopped": None if stopped is None else list(stopped), "personalization": personalized,
                     "active": members.ordered(), "membership_changes": members.changes}
            save_checkpoint(out, Checkpoint(rnd_done, global_vec, records, state, len(records), cfg.to_dict()))
            partial = ExperimentResult.build(cfg, records, model_vector=global_vec, dim=codec.dim,
                                             dataset=data.name, client_sizes=sizes, device=str(device))
            finish_result(partial, cfg, model, codec, data, stopped, given_model=self.model is not None)
            _add_personalization(partial, personalized)
            if members.changes:
                partial.meta["membership"] = members.changes
            partial.meta["complete"] = stopped is not None or rnd_done == cfg.rounds
            partial.write(out)

        try:
            for rnd in range(start, cfg.rounds if stopped is None else start):
                t_round = time.perf_counter()
                _, left = members.update(rnd + 1)
                if left:
                    protocol.clients_left(left)
                active = members.ordered()  # every client: exactly the fixed-population sampling
                picked, gone = sample_clients(len(active), cfg.sample_fraction, cfg.dropout, cfg.seed, rnd)
                chosen, silent = [active[i] for i in picked], {active[i] for i in gone}
                net = Network()
                # 1. broadcast: one real message, delivered to every sampled client
                t = time.perf_counter()
                wire = ModelBroadcast(rnd, server_id(0), global_vec).to_bytes()
                received = {c: ModelBroadcast.from_bytes(net.send(server_id(0), c, wire), expect_round=rnd).vector
                            for c in chosen}
                model_bytes_down = len(wire)
                # 2. local training
                seeds = [client_seed(cfg.seed, rnd, c) for c in chosen]
                if pool is not None:
                    results = pool.map(_train_one, chosen, [received[c] for c in chosen], seeds)
                else:
                    results = [_train_one(c, received[c], s) for c, s in zip(chosen, seeds, strict=True)]
                t_train = time.perf_counter() - t
                # 3. protocol round
                record = self._protocol_round(protocol, net, rnd, chosen, silent, results, seed_bytes, codec.dim)
                if record.revealed is not None:
                    global_vec = apply_mean(global_vec, record.revealed, cfg.server_lr)
                # 4. evaluation
                t = time.perf_counter()
                metrics = evaluate_metrics(model, codec, global_vec, data.x_test, data.y_test, device, data.task)
                t_eval = time.perf_counter() - t
                ups = [net.sent.get(c, 0) for c in chosen]
                downs = [net.received.get(c, 0) for c in chosen]
                rec = RoundRecord(
                    round=rnd + 1,
                    accuracy=metrics.get("accuracy"),
                    loss=metrics["loss"],
                    train_loss=float(np.mean([r.train_loss for r in results])),
                    clients=list(chosen),
                    dropped=sorted(record.dropped),
                    dropped_reasons={str(k): v for k, v in sorted(record.dropped.items())},
                    bytes_up_per_client=float(np.mean(ups)),
                    bytes_down_per_client=float(np.mean(downs)),
                    model_bytes_down_per_client=float(model_bytes_down),
                    seconds={"train": t_train, **record.seconds, "eval": t_eval,
                             "total": time.perf_counter() - t_round},
                    epsilon=None if self._privacy is None else self._privacy.step(),
                    metrics=metrics,
                    population=len(active),
                    error_bound=record.error_bound,
                )
                records.append(rec)
                reason = stopping.update(rnd + 1, metrics)
                if on_round is not None:
                    try:
                        if on_round(rec) is True:
                            reason = reason or "stopped by the on_round callback"
                    except StopRun as stop:
                        reason = reason or stop.reason
                if reason is not None:
                    stopped = (rnd + 1, reason)
                    log.info("stopping after round %d: %s", rnd + 1, reason)
                if site_tests is not None and (stopped is not None or cfg.personalize.due(rnd + 1, cfg.rounds)):
                    final = stopped is not None or rnd + 1 == cfg.rounds
                    personalized.append(self._personalize(rnd + 1, model, codec, global_vec, data, parts, site_tests,
                                                          device, site_models if final else None))
                save(rnd + 1)
                if stopped is not None:
                    break
        finally:
            protocol.close()
            if pool is not None:
                pool.close()
        if not records:
            raise ConfigError("no round ran (rounds already complete in the checkpoint?)")
        result = ExperimentResult.build(cfg, records, model_vector=global_vec, dim=codec.dim, dataset=data.name,
                                        client_sizes=sizes, device=str(device), **protocol_report(protocol, records))
        finish_result(result, cfg, model, codec, data, stopped, given_model=self.model is not None)
        _add_personalization(result, personalized)
        if members.changes:
            result.meta["membership"] = members.changes
        if cfg.personalize.save_models:
            result.site_models = site_models
        result.meta["complete"] = True
        if precision:
            result.meta["precision"] = precision
        if checkpoint is not None:
            result.meta["resumed_after_round"] = checkpoint.rounds_done
        if self._privacy is not None:
            result.final["delta"] = self._privacy.plan.delta
            result.meta["dp"] = self._privacy.summary()
        return result

    def _personalize(self, rnd: int, model: nn.Module, codec: ModelCodec, global_vec: np.ndarray, data: Dataset,
                     parts: list[np.ndarray], tests: list[np.ndarray], device: torch.device,
                     keep: dict[int, nn.Module] | None) -> dict[str, Any]:
        """Every site fine-tunes ``global_vec`` on its training part and evaluates on its held-out
        part, before and after (``keep``: the fine-tuned models, by site)."""
        cfg = self.config
        train = cfg.personalize.train_config()
        sites = []
        for k, (idx, test) in enumerate(zip(parts, tests, strict=True)):
            x_t, y_t = data.x_train[test], data.y_train[test]
            before = evaluate_metrics(model, codec, global_vec, x_t, y_t, device, data.task)
            with single_thread():
                res = local_train(model, codec, global_vec, data.x_train[idx], data.y_train[idx], train,
                                  client_seed(cfg.seed, 1_000_000 + rnd, k), device, data.task)
            own = (global_vec + res.update).astype(np.float32)
            after = evaluate_metrics(model, codec, own, x_t, y_t, device, data.task)
            sites.append({"site": k, "train": int(idx.size), "test": int(test.size), "before": before,
                          "after": after})
            if keep is not None:
                codec.load_vector(model, own)
                keep[k] = copy.deepcopy(model).cpu()
        codec.load_vector(model, global_vec)
        return summarize(rnd, sites)

    def _protocol_round(self, protocol: Any, net: Network, rnd: int, chosen: Sequence[int], silent: set[int],
                        results: Sequence[LocalResult], seed: bytes, dim: int) -> _RoundOutcome:
        cfg = self.config
        seconds = {"setup": 0.0, "protect": 0.0, "aggregate": 0.0, "reveal": 0.0}
        dropped: dict[int, str] = {c: "went silent before uploading (simulated dropout)" for c in silent}
        spec = RoundSpec(rnd, tuple(chosen), dim, seed=derive_seed(seed, "round", rnd))
        dp_weights: dict[int, float] = {}
        t = time.perf_counter()
        prot_round = protocol.open_round(spec, net)
        prot_round.setup()
        seconds["setup"] = time.perf_counter() - t
        for c, res in zip(chosen, results, strict=True):
            if c in silent:
                continue
            update = res.update
            if self.update_hook is not None:
                update = self.update_hook(rnd, c, update)
            if cfg.clip > 0:
                # clip in float64: a float32 vector scaled to norm C can land a rounding error above C
                update, _ = clip_l2(np.asarray(update, dtype=np.float64), cfg.clip)
            weight = float(res.num_examples)
            privacy = self._privacy
            if privacy is not None:
                weight = 1.0  # under DP each clipped update counts once (sensitivity C) ...
                dp_weights[c] = privacy.dp_weight(cfg.dp, res.num_examples)
                if dp_weights[c] != 1.0:  # ... or scaled by its public weight <= 1, before its noise
                    update = np.asarray(update, dtype=np.float64) * dp_weights[c]
                if privacy.distributed and not privacy.integer:
                    t = time.perf_counter()  # the client's own noise share: client-side work
                    update = update.astype(np.float64) + privacy.client_noise(update.size)
                    seconds["protect"] += time.perf_counter() - t
            failed = upload_one(prot_round, c, update, weight, seconds)
            if failed is not None:
                side, dropped[c] = failed
                what = "client %d dropped" if side == "client" else "server rejected client %d"
                log.warning("round %d: " + what + ": %s", rnd + 1, c, dropped[c])
        t = time.perf_counter()
        revealed = None
        try:
            out = prot_round.reveal()
            revealed = out.mean
            if self._privacy is not None:
                if self._privacy.distributed:
                    self._privacy.check_survivors(len(out.included))
                else:
                    revealed = self._privacy.central_noise_on_mean(np.asarray(revealed), len(out.included))
                if cfg.dp.weighted:  # the noisy sum over the public total weight (post-processing)
                    total = sum(dp_weights[c] for c in out.included)
                    revealed = np.asarray(revealed) * (len(out.included) / total)
            for c in out.dropped:
                dropped.setdefault(c, "dropped by the protocol")
        except ProtocolAbort as exc:
            log.warning("round %d aborted, global model unchanged: %s", rnd + 1, exc)
            for c in chosen:
                dropped.setdefault(c, f"round aborted: {exc}")
        seconds["reveal"] = time.perf_counter() - t
        bound = getattr(prot_round, "error_bound", None)
        return _RoundOutcome(revealed, dropped, seconds, None if bound is None else float(bound))


@dataclass
class _RoundOutcome:
    revealed: np.ndarray | None
    dropped: dict[int, str]
    seconds: dict[str, float]
    error_bound: float | None = None

