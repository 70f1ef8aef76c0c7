"""Mutation testing over a committed list of mutants (``tools/mutants.toml``); no dependency beyond pytest.

Each mutant replaces one exact snippet (``find``, which must occur exactly once in ``file``) by
``replace``, in a private copy of the repository, and runs the tests listed for it there::

    python tools/mutate.py [--only ID,...] [--jobs N] [--timeout S] [--baseline] [--output PREFIX]

Outcomes: ``killed`` (the tests failed or errored), ``timeout`` (ran past ``--timeout``: counted as
killed), ``survived`` (the tests passed on the mutant) and ``not-applicable`` (``find`` does not occur
exactly once: the mutant no longer matches the code; the run exits nonzero). Mutants marked
``equivalent = "reason"`` still run but are reported apart and left out of the score::

    score = killed / (applicable mutants not marked equivalent)       per layer and overall

Isolation: each worker copies the repository's files (``git ls-files --cached --others
--exclude-standard``: tracked files plus new, not ignored ones) into a temporary directory once,
applies one mutant at a time to its copy and restores the file afterwards. Nothing in the working
tree is ever written, except the results. Tests run as ``python -m pytest`` with the copy as the
working directory and first on ``PYTHONPATH``; the editable install of the working tree is a
meta-path finder appended *after* the path-based finder, so ``import secfl`` resolves to the copy,
in pytest and in every subprocess a test starts (they inherit ``PYTHONPATH``). Each worker checks
this before its first mutant (``python -c "import secfl; print(secfl.__file__)"`` from another
directory, with the same environment) and refuses to run otherwise. A mutated file gets an mtime of
its own, so no stale bytecode of another state can be loaded.

Results: ``PREFIX.md`` and ``PREFIX.json`` (default ``tools/results/mutation`` for a run over every
mutant; a run with ``--only`` writes them only when ``--output`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tools" / "mutants.toml"
DEFAULT_OUTPUT = ROOT / "tools" / "results" / "mutation"
#: the layers mutants may target: the three under test, and two extras from issue 15
LAYERS = ("crypto", "protocols", "dp", "runtime", "fl")
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
_FIELDS = {"id", "file", "find", "replace", "why", "tests", "equivalent"}


class MutantError(Exception):
    """A malformed mutants file (a programming error in the list, not a test outcome)."""


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: tuple[str, ...]
    equivalent: str | None = None

    @property
    def layer(self) -> str:
        """``secfl/<layer>/...``: crypto, protocols, dp (or the extras runtime, fl)."""
        parts = Path(self.file).parts
        return parts[1] if len(parts) > 2 and parts[0] == "secfl" else "?"

    def occurrences(self, root: Path = ROOT) -> int:
        path = root / self.file
        return path.read_text(encoding="utf-8").count(self.find) if path.is_file() else 0


def load_mutants(path: Path = MUTANTS) -> list[Mutant]:
    """Parse and validate the mutants file (fields, unique ids, layers); ``find`` is checked by the run."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rows = data.get("mutant")
    if not isinstance(rows, list) or not rows:
        raise MutantError(f"{path}: no [[mutant]] entries")
    out: list[Mutant] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = f"{path.name}: mutant #{i + 1} ({row.get('id', '?')})"
        extra = set(row) - _FIELDS
        if extra:
            raise MutantError(f"{where}: unknown field(s) {sorted(extra)}")
        for key in ("id", "file", "find", "replace", "why"):
            if not isinstance(row.get(key), str) or not row[key]:
                if key == "replace" and row.get(key) == "":
                    continue  # deleting the snippet is a valid mutant
                raise MutantError(f"{where}: '{key}' must be a non-empty string")
        tests = row.get("tests")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t for t in tests):
            raise MutantError(f"{where}: 'tests' must be a non-empty list of pytest node ids or files")
        eq = row.get("equivalent")
        if eq is not None and (not isinstance(eq, str) or not eq):
            raise MutantError(f"{where}: 'equivalent' must be a non-empty reason")
        if "\n" in row["why"]:
            raise MutantError(f"{where}: 'why' is one line")
        if row["find"] == row["replace"]:
            raise MutantError(f"{where}: 'replace' equals 'find'")
        m = Mutant(row["id"], row["file"], row["find"], row["replace"], row["why"], tuple(tests), eq)
        if m.id in seen:
            raise MutantError(f"{where}: duplicate id {m.id!r}")
        if m.layer not in LAYERS:
            raise MutantError(f"{where}: {m.file} is not under secfl/{{{','.join(LAYERS)}}}/")
        seen.add(m.id)
        out.append(m)
    return out


