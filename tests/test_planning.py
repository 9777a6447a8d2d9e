"""A call plans what changed, not the club: the riders it synced, the whole club only
when the plan changes (at most once a window, a slice at a time), and counts kept as
riders change instead of read from every rider. Real Postgres, the fake Strava, one
virtual clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import models
from fake_strava import FakeStrava
from services import planning, schedule
from services.budget import roll_windows
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers
from tests.factories import connect_rider, execute, query
from tests.test_one_clock import VirtualClock, on_virtual_time

NOON = datetime(2031, 3, 4, 12, 0, 30, tzinfo=UTC)
WEBHOOK_CLAIM_LOCK = 7_226_101_909  # models/webhooks.py: the events claims' advisory lock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOON)


@pytest.fixture
def fake(clock: VirtualClock) -> FakeStrava:
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time)


@pytest.fixture
def app(make_app, clock):
    return on_virtual_time(make_app(), clock)


def cron(client, endpoint, **params):
    response = client.post(f"/api/cron/{endpoint}", query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def recount(database: str) -> dict[str, int]:
    row = query(
        database,
        "select count(*) as riders, coalesce(sum(coalesce(c.polls_per_day, 1)), 0)"
        " as polls_per_day from strava_connections c join riders r on r.id = c.rider_id"
        " where c.status = 'active' and r.auto_sync",
    )[0]
    return {"riders": int(row["riders"]), "polls_per_day": int(row["polls_per_day"])}


def kept(database: str) -> dict[str, int]:
    with psycopg.connect(database, row_factory=dict_row) as conn:
        return models.planning.fleet_counts(conn)


def seed_uploads(database: str, rider: int, per_day: float, hour: int, rng: random.Random) -> None:
    """A rider's uploads over the last four weeks, around `hour` UTC."""
    rows = []
    for day in range(1, 28):
        for n in range(int(per_day) + (rng.random() < per_day - int(per_day))):
            start = (NOON - timedelta(days=day)).replace(hour=hour, minute=rng.randrange(60))
            rows.append((rider * 1000 + day * 10 + n, rider, start))
    with psycopg.connect(database) as conn:
        for strava_id, rider_id, start in rows:
            conn.execute(
                "insert into activities (strava_id, rider_id, sport_type, start_date,"
                " start_date_local, distance_m, elapsed_time_s)"
                " values (%s, %s, 'Ride', %s, %s, 20000, 3600)",
                (strava_id, rider_id, start, start.replace(tzinfo=None)),
            )


def plans(database: str) -> dict[int, dict[str, Any]]:
    rows = query(
        database,
        "select rider_id, next_poll_at, polls_per_day, poll_reason, xmin::text as version"
        " from strava_connections order by rider_id",
    )
    return {r["rider_id"]: r for r in rows}


