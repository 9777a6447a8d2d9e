"""The scheduler in the service: classes keep to their shares, the backfill is paced
through the day, riders are polled by need; real Postgres, the fake Strava, one virtual
clock (noon UTC, so the day's pacing is in force)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

import models
from fake_strava import FakeStrava, make_activity
from services import planning
from services.budget import roll_windows
from services.schedule import WorkClass
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers
from tests.factories import connect_rider, execute, query
from tests.test_enrich import store
from tests.test_one_clock import VirtualClock, on_virtual_time

NOON = datetime(2031, 3, 4, 12, 0, 30, tzinfo=UTC)
LIST = "/athlete/activities"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOON)


@pytest.fixture
def fake(clock: VirtualClock, request: pytest.FixtureRequest) -> FakeStrava:
    """The fake Strava on the virtual clock, with the limits a test asks for."""
    limits = getattr(request, "param", {})
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time, **limits)


@pytest.fixture
def app(make_app, clock):
    return on_virtual_time(make_app(), clock)


def cron(client, endpoint, **params):
    response = client.post(f"/api/cron/{endpoint}", query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def class_requests(database, work_class):
    rows = query(
        database,
        "select coalesce(sum(requests), 0) as n from strava_request_windows where work_class = %s",
        work_class,
    )
    return int(rows[0]["n"])


def cap_now(app, work_class):
    runtime = app.extensions["strava_sync"]
    now = runtime.clock()
    with runtime.db.connection() as conn:
        budget = roll_windows(models.budget.read_rate_budget(conn), now)
        return planning.class_cap(conn, budget, runtime.settings, work_class, now)


def seed_old_races(database, rider, n):
    """n old races waiting for details: a backlog today's pool cannot finish."""
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date, distance_m,"
        " is_race, enrichment_status, created_at)"
        " select 900000000 + g, %s, 'Ride', '2020-01-01'::timestamptz + g * interval '1 day',"
        " 210000, true, 'pending', '2031-03-01' from generate_series(1, %s) g",
        rider,
        n,
    )


def test_two_overlapping_calls_never_overdraw_a_class_share(app, strava, database, clock):
    for i in range(4):
        connect_rider(
            database,
            strava,
            6100 + i,
            activities=2000,
            start=NOON - timedelta(days=900),
            end=NOON - timedelta(days=1),
            history_complete=False,
        )
    seed_old_races(database, connect_rider(database, strava, 6199), 2000)
    cap = cap_now(app, WorkClass.DISCOVER)
    assert 0 < cap < 40  # paced: the 40 pages the histories need are more than its share
    answers = []

    def call():  # two riders each, so both calls hold work and send requests at once
        answers.append(cron(app.test_client(), "discover", limit=2))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert class_requests(database, "discover") == cap == strava.count(path_contains=LIST)
    assert all(a["rate_limited"] and a["strava_requests"] > 0 for a in answers)
    # the window resets: the next window has a share of its own
    clock.advance(minutes=15)
    assert cron(app.test_client(), "discover")["strava_requests"] > 0


def test_a_backlog_that_todays_pool_finishes_is_not_paced(app, strava, database):
    rider = connect_rider(
        database,
        strava,
        6201,
        activities=650,
        start=NOON - timedelta(days=300),
        end=NOON - timedelta(days=1),
        history_complete=False,
    )
    body = cron(app.test_client(), "discover")
    assert body["done"] is True and body["rate_limited"] is False
    assert (
        query(
            database,
            "select history_complete_at from strava_connections where rider_id = %s",
            rider,
        )[0]["history_complete_at"]
        == NOON
    )


