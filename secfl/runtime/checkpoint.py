"""Checkpoints: a run that survives a crash, and an output folder that is never overwritten by accident.

After every round the simulator writes, in this order and each atomically (temporary file,
``fsync``, rename): ``checkpoint.npz`` — the global model after the round, the round counter,
the completed round records, the stopping rule's state and the privacy accountant's step count —
then ``results.json``, ``rounds.csv`` and the model files of the rounds so far. ``kill -9`` at any
moment therefore loses at most the round in flight; ``secfl run --resume OUT`` reads the
checkpoint and continues with the next round.

What makes a resumed run equal an uninterrupted one: everything that is not cryptographic is a
function of (seed, round): client sampling, dropouts, training seeds, the quantization dither. So
on CPU a resumed run ends with the same model, bit for bit, whenever the protocol's revealed mean
is deterministic (``plaintext``, ``secagg``, ``additive``, ``ckks`` with grid decoding); keys,
masks and DP noise are fresh by design, so a run with DP noise or ``ckks-threshold``'s flooding
differs within its documented error, as two runs do.

An output folder belongs to one configuration: :func:`claim_out` refuses a folder holding another
run (``config.toml`` differing, or results / a checkpoint present) unless the caller resumes or
forces, and :func:`fresh_default_out` picks ``name``, ``name-2``, ``name-3``... for defaults.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from secfl.errors import ConfigError
from secfl.runtime.results import RoundRecord

__all__ = ["CHECKPOINT", "Checkpoint", "save_checkpoint", "load_checkpoint", "claim_out", "fresh_default_out",
           "writable_dir"]

CHECKPOINT = "checkpoint.npz"
_FORMAT = "secfl-checkpoint/1"


class Checkpoint:
    """The state after ``rounds_done`` rounds."""

    def __init__(self, rounds_done: int, global_vec: np.ndarray, records: list[RoundRecord],
                 stopping: dict[str, Any], privacy_steps: int, config: dict[str, Any]) -> None:
        self.rounds_done, self.global_vec, self.records = rounds_done, global_vec, records
        self.stopping, self.privacy_steps, self.config = stopping, privacy_steps, config


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(out: str | Path, cp: Checkpoint) -> Path:
    state = {"format": _FORMAT, "rounds_done": cp.rounds_done, "records": [asdict(r) for r in cp.records],
             "stopping": cp.stopping, "privacy_steps": cp.privacy_steps, "config": cp.config}
    buf = io.BytesIO()
    np.savez(buf, global_vec=np.asarray(cp.global_vec, dtype=np.float32),
             state=np.frombuffer(json.dumps(state).encode(), dtype=np.uint8))
    path = Path(out) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(path, buf.getvalue())
    return path


def load_checkpoint(out: str | Path) -> Checkpoint:
    path = Path(out) / CHECKPOINT
    try:
        with np.load(path, allow_pickle=False) as z:
            vec = np.array(z["global_vec"], dtype=np.float32)
            state = json.loads(bytes(z["state"]).decode())
    except FileNotFoundError:
        raise ConfigError(f"{out}: no {CHECKPOINT} to resume from (the run never finished a round there)") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a readable secfl checkpoint ({exc})") from None
    if state.get("format") != _FORMAT:
        raise ConfigError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    records = [RoundRecord(**r) for r in state["records"]]
    return Checkpoint(int(state["rounds_done"]), vec, records, state["stopping"], int(state["privacy_steps"]),
                      state["config"])


def claim_out(out: str | Path, config_toml: str, *, resume: bool = False, force: bool = False) -> Path:
    """Make ``out`` this run's folder: refuse one that holds another run unless ``resume`` (same
    configuration, continue) or ``force`` (start over: the old results, checkpoint and models
    are removed). Writes ``config.toml``."""
    d = writable_dir(out)
    cfg_path = d / "config.toml"
    old = cfg_path.read_text() if cfg_path.exists() else None
    has_run = any((d / f).exists() for f in (CHECKPOINT, "results.json"))
    if resume:
        if old is None or not (d / CHECKPOINT).exists():
            raise ConfigError(f"--resume {str(d)!r}: no run to resume there (no config.toml and {CHECKPOINT})")
        if old != config_toml:
            raise ConfigError(f"--resume {str(d)!r}: the configuration differs from the one the run started with;"
                              " resume with exactly the same settings (or start over with --force)")
        return d
    if has_run or (old is not None and old != config_toml):
        if not force:
            what = "another configuration's run" if old != config_toml else "a finished or interrupted run"
            raise ConfigError(f"--out {str(d)!r} already holds {what}; pass --resume to continue it, --force to"
                              " replace it, or choose another --out")
        for f in (CHECKPOINT, "results.json", "rounds.csv", "model.npy", "model.safetensors", "model.json"):
            (d / f).unlink(missing_ok=True)
        for site_model in d.glob("model-site-*.safetensors"):
            site_model.unlink()
    try:
        cfg_path.write_text(config_toml)
    except OSError as exc:
        raise ConfigError(f"--out {str(d)!r}: cannot write config.toml ({exc.strerror or exc})") from None
    return d


def writable_dir(out: str | Path, what: str = "--out") -> Path:
    """``out`` as a folder this process can write into (created if missing), checked by writing a
    probe file; :class:`ConfigError` saying why not (a file in the way, no permission, ...)."""
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {str(d)!r}: a file of that name is in the way; give a folder") from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(d)!r}: cannot create the output folder ({exc.strerror or exc})") from None
    probe = d / ".secfl-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {str(d)!r}: the output folder is not writable ({exc.strerror or exc})") from None
    return d


def fresh_default_out(base: str | Path) -> Path:
    """``base`` if it is free, else the first free ``base-2``, ``base-3``, ..."""
    p = Path(base)
    if not p.exists():
        return p
    i = 2
    while Path(f"{p}-{i}").exists():
        i += 1
    return Path(f"{p}-{i}")
