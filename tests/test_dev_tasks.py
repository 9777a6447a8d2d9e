"""dev.py's tasks as a newcomer meets them, and the tests' own safety rules: they never
use DATABASE_URL, and `dev.py stop` stops the embedded Postgres of the data dir it is
given (here always a temporary one: the shared .data/ server is left alone)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import db as dbmod
import dev
from scripts import demo
from tests.conftest import ROOT


def dev_py(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def listed_tasks(text: str) -> dict[str, str]:
    """task -> its line, for each `python3 dev.py <task>` line of a usage text."""
    return {m[1]: m[0] for m in re.finditer(r"^\s*python3 dev\.py (\w+)\b.*$", text, re.MULTILINE)}


@pytest.mark.parametrize("args", [(), ("nonsense",), ("bench", "--fast")])
def test_dev_py_without_a_task_lists_every_task(args: tuple[str, ...]) -> None:
    result = dev_py(*args)
    assert result.returncode == 2
    tasks = listed_tasks(result.stdout)
    assert sorted(tasks) == sorted(dev.TASKS) == ["bench", "demo", "mutants", "stop", "test"]
    for task, line in tasks.items():  # one line each, saying what it does
        assert len(line.split(task, 1)[1].split()) >= 3, line


def test_dev_py_usage_names_only_real_options() -> None:
    """Every --option a usage text gives the demo is one its parser knows, and back."""
    parser_options = {
        option
        for action in demo.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert parser_options == {"--latency-ms", "--serve"}
    for text in (dev.__doc__, demo.__doc__):
        assert text is not None
        demo_lines = [line for line in text.splitlines() if "dev.py demo" in line]
        assert demo_lines
        assert {o for line in demo_lines for o in re.findall(r"--[a-z][a-z-]*", line)} == (
            parser_options
        )
    assert demo.build_parser().parse_args(["--latency-ms", "5"]).latency_ms == 5


def test_the_demo_hint_needs_no_psql_on_the_path() -> None:
    hint = demo.closing_hint("user=postgres dbname=strava_sync_demo host=/tmp/x")
    psql = demo.psql_binary()
    assert psql.is_absolute() and psql.is_file() and os.access(psql, os.X_OK)
    assert f"{psql} 'user=postgres dbname=strava_sync_demo host=/tmp/x'" in hint
    assert "python3 dev.py stop" in hint


def accepts_connections(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
        return True
    except psycopg.OperationalError:
        return False


def test_dev_py_stop_stops_the_embedded_postgres_of_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shared = (ROOT / ".data" / "pg").resolve()
    assert (data_dir / "pg").resolve() != shared  # never the server others are using
    url = dbmod.embedded_database_url(data_dir)
    assert accepts_connections(url)

    stopped = dev_py("stop", DATA_DIR=str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("Stopped the embedded Postgres under")
    assert str(data_dir / "pg") in stopped.stdout
    assert not accepts_connections(url)
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    again = dev_py("stop", DATA_DIR=str(data_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("No embedded Postgres is running under")


def test_dev_py_stop_with_no_server_says_so(tmp_path: Path) -> None:
    result = dev_py("stop", DATA_DIR=str(tmp_path / "never-used"))
    assert result.returncode == 0
    assert result.stdout == f"No embedded Postgres is running under {tmp_path}/never-used/pg/.\n"
    assert not (tmp_path / "never-used").exists()


PROBE = """
import os

from config import load_settings


def test_probe(database_url, tmp_path):
    assert "DATABASE_URL" not in os.environ
    assert load_settings(dotenv_path=tmp_path / "no.env").database_url in (None, "")
    print("SESSION-DATABASE", database_url)
"""


def test_the_tests_never_use_database_url(tmp_path: Path) -> None:
    """A session started with DATABASE_URL pointing at a port where nothing listens
    still gets its database (from TEST_DATABASE_URL or the embedded server)."""
    with socket.socket() as taken:  # bound, never listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        production = f"postgresql://prod:secret@127.0.0.1:{port}/club"
        probe = tmp_path / "test_probe.py"
        probe.write_text(PROBE)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
            + ["-p", "tests.conftest", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
            + [str(probe)],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": production},
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    used = re.search(r"^SESSION-DATABASE (.+)$", result.stdout, re.MULTILINE)
    assert used is not None, result.stdout
    params = psycopg.conninfo.conninfo_to_dict(used[1])
    assert (params.get("user"), params.get("port")) != ("prod", str(port))
    assert params.get("user") != "prod" and "secret" not in used[1]
    assert "DATABASE_URL" not in os.environ  # and not in this process either


def test_a_second_demo_on_the_same_data_dir_refuses_clearly(tmp_path: Path) -> None:
    """Two demos on one data dir: the second dropped the first one's database under it
    (the first then answered 503 while its health said ok). Now it refuses at once,
    before touching the database, and says what to do."""
    data_dir = tmp_path / "data"
    first = demo.hold_demo_lock(data_dir)
    try:
        with pytest.raises(demo.DemoBusy, match=r"Another demo is running .*pid \d+"):
            demo.hold_demo_lock(data_dir)
        result = subprocess.run(
            [sys.executable, "-m", "scripts.demo", "--latency-ms", "0"],
            cwd=ROOT,
            env={**os.environ, "DATA_DIR": str(data_dir)},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Another demo is running" in result.stderr
        assert "DATA_DIR=" in result.stderr and "Traceback" not in result.stderr
        assert not (data_dir / "pg").exists()  # no database started, none dropped
    finally:
        first.close()
    again = demo.hold_demo_lock(data_dir)  # free once the first demo ends
    again.close()