# ------------------------------------------------------------------------------------------- copies
def repo_files(root: Path = ROOT) -> list[str]:
    """Tracked files and new files git does not ignore (the tests a mutant needs may be new)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def make_copy(dest: Path, files: Sequence[str], root: Path = ROOT) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)


def child_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), env.get("PYTHONPATH")]))
    env.pop("PYTHONSAFEPATH", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    env["SECFL_MUTATION_COPY"] = str(copy)
    return env


def check_isolation(copy: Path) -> str:
    """``secfl.__file__`` as the tests will see it; raises unless it lies inside ``copy``."""
    env = child_env(copy)
    where = subprocess.run([sys.executable, "-c", "import secfl; print(secfl.__file__)"], cwd=tempfile.gettempdir(),
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"import secfl resolves to {where}, not to the copy {copy}: mutants would not be tested")
    return where


#: the test runs in progress (each in its own session): stopped with the runner
_RUNNING: set[subprocess.Popen[str]] = set()


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and whatever the tests started
    except ProcessLookupError:
        pass


def run_tests(copy: Path, tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """(``passed`` / ``failed`` / ``timeout``, seconds, output tail) of the tests in ``copy``."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, *PYTEST, *tests], cwd=copy, env=child_env(copy),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, _ = proc.communicate()
        status = "timeout"
    finally:
        _RUNNING.discard(proc)
    return status, time.monotonic() - start, (out or "")[-3000:]


# ------------------------------------------------------------------------------------------- the run
@dataclass
class Result:
    mutant: Mutant
    outcome: str  # killed | timeout | survived | not-applicable
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        m = self.mutant
        return {"id": m.id, "layer": m.layer, "file": m.file, "outcome": self.outcome,
                "seconds": round(self.seconds, 1), "equivalent": m.equivalent, "why": m.why,
                "tests": list(m.tests), "detail": self.detail}


