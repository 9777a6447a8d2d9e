"""The repository is self-contained: no Python file reaches for a path outside its root
(a sibling checkout, a shared folder on one machine). `git clone` then `python3 dev.py
test` must pass with nothing beside the clone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
# This file's sample lines below are meant to be flagged; fixtures are data, not code.
NOT_SCANNED = ("tests/test_self_contained.py", "tests/fixtures/")
SKIPPED_DIRS = {".git", ".venv", ".data", "__pycache__", ".mypy_cache", ".ruff_cache"}
REFERENCE_DIR = "strava-" + "reference"
OUTSIDE_TEXT = [
    REFERENCE_DIR,  # the shared folder the Strava payloads came from
    "/work/" + "shared",
]
OUTSIDE_PATTERNS = [
    # "../shared", "../../x", Path(".."), root / "..": relative paths climbing out.
    re.compile(r"\.\.[/\\]+shared\b"),
    re.compile(r"\.\.[/\\]+\.\."),
    re.compile(r"""Path\(\s*["']\.\.["']"""),
    re.compile(r"""/\s*["']\.\.["']"""),
]
PARENTS_INDEX = re.compile(r"\.parents\[\s*(\d+)\s*\]")
PARENT_CHAIN = re.compile(r"__file__\)?(?:\.resolve\(\)|\.absolute\(\))?((?:\.parent)+)\b")


def python_files() -> list[str]:
    """The repository's Python files, relative to the root, as git would ship them:
    tracked plus new files not ignored; a walk skipping .venv/.data when git is missing."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [
            path.relative_to(ROOT).as_posix()
            for path in ROOT.rglob("*.py")
            if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
        ]
    return sorted(p for p in listed if (ROOT / p).is_file())


def outside_references(relative_path: str, text: str) -> list[str]:
    """`path:line: text` for each line of a file that leads out of the repository root."""
    if relative_path.startswith(NOT_SCANNED):
        return []
    path = PurePosixPath(relative_path)
    depth = len(path.parts) - 1  # directories between the root and the file
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        leaves = any(s in line for s in OUTSIDE_TEXT) or any(
            p.search(line) for p in OUTSIDE_PATTERNS
        )
        # Path(__file__).parents[n] is the root when n == depth; beyond it, outside.
        leaves |= any(int(n) > depth for n in PARENTS_INDEX.findall(line))
        # Path(__file__).parent is the file's folder: depth + 1 of them reach the root.
        leaves |= any(chain.count(".parent") > depth + 1 for chain in PARENT_CHAIN.findall(line))
        if leaves:
            found.append(f"{relative_path}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("tests/test_x.py", 'REF = Path(__file__).resolve().parents[2] / "shared"'),
        ("tests/test_x.py", "ROOT = Path(__file__).resolve().parent.parent.parent"),
        ("dev.py", "ROOT = Path(__file__).resolve().parents[1]"),
        ("dev.py", "ROOT = Path(__file__).parent.parent"),
        ("bench/sync.py", 'data = open("../shared/payloads/a.json")'),
        ("bench/sync.py", 'data = ROOT / ".." / "elsewhere"'),
        ("bench/sync.py", 'other = Path("..") / "sibling-checkout"'),
        ("scripts/demo.py", 'x = "../../outside"'),
        ("tests/test_x.py", f'SRC = ROOT / "{REFERENCE_DIR}" / "activity.3.json"'),
        ("tests/test_x.py", 'SRC = Path("/work/' + 'shared/x.json")'),
    ],
)
def test_a_path_leaving_the_root_is_found(path: str, line: str) -> None:
    assert outside_references(path, f"import x\n{line}\n") == [f"{path}:2: {line}"]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("tests/test_x.py", "ROOT = Path(__file__).resolve().parents[1]"),
        ("tests/test_x.py", "ROOT = Path(__file__).resolve().parent.parent"),
        ("tests/a/test_x.py", "ROOT = Path(__file__).resolve().parents[2]"),
        ("dev.py", "ROOT = Path(__file__).resolve().parent"),
        ("dev.py", "ROOT = Path(__file__).resolve().parents[0]"),
        ("tests/test_x.py", 'FIXTURES = Path(__file__).parent / "fixtures" / "strava"'),
        ("tests/test_x.py", 'bad_endpoints = ["../admin/status", "sync-strava;id"]'),
        ("tests/fixtures/strava/make.py", f'src = "../{REFERENCE_DIR}/x.json"'),
        ("tests/test_self_contained.py", 'x = "../../outside"'),
    ],
)
def test_a_path_inside_the_root_is_not_flagged(path: str, line: str) -> None:
    assert outside_references(path, line) == []


def test_the_scan_sees_the_repository() -> None:
    files = python_files()
    for expected in ("dev.py", "tests/conftest.py", "tests/test_self_contained.py"):
        assert expected in files
    assert not [f for f in files if f.startswith((".venv/", ".data/"))]


def test_no_python_file_reads_outside_the_repository() -> None:
    found = [
        hit
        for relative in python_files()
        for hit in outside_references(relative, (ROOT / relative).read_text(encoding="utf-8"))
    ]
    # The rule in force: the old tests/test_activity_rules.py line would be caught.
    assert outside_references(
        "tests/test_activity_rules.py",
        f'REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "{REFERENCE_DIR}"',
    )
    assert not found, "paths leading out of the repository:\n" + "\n".join(found)