# A small daily limit, so the polls' share (30% of it: 18 a day) is scarce for two riders.
@pytest.mark.parametrize("fake", [{"read_limit_daily": 60}], indirect=True)
def test_riders_are_polled_by_need(app, strava, database, clock):
    frequent = connect_rider(
        database,
        strava,
        6301,
        activities=40,
        start=NOON - timedelta(days=27),
        end=NOON - timedelta(hours=2),
    )
    idle = connect_rider(
        database,
        strava,
        6302,
        activities=30,
        start=NOON - timedelta(days=400),
        end=NOON - timedelta(days=60),
    )
    client = app.test_client()
    execute(database, "update strava_connections set sync_cursor = '2029-01-01'")
    first = cron(client, "sync-strava")
    assert first["succeeded"] == 2
    # Both found their histories, so both are polled again within the hour; then, finding
    # nothing new, each by their habit.
    (follow_up,) = {
        r["next_poll_at"] for r in query(database, "select next_poll_at from strava_connections")
    }
    assert follow_up == NOON + timedelta(hours=1)
    clock.advance(hours=1, seconds=1)
    assert cron(client, "sync-strava")["succeeded"] == 2
    plans = {
        r["rider_id"]: r
        for r in query(
            database,
            "select rider_id, last_synced_at, next_poll_at, polls_per_day, poll_reason"
            " from strava_connections",
        )
    }
    often, rarely = plans[frequent], plans[idle]
    assert often["next_poll_at"] < rarely["next_poll_at"]
    assert often["polls_per_day"] > rarely["polls_per_day"] >= 1
    assert rarely["next_poll_at"] <= rarely["last_synced_at"] + timedelta(days=1)
    assert "idle" in rarely["poll_reason"] and "a day" in often["poll_reason"]
    # nobody is due right after; at the frequent rider's time, only they are
    assert cron(client, "sync-strava")["processed"] == 0
    clock.advance(seconds=(often["next_poll_at"] - clock.now()).total_seconds() + 1)
    taken = cron(client, "sync-strava")["items"]
    assert [i["rider_id"] for i in taken] == [frequent]
    # the status explains it: the plan of every class, and each rider's poll
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()
    plan = status["plan"]
    assert set(plan["classes"]) == {c.value for c in WorkClass}
    assert plan["polling"]["share_per_day"] >= 2 and plan["polling"]["fits"] is True
    detail = client.get(
        "/api/admin/status", query_string={"rider_id": idle}, headers=cron_headers()
    ).get_json()
    assert detail["sync"]["poll"]["reason"] == rarely["poll_reason"]
    assert detail["sync"]["poll"]["per_day"] == rarely["polls_per_day"]


def test_incremental_need_is_held_from_the_backfill(app, strava, database):
    """Riders whose poll falls in this window keep their requests from discovery."""
    walker = connect_rider(
        database,
        strava,
        6401,
        activities=2000,
        start=NOON - timedelta(days=900),
        end=NOON - timedelta(days=1),
        history_complete=False,
    )
    seed_old_races(database, walker, 2000)
    for i in range(5):
        connect_rider(database, strava, 6410 + i, activities=2)
    # the window has 12 left: 10 are Sync now's, 5 riders' polls are due in it
    execute(
        database,
        "update strava_rate_budget set read_usage_15min = 88, usage_15min = 88,"
        " read_usage_daily = 88, usage_daily = 88,"
        " window_start = %s, day_start = %s",
        NOON.replace(minute=0, second=0),
        NOON.replace(hour=0, minute=0, second=0),
    )
    assert cap_now(app, WorkClass.DISCOVER) == 0
    body = cron(app.test_client(), "discover")
    assert body["processed"] == 0 and body["rate_limited"] is True
    assert strava.count() == 0
    with psycopg.connect(database, row_factory=dict_row) as conn:
        due = conn.execute(
            "select count(*) as n from strava_connections where next_poll_at is null"
        )
        assert due.fetchone()["n"] == 6  # nobody polled yet: the polls are still owed


def connect_new_walkers(database, strava, first_athlete, n=14):
    """`n` riders who just connected, each with a 700-activity history that ended a week
    ago: four pages each for discovery, and one empty listing each for their first sync."""
    return [
        connect_rider(
            database,
            strava,
            first_athlete + i,
            activities=700,
            start=NOON - timedelta(days=900),
            end=NOON - timedelta(days=8),
            history_complete=False,
        )
        for i in range(n)
    ]


