"""A call costs what is due, not what the club is: in a club of thousands, a sync-strava
call with a few riders due reads a few hundred rows of riders and connections, not every
rider. Counted by Postgres itself (its per-table counters of rows read by sequential
scans and index entries read), on the real database, with the fake Strava."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from fake_strava import FakeStrava
from services.strava import next_window_reset
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers
from tests.factories import connect_rider, execute
from tests.test_one_clock import VirtualClock, on_virtual_time

NOON = datetime(2031, 3, 4, 12, 0, 30, tzinfo=UTC)
CLUB = 4000  # riders planned hours ahead
DUE = 8  # riders whose poll has come
TABLES = ("riders", "strava_connections")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOON)


@pytest.fixture
def fake(clock: VirtualClock) -> FakeStrava:
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time)


def seed_club(database: str, size: int, now: datetime) -> None:
    """`size` riders synced in the last hour and planned 1 to 20 hours ahead, with four
    rides each in the last weeks (their habits); never called at Strava (no tokens)."""
    with psycopg.connect(database) as conn:
        conn.execute(
            "insert into riders (name, auto_sync, created_at)"
            " select 'Rider ' || g, true, %s from generate_series(1, %s) g",
            (now - timedelta(days=400), size),
        )
        conn.execute(
            """
            insert into strava_connections
              (rider_id, athlete_id, expires_at, scope, status, connected_at, sync_cursor,
               last_synced_at, last_sync_attempt_at, history_complete_at, next_poll_at,
               polls_per_day, poll_reason, updated_at)
            select r.id, 900000000 + r.id, %(now)s, 'read,activity:read_all', 'active',
                   %(now)s - interval '100 days', %(now)s - interval '1 day',
                   %(now)s - make_interval(secs => 60 + r.id * 7919 %% 2940),
                   %(now)s - make_interval(secs => 60 + r.id * 7919 %% 2940),
                   %(now)s - interval '100 days',
                   %(now)s + make_interval(secs => 3600 + r.id * 104729 %% (19 * 3600)),
                   1 + r.id %% 3, 'seeded', %(now)s
              from riders r
             where not exists (select 1 from strava_connections c where c.rider_id = r.id)
            """,
            {"now": now},
        )
        conn.execute(
            """
            insert into activities (strava_id, rider_id, sport_type, start_date,
                                    start_date_local, distance_m, elapsed_time_s, weather_status)
            select c.rider_id * 10 + k, c.rider_id, 'Ride', t.s, t.s at time zone 'utc',
                   20000, 3600, 'done'
              from strava_connections c, generate_series(0, 3) k,
                   lateral (select %(now)s::timestamptz - make_interval(
                              secs => 86400 + (c.rider_id * 7 + k * 104729) %% (26 * 86400))) t(s)
             where c.athlete_id >= 900000000
            """,
            {"now": now},
        )
        conn.execute("analyze")


def rows_read(database: str) -> dict[str, int]:
    """Rows read so far from each of TABLES: rows of sequential scans, and entries of
    its indexes read by index scans."""
    with psycopg.connect(database, row_factory=dict_row, autocommit=True) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        found = conn.execute(
            "select t.relname, t.seq_tup_read"
            " + (select coalesce(sum(i.idx_tup_read), 0) from pg_stat_user_indexes i"
            "     where i.relid = t.relid) as n"
            " from pg_stat_user_tables t where t.relname = any(%s)",
            (list(TABLES),),
        ).fetchall()
    return {r["relname"]: int(r["n"]) for r in found}


def app_backends_gone(database: str) -> None:
    """Wait until the app's connections have ended: a backend's counters reach the
    statistics when it exits."""
    name = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    with psycopg.connect(database, autocommit=True) as conn:
        for _ in range(200):
            left = conn.execute(
                "select count(*) from pg_stat_activity"
                " where datname = %s and pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
            if left is not None and left[0] == 0:
                return
            time.sleep(0.05)
    raise AssertionError("the app's connections did not end")


def sync_call_reads(make_app, strava, database, clock, *, club_polls_in_window: bool):
    """Rows of riders and connections one sync-strava call reads with DUE riders due in
    a club of CLUB; the club's polls planned hours ahead, or later in the call's own
    15-minute window (not due during the call, but counted among the window's polls)."""
    due = [connect_rider(database, strava, 8800 + i, activities=3) for i in range(DUE)]
    seed_club(database, CLUB, NOON)
    warm = on_virtual_time(make_app(), clock)
    client = warm.test_client()
    # The first calls sync the newcomers and settle the club's plan (a re-plan of the
    # whole club, a slice at a time, is what changing the plan costs: not measured here).
    for _ in range(60):
        body = client.post("/api/cron/sync-strava", headers=cron_headers()).get_json()
        assert body["failed"] == 0, body
        status = client.get("/api/admin/status", headers=cron_headers()).get_json()
        if body["done"] and not status["plan"]["polling"]["replan"]["pending"]:
            break
        clock.advance(seconds=60)
    else:
        raise AssertionError("the club's plan never settled")
    warm.extensions["strava_sync"].db.close()
    # The call runs 30 s into a 15-minute window of Strava's.
    window_end = next_window_reset(clock.now()) + timedelta(minutes=15)
    clock.advance(seconds=(window_end - clock.now()).total_seconds() - 15 * 60 + 30)
    # Their polls come again; nobody else's does (the seeded riders have no tokens).
    if club_polls_in_window:  # spread over the window's last 13 minutes
        execute(
            database,
            "update strava_connections set next_poll_at = %s - make_interval("
            " secs => 1 + rider_id * 7919 %% (13 * 60)) where athlete_id >= 900000000",
            window_end,
        )
    else:
        execute(
            database,
            "update strava_connections set next_poll_at = greatest(next_poll_at, %s)"
            " where athlete_id >= 900000000",
            clock.now() + timedelta(hours=1),
        )
    execute(
        database,
        "update strava_connections set next_poll_at = %s, last_synced_at = %s,"
        " last_sync_attempt_at = %s where rider_id = any(%s)",
        clock.now() - timedelta(minutes=1),
        clock.now() - timedelta(hours=6),
        clock.now() - timedelta(hours=6),
        due,
    )
    execute(database, "analyze")
    app = on_virtual_time(make_app(), clock)
    app_backends_gone(database)
    before = rows_read(database)
    body = app.test_client().post("/api/cron/sync-strava", headers=cron_headers()).get_json()
    app.extensions["strava_sync"].db.close()
    app_backends_gone(database)
    after = rows_read(database)
    assert body["succeeded"] == DUE and body["processed"] == DUE, body
    assert clock.now() < window_end - timedelta(minutes=13), "the club's polls came due"
    return {t: after[t] - before[t] for t in TABLES}


def test_a_sync_call_in_a_large_club_reads_what_is_due(make_app, strava, database, clock):
    read = sync_call_reads(make_app, strava, database, clock, club_polls_in_window=False)
    # One scan of every rider reads CLUB rows; what is due is DUE riders, each looked at
    # a few dozen times (the claim, each page, the plan, the wrap-up, the counts of what
    # is left), through indexes.
    assert sum(read.values()) < CLUB / 5, read


def test_a_sync_call_reads_none_of_the_polls_planned_later_in_its_window(
    make_app, strava, database, clock
):
    """A club of CLUB whose polls all fall later in this window (a big club has hundreds
    a window): the call still reads what is due, not the window's planned polls (its
    own class's share does not depend on them)."""
    read = sync_call_reads(make_app, strava, database, clock, club_polls_in_window=True)
    assert sum(read.values()) < CLUB / 5, read
