"""The operator steers: `sync-strava?all=true` ("everyone now") takes every active
auto-sync rider not synced within SYNC_MIN_INTERVAL_S whatever their plan, and a call
that takes nothing says why (`idle_reason`) and when work is next due (`next_due_at`).
Real Postgres, the fake Strava behind `responses`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query

SYNC = "/api/cron/sync-strava"


def call(client, path=SYNC, **options):
    response = client.post(path, headers=cron_headers(), **options)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def planned_later(database, *rider_ids: int, synced_ago_h: float = 2, poll_in_h: float = 5):
    """Riders synced a while ago whose planned poll is still hours away."""
    execute(
        database,
        "update strava_connections set last_synced_at = now() - make_interval(secs => %s),"
        " next_poll_at = now() + make_interval(secs => %s) where rider_id = any(%s)",
        synced_ago_h * 3600,
        poll_in_h * 3600,
        list(rider_ids),
    )


@pytest.fixture
def fleet(client, strava, database):
    riders = [
        connect_rider(database, strava, 3100 + n, activities=3, race_fraction=0.0) for n in range(4)
    ]
    first = call(client)
    assert first["succeeded"] == 4 and "idle_reason" not in first
    # No race waits for its details (a long ride counts as one): enrich has nothing due.
    execute(database, "update activities set is_race = false, enrichment_status = null")
    return riders


def test_run_workflow_right_after_another_call_says_why_it_took_nothing(client, fleet, database):
    """A manual dispatch right after a call answered `processed: 0, done: true` and
    nothing more."""
    again = call(client)
    assert again["processed"] == 0 and again["done"] is True
    assert again["idle_reason"] == "none_due"
    planned = min(
        r["next_poll_at"] for r in query(database, "select next_poll_at from strava_connections")
    )
    due_at = datetime.fromisoformat(again["next_due_at"].replace("Z", "+00:00"))
    assert abs(due_at - planned) < timedelta(seconds=1)
    run = query(
        database,
        "select idle_reason, next_due_at from cron_runs order by id desc limit 1",
    )[0]
    assert run["idle_reason"] == "none_due" and run["next_due_at"] is not None


def test_everyone_now_takes_riders_past_the_interval_whatever_their_plan(
    client, fleet, database, strava
):
    planned_later(database, *fleet[:3])  # synced 2 h ago, next poll planned in 5 h
    planned_later(database, fleet[3], synced_ago_h=0.5)  # within SYNC_MIN_INTERVAL_S
    planned = call(client)
    assert planned["processed"] == 0 and planned["idle_reason"] == "none_due"
    strava.reset_log()
    everyone = call(client, query_string={"all": "true"})
    assert sorted(i["rider_id"] for i in everyone["items"]) == sorted(fleet[:3])
    assert everyone["succeeded"] == 3 and everyone["done"] is True
    assert "idle_reason" not in everyone
    # One listing each: the cost the dashboard's confirmation announces.
    assert strava.count(path_contains="/athlete/activities") == 3
    # The loop ends: what was just synced is not due again.
    assert call(client, json={"all": True})["idle_reason"] == "none_due"


def test_everyone_now_keeps_to_leases_backoffs_and_the_pause(client, fleet, database):
    held, backing, paused, free = fleet
    planned_later(database, *fleet)
    lease_end = datetime.now(UTC) + timedelta(minutes=2)
    execute(
        database,
        "update strava_connections set lease_token = %s, lease_kind = 'sync',"
        " lease_expires_at = %s where rider_id = %s",
        uuid.uuid4(),
        lease_end,
        held,
    )
    execute(
        database,
        "update strava_connections set next_attempt_at = now() + interval '30 minutes',"
        " failure_count = 2 where rider_id = %s",
        backing,
    )
    execute(database, "update riders set auto_sync = false where id = %s", paused)
    answer = call(client, query_string={"all": "true"})
    assert [i["rider_id"] for i in answer["items"]] == [free]
    # Nothing left but the held rider and the one backing off: held is said first.
    again = call(client, query_string={"all": "true"})
    assert again["processed"] == 0 and again["idle_reason"] == "held_by_another_call"
    due_at = datetime.fromisoformat(again["next_due_at"].replace("Z", "+00:00"))
    assert abs(due_at - lease_end) < timedelta(seconds=1)
    execute(
        database,
        "update strava_connections set lease_token = null, lease_kind = null,"
        " lease_expires_at = null where rider_id = %s",
        held,
    )
    execute(
        database,
        "update strava_connections set last_sync_attempt_at = now() where rider_id = %s",
        held,
    )  # done in this round
    assert call(client, query_string={"all": "true"})["idle_reason"] == "backing_off"


def test_a_spent_share_and_the_rate_limit_are_named(client, fleet, database):
    # A race waits for its details, and the day's budget is down to what the classes
    # above enrichment hold (Sync now's reserve, the riders' polls): enrich's share is
    # spent though Strava's limit is not reached.
    execute(
        database,
        "update activities set is_race = true, enrichment_status = 'pending'"
        " where id = (select min(id) from activities)",
    )
    execute(
        database,
        "update strava_rate_budget set read_usage_daily = read_limit_daily - 12,"
        " usage_daily = read_limit_daily - 12, day_start = %s, window_start = %s,"
        " read_usage_15min = 0, usage_15min = 0",
        datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0),
        datetime.now(UTC).replace(second=0, microsecond=0)
        - timedelta(minutes=datetime.now(UTC).minute % 15),
    )
    shared = call(client, "/api/cron/enrich")
    assert shared["processed"] == 0 and shared["idle_reason"] == "budget_share", shared
    assert shared["next_due_at"] == shared["rate_limit"]["window_resets_at"]
    # Strava's own limit reached: rate_limited, due when the block ends.
    planned_later(database, *fleet, poll_in_h=-1)  # due
    blocked_until = datetime.now(UTC) + timedelta(minutes=9)
    execute(
        database,
        "update strava_rate_budget set blocked_until = %s, blocked_reason = 'strava_429'",
        blocked_until,
    )
    limited = call(client)
    assert limited["rate_limited"] is True and limited["idle_reason"] == "rate_limited"
    assert {i["reason"] for i in limited["items"]} == {"rate_limited"}  # handed back
    due_at = datetime.fromisoformat(limited["next_due_at"].replace("Z", "+00:00"))
    assert abs(due_at - blocked_until) < timedelta(seconds=1)


def test_the_other_cron_calls_say_why_too(client, fleet, database):
    for path in ("/api/cron/discover", "/api/cron/enrich", "/api/cron/events"):
        answer = call(client, path)
        assert answer["processed"] == 0 and answer["idle_reason"] == "none_due", path
        assert answer["next_due_at"] is None
    execute(
        database,
        "update strava_connections set history_complete_at = null,"
        " next_attempt_at = now() + interval '1 hour', failure_count = 1 where rider_id = %s",
        fleet[0],
    )
    walked = call(client, "/api/cron/discover")
    assert walked["idle_reason"] == "backing_off" and walked["next_due_at"]


@pytest.mark.parametrize(
    "options",
    [
        {"query_string": {"all": "yes"}},
        {"query_string": {"all": "1"}},
        {"json": {"all": "true"}},
        {"json": {"all": 1}},
        {"json": {"all": None}},
    ],
)
def test_all_must_be_true_or_false(client, database, options):
    response = client.post(SYNC, headers=cron_headers(), **options)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_parameter",
        "message": "all must be true or false",
        "field": "all",
    }
