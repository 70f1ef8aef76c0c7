"""The ``secfl`` command: ``run``, ``compare``, ``threats`` and ``info``.

``secfl run [CONFIG.toml] [flags]`` runs one experiment (flags override the file) and writes
``results.json``, ``rounds.csv`` and the resolved ``config.toml`` into ``--out``.
``secfl compare --protocols a,b,...`` runs the same experiment once per protocol and writes a
Markdown + JSON table and a PNG plot. ``secfl threats`` measures what each adversary learns under
each protocol (:mod:`secfl.threats`). ``secfl info`` prints versions, the device, the protocols
and the CKKS presets.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secfl._version import __version__
from secfl.errors import SecFLError

__all__ = ["main"]

log = logging.getLogger("secfl")

# flag -> dotted config key
_FLAGS: dict[str, tuple[str, type, str]] = {
    "protocol": ("protocol", str, "plaintext | ckks | ckks-threshold | additive | secagg"),
    "dataset": ("data.name", str, "breast-cancer | digits | synthetic | npz | mnist-idx"),
    "data_path": ("data.path", str, "file (.npz) or directory (MNIST IDX) for user data"),
    "model": ("model", str, "logreg | linear | mlp | cnn | pkg.module:Factory (options: --set model.hidden=[64,64])"),
    "task": ("task", str, "auto | classification | regression (auto: from the labels)"),
    "clients": ("clients", int, "number of clients"),
    "rounds": ("rounds", int, "number of federated rounds"),
    "seed": ("seed", int, "experiment seed"),
    "sample_fraction": ("sample_fraction", float, "fraction of clients sampled per round"),
    "dropout": ("dropout", float, "probability a sampled client drops before uploading"),
    "clip": ("clip", float, "L2 clip norm applied to each update (0: off)"),
    "server_lr": ("server_lr", float, "server learning rate"),
    "device": ("device", str, "auto | cpu | cuda | mps"),
    "workers": ("workers", int, "processes for client training"),
    "partition": ("partition.kind", str, "iid | dirichlet | shards"),
    "alpha": ("partition.alpha", float, "Dirichlet concentration"),
    "epochs": ("train.epochs", int, "local epochs"),
    "batch_size": ("train.batch_size", int, "local batch size"),
    "lr": ("train.lr", float, "local learning rate"),
    "optimizer": ("train.optimizer", str, "sgd | adam"),
    "prox_mu": ("train.prox_mu", float, "FedProx mu"),
    "dp_epsilon": ("dp.epsilon", float, "differential privacy: target epsilon over the run (0 = off)"),
    "dp_delta": ("dp.delta", float, "differential privacy: delta (default 1e-5)"),
    "dp_mode": ("dp.mode", str, "distributed (clients add noise before protection) | central (server adds it)"),
    "dp_mechanism": ("dp.mechanism", str, "auto | gaussian | discrete-gaussian | skellam"),
    "dp_min_honest": ("dp.min_honest", int, "distributed DP: guaranteed honest surviving clients (0 = auto)"),
}


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="TOML config file (flags override it)")
    for flag, (_, typ, help_) in _FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set protocol_options.preset=nvflare (value parsed as TOML)")
    p.add_argument("--out", default=None,
                   help="output directory (default: a new runs/<protocol>-<dataset>-<model>[-N])")
    p.add_argument("--force", action="store_true", help="replace the results of another run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-round table")


def _parse_value(text: str) -> Any:
    from secfl.runtime.config import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def _resolve(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    from secfl.runtime.config import ExperimentConfig, apply_overrides, load_toml

    base = load_toml(args.config) if args.config else {}
    overrides: dict[str, Any] = {}
    for flag, (key, _, _) in _FLAGS.items():
        v = getattr(args, flag)
        if v is not None:
            overrides[key] = v
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"secfl: --set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v.strip())
    overrides.update(extra or {})
    return ExperimentConfig.from_dict(apply_overrides(base, overrides))


def _default_out(cfg: Any) -> Path:
    """A folder no earlier run uses: runs/<protocol>-<dataset>-<model>, else with -2, -3, ..."""
    from secfl.runtime.checkpoint import fresh_default_out

    return fresh_default_out(Path("runs") / f"{cfg.protocol}-{cfg.data.name.value}-{_model_label(cfg)}")


def _model_label(cfg: Any) -> str:
    """The model's name, safe in a path (a factory 'pkg.mod:Make' becomes 'pkg.mod-Make')."""
    return str(cfg.model.name).replace(":", "-").replace("/", "-")


