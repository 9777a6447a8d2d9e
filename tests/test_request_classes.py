"""Every Strava request is counted by its kind of work (the scheduler's classes), per
15-minute window, in the transaction that reserves it; the admin status shows them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fake_strava import make_activity
from services.rider_auth import RiderIdentity
from services.sync_now import sync_now
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query
from tests.test_enrich import store

LIST = "/athlete/activities"
DETAIL = "/activities/"


def races_of(fake, athlete_id, days_back):
    """Ride races on Strava for the athlete, one per entry of days_back."""
    now = datetime.now(UTC)
    races = [
        make_activity(
            athlete_id * 1000 + i,
            athlete_id=athlete_id,
            start_date=now - timedelta(days=days),
            sport_type="Ride",
            distance_m=60_000,
            workout_type=11,
        )
        for i, days in enumerate(days_back)
    ]
    fake.add_activities(athlete_id, races)
    return races


def requests_today(client):
    response = client.get("/api/admin/status", headers=cron_headers())
    assert response.status_code == 200
    return response.get_json()["requests"]


def test_each_class_counts_exactly_the_requests_it_sent(app, client, strava, database):
    # incremental: two riders with something new
    for athlete in (31, 32):
        connect_rider(database, strava, athlete, activities=3)
    assert client.post("/api/cron/sync-strava", headers=cron_headers()).status_code == 200
    incremental = strava.count(path_contains=LIST)
    # discover: a rider whose history is not walked yet
    connect_rider(database, strava, 33, activities=5, history_complete=False)
    strava.reset_log()
    assert client.post("/api/cron/discover", headers=cron_headers()).status_code == 200
    discover = strava.count(path_contains=LIST)
    # enrich: two recent races and three old ones, stored as pending
    rider = connect_rider(database, strava, 34)
    store(database, rider, races_of(strava, 34, [2, 10, 40, 200, 900]))
    pending = query(
        database,
        "select count(*) filter (where start_date >= now() - interval '30 days') as recent,"
        " count(*) filter (where start_date < now() - interval '30 days') as old"
        " from activities where enrichment_status = 'pending'",
    )[0]
    assert pending["old"] == 3 and pending["recent"] >= 2  # synced histories hold races too
    strava.reset_log()
    body = client.post("/api/cron/enrich?limit=100", headers=cron_headers()).get_json()
    assert body["done"] is True
    assert strava.count(path_contains=DETAIL) == pending["recent"] + pending["old"]
    # Sync now: a rider's own press
    user = uuid.uuid4()
    pressed = connect_rider(database, strava, 35, activities=2)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, pressed)
    strava.reset_log()
    result = sync_now(app.extensions["strava_sync"], RiderIdentity(auth_user_id=user))
    assert result.status == 200
    sync_now_requests = strava.count()  # its listing and the details of its new races

    expected = {
        "sync_now": sync_now_requests,
        "incremental": incremental,
        "enrich_recent": pending["recent"],
        "discover": discover,
        "enrich_old": pending["old"],
    }
    assert min(expected.values()) > 0
    requests = requests_today(client)
    assert requests["today"] == expected
    assert requests["this_window"] == expected or sum(requests["this_window"].values()) < sum(
        expected.values()
    )  # a window may have turned during the test
    assert sum(sum(w[c] for c in expected) for w in requests["windows"]) == sum(expected.values())
    rows = query(database, "select sum(requests) as n from strava_request_windows")
    assert rows[0]["n"] == sum(expected.values())


def test_requests_refused_by_the_budget_are_not_counted(client, strava, database):
    connect_rider(database, strava, 41, activities=2)
    # the window is spent but for the Sync-now reserve: the cron may send nothing
    execute(
        database,
        "update strava_rate_budget set read_usage_15min = 90, usage_15min = 90,"
        " window_start = date_bin('15 minutes', now(), '2000-01-01'),"
        " day_start = date_trunc('day', now() at time zone 'utc') at time zone 'utc'",
    )
    body = client.post("/api/cron/sync-strava", headers=cron_headers()).get_json()
    assert body["rate_limited"] is True and strava.count() == 0
    assert sum(requests_today(client)["today"].values()) == 0
