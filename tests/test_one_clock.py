"""One clock: every time decision of the service, in Python and in SQL, takes "now" from
the Runtime's clock, and time budgets within a call read the Runtime's timer.

The real services run here on virtual time against the real Postgres: the app's Runtime
gets a virtual clock set years ahead of the wall clock, the fake Strava the same clock,
so a timestamp written from the wall clock (or the database's now()) cannot pass for a
virtual one. A static check keeps real time out of services/ and the store (models/).
"""

from __future__ import annotations

import ast
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

import models
from fake_strava import FakeStrava, make_activities
from services.budget import day_start, window_start
from tests.conftest import CLIENT_ID, CLIENT_SECRET, ROOT, cron_headers
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings.
pytest_plugins = ["tests.jwks_fixture"]

START = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)
PUBLIC = "https://sync.club.example"
LIST = "/athlete/activities"
TOKEN = "/oauth/token"


class VirtualClock:
    """Virtual time, moved by hand: the service's clock (now) and timer (monotonic), and
    the fake Strava's clock (time, epoch seconds)."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = start

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def time(self) -> float:
        return self.now().timestamp()

    def monotonic(self) -> float:
        return (self.now() - START).total_seconds()

    def advance(self, **step: float) -> datetime:
        with self._lock:
            self._now += timedelta(**step)
            return self._now


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def fake(clock: VirtualClock) -> FakeStrava:
    """The fake Strava on the virtual clock (conftest's `strava` and `web` serve this one)."""
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time)


def on_virtual_time(app: Any, clock: VirtualClock) -> Any:
    """The app with its Runtime's clock and timer replaced by the virtual ones."""
    runtime = app.extensions["strava_sync"]
    app.extensions["strava_sync"] = replace(runtime, clock=clock.now, timer=clock.monotonic)
    return app


@pytest.fixture
def client(make_app, auth_settings, clock):
    app = make_app(**auth_settings, public_base_url=PUBLIC, sync_min_interval_s=1800)
    return on_virtual_time(app, clock).test_client()


