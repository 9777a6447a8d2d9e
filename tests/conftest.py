"""Fixtures: a real Postgres database (on the embedded server under DATA_DIR, default
.data/, or on the server of TEST_DATABASE_URL) created for this test session, clean tables
for each test, the app built with create_app(), and the fake Strava installed at the HTTP
boundary with `responses`.

DATABASE_URL is never used: people export the production URL in their shell. It is
removed from this process's environment as soon as pytest loads this file, so neither
load_settings() nor a subprocess a test starts can pick it up."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import responses
from psycopg import sql

import db as dbmod
from app_factory import create_app
from fake_strava import FakeStrava
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


def _server_url() -> str:
    """TEST_DATABASE_URL's server, or the embedded one; never DATABASE_URL."""
    return os.environ.get("TEST_DATABASE_URL") or dbmod.embedded_database_url(DATA_DIR)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this session, migrated, dropped at the end."""
    server = _server_url()
    name = f"strava_sync_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
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


@pytest.fixture
def make_app(database: str):
    """Build apps with create_app() on the test database; closed at the end."""
    apps = []

    def build(**overrides: Any):
        app = create_app(settings_for(database, **overrides), environ={})
        app.config["TESTING"] = True
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


def cron_headers(secret: str = CRON_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
