"""The committed mutant list stays valid (issue 15, item 2): a refactor that makes a mutant stop
applying fails here, not silently in the next mutation run. The runs themselves are
``python tools/mutate.py`` (not part of the test suite)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("secfl_mutate_tool", ROOT / "tools" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


mutate = _tool()
MUTANTS = mutate.load_mutants()


def test_the_mutant_list_parses_with_unique_ids_and_known_layers():
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids))
    layers = Counter(m.layer for m in MUTANTS)
    assert set(layers) <= {"crypto", "protocols", "dp", "runtime", "fl"}
    assert all(layers[k] >= 10 for k in ("crypto", "protocols", "dp")), layers
    assert sum(layers[k] for k in ("crypto", "protocols", "dp")) >= 45
    assert all(m.why and "\n" not in m.why and m.tests for m in MUTANTS)


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: m.id)
def test_every_mutant_applies_exactly_once_and_still_parses(m):
    source = (ROOT / m.file).read_text(encoding="utf-8")
    assert source.count(m.find) == 1, f"{m.id}: 'find' occurs {source.count(m.find)} times in {m.file}"
    mutated = source.replace(m.find, m.replace, 1)
    assert mutated != source
    ast.parse(mutated)  # a mutant that does not even compile would be killed for nothing
    for test in m.tests:
        assert (ROOT / test.split("::")[0]).is_file(), f"{m.id}: no test file {test}"


def test_the_loader_refuses_duplicates_unknown_fields_and_other_layers(tmp_path):
    row = ('[[mutant]]\nid = "a"\nfile = "secfl/crypto/prg.py"\nfind = "x"\nreplace = "y"\nwhy = "w"\n'
           'tests = ["tests/test_prg.py"]\n')
    for text, match in ((row + row, "duplicate id"), (row.replace('why = "w"', 'why = "w"\nspeed = 1'), "unknown"),
                        (row.replace("secfl/crypto", "secfl/threats"), "not under"),
                        (row.replace('tests = ["tests/test_prg.py"]', "tests = []"), "tests")):
        path = tmp_path / "m.toml"
        path.write_text(text)
        with pytest.raises(mutate.MutantError, match=match):
            mutate.load_mutants(path)


def test_a_copy_imports_its_own_secfl_not_the_working_tree(tmp_path):
    files = [f for f in mutate.repo_files() if f.startswith("secfl/")]
    mutate.make_copy(tmp_path, files)
    where = Path(mutate.check_isolation(tmp_path))
    assert where == tmp_path / "secfl" / "__init__.py"
