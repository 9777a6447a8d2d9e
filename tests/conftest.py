"""Fixtures: a real Postgres database (on the embedded server under DATA_DIR, default
.data/, or on the server of TEST_DATABASE_URL) created for this test session, clean tables
for each test, the app built with create_app(), and the fake Strava installed at the HTTP
boundary with `responses`.

DATABASE_URL is never used: people export the production URL in their shell. It is
removed from this process's environment as soon as pytest loads this file, so neither
load_settings() nor a subprocess a test starts can pick it up."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import responses
from psycopg import sql

import db as dbmod
from app_factory import create_app
from fake_strava import FakeStrava
from services.clock import Timer
from services.sealing import Sealer
from token_keys import new_key

ROOT = Path(__file__).resolve().parent.parent
API_URL = "https://www.strava.com/api/v3"
OAUTH_URL = "https://www.strava.com/oauth"
CRON_SECRET = "test-cron-secret-4f1c2a9e"
CLIENT_ID = "1234"
CLIENT_SECRET = "test-client-secret-77d0e"
# The key sealing riders' tokens in this session: the apps' (settings_for) and the
# seeding's (factories.connect_rider), so both read what the other wrote.
TOKEN_KEY = new_key("test")
SEALER = Sealer(TOKEN_KEY)

TABLES = ["activities", "strava_connections", "riders", "cron_runs"]

# Supabase Realtime's schema, as every Supabase project has it (a plain Postgres has
# none): the test database gets it before its migrations, as on Supabase.
REALTIME_SCHEMA = ROOT / "tests" / "fixtures" / "supabase_realtime.sql"

os.environ.pop("DATABASE_URL", None)
# Where the embedded Postgres lives (as for `dev.py demo` and `dev.py stop`), read once.
DATA_DIR = ROOT / (os.environ.get("DATA_DIR") or ".data")


# The test databases' commits do not wait for the WAL to reach the disk (3 ms a commit on
# this machine's disk, 0.2 ms without). What a transaction sees and what a client's crash
# leaves are the same; only a crash of the Postgres server itself could lose the last
# commits, and no test crashes it.
NO_COMMIT_FLUSH = "synchronous_commit=off"


def _server_url() -> str:
    """TEST_DATABASE_URL's server, or the embedded one; never DATABASE_URL."""
    return os.environ.get("TEST_DATABASE_URL") or dbmod.embedded_database_url(DATA_DIR)


