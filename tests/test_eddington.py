"""The cycling Eddington number in the database: a hand-computed case through a real sync,
a brute-force check of the SQL on random data, and 10,000 activities quickly (the rule's
own tests, without a database, are in test_eddington_rules.py)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

import models
from fake_strava import make_activity
from services.eddington import METRES_PER_KM, METRES_PER_MILE, eddington, eddington_numbers
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query
from tests.test_eddington_rules import brute_force

MILE = METRES_PER_MILE


def _insert(conn, rider_id, rows):
    """rows: (strava_id, start_date_local, sport_type, metres)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into activities (strava_id, rider_id, sport_type, start_date,"
            " start_date_local, distance_m) values (%s, %s, %s, %s, %s, %s)",
            [
                (sid, rider_id, sport, local.replace(tzinfo=UTC), local, metres)
                for sid, local, sport, metres in rows
            ],
        )


def test_hand_computed_case_through_a_sync(client, strava, database):
    """Local days and their activities, in miles (km in brackets):

    d1: ride 3 + ride 2.5 at 23:30 local (already d2 in UTC)  -> 5.5  (8.85)
    d2: gravel 6                                              -> 6    (9.66)
    d3: ride 5.5 + a 20-mile run                              -> 5.5  (8.85)
    d4: virtual ride 7                                        -> 7    (11.27)
    d5: mountain bike 4 + a 3-mile run                        -> 4    (6.44)
    d6: ride 5.6 + a 1-mile run                               -> 5.6  (9.01)
    d7: e-bike 1 + a 9-mile run                               -> 1    (1.61)

    Miles: five days of at least 5, not six of 6: E = 5. Km: six days of at least 6, not
    seven of 7: E = 6. Each mistake changes the answer: UTC dates give 4 (d1 = 3), counting
    runs gives 6, leaving out virtual rides gives 4, taking a day's longest ride gives 4.
    """
    now = datetime.now(UTC)
    rider = connect_rider(database, strava, 4242, sync_cursor=now - timedelta(days=12))
    base = (now - timedelta(days=10)).replace(hour=8, minute=0, second=0, microsecond=0)
    plan = [
        (0, 8, "Ride", 3),
        (0, 23.5, "Ride", 2.5),
        (1, 9, "GravelRide", 6),
        (2, 9, "Ride", 5.5),
        (2, 12, "Run", 20),
        (3, 9, "VirtualRide", 7),
        (4, 9, "MountainBikeRide", 4),
        (4, 12, "Run", 3),
        (5, 7, "Ride", 5.6),
        (5, 18, "Run", 1),
        (6, 9, "EBikeRide", 1),
        (6, 12, "Run", 9),
    ]
    activities = []
    for i, (day, hour, sport, miles) in enumerate(plan):
        local = base + timedelta(days=day, hours=hour - 8)
        # New York: local 23:30 is 03:30 or 04:30 UTC the next day.
        activity = make_activity(
            10_000 + i,
            athlete_id=4242,
            start_date=local + timedelta(hours=5),
            sport_type=sport,
            distance_m=miles * MILE,
            workout_type=10 if sport != "Run" else 0,
            zone="America/New_York",
        )
        activities.append(activity)
    strava.add_activities(4242, activities)
    assert client.post("/api/cron/sync-strava", headers=cron_headers()).status_code == 200
    row = query(database, "select * from riders where id = %s", rider)[0]
    locals_ = query(database, "select distinct start_date_local::date as d from activities")
    assert len(locals_) == 7  # one date per planned day: local dates, not UTC ones
    assert (row["eddington_miles"], row["eddington_km"]) == (5, 6)
    assert row["eddington_updated_at"] is not None
    # The pure one-pass version agrees.
    rides = [
        (r["start_date_local"].date(), r["sport_type"], r["distance_m"])
        for r in query(database, "select * from activities")
    ]
    assert eddington_numbers(rides) == (5, 6)


def test_a_sync_that_adds_nothing_leaves_the_numbers_alone(client, strava, database):
    rider = connect_rider(database, strava, 4243, activities=3)
    client.post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set eddington_miles = 99 where id = %s", rider)
    execute(
        database,
        "update strava_connections"
        " set last_synced_at = now() - interval '2 hours', next_poll_at = null",
    )
    client.post("/api/cron/sync-strava", headers=cron_headers())
    assert query(database, "select eddington_miles from riders")[0]["eddington_miles"] == 99


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sql_matches_brute_force_on_random_data(database, seed):
    rng = random.Random(seed)
    sports = ["Ride", "GravelRide", "VirtualRide", "Run", "Walk", "EBikeRide", "Swim"]
    start = date(2023, 1, 1)
    rows = []
    for i in range(1500):
        day = start + timedelta(days=rng.randrange(400))
        local = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60))
        # Whole metres, so sums are exact in both Python and Postgres.
        metres = float(rng.choice([rng.randrange(1_000, 40_000), rng.randrange(40_000, 250_000)]))
        rows.append((i + 1, local, rng.choice(sports), metres))
    with psycopg.connect(database, row_factory=dict_row) as conn:
        rider = models.riders.create_rider(conn, name="random")
        other = models.riders.create_rider(conn, name="other")
        _insert(conn, rider, rows)
        _insert(conn, other, [(10_000, datetime(2023, 5, 1, 9), "Ride", 500_000.0)])
        numbers = models.activities.recompute_eddington(conn, rider_id=rider, now=datetime.now(UTC))
    per_day: dict[date, float] = {}
    for _, local, sport, metres in rows:
        if sport not in ("Run", "Walk", "Swim"):
            per_day[local.date()] = per_day.get(local.date(), 0.0) + metres
    expected = (
        brute_force(list(per_day.values()), MILE),
        brute_force(list(per_day.values()), METRES_PER_KM),
    )
    assert numbers == expected
    assert eddington_numbers((r[1].date(), r[2], r[3]) for r in rows) == expected
    stored = query(
        database, "select eddington_miles, eddington_km from riders where id = %s", rider
    )
    assert (stored[0]["eddington_miles"], stored[0]["eddington_km"]) == expected


def test_no_rides_is_zero(database):
    with psycopg.connect(database, row_factory=dict_row) as conn:
        rider = models.riders.create_rider(conn, name="runner")
        _insert(conn, rider, [(1, datetime(2024, 1, 1, 9), "Run", 42_195.0)])
        assert models.activities.recompute_eddington(
            conn, rider_id=rider, now=datetime.now(UTC)
        ) == (0, 0)


def test_ten_thousand_activities_match_brute_force(database):
    """Correctness at size; the time it takes is a figure of bench/sync.py."""
    rng = random.Random(7)
    start = datetime(2010, 1, 1, 8)
    rows = [
        (i + 1, start + timedelta(hours=9 * i), "Ride", float(rng.randrange(5_000, 180_000)))
        for i in range(10_000)
    ]
    with psycopg.connect(database, row_factory=dict_row) as conn:
        rider = models.riders.create_rider(conn, name="lots")
        _insert(conn, rider, rows)
        conn.execute("analyze activities")
        miles, km = models.activities.recompute_eddington(
            conn, rider_id=rider, now=datetime.now(UTC)
        )
    per_day: dict[date, float] = {}
    for _, local, _, metres in rows:
        per_day[local.date()] = per_day.get(local.date(), 0.0) + metres
    assert (miles, km) == (
        brute_force(list(per_day.values()), MILE),
        eddington(m / METRES_PER_KM for m in per_day.values()),
    )