def _metric(r: Any) -> float:
    """The round's headline metric: accuracy, or the test MSE for regression."""
    return float(r.accuracy if r.accuracy is not None else r.metrics.get("mse", r.loss))


def _final_line(f: dict[str, Any]) -> str:
    m = f.get("metrics") or {}
    if f.get("accuracy") is None and "mse" in m:
        head = f"final test mse {m['mse']:.6g}, mae {m['mae']:.6g}, r2 {m['r2']:.4f}"
    else:
        head = f"final accuracy {f['accuracy']:.4f}, loss {f['loss']:.4f}"
    stop = f" (stopped early: {f['stop_reason']})" if f.get("stopped_at") else ""
    return f"{head} after {f['rounds']} rounds{stop}"


def _personal_table(ev: dict[str, Any]) -> str:
    """Per-site fine-tuning summary: the headline metric on each site's held-out data."""
    key = "accuracy" if "accuracy" in ev["mean_before"] else "mse"
    lines = [f"personalization after round {ev['round']} (each site's held-out {key}):",
             f"{'site':>5} {'train':>6} {'test':>5} {'global':>9} {'fine-tuned':>10}"]
    for s in ev["sites"]:
        lines.append(f"{s['site']:>5} {s['train']:>6} {s['test']:>5} {s['before'][key]:>9.4g} {s['after'][key]:>10.4g}")
    lines.append(f"{'mean':>5} {'':>6} {'':>5} {ev['mean_before'][key]:>9.4g} {ev['mean_after'][key]:>10.4g}")
    return "\n".join(lines)


_HEADER = f"{'round':>5} {'acc|mse':>7} {'loss':>8} {'clients':>7} {'drop':>4} {'up B/cl':>11} {'down B/cl':>11} " \
          f"{'train s':>8} {'prot s':>8} {'aggr s':>8} {'reveal s':>8} {'total s':>8} {'eps':>7}"


def _row(r: Any) -> str:
    s = r.seconds
    return (f"{r.round:>5} {_metric(r):>7.4g} {r.loss:>8.4g} {len(r.clients):>7} {len(r.dropped):>4} "
            f"{r.bytes_up_per_client:>11,.0f} {r.bytes_down_per_client:>11,.0f} {s['train']:>8.3f} "
            f"{s['setup'] + s['protect']:>8.3f} {s['aggregate']:>8.3f} {s['reveal']:>8.3f} {s['total']:>8.3f} "
            f"{'inf' if r.epsilon is None else format(r.epsilon, '.3f'):>7}")


