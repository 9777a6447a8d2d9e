"""Mutation testing of the pure modules: does each rule have a test that notices when it
changes? mutmut (3.x) changes one thing at a time in a module (a `<` into `<=`, a `+`
into `-`, a constant by one, an argument dropped) and runs the module's fast tests on
each change; a change no test notices survives, and shows a rule no test pins.

    python3 dev.py mutants [--max-children N] [--report] [MODULE ...]

Each module is run on its own, in .mutmut/<module>/ (left there to look at with
`mutmut browse`, started in that directory), with only its fast tests (no database),
and a table is printed: the module, its mutants, how many the tests killed, how many
survived, timed out or were suspicious, and were not run, and the score counting every
mutant. A timed-out mutant counts as killed (its tests would fail on their timeout), as
mutmut's own score does; a mutant that loops forever fails its test on a one-minute
pytest timeout, and so is killed. The only mutants left out of the score
are those that change nothing but the wording of an error's message (a string inside a
`raise`); they are listed, as are the survivors. docs/figures.md has the latest table.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutmut"


@dataclass(frozen=True)
class Target:
    """A module to mutate and the fast tests that pin its rules."""

    module: str
    tests: tuple[str, ...]


TARGETS: dict[str, Target] = {
    "schedule": Target(
        "services/schedule.py",
        # The webhook rules' tests hold the safety-net plan's (a schedule function).
        (
            "tests/test_schedule_rules.py",
            "tests/test_schedule_edges.py",
            "tests/test_webhook_rules.py",
        ),
    ),
    "webhooks": Target("services/webhooks.py", ("tests/test_webhook_rules.py",)),
    "activities": Target(
        "services/activities.py",
        ("tests/test_activity_rules.py", "tests/test_activities_rules.py"),
    ),
    "eddington": Target("services/eddington.py", ("tests/test_eddington_rules.py",)),
    # The duplicate rule itself is one SQL statement (models/duplicates.py): these are the
    # rules around it that Python states.
    "duplicates": Target("services/duplicates.py", ("tests/test_duplicates_rules.py",)),
}

# What the copy mutmut makes of the project needs besides the tests: the product's and
# the simulators' Python (the tests' conftest imports the app factory) and their data.
NOT_COPIED = {"mutants", "tests", "__pycache__"}

# Seconds one fast test may take under a mutant before it fails (pytest-timeout).
MUTANT_TEST_TIMEOUT_S = 60

# mutmut's exit codes (mutmut/stats.py, mutmut 3.8), folded into the table's columns.
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, -24, 24, 152, 255}
NOT_RUN = {None, 2, 5, 33, 34}


@dataclass
class Result:
    """One module's mutants by outcome, with the survivors' and the left-out names."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    # (mutant's name, its change) for each mutant not killed
    survivors: list[tuple[str, str]] = field(default_factory=list)
    wording: list[tuple[str, str]] = field(default_factory=list)
    not_run: list[tuple[str, str]] = field(default_factory=list)
    suspicious: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def score(self) -> float:
        counted = self.total - len(self.wording)
        detected = self.counts["killed"] + self.counts["timeout"]
        return 100.0 * detected / counted if counted else 0.0