@dataclass
class Worker:
    copy: Path
    lock: threading.Lock = field(default_factory=threading.Lock)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_mutant(worker: Worker, m: Mutant, timeout: float, counter: list[int]) -> Result:
    path = worker.copy / m.file
    original = path.read_text(encoding="utf-8")
    found = original.count(m.find)
    if found != 1:
        return Result(m, "not-applicable", detail=f"'find' occurs {found} times in {m.file}, expected once")
    stat = path.stat()
    with worker.lock:
        counter[0] += 1
        stamp = counter[0]
    try:
        path.write_text(original.replace(m.find, m.replace, 1), encoding="utf-8")
        # an mtime no other state of this file has: Python never reuses bytecode of another state
        os.utime(path, (stat.st_atime, stat.st_mtime + 100 + stamp))
        status, secs, out = run_tests(worker.copy, m.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
        os.utime(path, (stat.st_atime, stat.st_mtime + 100_000 + stamp))
    outcome = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[status]
    return Result(m, outcome, secs, _last_line(out))


def score(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    """Per layer and overall: killed (timeouts included) / applicable non-equivalent mutants."""
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        for key in (r.mutant.layer, "overall"):
            row = table.setdefault(key, {"mutants": 0, "equivalent": 0, "not_applicable": 0, "killed": 0,
                                         "survived": 0, "scored": 0})
            row["mutants"] += 1
            if r.outcome == "not-applicable":
                row["not_applicable"] += 1
            elif r.mutant.equivalent is not None:
                row["equivalent"] += 1
            else:
                row["scored"] += 1
                row["killed" if r.outcome in ("killed", "timeout") else "survived"] += 1
    for row in table.values():
        row["score"] = round(row["killed"] / row["scored"], 4) if row["scored"] else None
    order = [k for k in (*LAYERS, "overall") if k in table]
    return {k: table[k] for k in order}


def write_reports(prefix: Path, results: Sequence[Result], wall: float, jobs: int, baseline: float | None,
                  total: int) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    scores = score(results)
    doc = {"mutants": [r.as_dict() for r in results], "score": scores, "wall_seconds": round(wall, 1),
           "jobs": jobs, "baseline_seconds": None if baseline is None else round(baseline, 1),
           "selected": len(results), "listed": total, "python": sys.version.split()[0]}
    prefix.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    lines = ["# Mutation testing results", "",
             f"`python tools/mutate.py --jobs {jobs}`{' --baseline' if baseline is not None else ''}: "
             f"{len(results)} of {total} mutants, wall time {wall / 60:.1f} min"
             + (f" (baseline {baseline:.0f} s)" if baseline is not None else "") + ".", "",
             "Score = killed / applicable mutants not judged equivalent (a timeout counts as killed).", "",
             "| layer | mutants | equivalent | not applicable | killed | survived | score |",
             "|---|---|---|---|---|---|---|"]
    for layer, row in scores.items():
        pct = "–" if row["score"] is None else f"{100 * row['score']:.1f} %"
        lines.append(f"| {layer} | {row['mutants']} | {row['equivalent']} | {row['not_applicable']} | "
                     f"{row['killed']} | {row['survived']} | {pct} |")
    survivors = [r for r in results if r.outcome == "survived" and r.mutant.equivalent is None]
    lines += ["", "## Survivors (real gaps)", ""]
    lines += [f"- `{r.mutant.id}` ({r.mutant.file}): {r.mutant.why}" for r in survivors] or ["None."]
    eq = [r for r in results if r.mutant.equivalent is not None]
    lines += ["", "## Judged equivalent (not scored)", ""]
    lines += [f"- `{r.mutant.id}` ({r.outcome}): {r.mutant.equivalent}" for r in eq] or ["None."]
    na = [r for r in results if r.outcome == "not-applicable"]
    if na:
        lines += ["", "## Not applicable (fix the mutant)", ""]
        lines += [f"- `{r.mutant.id}`: {r.detail}" for r in na]
    lines += ["", "## Every mutant", "", "| id | layer | outcome | seconds | why |", "|---|---|---|---|---|"]
    for r in results:
        outcome = r.outcome + (" (equivalent)" if r.mutant.equivalent is not None else "")
        lines.append(f"| `{r.mutant.id}` | {r.mutant.layer} | {outcome} | {r.seconds:.0f} | {r.mutant.why} |")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (one repository copy each)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant before it counts as killed")
    ap.add_argument("--baseline", action="store_true",
                    help="first run every selected test on the unmutated copy; refuse to start if one fails")
    ap.add_argument("--output", type=Path, help="results prefix (PREFIX.md, PREFIX.json)")
    ap.add_argument("--mutants", type=Path, default=MUTANTS, help="the mutants file (default tools/mutants.toml)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    mutants = load_mutants(args.mutants)
    total = len(mutants)
    if args.list:
        for m in mutants:
            print(f"{m.id:45s} {m.layer:10s} {m.file}{'  [equivalent]' if m.equivalent else ''}")
        return 0
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {m.id for m in mutants})
        if unknown:
            ap.error(f"unknown mutant id(s): {', '.join(unknown)}")
        mutants = [m for m in mutants if m.id in wanted]
    output = args.output if args.output is not None else (None if args.only else DEFAULT_OUTPUT)
    # a mutant that no longer applies is reported at once (the run goes on, and exits nonzero)
    stale = [m for m in mutants if m.occurrences() != 1]
    for m in stale:
        print(f"NOT APPLICABLE {m.id}: 'find' occurs {m.occurrences()} times in {m.file}", file=sys.stderr)
    files = repo_files()
    jobs = min(args.jobs, max(1, len(mutants)))
    tmp = Path(tempfile.mkdtemp(prefix="secfl-mutate-"))
    start = time.monotonic()
    baseline_secs: float | None = None
    try:
        workers = []
        for i in range(jobs):
            copy = tmp / f"w{i}"
            make_copy(copy, files)
            workers.append(Worker(copy))
        where = check_isolation(workers[0].copy)
        print(f"{len(files)} files copied per worker into {tmp}; in the copy, import secfl -> {where}", flush=True)
        for w in workers[1:]:
            check_isolation(w.copy)
        if args.baseline:
            tests = sorted({t for m in mutants for t in m.tests})
            print(f"baseline: {len(tests)} test selections, unmutated ...", flush=True)
            status, baseline_secs, out = run_tests(workers[0].copy, tests, args.timeout * 4)
            if status != "passed":
                print(out, file=sys.stderr)
                print(f"baseline {status} after {baseline_secs:.0f} s: the selected tests do not pass on the unmutated"
                      " code; refusing to start (every mutant would look killed)", file=sys.stderr)
                return 2
            print(f"baseline passed in {baseline_secs:.0f} s", flush=True)
        pool: queue.Queue[Worker] = queue.Queue()
        for w in workers:
            pool.put(w)
        counter = [0]
        done = [0]
        lock = threading.Lock()

        def task(m: Mutant) -> Result:
            w = pool.get()
            try:
                r = run_mutant(w, m, args.timeout, counter)
            finally:
                pool.put(w)
            with lock:
                done[0] += 1
                eq = " (equivalent)" if m.equivalent else ""
                print(f"[{done[0]}/{len(mutants)}] {m.id}: {r.outcome}{eq} ({r.seconds:.0f} s)", flush=True)
            return r

        with ThreadPoolExecutor(max_workers=jobs) as ex:
            results = list(ex.map(task, mutants))
    finally:
        for proc in list(_RUNNING):  # interrupted: no test run outlives the runner
            _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - start
    scores = score(results)
    for layer, row in scores.items():
        pct = "n/a" if row["score"] is None else f"{100 * row['score']:.1f} %"
        print(f"{layer:10s} killed {row['killed']}/{row['scored']} = {pct} (equivalent {row['equivalent']},"
              f" not applicable {row['not_applicable']})")
    print(f"wall time {wall / 60:.1f} min")
    if output is not None:
        write_reports(output, results, wall, jobs, baseline_secs, total)
        print(f"wrote {output.with_suffix('.md')} and {output.with_suffix('.json')}")
    return 1 if any(r.outcome == "not-applicable" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