def _run_one(cfg: Any, out: Path, quiet: bool, label: str = "", *, resume: bool = False,
             force: bool = False) -> Any:
    from tqdm import tqdm

    from secfl.runtime.checkpoint import claim_out
    from secfl.runtime.config import dump_toml
    from secfl.runtime.simulator import Experiment

    claim_out(out, dump_toml(cfg.to_dict()), resume=resume, force=force)
    bar = tqdm(total=cfg.rounds, desc=label or cfg.protocol, unit="round", disable=quiet, file=sys.stderr,
               leave=False)
    if not quiet:
        tqdm.write(_HEADER)

    def on_round(rec: Any) -> None:
        bar.update(1)
        bar.set_postfix(metric=f"{_metric(rec):.4g}")
        if not quiet:
            tqdm.write(_row(rec))

    try:
        result = Experiment(cfg).run(on_round, out=out, resume=resume)
    except KeyboardInterrupt:
        bar.close()
        print(f"secfl: interrupted; the completed rounds are in {out}/ (continue with: secfl run --resume {out})",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        bar.close()
    result.write(out)
    return result


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        from secfl.runtime.config import ExperimentConfig, load_toml

        out = Path(args.resume)
        if args.config or args.out or args.set or any(getattr(args, f) is not None for f in _FLAGS):
            raise SystemExit("secfl run --resume OUT takes the configuration from OUT/config.toml; give no other"
                             " settings")
        cfg = ExperimentConfig.from_dict(load_toml(out / "config.toml"))
        result = _run_one(cfg, out, args.quiet, resume=True)
    else:
        cfg = _resolve(args)
        out = Path(args.out) if args.out else _default_out(cfg)
        result = _run_one(cfg, out, args.quiet, force=args.force)
    print(f"{_final_line(result.final)} ({cfg.protocol}, {cfg.data.name.value}/{cfg.model.name});"
          f" results and model in {out}/")
    if result.final.get("personalized"):
        print(_personal_table(result.final["personalized"]))
    return 0


def cmd_deploy_certs(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.certs import write_certs

    paths = write_certs(args.dir, args.host, args.days, overwrite=args.overwrite)
    print(f"wrote {', '.join(p.name for p in paths)} to {Path(args.dir)}/ (server certificate for {args.host})")
    return 0


def cmd_deploy_node_key(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.certs import write_node_key

    priv, pub = write_node_key(args.dir, args.site, overwrite=args.overwrite)
    print(f"wrote {priv} (keep it at site {args.site}) and {pub} (give it to the server operator)")
    return 0


def cmd_deploy_identity(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.certs import write_identity

    priv, pub = write_identity(args.dir, None if args.server else args.site, overwrite=args.overwrite)
    where = "the server" if args.server else f"site {args.site}"
    print(f"wrote {priv} (keep it at {where}) and {pub} (public: it goes into the roster)")
    return 0


def cmd_deploy_roster(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.certs import write_roster

    path = write_roster(args.dir, args.out)
    print(f"wrote {path}: give every site a copy (with --roster)")
    return 0


def cmd_deploy_server(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.launch import deploy_server

    if not args.quiet:
        print(_HEADER, flush=True)

    def on_round(rec: dict[str, Any]) -> None:
        if not args.quiet:
            print(_row(argparse.Namespace(**{"metrics": {}, **rec})), flush=True)

    out = deploy_server(args.config, args.address, args.certs, args.out, stage_timeout=args.stage_timeout,
                        train_timeout=args.train_timeout, join_timeout=args.join_timeout, record=args.record,
                        authorized_keys=args.authorized_keys, identity=args.identity, roster=args.roster,
                        on_round=on_round)
    final = json.loads((out / "results.json").read_text())["final"]
    print(f"final accuracy {final['accuracy']:.4f}, loss {final['loss']:.4f} after {final['rounds']} rounds;"
          f" results in {out}/")
    return 0


def cmd_deploy_client(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.launch import deploy_client

    status, message = deploy_client(args.server, args.certs, args.site, data=args.data, protocol=args.protocol,
                                    connect_timeout=args.connect_timeout, auth_key=args.auth_key,
                                    identity=args.identity, roster=args.roster)
    print(f"secfl: {message}" if status == 0 else f"secfl: error: {message}",
          file=sys.stdout if status == 0 else sys.stderr)
    return status


def cmd_deploy_simulate(args: argparse.Namespace) -> int:
    from secfl.runtime.flower.simulation import simulate

    out = simulate(args.config, args.out, cpus=args.cpus, cpus_per_client=args.cpus_per_client,
                   gpus_per_client=args.gpus_per_client, stage_timeout=args.stage_timeout,
                   train_timeout=args.train_timeout)
    result = json.loads((out / "results.json").read_text())
    if not args.quiet:
        print(_HEADER)
        for rec in result["rounds"]:
            print(_row(argparse.Namespace(**rec)))
    final = result["final"]
    print(f"final accuracy {final['accuracy']:.4f}, loss {final['loss']:.4f} after {final['rounds']} rounds"
          f" on Flower's simulation engine; results in {out}/")
    return 0


def _epsilons(text: str | None) -> list[float | None]:
    """``"1,4,inf"`` → [1.0, 4.0, None]; None means no DP."""
    if text is None:
        return [None]
    out: list[float | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part in ("inf", "infinity", "none", "off", "0"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise SystemExit(f"secfl compare: --dp-epsilon expects numbers or 'inf', got {part!r}") from None
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from secfl.runtime.report import write_comparison, write_epsilon_sweep

    names = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not names or len(set(names)) != len(names):
        raise SystemExit(f"secfl compare: --protocols needs distinct protocol names, got {args.protocols!r}")
    epsilons = _epsilons(args.dp_epsilon)
    args.dp_epsilon = None  # resolved per run below
    from secfl.protocols import PROTOCOLS
    from secfl.runtime.checkpoint import fresh_default_out, writable_dir

    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:  # every name checked before the first run starts
        raise SystemExit(f"secfl compare: unknown protocol(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(PROTOCOLS)}")
    root = writable_dir(Path(args.out) if args.out else fresh_default_out("runs/compare"))
    results = {}
    sweep: dict[str, dict[float | None, Any]] = {}
    from secfl.runtime.simulator import Experiment

    # one untimed plaintext round first: imports, data loading and torch's first kernels would
    # otherwise land in the first protocol's seconds and look like its cost
    Experiment(_resolve(args, {"protocol": "plaintext", "rounds": 1, "dp.epsilon": 0.0})).run()
    for name in names:
        for eps in epsilons:
            extra: dict[str, Any] = {"protocol": name, "dp.epsilon": eps or 0.0}
            label = name if len(epsilons) == 1 else f"{name}@eps={'inf' if eps is None else f'{eps:g}'}"
            cfg = _resolve(args, extra)
            print(f"== {label} ==", file=sys.stderr)
            results[label] = _run_one(cfg, root / label.replace("@", "_"), args.quiet, label=label, force=args.force)
            sweep.setdefault(name, {})[eps] = results[label]
    files = write_comparison(results, root)
    if len(epsilons) > 1:
        files += write_epsilon_sweep(sweep, root)
    print(Path(files[0]).read_text())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import numpy
    import torch

    from secfl.fl.training import select_device
    from secfl.protocols import PROTOCOLS, available

    def version(mod: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:  # noqa: BLE001 - metadata lookup of optional packages
            return "not installed"

    info: dict[str, Any] = {
        "secfl": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "tenseal": version("tenseal"),
        "pycryptodome": version("pycryptodome"),
        "device": str(select_device("auto")),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    protos = available()
    print("\n".join(f"{k:>14}: {v}" for k, v in info.items()))
    print("\nprotocols:")
    for name in PROTOCOLS:
        print(f"  {name:<15} {protos.get(name, '(not available in this version)')}")
    presets = _ckks_presets()
    if presets:
        print("\nCKKS presets (bytes per parameter measured on serialized ciphertexts of "
              f"{presets[0].get('measured_values', '?'):,} values):")
        print(f"  {'protocol':<15} {'preset':<10} {'N':>6} {'primes (bits)':<14} {'scale':>6} {'security':>9} "
              f"{'B/param':>8} {'x float32':>9} {'seeded B/param':>15}")
        for row in presets:
            primes = "+".join(str(b) for b in row["coeff_bits"])
            seeded = row.get("seeded_bytes_per_param")
            print(f"  {row['protocol']:<15} {row['name']:<10} {row['poly_degree']:>6} {primes:<14} "
                  f"{'2^' + str(row['scale_bits']):>6} "
                  f"{str(row['security_bits']) + '-bit':>9} {row['bytes_per_param']:>8.2f} "
                  f"{row['bytes_per_param'] / 4.0:>9.2f} {'–' if seeded is None else f'{seeded:.2f}':>15}")
    if args.json:
        print(json.dumps({**info, "protocols": protos, "ckks_presets": presets}, indent=2))
    return 0


def cmd_threats(args: argparse.Namespace) -> int:
    from secfl.threats import ThreatConfig, run_threats

    def names(text: str | None) -> tuple[str, ...] | None:
        return None if text is None else tuple(p.strip() for p in text.split(",") if p.strip())

    from secfl.runtime.checkpoint import writable_dir

    writable_dir(args.out)  # before minutes of attacks, not after
    if args.active:
        return _threats_active(names(args.protocols), Path(args.out), args.quiet)
    batch_sizes = []
    for b in names(args.batch_sizes) or ():
        try:
            batch_sizes.append(int(b))
        except ValueError:
            raise SystemExit(f"secfl threats: --batch-sizes expects comma-separated integers, got {b!r}") from None
    options: dict[str, dict[str, Any]] = {}
    for item in args.protocol_option:
        key, sep, value = item.partition("=")
        proto, dot, opt = key.strip().rpartition(".")
        if not sep or not dot:
            raise SystemExit(f"secfl threats: --protocol-option expects PROTOCOL.KEY=VALUE, got {item!r}")
        options.setdefault(proto, {})[opt] = _parse_value(value.strip())
    given = {"protocols": names(args.protocols), "threat_models": names(args.threat_models),
             "batch_sizes": tuple(batch_sizes) or None,
             "clients": args.clients, "target": args.target, "dataset": args.dataset, "data_path": args.data_path,
             "model": args.model, "lr": args.lr, "attack_steps": args.attack_steps,
             "attack_restarts": args.attack_restarts, "tv_weight": args.tv_weight, "nonmembers": args.nonmembers,
             "dp_epsilon": args.dp_epsilon,
             "dp_clip": args.dp_clip, "seed": args.seed, "protocol_options": options or None}
    cfg = ThreatConfig(**{k: v for k, v in given.items() if v is not None})
    report = run_threats(cfg, progress=None if args.quiet else (lambda line: print(line, file=sys.stderr)))
    files = report.write(Path(args.out))
    print(report.markdown())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _threats_active(protocols: tuple[str, ...] | None, out: Path, quiet: bool) -> int:
    """``secfl threats --active``: every active attack on ``protocols``, measured (recovered or refused)."""
    from secfl.threats.active import active_markdown, run_active, write_active

    outcomes = run_active(protocols, progress=None if quiet else (lambda line: print(line, file=sys.stderr)))
    files = write_active(outcomes, out)
    print(active_markdown(outcomes))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _ckks_presets() -> list[dict[str, Any]]:
    from secfl.crypto.ckks import preset_table

    rows = [{**row, "protocol": "ckks"} for row in preset_table()]
    from secfl.crypto.threshold import preset_table as threshold_presets

    return rows + [{**row, "protocol": "ckks-threshold"} for row in threshold_presets()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secfl", description="Secure federated learning experiments.")
    parser.add_argument("--version", action="version", version=f"secfl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings and details")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one experiment")
    _add_experiment_args(p)
    p.add_argument("--resume", metavar="OUT", default=None,
                   help="continue the interrupted run in OUT (its config.toml and checkpoint)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("compare", help="run the same experiment under several protocols")
    _add_experiment_args(p)
    p.add_argument("--protocols", required=True, help="comma-separated protocol names")
    for action in p._actions:  # compare sweeps: --dp-epsilon takes a list such as 1,4,8,inf
        if action.dest == "dp_epsilon":
            action.type = str
            action.help = "comma-separated epsilons to sweep (inf = no DP), e.g. 1,4,8,inf"
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("threats", help="protocol × threat model → leakage, measured by attacks on recorded views")
    p.add_argument("--protocols", help="comma-separated protocol names (default: all; unavailable ones are skipped)")
    p.add_argument("--threat-models", help="comma-separated presets (default: all; see secfl.threats.THREAT_MODELS)")
    p.add_argument("--batch-sizes", help="comma-separated images per client update (default: 1,8)")
    p.add_argument("--clients", type=int, help="clients in the round (default 10)")
    p.add_argument("--target", type=int, help="the attacked client (default 0)")
    p.add_argument("--dataset", help="image dataset: digits | npz | mnist-idx (default digits)")
    p.add_argument("--data-path", help="file or directory for npz / mnist-idx")
    p.add_argument("--model", help="logreg | mlp | cnn (default cnn)")
    p.add_argument("--lr", type=float, help="clients' local learning rate (default 0.1)")
    p.add_argument("--attack-steps", type=int, help="Inverting Gradients steps (default 300)")
    p.add_argument("--attack-restarts", type=int, help="Inverting Gradients restarts (default 1)")
    p.add_argument("--tv-weight", type=float, help="Inverting Gradients total-variation weight (default 0.003)")
    p.add_argument("--nonmembers", type=int, help="held-out examples for membership inference (default 100)")
    p.add_argument("--dp-epsilon", type=float, help="epsilon of the DP threat models' round (default 8)")
    p.add_argument("--dp-clip", type=float, help="L2 clip norm of the DP threat models (default 1.0)")
    p.add_argument("--seed", type=int, help="data, model and attack seed (default 0)")
    p.add_argument("--protocol-option", action="append", default=[], metavar="PROTOCOL.KEY=VALUE",
                   help="a protocol option, e.g. additive.servers=3 (value parsed as TOML)")
    p.add_argument("--active", action="store_true",
                   help="instead: run the active attacks (malicious server, relay) on --protocols and report each"
                        " recovered or refused (active.md, active.json); the other options do not apply")
    p.add_argument("--out", default="runs/threats", help="output directory (default runs/threats)")
    p.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    p.set_defaults(func=cmd_threats)
    p = sub.add_parser("deploy", help="the same experiment with every site its own process, on Flower (TLS)")
    dsub = p.add_subparsers(dest="deploy_command", required=True)
    d = dsub.add_parser("certs", help="write a CA and a server certificate and key")
    d.add_argument("dir", help="output directory")
    d.add_argument("--host", default="localhost", help="the server's host name or IP (default localhost)")
    d.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    d.add_argument("--overwrite", action="store_true", help="replace existing files")
    d.set_defaults(func=cmd_deploy_certs)
    d = dsub.add_parser("node-key", help="write a site's node-authentication key pair (site-K.key, site-K.pub)")
    d.add_argument("dir", help="output directory")
    d.add_argument("--site", required=True, type=int, help="the site id the key is for")
    d.add_argument("--overwrite", action="store_true", help="replace existing files")
    d.set_defaults(func=cmd_deploy_node_key)
    d = dsub.add_parser("identity", help="write a site's identity key (site-K.identity, site-K.identity.pub)"
                                         " or the server's (--server)")
    d.add_argument("dir", help="output directory")
    who = d.add_mutually_exclusive_group(required=True)
    who.add_argument("--site", type=int, help="the site id the key is for")
    who.add_argument("--server", action="store_true", help="the server's key (server.identity)")
    d.add_argument("--overwrite", action="store_true", help="replace existing files")
    d.set_defaults(func=cmd_deploy_identity)
    d = dsub.add_parser("roster", help="collect the site-K.identity.pub and server.identity.pub files of DIR into"
                                       " the federation roster")
    d.add_argument("dir", help="directory with the public identity keys")
    d.add_argument("--out", default=None, help="roster file (default DIR/roster.toml)")
    d.set_defaults(func=cmd_deploy_roster)
    d = dsub.add_parser("server", help="run the experiment's server: waits for the sites, writes results")
    d.add_argument("config", help="experiment TOML (as for secfl run)")
    d.add_argument("--address", default="127.0.0.1:9092", help="HOST:PORT to listen on (default 127.0.0.1:9092)")
    d.add_argument("--certs", required=True, help="directory with ca.crt, server.crt, server.key")
    d.add_argument("--out", required=True, help="output directory (results.json, rounds.csv, config.toml)")
    d.add_argument("--stage-timeout", type=float, default=120.0, help="seconds a protocol stage waits (120)")
    d.add_argument("--train-timeout", type=float, default=600.0, help="seconds local training may take (600)")
    d.add_argument("--join-timeout", type=float, default=300.0, help="seconds to wait for all sites (300)")
    d.add_argument("--record", default=None, help="append every message the server handles to this file (audit)")
    d.add_argument("--authorized-keys", default=None,
                   help="directory of site-K.pub files: turn on Flower's node authentication (each key plays"
                        " only its own site)")
    d.add_argument("--identity", default=None, help="the server's identity key (server.identity): it signs every"
                                                     " request; required with --roster")
    d.add_argument("--roster", default=None, help="the federation roster (roster.toml): every site's replies are"
                                                   " checked against it")
    d.add_argument("--quiet", action="store_true", help="no per-round table")
    d.set_defaults(func=cmd_deploy_server)
    d = dsub.add_parser("client", help="run one site until the server ends the run")
    d.add_argument("--server", required=True, help="the server's HOST:PORT")
    d.add_argument("--certs", required=True, help="directory with ca.crt (the federation's CA)")
    d.add_argument("--site", required=True, type=int, help="this site's id (0 .. clients-1)")
    d.add_argument("--data", default=None, help="this site's own data: a .npz file or an MNIST IDX directory")
    d.add_argument("--protocol", default=None, help="refuse to run any other protocol than this one")
    d.add_argument("--auth-key", default=None, help="this site's node-authentication key (site-K.key), when the"
                                                     " server requires node authentication")
    d.add_argument("--identity", default=None, help="this site's identity key (site-K.identity): the site signs"
                                                     " its replies and key advertisements with it")
    d.add_argument("--roster", default=None, help="the federation roster (roster.toml): every site's public"
                                                   " identity key")
    d.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds to keep trying to reach the server, at start or after losing it (60)")
    d.set_defaults(func=cmd_deploy_client)
    d = dsub.add_parser("simulate", help="the same app on Flower's simulation engine (Ray): one simulated site"
                                         " per client, spread over the cores")
    d.add_argument("config", help="experiment TOML (protocol plaintext or secagg)")
    d.add_argument("--out", required=True, help="output directory (results.json, rounds.csv, config.toml)")
    d.add_argument("--cpus", type=int, default=None, help="Ray's CPU pool (default: all cores)")
    d.add_argument("--cpus-per-client", type=float, default=1.0, help="CPUs per simulated ClientApp (1)")
    d.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU share per simulated ClientApp (0)")
    d.add_argument("--stage-timeout", type=float, default=300.0, help="seconds a protocol stage waits (300)")
    d.add_argument("--train-timeout", type=float, default=600.0, help="seconds local training may take (600)")
    d.add_argument("--quiet", action="store_true", help="no per-round table")
    d.set_defaults(func=cmd_deploy_simulate)
    p = sub.add_parser("info", help="versions, device, protocols, CKKS presets")
    p.add_argument("--json", action="store_true", help="also print JSON")
    p.set_defaults(func=cmd_info)
    return parser


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # runs the deploy commands' cleanup (their child processes end with them)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "deploy":
        import signal

        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from secfl.protocols.hosts import WorkerDied

    try:
        return int(args.func(args))
    except (SecFLError, WorkerDied) as exc:
        print(f"secfl: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if "flwr" in str(exc) or "cryptography" in str(exc):
            print(f'secfl: error: this command needs Flower: pip install "secfl[flower]" ({exc})', file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("secfl: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command had to write or read: one line, no traceback
        where = f" {exc.filename!s}" if getattr(exc, "filename", None) else ""
        print(f"secfl: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