class SteppingTimer:
    """A timer that moves one second each time it is read: a slice "takes" a second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_fleet_counts_follow_connections_pauses_plans_and_deletions(database, fake):
    riders = [connect_rider(database, fake, 7000 + i) for i in range(6)]
    assert kept(database) == recount(database) == {"riders": 6, "polls_per_day": 6}
    steps = [
        "update strava_connections set polls_per_day = 3 where rider_id = %(a)s",
        "update riders set auto_sync = false where id = %(b)s",
        "update strava_connections set polls_per_day = 5 where rider_id = %(b)s",
        "update strava_connections set status = 'needs_reauth' where rider_id = %(c)s",
        "update riders set auto_sync = true where id = %(b)s",
        "update strava_connections set status = 'active' where rider_id = %(c)s",
        "update strava_connections set polls_per_day = null where rider_id = %(a)s",
        "delete from riders where id = %(d)s",
        "delete from strava_connections where rider_id = %(e)s",
        "update riders set auto_sync = false where id = %(f)s",
        "delete from riders where id = %(f)s",  # a paused rider leaves: nothing to take off
        "update strava_connections set status = 'revoked' where rider_id = %(a)s",
    ]
    names = dict(zip("abcdef", riders, strict=True))
    for step in steps:
        with psycopg.connect(database) as conn:
            conn.execute(step, names)
        assert kept(database) == recount(database), step
    assert kept(database) == {"riders": 2, "polls_per_day": 6}
    # a row lost (a table emptied by hand) is counted again, once
    execute(database, "delete from poll_fleet")
    assert kept(database) == recount(database)


def test_a_sync_call_writes_only_the_riders_it_synced(app, strava, database, clock):
    client = app.test_client()
    riders = club(database, strava, 12, seed=3)
    first = cron(client, "sync-strava")
    assert first["succeeded"] == len(riders)
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert status["plan"]["polling"]["replan"]["pending"] is False
    before = plans(database)
    # the first planned poll comes: only the riders due then are synced
    soonest = min(p["next_poll_at"] for p in before.values())
    clock.advance(seconds=(soonest - clock.now()).total_seconds() + 1)
    due = {r for r, p in before.items() if p["next_poll_at"] <= clock.now()}
    assert 0 < len(due) < len(riders)
    second = cron(client, "sync-strava")
    assert {i["rider_id"] for i in second["items"]} == due
    after = plans(database)
    written = {r for r in riders if after[r]["version"] != before[r]["version"]}
    assert written == due  # nobody else's row was touched
    for rider in due:
        assert after[rider]["next_poll_at"] > clock.now()  # planned again after its sync


def test_a_rider_with_no_event_waiting_is_synced_without_the_events_lock(app, strava, database):
    connect_rider(database, strava, 7200, activities=3)
    with psycopg.connect(database, autocommit=True) as other:
        # another call holds the events claims' lock for longer than a statement may wait
        other.execute("select pg_advisory_lock(%s)", (WEBHOOK_CLAIM_LOCK,))
        try:
            body = cron(app.test_client(), "sync-strava")
        finally:
            other.execute("select pg_advisory_unlock(%s)", (WEBHOOK_CLAIM_LOCK,))
    assert body["succeeded"] == 1, body


def club(database: str, fake: FakeStrava, size: int, seed: int, *, found: bool = True) -> list[int]:
    """Riders of every habit (idle to twice a day, around their own hours), last polled
    at some time in the last day (some of those polls found something, if `found`);
    never polled by need yet."""
    rng = random.Random(seed)
    riders = []
    for i in range(size):
        rider = connect_rider(database, fake, 7300 + i)
        seed_uploads(database, rider, rng.choice([0, 0.1, 0.3, 0.5, 1, 2]), rng.randrange(24), rng)
        execute(
            database,
            "update strava_connections set last_synced_at = %s, last_sync_added = %s"
            " where rider_id = %s",
            NOON - timedelta(hours=rng.uniform(0.5, 23)),
            rng.choice([0, 0, 1]) if found else 0,
            rider,
        )
        riders.append(rider)
    return riders


def whole_plan(runtime) -> dict[int, schedule.PollDecision]:
    """What one pure plan of the whole club decides now (services/schedule.poll_plan)."""
    settings, now = runtime.settings, runtime.clock()
    with runtime.db.connection() as conn:
        budget = roll_windows(models.budget.read_rate_budget(conn), now)
        share = planning.incremental_share(conn, budget, settings)
        rows = models.planning.poll_habits(conn, since=now - timedelta(days=schedule.HABIT_DAYS))
    habits = planning.habits(rows)
    return schedule.poll_plan(habits, share, settings.sync_min_interval_s, now).decisions


def replan(runtime, *, seconds: float) -> planning.ReplanProgress:
    timer = SteppingTimer()
    return planning.continue_replan(
        runtime.db, runtime.settings, runtime.clock, timer, deadline=timer.now + seconds
    )


def test_a_whole_club_replan_goes_a_slice_at_a_time_and_ends_as_one_plan_would(
    app, fake, database, monkeypatch
):
    monkeypatch.setattr(planning, "REPLAN_SLICE", 7)
    riders = club(database, fake, 40, seed=1)
    runtime = app.extensions["strava_sync"]
    calls, progress = 0, planning.ReplanProgress()
    while not progress.complete:
        progress = replan(runtime, seconds=8)  # three slices fit in each call's time
        calls += 1
        assert 0 < progress.slices <= 3 and progress.riders <= 3 * 7
        assert calls < 30
    assert calls >= 3  # 40 riders surveyed, then 40 planned, 7 a slice
    expected = whole_plan(runtime)
    stored = plans(database)
    assert set(expected) == set(riders)
    for rider, decision in expected.items():
        row = stored[rider]
        assert (row["next_poll_at"], row["polls_per_day"], row["poll_reason"]) == (
            decision.next_poll_at,
            decision.polls_per_day,
            decision.reason,
        ), rider
    assert kept(database) == recount(database)
    # nothing changed: the next call starts no re-plan
    assert replan(runtime, seconds=8).slices == 0


def test_the_club_is_replanned_when_the_share_changes_at_most_once_a_window(
    app, fake, database, clock
):
    club(database, fake, 15, seed=2, found=False)
    # 100 requests a day: the polls' share (60) is what decides how often each is polled
    execute(database, "update strava_rate_budget set read_limit_daily = 100")
    runtime = app.extensions["strava_sync"]
    assert replan(runtime, seconds=100).complete
    before = plans(database)
    # The same plan made again writes nothing: every rider's plan is the same.
    execute(database, "update poll_plan set share_per_day = share_per_day + 1")
    clock.advance(minutes=15)
    again = replan(runtime, seconds=100)
    assert again.complete and again.riders > 0 and again.written == 0
    assert {r: p["version"] for r, p in plans(database).items()} == {
        r: p["version"] for r, p in before.items()
    }
    # A larger daily limit is a larger share: a re-plan (in the next window), more polls
    execute(database, "update strava_rate_budget set read_limit_daily = 300")
    assert replan(runtime, seconds=100).slices == 0  # one re-plan already began in this one
    clock.advance(minutes=15)
    changed = replan(runtime, seconds=100)
    assert changed.complete and changed.written > 0
    assert sum(p["polls_per_day"] for p in plans(database).values()) > sum(
        p["polls_per_day"] for p in before.values()
    )
    # ... and another change in the same window waits for the next one
    execute(database, "update strava_rate_budget set read_limit_daily = 100")
    assert replan(runtime, seconds=100).slices == 0
    clock.advance(minutes=15)
    assert replan(runtime, seconds=100).complete
    assert sum(p["polls_per_day"] for p in plans(database).values()) == sum(
        p["polls_per_day"] for p in before.values()
    )


def test_a_club_whose_rates_changed_is_replanned_within_the_hour_to_fit_its_share(
    app, fake, database, clock
):
    """A plan made while the riders were newcomers (no uploads known: the backfill had
    not walked their histories yet) is made again once it is an hour old, the share
    unchanged, so the club's polls fit the share once the riders' uploads are known."""
    rng = random.Random(3)
    riders = [connect_rider(database, fake, 7400 + i) for i in range(30)]
    execute(database, "update strava_rate_budget set read_limit_daily = 100")
    runtime = app.extensions["strava_sync"]
    assert replan(runtime, seconds=100).complete
    [plan] = query(database, "select share_per_day from poll_plan")
    share = plan["share_per_day"]
    assert recount(database)["polls_per_day"] <= share
    for rider in riders:  # their histories walked: each uploads about twice a day
        seed_uploads(database, rider, 2, rng.randrange(24), rng)
    with runtime.db.connection() as conn:  # each synced in the level as last planned
        planning.plan_riders(conn, riders, runtime.settings, runtime.clock())
    assert recount(database)["polls_per_day"] > share  # the newcomers' level, overspent
    clock.advance(minutes=59)
    assert replan(runtime, seconds=100).slices == 0  # the same share, under the hour
    clock.advance(minutes=1)
    assert replan(runtime, seconds=100).complete
    assert recount(database)["polls_per_day"] <= share
    [again] = query(database, "select share_per_day from poll_plan")
    assert again["share_per_day"] == share
