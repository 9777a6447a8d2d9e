"""enrich end to end (real Postgres, the fake Strava behind `responses`), and its pure
decisions: the backoff and what a race page keeps from the detailed activity."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import models
from fake_strava import make_activity
from fake_strava.detail import detailed_activity
from services.activities import page_rows
from services.enrichment import enrichment_backoff, race_details
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query

ENRICH = "/api/cron/enrich"
DETAIL = "/api/v3/activities/"
NOW = datetime.now(UTC)


def enrich(client, **params):
    response = client.post(ENRICH, query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def store(database, rider, summaries, *, min_race_distance_km=200.0):
    """Put activities in the database as a listing would have (races pending)."""
    rows = page_rows(summaries, min_race_distance_km=min_race_distance_km)
    with psycopg.connect(database, row_factory=psycopg.rows.dict_row) as conn:
        models.activities.upsert_activities(conn, rider_id=rider, rows=rows, now=datetime.now(UTC))


def rider_with_races(database, fake, athlete_id, n, *, first_day=1):
    """A connected rider with n races (ride races, one a day back from `first_day`)."""
    rider = connect_rider(database, fake, athlete_id)
    races = [
        make_activity(
            athlete_id * 10_000 + i,
            athlete_id=athlete_id,
            start_date=NOW - timedelta(days=first_day + i),
            sport_type="Ride",
            distance_m=60_000,
            workout_type=11,
        )
        for i in range(n)
    ]
    fake.add_activities(athlete_id, races)
    store(database, rider, races)
    return rider, [a["id"] for a in races]


def race(database, strava_id):
    rows = query(
        database,
        "select enrichment_status, enrichment_attempts, enrichment_next_attempt_at,"
        " enrichment_error, enrichment_lease_token, enriched_at, description, polyline, details"
        " from activities where strava_id = %s",
        strava_id,
    )
    return rows[0] if rows else None


def fetched(fake):
    """How many times each activity was fetched in detail."""
    return Counter(
        int(r.path.rsplit("/", 1)[1]) for r in fake.requests if r.path.startswith(DETAIL)
    )


# --- the rule, and what is stored ----------------------------------------------------


def test_races_are_flagged_by_each_part_of_the_rule_and_only_races_are_enriched(
    client, strava, database
):
    rider = connect_rider(database, strava, 401, history_complete=False)
    day = NOW - timedelta(days=30)
    cases = {
        # (sport, workout_type, km, trainer): race?
        ("Run", 1, 10, False): True,
        ("TrailRun", 1, 25, False): True,
        ("Ride", 11, 40, False): True,
        ("VirtualRide", 11, 30, True): True,  # a virtual race flagged by workout_type
        ("Ride", None, 205, False): True,  # a brevet
        ("GravelRide", 10, 200, False): True,  # exactly the threshold
        ("Ride", 10, 199.9, False): False,
        ("VirtualRide", None, 250, True): False,  # no brevet on a trainer
        ("Ride", None, 220, True): False,
        ("Run", 11, 12, False): False,  # a ride's race code on a run
        ("Ride", 1, 40, False): False,  # a run's race code on a ride
        ("Run", 2, 210, False): False,  # the distance rule is for rides
        ("Walk", None, 210, False): False,
    }
    summaries = [
        make_activity(
            4_010_000 + i,
            athlete_id=401,
            start_date=day + timedelta(hours=i),
            sport_type=sport,
            workout_type=workout,
            distance_m=km * 1000,
            trainer=trainer,
        )
        for i, (sport, workout, km, trainer) in enumerate(cases)
    ]
    activities = {a["id"]: expected for a, expected in zip(summaries, cases.values(), strict=True)}
    strava.add_activities(401, summaries)
    assert client.post("/api/cron/discover", headers=cron_headers()).status_code == 200
    rows = query(database, "select strava_id, is_race, enrichment_status from activities")
    assert {r["strava_id"]: r["is_race"] for r in rows} == activities
    assert all(r["enrichment_status"] == ("pending" if r["is_race"] else None) for r in rows)

    body = enrich(client)
    races = {i for i, is_race in activities.items() if is_race}
    assert fetched(strava) == Counter({i: 1 for i in races})
    assert {i["activity_id"] for i in body["items"]} == races
    assert body["succeeded"] == len(races) and body["done"] is True
    details = query(database, "select strava_id, details is not null as enriched from activities")
    assert {r["strava_id"] for r in details if r["enriched"]} == races
    assert query(database, "select count(*) as n from activities where rider_id = %s", rider)[0][
        "n"
    ] == len(cases)


def test_the_distance_threshold_is_a_setting(make_app, strava, database):
    rider = connect_rider(database, strava, 402, history_complete=False)
    ride = make_activity(
        4_020_001, athlete_id=402, start_date=NOW - timedelta(days=2), distance_m=150_000
    )
    strava.add_activities(402, [ride])
    client = make_app(race_min_distance_km=100).test_client()
    assert client.post("/api/cron/discover", headers=cron_headers()).status_code == 200
    assert query(database, "select is_race from activities where rider_id = %s", rider)[0][
        "is_race"
    ]


def test_enrichment_stores_the_description_full_polyline_and_details(client, strava, database):
    rider = connect_rider(database, strava, 403)
    brevet = make_activity(
        4_030_001,
        athlete_id=403,
        start_date=NOW - timedelta(days=3),
        distance_m=402_000,
        total_photo_count=2,
    )
    run = make_activity(
        4_030_002,
        athlete_id=403,
        start_date=NOW - timedelta(days=4),
        sport_type="Run",
        distance_m=21_300,
        workout_type=1,
    )
    strava.add_activities(403, [brevet, run])
    store(database, rider, [brevet, run])
    body = enrich(client)
    assert body["succeeded"] == 2
    for summary in (brevet, run):
        expected = detailed_activity({**summary, "athlete": {"id": 403}})
        row = race(database, summary["id"])
        assert row["enrichment_status"] == "done" and row["enriched_at"] is not None
        assert row["enrichment_lease_token"] is None and row["enrichment_attempts"] == 0
        assert row["description"] == expected["description"]
        assert row["polyline"] == expected["map"]["polyline"]
        assert len(row["polyline"]) > len(summary["map"]["summary_polyline"])
        details = row["details"]
        assert details["calories"] == expected["calories"]
        assert details["device_name"] == expected["device_name"]
        assert len(details["laps"]) == len(expected["laps"])
        assert len(details["splits_metric"]) == len(expected["splits_metric"])
        assert len(json.dumps(details)) < 100_000  # a 400 km brevet stays light
    brevet_details = race(database, brevet["id"])["details"]
    assert brevet_details["photo_count"] == 2
    assert brevet_details["gear"]["name"] and len(brevet_details["splits_metric"]) == 402
    run_details = race(database, run["id"])["details"]
    assert [e["name"] for e in run_details["best_efforts"]][-1] == "Half-Marathon"


# --- failures ------------------------------------------------------------------------


def test_a_404_removes_the_race_a_500_backs_off_and_the_others_succeed(client, strava, database):
    rider, (gone, flaky, fine_a, fine_b) = rider_with_races(database, strava, 404, 4)
    strava.delete_activity(gone)
    strava.fail_next(3, status=500, path_contains=f"/activities/{flaky}")  # with its retries
    body = enrich(client)
    items = {i["activity_id"]: i for i in body["items"]}
    assert items[gone]["status"] == "succeeded" and items[gone]["reason"] == "removed"
    assert items[flaky]["status"] == "failed" and items[flaky]["reason"] == "strava_unavailable"
    assert items[flaky]["rider_id"] == rider and items[flaky]["error"]
    assert items[fine_a]["status"] == items[fine_b]["status"] == "succeeded"
    assert body["failed"] == 1 and body["remaining"] == 0 and body["done"] is True
    assert race(database, gone) is None
    row = race(database, flaky)
    assert row["enrichment_status"] == "failed" and row["enrichment_attempts"] == 1
    assert "strava_unavailable" in row["enrichment_error"]
    wait = row["enrichment_next_attempt_at"] - datetime.now(UTC)
    assert timedelta(minutes=4) < wait <= timedelta(minutes=5)
    assert row["enrichment_lease_token"] is None
    # not due while backing off
    strava.reset_log()
    assert enrich(client)["processed"] == 0 and strava.count() == 0
    # a second failure doubles the wait
    execute(database, "update activities set enrichment_next_attempt_at = now() - interval '1 s'")
    strava.fail_next(3, status=502, path_contains=f"/activities/{flaky}")
    enrich(client)
    row = race(database, flaky)
    assert row["enrichment_attempts"] == 2
    assert row["enrichment_next_attempt_at"] - datetime.now(UTC) > timedelta(minutes=9)
    # retried after its backoff, it succeeds
    execute(database, "update activities set enrichment_next_attempt_at = now() - interval '1 s'")
    body = enrich(client)
    assert [i["activity_id"] for i in body["items"]] == [flaky]
    assert race(database, flaky)["enrichment_status"] == "done"
    assert race(database, flaky)["enrichment_error"] is None


def test_after_the_maximum_attempts_a_race_stays_failed(make_app, strava, database):
    client = make_app(enrich_max_attempts=2).test_client()
    _, (broken,) = rider_with_races(database, strava, 405, 1)
    for attempt in (1, 2):
        strava.fail_next(3, status=500, path_contains=f"/activities/{broken}")
        body = enrich(client)
        assert body["items"][0]["attempts"] == attempt
        execute(
            database, "update activities set enrichment_next_attempt_at = now() - interval '1 s'"
        )
    row = race(database, broken)
    assert row["enrichment_status"] == "failed" and row["enrichment_attempts"] == 2
    assert row["enrichment_error"]
    strava.reset_log()
    body = enrich(client)
    assert body["processed"] == 0 and body["remaining"] == 0 and strava.count() == 0


def test_races_of_riders_who_must_reconnect_are_left_alone(client, strava, database):
    _, waiting = rider_with_races(database, strava, 406, 2)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    _, revoked = rider_with_races(database, strava, 407, 2, first_day=10)
    _, fine = rider_with_races(database, strava, 408, 2, first_day=20)
    strava.revoke_athlete(407)  # discovered during the call: 401, then the refresh fails
    body = enrich(client)
    items = {i["activity_id"]: i for i in body["items"]}
    assert not set(waiting) & set(items)
    assert all(items[i]["status"] == "skipped" for i in revoked)
    assert {items[i]["reason"] for i in revoked} == {"needs_reauth"}
    assert all(items[i]["status"] == "succeeded" for i in fine)
    assert body["failed"] == 0 and body["remaining"] == 0
    for strava_id in waiting + revoked:
        row = race(database, strava_id)
        assert row["enrichment_status"] == "pending" and row["enrichment_attempts"] == 0
        assert row["enrichment_lease_token"] is None
    strava.reset_log()
    assert enrich(client)["processed"] == 0 and strava.count() == 0


def test_a_429_stops_every_request_until_the_reset(make_app, strava, database):
    client = make_app(sync_workers=1).test_client()
    _, races = rider_with_races(database, strava, 409, 5)
    strava.fail_next(1, status=429, path_contains=DETAIL)
    body = enrich(client)
    assert body["rate_limited"] is True and body["done"] is False and body["remaining"] == 5
    assert strava.count() == 1
    assert {i["reason"] for i in body["items"]} == {"rate_limited"}
    rows = query(
        database,
        "select enrichment_status, enrichment_attempts, enrichment_lease_token from activities",
    )
    assert all(
        r["enrichment_status"] == "pending"
        and r["enrichment_attempts"] == 0
        and r["enrichment_lease_token"] is None
        for r in rows
    )
    strava.reset_log()
    again = enrich(client)
    assert again["rate_limited"] is True and strava.count() == 0
    # once the window has reset, every race is fetched, none counted as failed
    execute(database, "update strava_rate_budget set blocked_until = now() - interval '1 s'")
    body = enrich(client)
    assert body["succeeded"] == 5 and body["done"] is True
    assert fetched(strava) == Counter({i: 1 for i in races})


# --- leases --------------------------------------------------------------------------


def test_two_calls_at_once_never_fetch_the_same_race(make_app, strava, database):
    _, races = rider_with_races(database, strava, 410, 30)
    strava.latency_s = 0.03
    app = make_app()
    bodies, barrier = [], threading.Barrier(2)

    def call():
        client = app.test_client()
        barrier.wait()
        bodies.append(enrich(client, limit=20))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetched(strava) == Counter({i: 1 for i in races})
    taken = [i["activity_id"] for b in bodies for i in b["items"]]
    assert sorted(taken) == sorted(races)
    done = query(database, "select count(*) as n from activities where enrichment_status = 'done'")
    assert done[0]["n"] == 30


def test_a_race_whose_lease_expired_is_taken_by_the_next_call(client, strava, database):
    _, (held, abandoned) = rider_with_races(database, strava, 411, 2)
    execute(
        database,
        "update activities set enrichment_lease_token = gen_random_uuid(),"
        " enrichment_lease_expires_at = now() + interval '1 minute' where strava_id = %s",
        held,
    )
    execute(
        database,
        "update activities set enrichment_lease_token = gen_random_uuid(),"
        " enrichment_lease_expires_at = now() - interval '1 second' where strava_id = %s",
        abandoned,
    )
    body = enrich(client)
    assert [i["activity_id"] for i in body["items"]] == [abandoned]
    assert body["remaining"] == 0  # the held one is another call's
    assert fetched(strava) == Counter({abandoned: 1})
    assert race(database, held)["enrichment_status"] == "pending"


def test_default_limit_is_fifteen_newest_first_and_done_races_are_not_fetched_again(
    client, strava, database
):
    _, races = rider_with_races(database, strava, 412, 20)  # races[0] is the newest
    body = enrich(client)
    assert [i["activity_id"] for i in body["items"]] == races[:15]
    assert body["remaining"] == 5 and body["done"] is False
    strava.reset_log()
    body = enrich(client)
    assert [i["activity_id"] for i in body["items"]] == races[15:]
    assert body["done"] is True and sum(fetched(strava).values()) == 5
    run = query(database, "select kind, processed from cron_runs order by id desc limit 1")[0]
    assert run == {"kind": "enrich", "processed": 5}


def test_enrich_rider_races_takes_only_that_riders_newest_races(make_app, strava, database):
    from services.calls import Call
    from services.enrichment import enrich_rider_races

    rider, mine = rider_with_races(database, strava, 413, 5, first_day=20)
    _, theirs = rider_with_races(database, strava, 414, 3)  # newer, but another rider's
    runtime = make_app().extensions["strava_sync"]
    call = Call(runtime, kind="sync-now")
    try:
        outcomes = enrich_rider_races(call, rider, limit=3)
    finally:
        call.close()
    assert [o.id for o in outcomes] == mine[:3]
    assert all(o.status == "succeeded" for o in outcomes)
    assert set(fetched(strava)) == set(mine[:3])
    assert all(race(database, i)["enrichment_status"] == "pending" for i in mine[3:] + theirs)


def test_a_race_reclassified_while_held_is_handed_back_not_broken(make_app, strava, database):
    """A listing found it is no race any more (workout_type edited) during the fetch."""
    from services.calls import Call
    from services.enrichment import enrich_races

    rider, (changed, kept) = rider_with_races(database, strava, 415, 2)
    runtime = make_app().extensions["strava_sync"]
    call = Call(runtime, kind="enrich")
    try:
        with runtime.db.connection() as conn:
            claimed = models.enrichment.claim_races_for_enrichment(
                conn,
                lease_token=call.lease_token,
                limit=5,
                lease_ttl_s=60,
                max_attempts=5,
                now=call.started_at,
                recent_since=call.started_at - timedelta(days=30),
            )
        strava.update_activity(changed, workout_type=10)
        store(database, rider, [a for a in strava.activities_of(415) if a["id"] == changed])
        outcomes = {o.id: o for o in enrich_races(call, claimed)}
    finally:
        call.close()
    assert outcomes[changed].status == "skipped" and outcomes[changed].detail == "lease_lost"
    assert outcomes[kept].status == "succeeded"
    row = race(database, changed)
    assert row["enrichment_status"] is None and row["enrichment_lease_token"] is None
    assert row["details"] is None


# --- the endpoint --------------------------------------------------------------------


def test_enrich_needs_the_bearer_and_a_valid_limit(client, strava, database):
    assert client.post(ENRICH).status_code == 401
    response = client.post(ENRICH, json={"limit": "5"}, headers=cron_headers())
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "limit"
    assert client.get(ENRICH, headers=cron_headers()).get_json()["done"] is True
    assert strava.count() == 0


# --- pure decisions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "attempts, minutes", [(0, 5), (1, 10), (2, 20), (3, 40), (4, 80), (30, 720)]
)
def test_backoff_doubles_from_five_minutes_up_to_twelve_hours(attempts, minutes):
    assert enrichment_backoff(attempts) == timedelta(minutes=minutes)


def test_race_details_keep_what_a_race_page_wants_and_tolerate_missing_parts():
    summary = make_activity(
        1, athlete_id=9, start_date=NOW, sport_type="Run", distance_m=10_500, workout_type=1
    )
    detail = detailed_activity({**summary, "athlete": {"id": 9}})
    details = race_details(detail)
    assert details["calories"] == detail["calories"]
    assert [e["name"] for e in details["best_efforts"]][-1] == "10k"
    assert details["splits_metric"][0] == {
        "split": 1,
        "distance_m": 1000.0,
        "elapsed_time_s": detail["splits_metric"][0]["elapsed_time"],
        "moving_time_s": detail["splits_metric"][0]["moving_time"],
        "elevation_difference_m": 0.0,
        "average_speed_mps": detail["splits_metric"][0]["average_speed"],
    }
    assert "segment_efforts" not in details and "photos" not in details
    bare = race_details({"id": 1, "laps": None, "gear": "b1", "photos": None, "calories": "x"})
    assert bare["laps"] == [] and bare["gear"] is None and bare["calories"] is None
    assert bare["photo_count"] == 0 and bare["splits_metric"] == [] and bare["stats"] == {}


def test_sync_now_leaves_a_riders_old_races_to_the_backfill(make_app, strava, database):
    """A press details the rider's recent races; their history's are the backfill's."""
    from services.calls import Call
    from services.enrichment import enrich_rider_races

    rider, recent = rider_with_races(database, strava, 415, 2, first_day=3)
    old = make_activity(
        4150999,
        athlete_id=415,
        start_date=NOW - timedelta(days=400),
        sport_type="Ride",
        distance_m=60_000,
        workout_type=11,
    )
    strava.add_activities(415, [old])
    store(database, rider, [old])
    call = Call(make_app().extensions["strava_sync"], kind="sync-now")
    try:
        outcomes = enrich_rider_races(call, rider, limit=10)
    finally:
        call.close()
    assert [o.id for o in outcomes] == recent
    assert race(database, old["id"])["enrichment_status"] == "pending"


def test_one_riders_many_races_do_not_hold_back_the_others(client, strava, database):
    """Races are taken in turns over riders, recent ones first, newest first in a turn."""
    busy, many = rider_with_races(database, strava, 416, 20, first_day=1)
    quiet, few = rider_with_races(database, strava, 417, 2, first_day=10)  # older races
    _, old = rider_with_races(database, strava, 418, 1, first_day=400)  # an old race
    body = enrich(client, limit=5)
    assert body["succeeded"] == 5
    assert set(fetched(strava)) == {many[0], few[0], many[1], few[1], many[2]}
    assert race(database, old[0])["enrichment_status"] == "pending"  # recent races first