def cron(client, kind: str, **params: Any) -> dict[str, Any]:
    response = client.post(f"/api/cron/{kind}", query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def status(client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/admin/status", query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def connection(database: str, rider: int) -> dict[str, Any]:
    return query(database, "select * from strava_connections where rider_id = %s", rider)[0]


def budget_row(database: str) -> dict[str, Any]:
    return query(database, "select * from strava_rate_budget")[0]


def wall_clock_stamps(database: str, since: datetime) -> list[str]:
    """Every table.column (timestamptz) holding a value from the wall clock since `since`."""
    until = datetime.now(UTC) + timedelta(seconds=5)
    since -= timedelta(seconds=5)
    found = []
    with psycopg.connect(database, row_factory=dict_row) as conn:
        columns = conn.execute(
            "select table_name, column_name from information_schema.columns"
            " where table_schema = 'public' and data_type = 'timestamp with time zone'"
            " order by 1, 2"
        ).fetchall()
        for c in columns:
            table, column = c["table_name"], c["column_name"]
            row = conn.execute(
                f'select count(*) as n from public."{table}" where "{column}" between %s and %s',
                (since, until),
            ).fetchone()
            if row and row["n"]:
                found.append(f"{table}.{column}")
    return found


def test_connect_discover_enrich_sync_sync_now_and_status_write_virtual_time(
    client, web, issuer, database, clock
):
    wall = datetime.now(UTC)
    athlete = 7301
    web.add_athlete(athlete)
    web.add_activities(
        athlete,
        make_activities(
            athlete,
            40,
            start=START - timedelta(days=300),
            end=START - timedelta(days=1),
            seed=3,
            race_fraction=0.2,
        ),
    )
    user = uuid.uuid4()
    headers = issuer.headers(issuer.es256(user))  # rider JWTs: PyJWT checks them on real time

    # Connect Strava: the state is made and consumed, and the grant stored, at virtual now.
    started = client.post("/api/strava/connect", headers=headers)
    assert started.status_code == 200, started.get_data(as_text=True)
    state = parse_qs(urlsplit(started.get_json()["authorize_url"]).query)["state"][0]
    assert query(database, "select created_at, expires_at from oauth_states")[0] == {
        "created_at": START,
        "expires_at": START + timedelta(minutes=10),
    }
    code = web.add_authorization_code(athlete)
    answered = client.get(
        "/api/strava/callback",
        query_string={"state": state, "code": code, "scope": "read,activity:read_all"},
    )
    assert answered.status_code == 200, answered.get_data(as_text=True)
    rider = answered.get_json()["rider_id"]
    row = connection(database, rider)
    assert row["connected_at"] == row["updated_at"] == row["sync_cursor"] == START
    assert row["expires_at"] == START + timedelta(hours=6)  # the fake's grant, same clock
    assert query(database, "select created_at from riders")[0]["created_at"] == START

    # Discover walks the history at virtual now.
    walked = cron(client, "discover")
    assert walked["succeeded"] == 1 and walked["done"] is True, walked
    row = connection(database, rider)
    assert row["history_complete_at"] == row["last_progress_at"] == row["updated_at"] == START
    assert row["lease_token"] is None
    seen = query(database, "select distinct seen_at, created_at, updated_at from activities")
    assert seen == [{"seen_at": START, "created_at": START, "updated_at": START}]
    races = query(database, "select count(*) as n from activities where is_race")[0]["n"]
    assert races > 0
    assert query(database, "select eddington_updated_at from riders")[0] == {
        "eddington_updated_at": START
    }

    # Enrich details the races at virtual now.
    enriched = cron(client, "enrich")
    assert enriched["succeeded"] == races, enriched
    assert query(database, "select distinct enriched_at from activities where is_race") == [
        {"enriched_at": START}
    ]

    # sync-strava: the rider (connected, never synced) is due at virtual now.
    synced = cron(client, "sync-strava")
    assert synced["succeeded"] == 1 and synced["done"] is True, synced
    row = connection(database, rider)
    assert row["last_synced_at"] == row["last_sync_attempt_at"] == START
    assert query(database, "select opened_at, closed_at from work_rounds") == [
        {"opened_at": START, "closed_at": START}
    ]
    budget = budget_row(database)
    assert budget["window_start"] == window_start(START) == datetime(2031, 3, 4, 5, 0, tzinfo=UTC)
    assert budget["day_start"] == day_start(START) == datetime(2031, 3, 4, tzinfo=UTC)
    assert budget["headers_seen_at"] == budget["updated_at"] == START
    assert synced["rate_limit"]["window_resets_at"] == "2031-03-04T05:15:00Z"
    runs = query(database, "select kind, started_at, finished_at from cron_runs order by id")
    assert [r["kind"] for r in runs] == ["discover", "enrich", "sync-strava"]
    assert {(r["started_at"], r["finished_at"]) for r in runs} == {(START, START)}

    # Sync now: the cooldown starts at virtual now.
    now_sync = client.post("/api/riders/me/sync", headers=headers)
    assert now_sync.status_code == 200, now_sync.get_data(as_text=True)
    assert connection(database, rider)["last_sync_now_at"] == START
    sync_state = now_sync.get_json()["sync"]
    assert sync_state["sync_now_available"] is False
    assert sync_state["sync_now_available_at"] == iso(START + timedelta(seconds=300))

    # The admin status judges ages and what is due at virtual now.
    fleet = status(client)
    assert fleet["generated_at"] == iso(START)
    assert fleet["riders"]["due_now"] == 0
    assert fleet["riders"]["by_sync_state"]["up_to_date"] == 1
    assert fleet["runs"]["sync-strava"]["last_24h"]["runs"] == 1
    assert fleet["stuck"]["count"] == 0
    detail = status(client, rider_id=rider)
    assert detail["generated_at"] == iso(START)
    assert detail["sync"]["state"] == "up_to_date"

    assert wall_clock_stamps(database, wall) == []

    # An hour later (virtual): due again, Sync now available again, last hour's runs kept.
    later = clock.advance(hours=1)
    fleet = status(client)
    assert fleet["generated_at"] == iso(later)
    assert fleet["riders"]["due_now"] == 1
    assert fleet["riders"]["by_sync_state"]["due"] == 1
    state_now = client.get("/api/riders/me/sync", headers=headers).get_json()
    assert state_now["sync_now_available"] is True
    synced = cron(client, "sync-strava")
    assert synced["succeeded"] == 1, synced
    row = connection(database, rider)
    assert row["last_synced_at"] == later
    assert row["last_sync_now_at"] == START
    assert budget_row(database)["window_start"] == datetime(2031, 3, 4, 6, 0, tzinfo=UTC)
    assert wall_clock_stamps(database, wall) == []


def test_a_rider_backoff_and_a_race_backoff_expire_on_the_virtual_clock(
    client, strava, database, clock
):
    rider = connect_rider(database, strava, 7302, activities=3)
    strava.fail_next(path_contains=LIST, status=400)
    failed = cron(client, "sync-strava")
    assert failed["failed"] == 1, failed
    row = connection(database, rider)
    assert row["next_attempt_at"] == START + timedelta(seconds=60)  # the first backoff
    assert row["last_sync_attempt_at"] == row["updated_at"] == START
    assert status(client)["riders"]["by_sync_state"]["backing_off"] == 1
    # Still backing off a little later; the same call then finds nothing to do.
    clock.advance(seconds=59)
    assert cron(client, "sync-strava")["processed"] == 0
    clock.advance(seconds=1)
    assert status(client)["riders"]["due_now"] == 1
    assert cron(client, "sync-strava")["succeeded"] == 1

    # A race whose details failed is due again once its backoff (5 minutes) is over.
    cron(client, "enrich")  # the races synced so far (a brevet) are detailed first
    race = make_activities(
        7302, 1, start=START - timedelta(days=2), end=START, race_fraction=1.0, seed=9
    )
    strava.add_activities(7302, race)
    execute(database, "update strava_connections set last_synced_at = null, next_poll_at = null")
    clock.advance(seconds=1)  # a new round opens after the last one's sync
    assert cron(client, "sync-strava")["items"][0]["races"] == 1
    strava.fail_next(path_contains="/activities/", status=400)
    now = clock.now()
    assert cron(client, "enrich")["failed"] == 1
    (stored,) = query(
        database,
        "select enrichment_next_attempt_at, updated_at from activities where strava_id = %s",
        race[0]["id"],
    )
    assert stored == {"enrichment_next_attempt_at": now + timedelta(minutes=5), "updated_at": now}
    assert cron(client, "enrich")["processed"] == 0
    clock.advance(minutes=5)
    assert cron(client, "enrich")["succeeded"] == 1


def test_the_15_minute_window_resets_on_the_virtual_clock(client, strava, database, clock):
    rider = connect_rider(database, strava, 7303, activities=2)
    strava.set_usage(read_usage_15min=100)  # the fake's window is spent at virtual now
    limited = cron(client, "sync-strava")
    assert limited["rate_limited"] is True, limited
    assert limited["rate_limit"]["resets_at"] == "2031-03-04T05:15:00Z"
    budget = budget_row(database)
    assert budget["blocked_until"] == datetime(2031, 3, 4, 5, 15, tzinfo=UTC)
    assert budget["window_start"] == datetime(2031, 3, 4, 5, 0, tzinfo=UTC)
    assert connection(database, rider)["lease_token"] is None
    # Still blocked within the window: no request is made.
    clock.advance(minutes=8)
    strava.reset_log()
    assert cron(client, "sync-strava")["rate_limited"] is True
    assert strava.count(path_contains=LIST) == 0
    # At 05:15 both the fake's window and the shared budget's reset.
    clock.advance(minutes=1, seconds=53)
    synced = cron(client, "sync-strava")
    assert synced["succeeded"] == 1 and synced["rate_limited"] is False, synced
    budget = budget_row(database)
    assert budget["window_start"] == datetime(2031, 3, 4, 5, 15, tzinfo=UTC)
    assert budget["blocked_until"] is None
    assert budget["read_usage_15min"] == 1


def test_a_token_near_expiry_by_the_virtual_clock_is_refreshed(client, strava, database, clock):
    rider = connect_rider(database, strava, 7304, activities=2, expires_in=2 * 3600)
    assert connection(database, rider)["expires_at"] == START + timedelta(hours=2)
    assert cron(client, "sync-strava")["succeeded"] == 1
    assert strava.count(path_contains=TOKEN) == 0  # two hours left: used as it is
    # One hour later the token still has an hour: no refresh.
    clock.advance(hours=1)
    poll_now = "update strava_connections set next_poll_at = null"  # polled by need: due now
    execute(database, poll_now)
    assert cron(client, "sync-strava")["succeeded"] == 1
    assert strava.count(path_contains=TOKEN) == 0
    # Within 5 minutes of expiry: refreshed before use, the new expiry on the same clock.
    later = clock.advance(minutes=56)
    execute(database, poll_now)
    assert cron(client, "sync-strava")["succeeded"] == 1
    assert strava.count(path_contains=TOKEN) == 1
    row = connection(database, rider)
    assert row["expires_at"] == later + timedelta(hours=6)
    assert row["updated_at"] == later


def test_leases_and_unfinished_runs_are_stuck_by_the_virtual_clock(client, strava, database, clock):
    rider = connect_rider(database, strava, 7305)
    with psycopg.connect(database, row_factory=dict_row) as conn:
        (lease,) = models.sync.claim_riders_for_sync(
            conn,
            lease_token=uuid.uuid4(),
            limit=1,
            lease_ttl_s=120,
            min_interval_s=1800,
            now=clock.now(),
        )
        models.runs.start_run(conn, kind="enrich", now=clock.now())  # a call that dies
    assert connection(database, rider)["lease_expires_at"] == START + timedelta(seconds=120)
    assert status(client)["stuck"]["count"] == 0
    clock.advance(seconds=121)
    stuck = {item["kind"]: item for item in status(client)["stuck"]["items"]}
    assert set(stuck) == {"rider_lease_expired"}, stuck
    assert stuck["rider_lease_expired"]["since"] == iso(START + timedelta(seconds=120))
    clock.advance(minutes=10)  # past STUCK_AFTER_S (600 s) since the run started
    stuck = {item["kind"]: item for item in status(client)["stuck"]["items"]}
    # ...and since the rider connected without a sync: overdue too
    assert set(stuck) == {"rider_lease_expired", "run_unfinished", "sync_overdue"}, stuck
    assert stuck["run_unfinished"]["since"] == stuck["sync_overdue"]["since"] == iso(START)
    # The expired lease is taken by the next call.
    assert cron(client, "sync-strava")["succeeded"] == 1
    assert lease.rider_id == rider


def test_the_timer_alone_bounds_a_call(make_app, strava, database, clock):
    """A call's deadline is read on the Runtime's timer: a timer past the budget stops
    the call before any Strava request, whatever the wall clock says."""
    readings = iter(range(0, 10_000, 100))
    app = make_app()
    runtime = app.extensions["strava_sync"]
    app.extensions["strava_sync"] = replace(
        runtime, clock=clock.now, timer=lambda: float(next(readings))
    )
    rider = connect_rider(database, strava, 7306, activities=2)
    body = cron(app.test_client(), "sync-strava")
    assert body["skipped"] == 1 and body["items"][0]["reason"] == "time_budget", body
    assert strava.count(path_contains=LIST) == 0
    assert connection(database, rider)["lease_token"] is None


# --- no real time outside the seam ---------------------------------------------------

# services/clock.py is the seam: the only module that may read the host's time.
SEAM = "services/clock.py"
REAL_TIME = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
}
SQL_NOW = ("now()", "current_timestamp", "current_date", "localtimestamp", "clock_timestamp(",
           "statement_timestamp(", "transaction_timestamp(", "timeofday(")  # fmt: skip


def real_time_uses(source: str, name: str) -> list[str]:
    """Where `source` reads real time: `datetime.now(`, `time.time(`, `time.monotonic(`
    and the like (called or passed on), and now() or its kin in SQL strings."""
    tree = ast.parse(source, name)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in REAL_TIME
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in REAL_TIME:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and any(word in node.value.lower() for word in SQL_NOW)
        ):
            found.append((node.lineno, "SQL reads the database's clock"))
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def test_nothing_in_services_or_models_reads_real_time_but_the_seam():
    files = sorted(ROOT.glob("services/*.py")) + sorted(ROOT.glob("models/*.py"))
    found = []
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        if name != SEAM:
            found += real_time_uses(path.read_text(), name)
    assert found == [], "real time outside services/clock.py:\n" + "\n".join(found)
    # The seam itself is where real time is read (so the check looks at the right things).
    assert len(real_time_uses((ROOT / SEAM).read_text(), SEAM)) == 2


def test_the_real_time_check_finds_each_kind_of_use():
    source = '''
"""A docstring may say now() without harm."""
import time
from datetime import UTC, datetime
from time import monotonic

def f(conn):
    conn.execute("update t set at = now()")
    conn.execute(f"select 1 where x < NOW() - interval '1 day' and {1}")
    conn.execute("insert into t values (current_timestamp)")
    started = time.monotonic()
    stamp = time.time()
    today = datetime.now(UTC)
    timer = time.perf_counter  # passed on, not called: still real time

def g(now):
    conn.execute("select %(now)s")  # a parameter is fine
'''
    found = real_time_uses(source, "sample.py")
    assert [line.split(": ", 1)[1] for line in found] == [
        "from time import monotonic",
        "SQL reads the database's clock",
        "SQL reads the database's clock",
        "SQL reads the database's clock",
        "time.monotonic",
        "time.time",
        "datetime.now",
        "time.perf_counter",
    ], found
