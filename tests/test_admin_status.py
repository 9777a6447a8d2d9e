"""The admin status JSON against the database: a seeded fleet with stalls, failures and a
rate-limit hit; every number compared with a direct SQL count or a hand count."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query, stored_tokens

STATUS = "/api/admin/status"


def status(client, **params):
    response = client.get(STATUS, query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def count(database, sql, *params):
    return query(database, f"select count(*) as n from ({sql}) s", *params)[0]["n"]


def ago(**delta):
    return datetime.now(UTC) - timedelta(**delta)


def later(**delta):
    return datetime.now(UTC) + timedelta(**delta)


def set_connection(database, rider, **columns):
    sets = ", ".join(f"{k} = %s" for k in columns)
    execute(
        database,
        f"update strava_connections set {sets} where rider_id = %s",
        *columns.values(),
        rider,
    )


def add_race(
    database,
    rider,
    strava_id,
    status,
    *,
    attempts=0,
    created=None,
    next_at=None,
    lease_expired=False,
):
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date, distance_m,"
        " is_race, enrichment_status, enrichment_attempts, enrichment_next_attempt_at,"
        " enrichment_lease_token, enrichment_lease_expires_at, created_at)"
        " values (%s, %s, 'Ride', now() - interval '3 days', 210000, true, %s, %s, %s, %s, %s,"
        " coalesce(%s, now()))",
        strava_id,
        rider,
        status,
        attempts,
        next_at,
        uuid.uuid4() if lease_expired else None,
        ago(minutes=15) if lease_expired else None,
        created,
    )


def add_run(
    database, kind, *, started, finished=True, items=(), rate_limited=False, error_summary=None
):
    succeeded = sum(1 for i in items if i["status"] == "succeeded")
    failed = sum(1 for i in items if i["status"] == "failed")
    execute(
        database,
        "insert into cron_runs (kind, started_at, finished_at, processed, succeeded, failed,"
        " skipped, remaining, rate_limited, rate_limit, items, error_summary)"
        " values (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s)",
        kind,
        started,
        started + timedelta(seconds=3) if finished else None,
        len(items) if finished else None,
        succeeded if finished else None,
        failed if finished else None,
        (len(items) - succeeded - failed) if finished else None,
        rate_limited,
        Jsonb({"usage_15min": 1}) if finished else None,
        Jsonb(list(items)) if finished else None,
        error_summary,
    )


@pytest.fixture
def fleet(database, fake):
    """Riders in every state; the names say what each one is."""
    r = {}
    for name, athlete in [
        ("up_to_date", 1),
        ("never_synced", 2),
        ("overdue", 3),
        ("live_lease", 4),
        ("expired_lease", 5),
        ("backing_off", 6),
        ("paused", 7),
        ("needs_reauth", 8),
        ("new_stalled", 9),
        ("new_fresh", 10),
    ]:
        r[name] = connect_rider(database, fake, 50 + athlete, name=name)
    execute(database, "insert into riders (name) values ('no_connection')")
    r["no_connection"] = query(database, "select id from riders where name = 'no_connection'")[0][
        "id"
    ]

    set_connection(database, r["up_to_date"], last_synced_at=ago(minutes=10))
    set_connection(database, r["overdue"], last_synced_at=ago(hours=3))
    set_connection(
        database,
        r["live_lease"],
        last_synced_at=ago(hours=2),
        lease_token=uuid.uuid4(),
        lease_kind="sync",
        lease_expires_at=later(minutes=1),
    )
    set_connection(
        database,
        r["expired_lease"],
        lease_token=uuid.uuid4(),
        lease_kind="discover",
        lease_expires_at=ago(minutes=20),
        history_complete_at=None,
        history_walk_started_at=ago(hours=1),
        history_cursor=ago(days=300),
        athlete_created_at=ago(days=1000),
        history_pages=3,
        history_activities=500,
        history_races=4,
        last_progress_at=ago(minutes=30),
        connected_at=ago(hours=2),
    )
    set_connection(
        database,
        r["backing_off"],
        last_synced_at=ago(hours=2),
        next_attempt_at=later(minutes=30),
        failure_count=3,
        error_class="strava_unavailable",
        last_error="Strava answered 503",
    )
    set_connection(database, r["paused"], last_synced_at=ago(hours=5))
    execute(database, "update riders set auto_sync = false where id = %s", r["paused"])
    set_connection(
        database,
        r["needs_reauth"],
        status="needs_reauth",
        last_synced_at=ago(days=1),
        error_class="needs_reauth",
        last_error="Strava rejected the refresh token",
    )
    set_connection(
        database, r["new_stalled"], history_complete_at=None, connected_at=ago(minutes=30)
    )
    set_connection(database, r["new_fresh"], history_complete_at=None)

    owner = r["up_to_date"]
    for i in range(3):
        add_race(database, owner, 1000 + i, "pending", created=ago(hours=1))
    add_race(database, owner, 1010, "pending")  # found just now: not stalled
    add_race(database, owner, 1011, "failed", attempts=2, next_at=ago(minutes=20))
    add_race(database, owner, 1012, "failed", attempts=2, next_at=later(minutes=20))
    add_race(database, owner, 1013, "failed", attempts=5)
    add_race(database, owner, 1014, "failed", attempts=5)
    add_race(database, owner, 1015, "done", attempts=1)
    add_race(database, owner, 1016, "done", attempts=1)
    add_race(database, owner, 1017, "pending", created=ago(hours=1), lease_expired=True)
    add_race(database, r["needs_reauth"], 1020, "pending", created=ago(hours=2))
    add_race(database, r["needs_reauth"], 1021, "pending", created=ago(hours=2))
    for i in range(5):
        execute(
            database,
            "insert into activities (strava_id, rider_id, sport_type, start_date)"
            " values (%s, %s, 'Ride', now() - interval '1 day')",
            2000 + i,
            owner,
        )

    ok = [{"rider_id": r["up_to_date"], "status": "succeeded", "added": 2}]
    add_run(database, "sync-strava", started=ago(minutes=50), items=ok)
    add_run(
        database,
        "sync-strava",
        started=ago(minutes=40),
        items=[
            {"rider_id": r["backing_off"], "status": "failed", "reason": "strava_unavailable"},
            {"rider_id": r["expired_lease"], "status": "succeeded", "added": 0},
        ],
        error_summary="strava_unavailable",
    )
    add_run(database, "sync-strava", started=ago(minutes=30), items=ok)
    add_run(
        database,
        "sync-strava",
        started=ago(minutes=20),
        rate_limited=True,
        items=[{"rider_id": r["overdue"], "status": "skipped", "reason": "rate_limited"}],
    )
    add_run(database, "sync-strava", started=ago(days=2), items=ok)  # outside the 24 hours
    add_run(database, "discover", started=ago(minutes=30), finished=False)  # died
    add_run(database, "discover", started=ago(seconds=2), finished=False)  # running now
    add_run(
        database,
        "enrich",
        started=ago(minutes=10),
        items=[
            {"activity_id": 1015, "rider_id": owner, "status": "succeeded"},
            {
                "activity_id": 3001,
                "rider_id": r["expired_lease"],
                "status": "failed",
                "reason": "strava_unavailable",
                "error": "Strava answered 502",
            },
        ],
    )

    now = datetime.now(UTC)
    window = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    execute(
        database,
        "update strava_rate_budget set usage_15min = 150, read_usage_15min = 90,"
        " usage_daily = 1500, read_usage_daily = 900, window_start = %s, day_start = %s,"
        " blocked_until = %s, blocked_reason = 'strava_429', headers_seen_at = now()",
        window,
        day,
        later(minutes=8).replace(microsecond=0),
    )
    return r


def test_riders_by_connection_and_sync_state(client, database, fleet):
    body = status(client)
    riders = body["riders"]
    assert riders["total"] == count(database, "select 1 from riders") == 11
    by_connection = {
        row["s"]: row["n"]
        for row in query(
            database,
            "select coalesce(c.status, 'not_connected') as s, count(*) as n"
            " from riders r left join strava_connections c on c.rider_id = r.id group by 1",
        )
    }
    assert (
        riders["by_connection_status"]
        == {
            "active": by_connection["active"],
            "needs_reauth": by_connection["needs_reauth"],
            "revoked": 0,
            "not_connected": by_connection["not_connected"],
        }
        == {"active": 9, "needs_reauth": 1, "revoked": 0, "not_connected": 1}
    )
    # By hand, from the fleet's names: every rider in exactly one state.
    assert riders["by_sync_state"] == {
        "in_progress": 1,  # live_lease
        "due": 5,  # never_synced, overdue, expired_lease, new_stalled, new_fresh
        "up_to_date": 1,
        "backing_off": 1,
        "paused": 1,
        "stopped": 1,  # needs_reauth
        "not_connected": 1,
    }
    due_sql = count(
        database,
        "select 1 from strava_connections c join riders r on r.id = c.rider_id"
        " where c.status = 'active' and r.auto_sync"
        " and (c.lease_expires_at is null or c.lease_expires_at < now())"
        " and (c.next_attempt_at is null or c.next_attempt_at <= now())"
        " and (c.last_synced_at is null or c.last_synced_at <= now() - interval '1 hour')",
    )
    assert riders["due_now"] == due_sql == riders["by_sync_state"]["due"]
    assert riders["never_synced"] == count(
        database, "select 1 from strava_connections where last_synced_at is null"
    )


def test_every_rider_is_listed_a_page_at_a_time(client, database, fleet):
    body = status(client)
    listed = body["riders"]["list"]
    assert listed["count"] == body["riders"]["total"] == 11
    assert (listed["offset"], listed["limit"]) == (0, 500)
    ids = [r["rider_id"] for r in listed["items"]]
    assert ids == [r["id"] for r in query(database, "select id from riders order by id")]
    # Each rider's state agrees with the counts, rider by rider.
    states = {}
    for item in listed["items"]:
        states[item["sync_state"]] = states.get(item["sync_state"], 0) + 1
    assert states == {k: v for k, v in body["riders"]["by_sync_state"].items() if v}
    connections = {}
    for item in listed["items"]:
        connections[item["connection"]] = connections.get(item["connection"], 0) + 1
    assert connections == {k: v for k, v in body["riders"]["by_connection_status"].items() if v}
    # Backfill and races per rider, against SQL.
    for item in listed["items"]:
        races = query(
            database,
            "select count(*) as total, count(*) filter (where enrichment_status = 'pending'"
            " or (enrichment_status = 'failed' and enrichment_attempts < 5)) as waiting,"
            " count(*) filter (where enrichment_status = 'failed' and enrichment_attempts >= 5)"
            " as failed from activities where rider_id = %s and is_race",
            item["rider_id"],
        )[0]
        assert item["races"] == races, item
        assert item["activities"] == count(
            database, "select 1 from activities where rider_id = %s", item["rider_id"]
        )
        walked = query(
            database,
            "select history_pages, history_activities, history_complete_at is not null"
            " and full_refresh_requested_at is null as complete"
            " from strava_connections where rider_id = %s",
            item["rider_id"],
        )
        if walked:
            assert item["history"]["pages"] == walked[0]["history_pages"]
            assert item["history"]["activities"] == walked[0]["history_activities"]
            assert item["history"]["complete"] is walked[0]["complete"]
            assert (item["history"]["percent"] == 100) is walked[0]["complete"]
        else:
            assert item["connection"] == "not_connected" and item["history"]["percent"] == 0
    # Pages: the same riders in order, none twice, the count on every page.
    pages = [status(client, riders_offset=o, riders_limit=4)["riders"]["list"] for o in (0, 4, 8)]
    assert [r["rider_id"] for page in pages for r in page["items"]] == ids
    assert [len(page["items"]) for page in pages] == [4, 4, 3]
    assert {page["count"] for page in pages} == {11}
    assert status(client, riders_offset=11)["riders"]["list"]["items"] == []
    for field, bad in (("riders_limit", "0"), ("riders_limit", "2001"), ("riders_offset", "-1"),
                       ("riders_offset", "x")):  # fmt: skip
        answer = client.get(STATUS, query_string={field: bad}, headers=cron_headers())
        assert answer.status_code == 400, (field, bad)
        assert answer.get_json()["error"]["field"] == field


def test_backlog_and_its_estimate(client, database, fleet):
    backlog = status(client)["backlog"]
    history = backlog["history"]
    assert (
        history["riders_incomplete"]
        == count(
            database,
            "select 1 from strava_connections"
            " where status = 'active' and history_complete_at is null",
        )
        == 3
    )
    assert history["riders_not_started"] == 2 and history["riders_walking"] == 1
    assert history["pages_walked"] == 3 and history["activities_found"] == 500
    walking = next(h for h in history["riders"] if h["rider_id"] == fleet["expired_lease"])
    # 300 of the 1,000 days back to the account's creation (less the hour since the start).
    assert walking["percent"] == 29
    assert walking["requests_left"] == 7  # 500 per 300 days over 700 days left: 1,167 -> 6 + 1
    races = backlog["races"]
    sql = {
        "pending": "select 1 from activities where enrichment_status = 'pending'",
        "done": "select 1 from activities where enrichment_status = 'done'",
        "failed_retrying": "select 1 from activities where enrichment_status = 'failed'"
        " and enrichment_attempts < 5",
        "failed": "select 1 from activities where enrichment_status = 'failed'"
        " and enrichment_attempts >= 5",
        "total": "select 1 from activities where is_race",
        "waiting_on_reconnect": "select 1 from activities a join strava_connections c"
        " on c.rider_id = a.rider_id where c.status <> 'active'"
        " and a.enrichment_status = 'pending'",
    }
    for key, statement in sql.items():
        assert races[key] == count(database, statement), key
    assert (races["pending"], races["failed_retrying"], races["failed"]) == (7, 2, 2)
    assert races["waiting"] == races["pending"] + races["failed_retrying"] - 2 == 7
    estimate = backlog["estimate"]
    assert estimate["requests_needed"] == {"discover": 19, "enrich": 7, "total": 26}
    # 990 a day for cron (1,000 read less the reserve of 10), less 8 auto-sync riders x 24.
    assert estimate["cron_share_daily"] == 990 and estimate["cron_share_15min"] == 90
    assert estimate["scheduled_sync_per_day"] == 192
    assert estimate["backlog_requests_per_hour"] == round((990 - 192) / 24, 1)
    assert estimate["hours"] == round(26 / round((990 - 192) / 24, 1), 1)
    assert len(estimate["assumptions"]) >= 3


def test_rate_limit_section(client, database, fleet):
    limit = status(client)["rate_limit"]
    row = query(database, "select * from strava_rate_budget")[0]
    for key in (
        "usage_15min",
        "limit_15min",
        "usage_daily",
        "limit_daily",
        "read_usage_15min",
        "read_limit_15min",
        "read_usage_daily",
        "read_limit_daily",
    ):
        assert limit[key] == row[key], key
    assert limit["blocked"] is True and limit["blocked_reason"] == "strava_429"
    blocked = row["blocked_until"].astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert limit["blocked_until"] == blocked == limit["resets_at"]
    assert limit["sync_now_reserve"] == 10
    assert limit["left_15min"] == 10 and limit["left_daily"] == 100
    assert limit["window_resets_at"] and limit["daily_resets_at"]


def test_runs_and_success_rates(client, database, fleet):
    runs = status(client)["runs"]
    assert set(runs) == {"sync-strava", "discover", "enrich", "events", "sync-now"}
    sync = runs["sync-strava"]
    started = [r["started_at"] for r in sync["last"]]
    assert len(started) == 5 and started == sorted(started, reverse=True)
    assert sync["last"][0]["rate_limited"] is True and sync["last"][0]["duration_ms"] == 3000
    day = query(
        database,
        "select count(*) as runs, sum(succeeded) as s, sum(failed) as f, sum(skipped) as k,"
        " count(*) filter (where rate_limited) as rl from cron_runs"
        " where kind = 'sync-strava' and started_at > now() - interval '24 hours'",
    )[0]
    stats = sync["last_24h"]
    assert stats["runs"] == day["runs"] == 4
    assert (stats["items_succeeded"], stats["items_failed"], stats["items_skipped"]) == (
        day["s"],
        day["f"],
        day["k"],
    )
    assert stats["rate_limited"] == day["rl"] == 1
    assert stats["success_rate"] == round(day["s"] / (day["s"] + day["f"]), 4) == 0.75
    assert stats["run_success_rate"] == 0.75  # 3 of 4 runs had no failed item
    discover = runs["discover"]
    assert discover["last_24h"]["unfinished"] == 2
    assert [r["finished"] for r in discover["last"]] == [False, False]
    assert runs["sync-now"] == {"last": [], "last_24h": runs["sync-now"]["last_24h"]}
    assert runs["sync-now"]["last_24h"]["runs"] == 0
    assert runs["sync-now"]["last_24h"]["success_rate"] is None


def test_stuck_items_with_warnings_and_actions(client, database, fleet):
    stuck = status(client)["stuck"]
    kinds = {}
    for item in stuck["items"]:
        assert item["warning"] and item["action"], item
        kinds.setdefault(item["kind"], []).append(item)
    assert [i["rider_id"] for i in kinds["rider_lease_expired"]] == [fleet["expired_lease"]]
    assert "discover" in kinds["rider_lease_expired"][0]["action"]
    assert [i["activity_id"] for i in kinds["race_lease_expired"]] == [1017]
    assert sorted(i["rider_id"] for i in kinds["history_stalled"]) == sorted(
        [fleet["expired_lease"], fleet["new_stalled"]]
    )
    # Due for sync and not synced for longer than the threshold past the interval (the
    # expired lease's rider was connected two hours ago and never synced).
    assert sorted(i["rider_id"] for i in kinds["sync_overdue"]) == sorted(
        [fleet["overdue"], fleet["backing_off"], fleet["new_stalled"], fleet["expired_lease"]]
    )
    backing = next(i for i in kinds["sync_overdue"] if i["rider_id"] == fleet["backing_off"])
    assert "backing off after 3 failures" in backing["action"]
    stalled_races = count(
        database,
        "select 1 from activities a join strava_connections c on c.rider_id = a.rider_id"
        " where c.status = 'active' and (a.enrichment_status = 'pending'"
        " or (a.enrichment_status = 'failed' and a.enrichment_attempts < 5))"
        " and coalesce(a.enrichment_next_attempt_at, a.created_at) < now() - interval '10 minutes'",
    )
    assert sorted(i["activity_id"] for i in kinds["race_stalled"]) == [1000, 1001, 1002, 1011, 1017]
    assert stuck["by_kind"]["race_stalled"] == stalled_races == 5
    assert [i["run_kind"] for i in kinds["run_unfinished"]] == ["discover"]
    assert len(kinds["rate_limit_block"]) == 1
    assert (
        "paused" in kinds["history_stalled"][0]["action"]
        or "backing" in kinds["history_stalled"][0]["action"]
    )
    assert stuck["count"] == len(stuck["items"]) == sum(stuck["by_kind"].values())


def test_stuck_threshold_is_a_setting(make_app, database, fleet):
    client = make_app(stuck_after_s=3 * 3600).test_client()
    stuck = status(client)["stuck"]["by_kind"]
    assert "history_stalled" not in stuck and "run_unfinished" not in stuck
    assert stuck["rider_lease_expired"] == 1  # an expired lease needs no threshold


def test_one_rider_in_full(client, database, fleet):
    rider = fleet["expired_lease"]
    detail = status(client, rider_id=rider)
    assert detail["rider"]["id"] == rider and detail["connection"]["athlete_id"] == 55
    assert detail["sync"]["lease"] == {
        "kind": "discover",
        "expires_at": detail["sync"]["lease"]["expires_at"],
        "expired": True,
    }
    assert detail["history"]["percent"] == 29 and detail["history"]["pages"] == 3
    assert {i["kind"] for i in detail["stuck"]} == {
        "rider_lease_expired",
        "history_stalled",
        "sync_overdue",
    }
    kinds = [run["kind"] for run in detail["runs"]]
    assert kinds == ["enrich", "sync-strava"]  # newest first, found by containment
    # Each run summed up for this rider: counts by status, the failures listed.
    assert detail["runs"][0]["items_by_status"] == {"succeeded": 0, "failed": 1, "skipped": 0}
    assert detail["runs"][0]["failures"] == [
        {
            "activity_id": 3001,
            "rider_id": rider,
            "status": "failed",
            "reason": "strava_unavailable",
            "error": "Strava answered 502",
        }
    ]
    assert detail["runs"][1]["items_by_status"] == {"succeeded": 1, "failed": 0, "skipped": 0}
    assert detail["runs"][1]["failures"] == [] and "items" not in detail
    every = status(client, rider_id=rider, items="all")["items"]
    assert [(i["kind"], i["item"]["status"]) for i in every["items"]] == [
        ("enrich", "failed"),
        ("sync-strava", "succeeded"),
    ]
    assert every["items"][1]["item"] == {"rider_id": rider, "status": "succeeded", "added": 0}
    owner = status(client, rider_id=fleet["up_to_date"])
    assert owner["races"]["failed"] == 2  # for good; two more failed but will be retried
    failed = {r["activity_id"]: r["final"] for r in owner["races"]["failed_races"]}
    assert failed == {1011: False, 1012: False, 1013: True, 1014: True}
    assert owner["races"]["waiting"] == 7 and owner["activities"]["total"] == 16
    assert owner["rider"]["eddington"] == {"miles": None, "km": None, "updated_at": None}
    assert len(owner["runs"]) == 4  # three sync-strava runs (one two days old), one enrich
    sealed = query(database, "select access_token, refresh_token from strava_connections")
    tokens = [*sealed, stored_tokens(database, rider)]  # as stored, and opened
    text = client.get(STATUS, query_string={"rider_id": rider}, headers=cron_headers()).get_data(
        as_text=True
    )
    assert not any(t["access_token"] in text or t["refresh_token"] in text for t in tokens)
    assert "enc1:" not in text
    unconnected = status(client, rider_id=fleet["no_connection"])
    assert unconnected["connection"] is None and "sync" not in unconnected


def test_rider_id_errors_and_auth(client, database, fleet):
    missing = client.get(STATUS, query_string={"rider_id": 999999}, headers=cron_headers())
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "rider_not_found"
    bad = client.get(STATUS, query_string={"rider_id": "abc"}, headers=cron_headers())
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "rider_id"
    assert client.get(STATUS).status_code == 401
    assert client.get(STATUS, headers=cron_headers("wrong")).status_code == 401


def test_a_riders_detail_sums_up_a_big_run_and_pages_its_items(client, database):
    """A weather run of 470 items made the rider's detail (and every action's answer)
    hundreds of KB: now each run is summed up, and every item is there on request."""
    rider = query(database, "insert into riders (name) values ('Big') returning id")[0]["id"]
    items = [
        {"activity_id": 10_000 + n, "rider_id": rider, "status": "succeeded", "points": 1}
        for n in range(455)
    ] + [
        {"activity_id": 20_000 + n, "rider_id": rider, "status": "failed",
         "reason": "no_data", "error": "the archive had no values"}
        for n in range(15)
    ]  # fmt: skip
    execute(
        database,
        "insert into cron_runs (kind, started_at, finished_at, processed, succeeded, failed,"
        " skipped, remaining, rate_limited, items, error_summary)"
        " values ('weather', now() - interval '1 minute', now(), 470, 455, 15, 0, 0, false,"
        " %s, 'no_data')",
        Jsonb(items),
    )
    detail = client.get(STATUS, query_string={"rider_id": rider}, headers=cron_headers())
    assert len(detail.get_data()) < 12_000  # it held every item
    [run] = detail.get_json()["runs"]
    assert run["kind"] == "weather" and run["error_summary"] == "no_data"
    assert run["items_by_status"] == {"succeeded": 455, "failed": 15, "skipped": 0}
    assert [f["activity_id"] for f in run["failures"]] == list(range(20_000, 20_010))
    assert run["failures_not_listed"] == 5
    first = status(client, rider_id=rider, items="all", items_limit=200)["items"]
    assert (first["count"], first["offset"], first["limit"]) == (470, 0, 200)
    assert [i["item"]["activity_id"] for i in first["items"]] == [10_000 + n for n in range(200)]
    last = status(client, rider_id=rider, items="all", items_offset=400)["items"]
    assert len(last["items"]) == 70 and last["items"][-1]["item"]["activity_id"] == 20_014
    assert {i["run_id"] for i in last["items"]} == {run["id"]}
    for bad in (
        {"items": "some"},
        {"items": "all", "items_limit": "0"},
        {"items": "all", "items_limit": "1001"},
        {"items": "all", "items_offset": "-1"},
    ):
        refused = client.get(
            STATUS, query_string={"rider_id": rider, **bad}, headers=cron_headers()
        )  # fmt: skip
        assert refused.status_code == 400, bad
        assert refused.get_json()["error"]["field"] in bad


def test_status_of_an_empty_service(client, database):
    body = status(client)
    assert body["riders"]["total"] == 0 and body["stuck"]["count"] == 0
    assert body["backlog"]["estimate"]["hours"] == 0
    assert body["rate_limit"]["blocked"] is False


def test_operator_actions(client, database, fleet):
    rider = fleet["backing_off"]
    set_connection(
        database,
        rider,
        lease_token=uuid.uuid4(),
        lease_kind="sync",
        lease_expires_at=later(minutes=1),
    )
    response = client.post(f"/api/admin/riders/{rider}/reset", headers=cron_headers())
    assert response.status_code == 200
    assert response.get_json()["detail"]["sync"]["failure_count"] == 0
    row = query(database, "select * from strava_connections where rider_id = %s", rider)[0]
    assert (row["failure_count"], row["next_attempt_at"], row["lease_token"]) == (0, None, None)
    assert status(client)["riders"]["by_sync_state"]["due"] == 6  # it is due again

    paused = client.post(f"/api/admin/riders/{fleet['up_to_date']}/pause", headers=cron_headers())
    assert paused.status_code == 200 and paused.get_json()["auto_sync"] is False
    auto = query(database, "select auto_sync from riders where id = %s", fleet["up_to_date"])
    assert auto[0]["auto_sync"] is False
    resumed = client.post(f"/api/admin/riders/{fleet['paused']}/resume", headers=cron_headers())
    assert resumed.status_code == 200
    assert status(client)["riders"]["by_sync_state"]["paused"] == 1  # one paused, one resumed

    for action in ("reset", "pause", "resume"):
        unknown = client.post(f"/api/admin/riders/999999/{action}", headers=cron_headers())
        assert unknown.status_code == 404
        assert client.post(f"/api/admin/riders/{rider}/{action}").status_code == 401
    unconnected = client.post(
        f"/api/admin/riders/{fleet['no_connection']}/reset", headers=cron_headers()
    )
    assert unconnected.status_code == 409


def test_estimate_arithmetic():
    import models
    from services.status import backlog_rate_per_hour, history_requests_left

    budget = models.budget.BudgetRow(
        limit_15min=600,
        limit_daily=30000,
        read_limit_15min=300,
        read_limit_daily=15000,
        usage_15min=0,
        usage_daily=0,
        read_usage_15min=0,
        read_usage_daily=0,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        day_start=datetime(2026, 1, 1, tzinfo=UTC),
        blocked_until=None,
        blocked_reason=None,
        headers_seen_at=None,
    )
    rate = backlog_rate_per_hour(budget, reserve=30, auto_sync_riders=100, sync_min_interval_s=3600)
    # The day binds: (15,000 - 30 - 100 x 24) / 24 = 523.75 an hour, under the window's
    # 270 x 4 - 100 = 980.
    assert rate["backlog_requests_per_hour"] == 523.8
    fast = backlog_rate_per_hour(budget, reserve=30, auto_sync_riders=0, sync_min_interval_s=3600)
    assert fast["backlog_requests_per_hour"] == 623.8
    assert (
        history_requests_left(
            {
                "history_walk_started_at": None,
                "history_cursor": None,
                "history_activities": 0,
                "athlete_created_at": None,
            }
        )
        == math.ceil(1000 / 200) + 1
    )
