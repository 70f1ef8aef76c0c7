"""Smoke test of ``benchmarks/peers.py`` at tiny sizes: it writes its files with the expected pairs
and sane fields, and ``--check`` fails against a doctored baseline (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
TINY = ["--repeats", "1", "--no-warmup", "--clients", "10", "--dim", "64", "--ckks-clients", "2", "--ckks-dim", "300"]


def _run(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, "--out", str(tmp), *extra],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("peers")
    proc = _run(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, json.loads((out / "peers.json").read_text())


def test_writes_its_files_with_every_pair(first_run: tuple[Path, dict]) -> None:
    out, result = first_run
    md = (out / "peers.md").read_text()
    keys = [row["key"] for row in result["pairs"]]
    expected = ["ckks nvflare vs tenseal-nvflare @ 2x300", "ckks compact vs tenseal-nvflare @ 2x300",
                "ckks-threshold vs openfhe @ 2x300", "secagg vs flower-secagg+ @ 10x64 10%"]
    assert keys == expected
    for key in keys:
        assert key in md
    assert "Precision" in md
    for group in result["groups"].values():
        assert group["speed_probe_ms"] and all(p > 0 for p in group["speed_probe_ms"])
        assert len(group["loadavg_1m"]) == 2
    if sys.version_info[:2] != (3, 10):
        assert "openfhe: not installed (its wheel imports only under Python 3.10)" in result["missing"]


def test_fields_are_sane(first_run: tuple[Path, dict]) -> None:
    _, result = first_run
    for row in result["pairs"]:
        m = row["metrics"]
        assert m["round s"]["secfl"]["median"] > 0
        assert m["up B/param"]["secfl"]["median"] > 0
        err = m["max error"]["secfl"]["median"]
        assert 0 <= err < 1e-3
        assert row["error_bound"] is not None and err <= row["error_bound"]
        if row["peer_missing"] is None:  # the peer ran: its figures and the ratio exist
            assert m["round s"]["peer"]["median"] > 0
            assert 0 <= m["max error"]["peer"]["median"] < 1e-2
            assert math.isfinite(m["round s"]["ratio"]) and m["round s"]["ratio"] > 0


def test_check_fails_against_a_doctored_baseline(first_run: tuple[Path, dict], tmp_path: Path) -> None:
    _, result = first_run
    ratios = {row["key"]: {"up B/param": row["metrics"]["up B/param"]["ratio"] / 10}
              for row in result["pairs"] if row["metrics"]["up B/param"]["ratio"]}
    assert ratios, "no pair had a peer"
    doctored = tmp_path / "baseline.json"
    doctored.write_text(json.dumps({"tolerance": 0.25, "pairs": ratios}))
    proc = _run(tmp_path, "--only", "ckks", "--check", "--baseline", str(doctored))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSION ckks nvflare vs tenseal-nvflare @ 2x300: up B/param" in proc.stdout


def test_check_passes_a_generous_baseline_and_refuses_other_inputs(first_run: tuple[Path, dict],
                                                                   tmp_path: Path) -> None:
    _, result = first_run
    generous = tmp_path / "baseline.json"
    generous.write_text(json.dumps({"pairs": {row["key"]: {"up B/param": row["metrics"]["up B/param"]["ratio"] * 10}
                                              for row in result["pairs"] if row["metrics"]["up B/param"]["ratio"]}}))
    proc = _run(tmp_path, "--only", "ckks", "--check", "--baseline", str(generous))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"pairs": {"ckks nvflare vs tenseal-nvflare @ 99x99": {"up B/param": 1.0}}}))
    proc = _run(tmp_path, "--only", "ckks", "--check", "--baseline", str(other))
    assert proc.returncode == 2, proc.stdout + proc.stderr
