#!/usr/bin/env python3
"""The project's two commands, on a machine with only Python 3.11 and pip:

    python3 dev.py demo    # the main job on embedded defaults: no Strava, no Supabase
    python3 dev.py test    # lint, type check and the whole test suite

Each first makes .venv/ and installs requirements-dev.txt into it (again only when the
requirements change), then runs inside it. Extra arguments go to the demo or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]


def ensure_environment() -> None:
    """Create .venv and install the pinned requirements when they changed."""
    # dev.py runs under whatever python3 a newcomer has, before any 3.11 guarantee.
    if sys.version_info < (3, 11):  # noqa: UP036
        sys.exit("Python 3.11 or newer is needed")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in REQUIREMENTS)).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PYTHON.exists():
        print("creating .venv/ ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing requirements-dev.txt into .venv/ ...", flush=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements-dev.txt"),
        ],
        check=True,
    )
    STAMP.write_text(digest)


def run(*command: str) -> int:
    return subprocess.run([str(PYTHON), *command], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench"}:
        print(__doc__)
        return 2
    ensure_environment()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    task, rest = argv[0], argv[1:]
    if task == "demo":
        return run("-m", "scripts.demo", *rest)
    if task == "bench":
        return run("-m", "bench.sync") or run("-m", "bench.discovery")
    checks = (
        ("-m", "ruff", "check", "."),
        ("-m", "ruff", "format", "--check", "."),
        ("-m", "mypy"),
    )
    for check in checks:
        failed = run(*check)
        if failed:
            return failed
    return run("-m", "pytest", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