def mutmut_config(target: Target, sources: list[str], timeout_multiplier: float) -> str:
    """The [tool.mutmut] table for one module (TOML; JSON's strings and lists are TOML's)."""
    settings = {
        "source_paths": sources,
        "only_mutate": [target.module],
        "pytest_add_cli_args_test_selection": list(target.tests),
        # The suite's own addopts (parallel runs, markers) are not for one mutant's tests.
        # A mutant that loops forever fails on MUTANT_TEST_TIMEOUT_S, not the suite's
        # longer timeout: the slowest fast test takes a few seconds, even on a busy machine.
        "pytest_add_cli_args": [
            "-o",
            "addopts=--strict-markers",
            "-o",
            f"timeout={MUTANT_TEST_TIMEOUT_S}",
            "-p",
            "no:cacheprovider",
        ],
        "timeout_multiplier": timeout_multiplier,
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def prepare(name: str, target: Target, timeout_multiplier: float) -> Path:
    """A fresh working directory for one module: links to the project, and a
    pyproject.toml that is the project's plus mutmut's settings for this module."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    sources = []
    for entry in sorted(ROOT.iterdir()):
        if entry.name in NOT_COPIED or entry.name.startswith(".") or entry.name.endswith("cache"):
            continue
        if entry.is_dir() and not any(entry.glob("*.py")):
            continue
        if entry.is_file() and entry.suffix != ".py":
            continue
        (work / entry.name).symlink_to(entry)
        sources.append(entry.name)
    (work / "tests").symlink_to(ROOT / "tests")
    project = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(
        project + mutmut_config(target, sources, timeout_multiplier)
    )
    tomllib.loads((work / "pyproject.toml").read_text())  # fail here, not inside mutmut
    return work


def mutated_functions(path: Path) -> dict[str, ast.AST]:
    """Each function of mutmut's mutated copy of a module, by its (mangled) name."""
    tree = ast.parse(path.read_text())
    found: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
    return found


def _message(node: ast.AST) -> bool:
    """Whether a node is an error's text: a string with a space in it, an f-string, or
    text joined from them (`"one of: " + ", ".join(names)`)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message(node.left) or _message(node.right)
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value


def _same_but_strings(before: ast.AST, after: ast.AST) -> bool:
    """Whether two trees differ at most in the values of their string constants."""
    if type(before) is not type(after):
        return False
    if isinstance(before, ast.Constant) and isinstance(after, ast.Constant):
        return before.value == after.value or (
            isinstance(before.value, str) and isinstance(after.value, str)
        )
    for name in before._fields:
        old, new = getattr(before, name), getattr(after, name)
        old_items = old if isinstance(old, list) else [old]
        new_items = new if isinstance(new, list) else [new]
        if len(old_items) != len(new_items):
            return False
        for a, b in zip(old_items, new_items, strict=True):
            if isinstance(a, ast.AST) and isinstance(b, ast.AST):
                if not _same_but_strings(a, b):
                    return False
            elif a != b:
                return False
    return True


def _compare(before: ast.AST, after: ast.AST, *, message_slot: bool = False) -> tuple[bool, bool]:
    """(whether two trees are alike but for an error's text, whether that text differs)."""
    if message_slot and _message(before):
        text = (
            isinstance(after, ast.JoinedStr)
            or (isinstance(after, ast.Constant) and isinstance(after.value, str | None))
            or _same_but_strings(before, after)
        )
        return text, text and ast.dump(before) != ast.dump(after)
    if type(before) is not type(after):
        return False, False
    reworded = False
    for name in before._fields:
        if isinstance(before, ast.FunctionDef | ast.AsyncFunctionDef) and name == "name":
            continue  # mutmut names each copy of a function apart
        old, new = getattr(before, name), getattr(after, name)
        # The text of an error: an argument of the exception's call in a `raise`.
        if isinstance(before, ast.Raise):
            slot = name == "exc" and isinstance(old, ast.Call)
        elif isinstance(before, ast.Call):
            slot = message_slot and name in ("args", "keywords")
        else:
            slot = message_slot and isinstance(before, ast.keyword)
        old_items = old if isinstance(old, list) else [old]
        new_items = new if isinstance(new, list) else [new]
        if len(old_items) != len(new_items):
            return False, False
        for a, b in zip(old_items, new_items, strict=True):
            if isinstance(a, ast.AST) and isinstance(b, ast.AST):
                alike, changed = _compare(a, b, message_slot=slot)
                if not alike:
                    return False, False
                reworded = reworded or changed
            elif a != b:
                return False, False
    return True, reworded


def wording_only(original: ast.AST, mutant: ast.AST) -> bool:
    """Whether a mutant changes nothing but the text of an error it raises (a string with
    a space in it, an f-string, or text joined from them, given to the exception in a
    `raise`)."""
    alike, reworded = _compare(original, mutant)
    return alike and reworded


def read_results(name: str, target: Target, work: Path) -> Result:
    """The outcome of each mutant of one module, from mutmut's files."""
    result = Result(name)
    mutated = work / "mutants" / target.module
    meta = json.loads((work / "mutants" / (target.module + ".meta")).read_text())
    lines = mutated.read_text().splitlines()
    functions = mutated_functions(mutated)
    for key, code in sorted(meta["exit_code_by_key"].items(), key=lambda kv: mutant_order(kv[0])):
        function = key.rsplit(".", 1)[1]
        original = functions.get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        mutant = functions.get(function)
        if code in KILLED:
            result.counts["killed"] += 1
            continue
        if code in TIMEOUT:
            result.counts["timeout"] += 1
            continue
        listed = (key, change(lines, original, mutant))
        if code in NOT_RUN:
            result.counts["not run"] += 1
            result.not_run.append(listed)
        elif code in SURVIVED:
            result.counts["survived"] += 1
            if original is not None and mutant is not None and wording_only(original, mutant):
                result.wording.append(listed)
            else:
                result.survivors.append(listed)
        else:
            result.counts["suspicious"] += 1
            result.suspicious.append(listed)
    return result


def mutant_order(key: str) -> tuple[str, int]:
    """Mutants by function, then by number (mutant 9 before mutant 10)."""
    function, _, number = key.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def change(lines: list[str], original: ast.AST | None, mutant: ast.AST | None) -> str:
    """A mutant's change: its lines that differ from the original function's."""
    if not isinstance(original, ast.FunctionDef) or not isinstance(mutant, ast.FunctionDef):
        return "?"
    before = lines[original.lineno : original.end_lineno]  # the body, without the def line
    after = lines[mutant.lineno : mutant.end_lineno]
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " | ".join(line[0] + " " + line[1:].strip() for line in changed)


def run_mutmut(name: str, target: Target, max_children: int, timeout_multiplier: float) -> int:
    """Run mutmut afresh on one module; its exit code."""
    work = prepare(name, target, timeout_multiplier)
    log = work / "mutmut.log"
    print(f"== {name}: {target.module} with {', '.join(target.tests)} (log: {log})", flush=True)
    with log.open("w") as out:
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if run.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        print(f"mutmut failed on {name} (exit {run.returncode})", file=sys.stderr)
    return run.returncode


def table(results: list[Result]) -> str:
    header = (
        f"{'module':<12} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7}"
        f" {'suspicious':>10} {'not run':>7} {'wording':>7} {'score':>6}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        survived = len(r.survivors)
        rows.append(
            f"{r.name:<12} {r.total:>7} {r.counts['killed']:>6} {survived:>8}"
            f" {r.counts['timeout']:>7} {r.counts['suspicious']:>10} {r.counts['not run']:>7}"
            f" {len(r.wording):>7} {r.score:>5.1f}%"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py mutants", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(TARGETS))
    parser.add_argument("--max-children", type=int, default=1, help="mutants run at once")
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=15.0,
        help="a mutant times out after this many times its tests' usual time (plus 1 s)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only print the table of the last run in .mutmut/ (after re-running some mutants"
        " there by hand with `mutmut run NAME`)",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)} (one of {', '.join(TARGETS)})")
    names = args.modules or list(TARGETS)
    results = []
    for name in names:
        target = TARGETS[name]
        work = WORK / name
        if not args.report:
            failed = run_mutmut(name, target, args.max_children, args.timeout_multiplier)
            if failed:
                return failed
        result = read_results(name, target, work)
        results.append(result)
        for title, keys in (
            ("survived", result.survivors),
            ("suspicious", result.suspicious),
            ("not run", result.not_run),
            ("left out, an error's wording only", result.wording),
        ):
            for key, changed in keys:
                print(f"  {title}: {key}: {changed}")
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
