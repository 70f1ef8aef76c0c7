"""secfl's Flower app on Flower's simulation engine (Ray): 100 simulated ``secagg`` sites, one
round, the aggregate checked against plaintext (issue 11). Runs ``secfl deploy simulate`` as a
subprocess, bounded in time; no Ray or Flower process may outlive it."""

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

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs the simulation extra (Flower's Ray engine)")

from deploy_harness import ENV, live_pids  # noqa: E402

from secfl.errors import ConfigError  # noqa: E402
from secfl.protocols import make_protocol  # noqa: E402
from secfl.protocols.dp_encoding import round_encoder  # noqa: E402
from secfl.runtime.config import ExperimentConfig, dump_toml  # noqa: E402
from secfl.runtime.simulator import Experiment, protocol_options  # noqa: E402

SITES = 100
CONFIG = {"protocol": "secagg", "clients": SITES, "rounds": 1, "seed": 0, "data": {"name": "digits"}}


def _session_left(sid: int, wait: float = 15.0) -> list[str]:
    """Live processes of session ``sid`` (the command and everything it started, Ray included)."""
    end = time.monotonic() + wait
    while True:
        found = []
        for pid in live_pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if stat[0] != "Z" and int(stat[3]) == sid:
                found.append(f"{pid}: {cmd[:200]}")
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.5)


def test_one_hundred_simulated_secagg_sites_reveal_the_plaintext_aggregate(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(dump_toml(CONFIG))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "secfl.cli", "deploy", "simulate", str(path), "--out", str(out),
                             "--quiet"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=420)
    finally:
        left = _session_left(proc.pid)
        for line in left:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    assert proc.returncode == 0, (stdout + stderr)[-4000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    got = json.loads((out / "results.json").read_text())
    assert got["meta"]["engine"] == "flower-simulation"
    [rec] = got["rounds"]
    assert len(rec["clients"]) == SITES and rec["dropped"] == []
    assert rec["bytes_up_per_client"] > 0

    # the plaintext reference: the same training (same seeds), the float64 weighted mean
    cfg = ExperimentConfig.from_dict({**CONFIG, "protocol": "plaintext",
                                      "protocol_options": {"wire_dtype": "float64"}})
    ref = Experiment(cfg).run()
    sizes = got["meta"]["client_sizes"]
    assert sizes == ref.meta["client_sizes"]
    opts = protocol_options(ExperimentConfig.from_dict(CONFIG), max(sizes))
    enc = round_encoder(make_protocol("secagg", **opts).options, SITES, None)
    bound = enc.error_bound(SITES, sum(sizes) / opts["max_weight"])  # server_lr = 1
    diff = np.abs(np.load(out / "model.npy").astype(np.float64) - np.asarray(ref.model_vector, np.float64)).max()
    assert diff <= bound + 1e-6, (diff, bound)  # + float32 rounding of the stored model
    assert diff > 0  # it really went through secagg's quantization


def test_protocols_whose_parties_cannot_be_saved_are_refused_before_ray_starts(tmp_path):
    from secfl.runtime.flower.simulation import simulate

    path = tmp_path / "exp.toml"
    path.write_text(dump_toml({**CONFIG, "protocol": "ckks", "clients": 3}))
    with pytest.raises(ConfigError, match="does not run on Flower's simulation engine"):
        simulate(path, tmp_path / "out")
