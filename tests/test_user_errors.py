"""What new users hit (issue 13 item 10): every one a one-line typed error that says what to do."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import secfl
from secfl.cli import main
from secfl.errors import ConfigError, ProtocolAbort
from secfl.runtime.config import ExperimentConfig

QUICK = ["--protocol", "plaintext", "--rounds", "1", "--clients", "2", "--quiet", "--dataset", "synthetic"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", [
    ["run", *QUICK],
    ["compare", "--protocols", "plaintext", "--rounds", "1", "--clients", "2", "--quiet"],
    ["threats", "--protocols", "plaintext"],
    ["threats", "--active", "--protocols", "plaintext"],
])
@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_an_unusable_out_is_one_line_before_any_work(tmp_path, capsys, command, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = blocker if where == "file" else blocker / "sub"
    assert main([*command, "--out", str(out)]) == 2
    assert "--out" in _err(capsys)


def test_an_unwritable_file_inside_out_is_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").mkdir()  # something in the way of a file the run writes
    (out / "config.toml").write_text("x")
    assert main(["run", *QUICK, "--out", str(out), "--force"]) == 2
    assert "secfl: error" in _err(capsys)


def test_threats_batch_sizes_must_be_integers(capsys):
    with pytest.raises(SystemExit, match="--batch-sizes expects comma-separated integers, got 'a'"):
        main(["threats", "--batch-sizes", "a", "--out", "/tmp"])


def test_compare_checks_every_protocol_name_before_the_first_run(tmp_path):
    with pytest.raises(SystemExit, match="unknown protocol.*'nope'"):
        main(["compare", "--protocols", "plaintext,nope", "--out", str(tmp_path), "--quiet"])
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_file_that_is_not_npz_is_named_as_such(tmp_path):
    bad = tmp_path / "data.npz"
    bad.write_text("a,b\n1,2\n")
    from secfl.fl.data import load_dataset

    cfg = ExperimentConfig.from_dict({"data": {"name": "npz", "path": str(bad)}})
    with pytest.raises(ConfigError, match="not an .npz archive.*numpy.savez") as info:
        load_dataset(cfg.data, 0)
    assert "pickle" not in str(info.value)


def test_range_messages_do_not_claim_inf_is_inside_and_name_their_section():
    with pytest.raises(ConfigError, match=r"clip: must be a finite number >= 0, got inf"):
        ExperimentConfig.from_dict({"clip": float("inf")})
    with pytest.raises(ConfigError, match=r"^\[data\] test_fraction"):
        ExperimentConfig.from_dict({"data": {"test_fraction": 2}})
    with pytest.raises(ConfigError, match=r"^\[train\] lr: must be a finite number > 0"):
        ExperimentConfig.from_dict({"train": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"^\[partition\] alpha"):
        ExperimentConfig.from_dict({"partition": {"alpha": -1}})


def test_secure_mean_says_every_client_was_outside_the_clip_range():
    with pytest.raises(ProtocolAbort, match="every client's upload was refused.*outside the allowed range.*clip_range"):
        secfl.secure_mean(np.full((4, 10), 1e6), protocol="ckks")


def test_secagg_from_stdin_falls_back_without_worker_tracebacks():
    script = ("import numpy as np, secfl\n"
              "r = secfl.secure_mean(np.random.default_rng(0).normal(size=(120, 20)) * 0.1, protocol='secagg')\n"
              "print('ok', r.mean.shape)\n")
    got = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0 and "ok (20,)" in got.stdout
    assert "Traceback" not in got.stderr and "stdin" in got.stderr
