"""``secfl threats --active`` (issue 12): every active attack of the catalogue runs against the
real parties and comes out as expected, measured. Two must come out *recovered* (the attacks
are real): ckks key recovery with ``input='unsafe-float'`` and the secagg server equivocating on
U3 without the consistency check. Every other one must be *refused* by a typed error."""

from __future__ import annotations

import json

import pytest

from secfl.cli import main
from secfl.errors import ConfigError
from secfl.threats import ActiveOutcome, Outcome, run_active
from secfl.threats.active import ATTACKS, active_markdown


@pytest.fixture(scope="module")
def outcomes() -> list[ActiveOutcome]:
    return run_active()


def _recovered_expected(o: ActiveOutcome) -> bool:
    return (o.protocol == "ckks" and "unsafe-float" in o.attack) or \
        (o.protocol == "secagg" and "consistency_check=False" in o.attack)


def test_every_attack_comes_out_as_expected(outcomes):
    assert len(outcomes) == sum(len(a) for a in ATTACKS.values()) + 1  # + the envelope attack across sites
    recovered = [o for o in outcomes if o.outcome is Outcome.RECOVERED]
    assert len(recovered) == 2 and all(_recovered_expected(o) for o in recovered), recovered
    for o in outcomes:
        if not _recovered_expected(o):
            assert o.outcome is Outcome.REFUSED, o


def test_the_details_say_what_happened(outcomes):
    by = {(o.protocol, o.attack): o for o in outcomes}
    unsafe = next(o for (p, a), o in by.items() if p == "ckks" and "unsafe-float" in a)
    assert "secret key recovered" in unsafe.detail and "client 3" in unsafe.detail
    grid = next(o for (p, a), o in by.items() if p == "ckks" and "'grid'" in a)
    assert "no ternary key" in grid.detail
    unchecked = next(o for (p, a), o in by.items() if p == "secagg" and "consistency_check=False" in a)
    assert "rebuilt s_0" in unchecked.detail
    checked = next(o for (p, a), o in by.items() if p == "secagg" and "consistency_check=True" in a)
    assert "DecryptionRefusedError" in checked.detail and "0 shares" in checked.detail
    sites = next(o for o in outcomes if o.protocol == "all protocols across sites")
    assert "AuthenticationError at site 1" in sites.detail and "at the server" in sites.detail
    for o in outcomes:  # each refusal names a typed error (the grid key recovery: that none was needed)
        if o.outcome is Outcome.REFUSED and "'grid'" not in o.attack:
            assert "Error" in o.detail or "ProtocolAbort" in o.detail, o
    table = active_markdown(outcomes)
    assert table.startswith("| protocol | adversary | attack | outcome | detail |")
    assert table.count("\n") == len(outcomes) + 2


def test_a_selection_runs_only_its_attacks_and_unknown_names_are_refused():
    got = run_active(("additive",))
    assert [o.protocol for o in got] == ["additive", "additive", "additive across sites"]
    assert all(o.outcome is Outcome.REFUSED for o in got)
    with pytest.raises(ConfigError, match="unknown"):
        run_active(("nope",))


def test_the_cli_writes_the_report(tmp_path, capsys):
    assert main(["threats", "--active", "--protocols", "secagg", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "refused" in out and "recovered" in out
    md, js = tmp_path / "active.md", tmp_path / "active.json"
    assert md.exists() and js.exists() and "refused" in md.read_text()
    rows = json.loads(js.read_text())["attacks"]
    assert {r["protocol"] for r in rows} == {"secagg", "secagg across sites"}
    assert [r["outcome"] for r in rows] == ["refused", "recovered", "refused", "refused"]
