"""Runs that survive a crash (issue 13 item 6): a checkpoint after every round, ``--resume`` ends
bit-identical to an uninterrupted run on CPU, ``kill -9`` loses at most the round in flight,
Ctrl-C keeps the completed rounds, and output folders are never overwritten by accident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from secfl.errors import ConfigError
from secfl.runtime.checkpoint import CHECKPOINT, claim_out, load_checkpoint
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.simulator import Experiment

BASE = {"clients": 4, "rounds": 5, "data": {"name": "synthetic", "synthetic_samples": 400},
        "train": {"epochs": 1, "batch_size": 16}}
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")


class Crash(Exception):
    pass


@pytest.mark.parametrize("protocol", ["plaintext", "secagg", "ckks"])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, protocol):
    cfg = ExperimentConfig.from_dict({**BASE, "protocol": protocol, "stop": {"metric": "loss", "patience": 9}})
    whole = Experiment(cfg).run(out=tmp_path / "whole")

    def crash_in_round_3(rec):
        if rec.round == 3:
            raise Crash

    with pytest.raises(Crash):
        Experiment(cfg).run(crash_in_round_3, out=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut").rounds_done == 2  # round 3 was in flight: lost, nothing else
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [r["round"] for r in partial["rounds"]] == [1, 2] and partial["meta"]["complete"] is False
    resumed = Experiment(cfg).run(out=tmp_path / "cut", resume=True)
    assert resumed.meta["resumed_after_round"] == 2
    np.testing.assert_array_equal(resumed.model_vector, whole.model_vector)
    assert [r.accuracy for r in resumed.rounds] == [r.accuracy for r in whole.rounds]


def test_dp_accounting_continues_where_it_stopped(tmp_path):
    cfg = ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "clip": 1.0,
                                      "dp": {"epsilon": 8.0, "mode": "central"}})
    whole = Experiment(cfg).run()

    def crash(rec):
        if rec.round == 4:
            raise Crash

    with pytest.raises(Crash):
        Experiment(cfg).run(crash, out=tmp_path)
    resumed = Experiment(cfg).run(out=tmp_path, resume=True)
    assert [r.epsilon for r in resumed.rounds] == pytest.approx([r.epsilon for r in whole.rounds])


def test_a_stopped_run_resumes_as_stopped_and_another_config_is_refused(tmp_path):
    cfg = ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "server_lr": 1e-9,
                                      "stop": {"metric": "loss", "patience": 1, "min_delta": 1e-3}})
    done = Experiment(cfg).run(out=tmp_path)
    again = Experiment(cfg).run(out=tmp_path, resume=True)
    assert again.final["stopped_at"] == done.final["stopped_at"] == 2
    with pytest.raises(ConfigError, match="another configuration"):
        Experiment(cfg.replace(seed=1)).run(out=tmp_path, resume=True)


def test_an_out_folder_is_claimed_once(tmp_path):
    claim_out(tmp_path, "a = 1\n")
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume to continue it, --force to replace it"):
        claim_out(tmp_path, "a = 1\n")
    with pytest.raises(ConfigError, match="configuration differs"):
        (tmp_path / CHECKPOINT).write_bytes(b"x")
        claim_out(tmp_path, "a = 2\n", resume=True)
    claim_out(tmp_path, "a = 2\n", force=True)
    assert not (tmp_path / "results.json").exists() and (tmp_path / "config.toml").read_text() == "a = 2\n"
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        claim_out(blocked / "sub", "a = 1\n")


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "secfl.cli", "run", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_round(out: Path, rnd: int, proc: subprocess.Popen, limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if load_checkpoint(out).rounds_done >= rnd:
                return
        except ConfigError:
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    pytest.fail(f"no checkpoint of round {rnd} within {limit} s")


RUN = ["--protocol", "plaintext", "--clients", "4", "--rounds", "40", "--quiet", "--set", 'data.name="synthetic"',
       "--set", "protocol_options.wire_dtype=\"float64\""]


def test_kill_9_loses_at_most_the_round_in_flight_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    proc = _cli(tmp_path, *RUN, "--out", str(out))
    try:
        _wait_for_round(out, 3, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = load_checkpoint(out).rounds_done
    assert done >= 3 and len(json.loads((out / "results.json").read_text())["rounds"]) == done
    resumed = subprocess.run([sys.executable, "-m", "secfl.cli", "run", "--resume", str(out), "--quiet"], cwd=tmp_path,
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([sys.executable, "-m", "secfl.cli", "run", *RUN, "--out", str(tmp_path / "whole")],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    np.testing.assert_array_equal(np.load(out / "model.npy"), np.load(tmp_path / "whole" / "model.npy"))
    assert len(json.loads((out / "results.json").read_text())["rounds"]) == 40


def test_ctrl_c_prints_one_line_keeps_the_rounds_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = _cli(tmp_path, *RUN, "--out", str(out))
    try:
        _wait_for_round(out, 2, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err
    assert len(json.loads((out / "results.json").read_text())["rounds"]) >= 2
