"""One ride recorded twice: a Garmin and a phone copy are paired (the Garmin kept), a
morning and an evening ride are not, a ride and a run at the same time are not; edits
and deletes undo the mark; the Eddington number counts the ride once; an operator can
overrule a pair. Real Postgres, the real upsert path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

import models
from fake_strava import make_activity
from services.activities import page_rows
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query

DAY = datetime(2026, 6, 6, 7, 0, tzinfo=UTC)


def ride(strava_id, *, start=DAY, km=80.0, elapsed_s=4 * 3600, sport="Ride", device="garmin"):
    external = f"garmin_push_{strava_id}" if device == "garmin" else f"{strava_id}-phone.gpx"
    return make_activity(
        strava_id,
        athlete_id=1,
        start_date=start,
        sport_type=sport,
        distance_m=km * 1000,
        elapsed_time=elapsed_s,
        moving_time=elapsed_s - 600,
        external_id=external,
    )


def store(database, rider, summaries):
    with psycopg.connect(database, row_factory=dict_row) as conn:
        models.activities.upsert_activities(
            conn, rider_id=rider, rows=page_rows(summaries, min_race_distance_km=200), now=DAY
        )


def marks(database, rider):
    rows = query(
        database,
        "select a.strava_id, k.strava_id as kept from activities a"
        " left join activities k on k.id = a.duplicate_of where a.rider_id = %s",
        rider,
    )
    return {r["strava_id"]: r["kept"] for r in rows}


def test_a_garmin_and_a_phone_copy_are_paired_and_the_garmin_kept(database, fake):
    rider = connect_rider(database, fake, 9001)
    garmin = ride(1, km=80.0)
    # The phone started a minute late, stopped two minutes early and measured 3% more.
    phone = ride(
        2, start=DAY + timedelta(minutes=1), km=82.4, elapsed_s=4 * 3600 - 180, device="phone"
    )
    store(database, rider, [phone])
    store(database, rider, [garmin])  # uploaded later, in another page
    assert marks(database, rider) == {1: None, 2: 1}


def test_a_morning_and_an_evening_ride_and_a_ride_and_a_run_are_not_paired(database, fake):
    rider = connect_rider(database, fake, 9002)
    morning = ride(11, km=40, elapsed_s=2 * 3600)
    evening = ride(12, start=DAY + timedelta(hours=10), km=40, elapsed_s=2 * 3600)
    run = ride(13, km=38, elapsed_s=2 * 3600, sport="Run", device="phone")
    # Half the ride overlapping: not "most of its length".
    half = ride(14, start=DAY + timedelta(hours=1), km=40, elapsed_s=2 * 3600, device="phone")
    # Same time, much shorter distance (a warm-up loop recorded alone): not the same ride.
    short = ride(15, km=20, elapsed_s=2 * 3600, device="phone")
    store(database, rider, [morning, evening, run, half, short])
    assert marks(database, rider) == {11: None, 12: None, 13: None, 14: None, 15: None}


def test_an_edit_or_a_delete_undoes_the_mark(database, fake):
    rider = connect_rider(database, fake, 9003)
    garmin, phone = ride(21), ride(22, km=79.0, device="phone")
    store(database, rider, [garmin, phone])
    assert marks(database, rider) == {21: None, 22: 21}
    # The rider crops the phone copy to its first hour: no longer the same ride.
    store(database, rider, [{**phone, "elapsed_time": 3600, "distance": 20_000.0}])
    assert marks(database, rider) == {21: None, 22: None}
    store(database, rider, [phone])
    assert marks(database, rider) == {21: None, 22: 21}
    # Deleting the kept copy unmarks the other.
    execute(database, "delete from activities where strava_id = 21")
    assert marks(database, rider) == {22: None}


def test_three_copies_point_at_the_best_and_another_rider_is_never_paired(database, fake):
    rider = connect_rider(database, fake, 9004)
    other = connect_rider(database, fake, 9005)
    store(database, rider, [ride(31, km=80), ride(32, km=81, device="phone"), ride(33, km=78)])
    store(database, other, [ride(34, km=80)])
    # The Garmin copies outrank the phone; between them the longer is kept.
    assert marks(database, rider) == {31: None, 32: 31, 33: 31}
    assert marks(database, other) == {34: None}


def test_the_eddington_number_with_duplicates_equals_the_one_without(database, fake, client):
    days = [DAY - timedelta(days=d) for d in range(60)]
    originals = [ride(100 + i, start=d, km=30 + (i * 7) % 50) for i, d in enumerate(days)]
    copies = [
        ride(
            500 + i,
            start=a_day + timedelta(seconds=40),
            km=(30 + (i * 7) % 50) * 1.02,
            device="phone",
        )
        for i, a_day in enumerate(days)
        if i % 2 == 0
    ]
    alone = connect_rider(database, fake, 9006)
    twice = connect_rider(database, fake, 9007)
    store(database, alone, originals)
    # The same rides for a second rider (strava ids are unique across riders), with a
    # phone copy of every other one arriving between two pages of originals.
    mine = [{**a, "id": a["id"] + 10_000} for a in originals]
    store(database, twice, mine[:30])
    store(database, twice, copies)
    store(database, twice, mine[30:])
    with psycopg.connect(database, row_factory=dict_row) as conn:
        without = models.activities.recompute_eddington(conn, rider_id=alone, now=DAY)
        with_copies = models.activities.recompute_eddington(conn, rider_id=twice, now=DAY)
        marked = conn.execute(
            "select count(*) as n from activities where rider_id = %s and duplicate_of is not null",
            (twice,),
        ).fetchone()
        conn.execute("update activities set duplicate_of = null where rider_id = %s", (twice,))
        counted_twice = models.activities.recompute_eddington(conn, rider_id=twice, now=DAY)
    assert marked is not None and marked["n"] == len(copies) == 30
    assert with_copies == without
    assert counted_twice != without  # the copies would have inflated it


def test_an_operator_overrules_a_pair_and_the_detail_lists_duplicates(database, fake, client):
    rider = connect_rider(database, fake, 9008)
    store(database, rider, [ride(41), ride(42, km=79, device="phone")])
    detail = client.get(
        "/api/admin/status", query_string={"rider_id": rider}, headers=cron_headers()
    ).get_json()
    assert [(d["activity_id"], d["duplicate_of"]) for d in detail["duplicates"]] == [(42, 41)]

    def overrule(**body):
        return client.post(
            f"/api/admin/riders/{rider}/duplicates", json=body, headers=cron_headers()
        )

    answered = overrule(activity_ids=[41, 42], verdict="distinct")
    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json()["duplicate"] is None
    assert marks(database, rider) == {41: None, 42: None}
    store(database, rider, [ride(42, km=79.5, device="phone")])  # an edit keeps the verdict
    assert marks(database, rider) == {41: None, 42: None}
    kept_phone = overrule(activity_ids=[41, 42], verdict="duplicate", keep=42).get_json()
    assert kept_phone["duplicate"] == {"activity_id": 41, "duplicate_of": 42}
    assert marks(database, rider) == {41: 42, 42: None}
    assert overrule(activity_ids=[41, 42], verdict="auto").status_code == 200
    assert marks(database, rider) == {41: None, 42: 41}
    assert overrule(activity_ids=[41], verdict="distinct").status_code == 400
    assert overrule(activity_ids=[41, 42], verdict="maybe").status_code == 400
    assert overrule(activity_ids=[41, 999], verdict="distinct").status_code == 400
    missing = client.post("/api/admin/riders/424242/duplicates", json={}, headers=cron_headers())
    assert missing.status_code == 400