@contextmanager
def _one_session_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hold a lock shared by the sessions of one run (pytest-xdist's workers) and by other
    runs of this user. Workers start together: on a fresh clone two would both start and
    initialize the embedded server (its own lock comes after it has made the data
    directory), and two first migrations would both create the cluster's roles."""
    lock_path = tmp_path_factory.getbasetemp().parent / "test-database-setup.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own for this session (each pytest-xdist worker is a session),
    migrated, dropped at the end."""
    name = f"strava_sync_test_{uuid.uuid4().hex[:10]}"
    with _one_session_at_a_time(tmp_path_factory):
        server = _server_url()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            admin.execute(
                sql.SQL("alter database {} set " + NO_COMMIT_FLUSH).format(sql.Identifier(name))
            )
        url = psycopg.conninfo.make_conninfo(server, dbname=name)
        with psycopg.connect(url) as conn:
            conn.execute(REALTIME_SCHEMA.read_bytes())
        dbmod.migrate(url)
    yield url
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,)
        )
        admin.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def server_url(database_url: str) -> str:
    """The server of this session's database, for tests that make databases of their own
    (once the session's is made, the server is up and the cluster's roles exist), whose
    connections commit as the session database's do (NO_COMMIT_FLUSH)."""
    return psycopg.conninfo.make_conninfo(_server_url(), options=f"-c {NO_COMMIT_FLUSH}")


@pytest.fixture(scope="session")
def scratch_database(database_url: str) -> Iterator[Any]:
    """make(prefix) -> the URL of a new, empty database on the session's server (a plain
    Postgres without Realtime, a database to migrate from nothing), committing as the
    session's does. All are dropped at the end of the session: a DROP DATABASE waits for
    a checkpoint of the whole server (seconds on a loaded machine), which one after
    another at the end costs once, not once a test."""
    server = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            admin.execute(
                sql.SQL("alter database {} set " + NO_COMMIT_FLUSH).format(sql.Identifier(name))
            )
        made.append(name)
        return psycopg.conninfo.make_conninfo(database_url, dbname=name)

    yield make
    with psycopg.connect(server, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def _clean(url: str) -> None:
    with psycopg.connect(url) as conn:
        tables = ", ".join(TABLES + [t for t in extra_tables(conn) if t not in TABLES])
        conn.execute(f"truncate {tables} restart identity cascade")
        conn.execute("delete from strava_rate_budget")
        conn.execute("insert into strava_rate_budget (id) values (1)")


def extra_tables(conn: psycopg.Connection) -> list[str]:
    """Tables later migrations added (all public tables but the budget)."""
    rows = conn.execute(
        "select tablename from pg_tables where schemaname = 'public'"
        " and tablename <> 'strava_rate_budget'"
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def database(database_url: str) -> str:
    """The session database with every table emptied for this test."""
    _clean(database_url)
    return database_url


def settings_for(database: str, **overrides: Any) -> dict[str, Any]:
    return {
        "database_url": database,
        "cron_secret": CRON_SECRET,
        "strava_client_id": CLIENT_ID,
        "strava_client_secret": CLIENT_SECRET,
        "strava_api_url": API_URL,
        "strava_oauth_url": OAUTH_URL,
        "cron_time_budget_s": 8.0,
        "token_encryption_key": TOKEN_KEY,
        **overrides,
    }


def standing_timer() -> float:
    """A service timer that stands still, for tests whose Strava answers at once: any time
    their calls spend is this machine's, not the service's, and no budget runs out on a
    loaded machine. (Budgets are tested with a Strava that takes time: real, or virtual
    as in tests/clocked_strava.py.)"""
    return 0.0


@pytest.fixture
def make_app(database: str):
    """Build apps with create_app() on the test database; closed at the end. `timer`
    replaces the service's timer (services/clock.py)."""
    apps = []

    def build(*, timer: Timer | None = None, **overrides: Any):
        app = create_app(settings_for(database, **overrides), environ={})
        app.config["TESTING"] = True
        if timer is not None:
            app.extensions["strava_sync"] = replace(app.extensions["strava_sync"], timer=timer)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["strava_sync"].db.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["strava_sync"]


@pytest.fixture
def fake() -> FakeStrava:
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


@pytest.fixture
def strava(fake: FakeStrava) -> Iterator[FakeStrava]:
    """The fake Strava answering every request to Strava's real URLs."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        yield fake


# --- pytest-xdist: how `python3 dev.py test` (-n auto) shares the tests among workers --
#
# One by one (xdist's "load"), but for these modules, each run whole by one worker: their
# tests share a costly module fixture (the fleet simulations, the browser stack) or check
# the module as a whole (the OpenAPI contract's every-operation-answered check).
# (xdist's own xdist_group mark no longer groups on pytest 9.2: it renames the node id
# that pytest no longer reads.)
ONE_WORKER_MODULES = ("tests/test_fleet.py", "tests/test_browser.py", "tests/test_openapi.py")
# Handed out first, in this order: the long simulations, so that the run does not end
# with one worker still in one of them while the other has nothing left to do.
LONG_FIRST = (
    "tests/test_fleet.py",
    "tests/test_crash_safety.py",
    "tests/test_webhook_polling.py",
    "tests/test_scheduler.py",
    "tests/test_fuzz.py",
    "tests/test_workflow_against_app.py",
    "tests/test_dev_tasks.py",
    "tests/test_browser.py",
)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: without it, never called
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # a --dist asked for by name is xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

        first: list[str] | None = None  # the LONG_FIRST scopes, in order

        def _assign_work_unit(self, node: Any) -> None:
            if self.first is None:
                queued = list(self.workqueue)
                self.first = [s for m in LONG_FIRST for s in queued if s.startswith(m)]
            while self.first:
                scope = self.first.pop(0)
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
                    break
            super()._assign_work_unit(node)

    return Scheduling(config, log)


# A simulation's hang guard: minutes on a loaded machine are not a hang (the suite's
# `timeout` of 120 s is for tests of a few seconds).
SIMULATION_TIMEOUT_S = 600


def sizes(small: Any, full: Any) -> list[Any]:
    """Parameters of a simulation: its small size, run by default, and the full size it was
    written at, marked slow (`-m slow`, which CI runs too). Each is a value, or a tuple of
    values for several parameters."""

    def values(size: Any) -> tuple[Any, ...]:
        return size if isinstance(size, tuple) else (size,)

    guard = pytest.mark.timeout(SIMULATION_TIMEOUT_S)
    return [
        pytest.param(*values(small), id="small", marks=guard),
        pytest.param(*values(full), id="full", marks=[pytest.mark.slow, guard]),
    ]


def cron_headers(secret: str = CRON_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