# Strava gives this application 60 read requests a window, where the budget row assumes
# the documented 100 until an answer's headers say otherwise.
@pytest.mark.parametrize("fake", [{"read_limit_15min": 60}], indirect=True)
def test_shares_follow_a_lower_limit_from_the_first_answers_headers(app, strava, database):
    riders = connect_new_walkers(database, strava, 6600)
    client = app.test_client()
    discover = cron(client, "discover", limit=len(riders))
    enrich = cron(client, "enrich")
    # The window's 60: 6 are Sync now's, 14 the due riders' polls; the backfill had 40.
    assert discover["rate_limited"] and 0 < discover["strava_requests"] <= 40
    assert discover["strava_requests"] + enrich["strava_requests"] <= 40
    synced = cron(client, "sync-strava")
    assert synced["succeeded"] == len(riders), synced
    assert strava.count(status=429) == 0
    assert class_requests(database, "incremental") == len(riders)


def test_shares_follow_another_clients_usage_from_the_headers(app, strava, database):
    riders = connect_new_walkers(database, strava, 6700)
    strava.set_usage(usage_15min=30, read_usage_15min=30)  # another client of the app
    client = app.test_client()
    discover = cron(client, "discover", limit=len(riders))
    # Of the window's 100, 30 were gone, 10 are Sync now's, 14 the due riders' polls.
    assert discover["rate_limited"] and discover["strava_requests"] <= 46
    synced = cron(client, "sync-strava")
    assert synced["succeeded"] == len(riders), synced
    assert strava.count(status=429) == 0


def test_recent_races_are_detailed_while_discovery_holds_the_old_races_share(
    app, strava, database, clock
):
    """In the backfill's first days the histories still to walk hold the old races'
    share at zero; an enrich call still takes the recent races within their own share."""
    for i in range(10):  # 10 histories to walk: discovery holds 60 pages of today
        connect_rider(database, strava, 6500 + i, history_complete=False)
    rider = connect_rider(database, strava, 6599)
    races = [
        make_activity(
            6599_000 + days,
            athlete_id=6599,
            start_date=NOON - timedelta(days=days),
            sport_type="Ride",
            distance_m=60_000,
            workout_type=11,
        )
        for days in (2, 5, 10, 100, 400, 900)
    ]
    strava.add_activities(6599, races)
    store(database, rider, races)
    # 23:05: the final hour (no pacing); 80 requests left today
    now = clock.advance(hours=11, minutes=4, seconds=30)
    execute(
        database,
        "update strava_rate_budget set read_usage_daily = 920, usage_daily = 920,"
        " read_usage_15min = 0, usage_15min = 0, window_start = %s, day_start = %s",
        now.replace(minute=0, second=0),
        now.replace(hour=0, minute=0, second=0),
    )
    assert cap_now(app, WorkClass.ENRICH_OLD) == 0
    assert cap_now(app, WorkClass.ENRICH_RECENT) >= 3

    body = cron(app.test_client(), "enrich")
    assert strava.count(path_contains="/activities/") == 3
    states = {
        r["strava_id"]: r["enrichment_status"]
        for r in query(database, "select strava_id, enrichment_status from activities")
    }
    assert [states[6599_000 + d] for d in (2, 5, 10)] == ["done"] * 3
    assert [states[6599_000 + d] for d in (100, 400, 900)] == ["pending"] * 3
    assert class_requests(database, "enrich_recent") == 3
    assert class_requests(database, "enrich_old") == 0
    # the old races' share stops the call; they wait, claimed by no one
    assert body["rate_limited"] is True
    assert (
        query(
            database,
            "select count(*) as n from activities where enrichment_lease_token is not null",
        )[0]["n"]
        == 0
    )
