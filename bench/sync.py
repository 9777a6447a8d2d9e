"""Benchmarks of the core sync, printed as figures (not asserted):

1. one 50-rider sync-strava call against a fake Strava answering in 150 ms, with riders
   processed by the pool, and one after another, side by side;
2. storing a 200-activity page with the one-statement bulk upsert against one INSERT a
   row, on the same database (over a local socket, then through a loopback proxy adding
   a network round trip);
3. recomputing a rider's Eddington number over 10,000 activities (one statement).

Run: python3 dev.py bench (this, then bench.discovery), or .venv/bin/python -m bench.sync
(the embedded Postgres under DATA_DIR, or DATABASE_URL's server).

`.venv/bin/python -m bench.sync --baseline REF [--rounds 5]` measures only the 50-rider
pooled call, this tree's and REF's (checked out in a temporary git worktree) in turns,
each in a fresh process as a cold serverless instance would be, on the same database
server, and prints each call's wall time, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

import db as dbmod
import models
from app_factory import create_app
from bench.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    CRON_SECRET,
    ROOT,
    SEALER,
    LatencyProxy,
    bench_settings,
    table,
    temporary_database,
)
from fake_strava import UNREACHED_LIMITS, FakeStrava, make_activities, serve
from scripts.seeding import connect_athlete
from services.activities import page_rows

RIDERS = 50
LATENCY_S = 0.150
# Half a round trip between the app and its database (same cloud region: ~1 ms).
NETWORK_DELAY_S = 0.0005


def connect_fleet(database_url: str, fake: FakeStrava, riders: int) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for i in range(riders):
            athlete = 9000 + i
            fake.add_athlete(athlete)
            fake.add_activities(
                athlete,
                make_activities(
                    athlete,
                    20,
                    start=now - timedelta(days=6),
                    end=now - timedelta(minutes=5),
                    seed=i,
                ),
            )
            connect_athlete(conn, fake, athlete, sealer=SEALER, name=f"Bench rider {i}")


def one_call(database_url: str, server, workers: int) -> dict:
    """A fresh fleet's first sync-strava call with `workers` riders at a time."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update strava_connections set last_synced_at = null, next_poll_at = null,"
            " last_sync_attempt_at = null,"
            " lease_token = null, lease_kind = null, lease_expires_at = null"
        )
        conn.execute("delete from activities")
    app = create_app(
        bench_settings(
            database_url,
            server.api_url,
            server.oauth_url,
            sync_workers=workers,
            cron_time_budget_s=60.0,
        ),
        environ={},
    )
    client = app.test_client()
    started = time.perf_counter()
    response = client.post(
        f"/api/cron/sync-strava?limit={RIDERS}", headers={"Authorization": f"Bearer {CRON_SECRET}"}
    )
    wall = time.perf_counter() - started
    body = response.get_json()
    app.extensions["strava_sync"].db.close()
    assert response.status_code == 200 and body["succeeded"] == RIDERS, body
    return {
        "wall_s": wall,
        "requests": body["strava_requests"],
        "added": sum(i["added"] for i in body["items"]),
    }


def bench_call() -> list[tuple[str, ...]]:
    fake = FakeStrava(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        latency_s=LATENCY_S,
        **UNREACHED_LIMITS,
    )
    rows: list[tuple[str, ...]] = [
        ("riders processed", "wall time (s)", "Strava requests", "activities added")
    ]
    with temporary_database() as url, serve(fake) as server:
        connect_fleet(url, fake, RIDERS)
        pooled = one_call(url, server, workers=8)
        serial = one_call(url, server, workers=1)
    for label, run in (("8 at a time (default pool)", pooled), ("one after another", serial)):
        rows.append((label, f"{run['wall_s']:.2f}", str(run["requests"]), str(run["added"])))
    rows.append(("speed-up", f"{serial['wall_s'] / pooled['wall_s']:.1f}x", "", ""))
    return rows


def time_page_writes(url: str, repeats: int) -> dict[str, float]:
    """Median seconds to store a 200-activity page, new and unchanged, both ways."""
    now = datetime.now(UTC)
    timings: dict[str, list[float]] = {
        k: [] for k in ("bulk_new", "row_new", "bulk_same", "row_same")
    }
    with psycopg.connect(url, row_factory=dict_row, prepare_threshold=None) as conn:
        rider = models.riders.create_rider(conn, name="bench")
        conn.commit()
        for r in range(repeats):
            base = 10**12 + int(time.time() * 1000) % 10**9 * 1000 + r * 1000
            bulk_page, row_page = (
                page_rows(
                    make_activities(
                        1,
                        200,
                        start=now - timedelta(days=400),
                        end=now,
                        seed=r * 2 + k,
                        first_id=base * 2 + k * 500,
                    ),
                    min_race_distance_km=200,
                )
                for k in range(2)
            )
            for label, page in (("bulk", bulk_page), ("row", row_page)):
                for kind in ("new", "same"):  # the same page again: a re-run or an overlap
                    started = time.perf_counter()
                    with conn.transaction():
                        if label == "bulk":
                            models.activities.upsert_activities(
                                conn, rider_id=rider, rows=page, now=datetime.now(UTC)
                            )
                        else:
                            for row in page:
                                models.activities.insert_activity_row(conn, rider_id=rider, row=row)
                    timings[f"{label}_{kind}"].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in timings.items()}


def bench_upsert(repeats: int = 15) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("200-activity page", "database link", "bulk upsert (ms)", "INSERT a row (ms)", "ratio")
    ]
    with temporary_database() as url:
        links: list[tuple[str, str, LatencyProxy | None]] = [("local unix socket", url, None)]
        proxy = LatencyProxy(url, delay_s=NETWORK_DELAY_S)
        links.append((f"TCP, {NETWORK_DELAY_S * 2000:.0f} ms round trip", proxy.url, proxy))
        for link, link_url, _ in links:
            median = time_page_writes(link_url, repeats)
            for kind, label in (("new", "new rows"), ("same", "unchanged rows")):
                bulk, row = median[f"bulk_{kind}"], median[f"row_{kind}"]
                rows.append(
                    (label, link, f"{bulk * 1000:.1f}", f"{row * 1000:.1f}", f"{row / bulk:.1f}x")
                )
        proxy.stop()
    return rows


def bench_eddington(activities: int = 10_000, repeats: int = 9) -> list[tuple[str, ...]]:
    """Recomputing a rider's Eddington numbers (one SQL statement) over a long history."""
    import random

    rng = random.Random(7)
    start = datetime(2010, 1, 1, 8, tzinfo=UTC)
    rows = [
        {
            "strava_id": i + 1,
            "name": "",
            "sport_type": "Ride" if i % 5 else "Run",
            "workout_type": None,
            "start_date": (start + timedelta(hours=9 * i)).isoformat(),
            "start_date_local": (start + timedelta(hours=9 * i)).replace(tzinfo=None).isoformat(),
            "distance_m": float(rng.randrange(5_000, 180_000)),
            "is_race": False,
        }
        for i in range(activities)
    ]
    columns = [c for c in models.activities.ACTIVITY_COLUMNS if c not in rows[0]]
    for row in rows:
        row.update(dict.fromkeys(columns))
        row.update(trainer=False, commute=False, manual=False, private=False)
    timings = []
    with temporary_database() as url, psycopg.connect(url, row_factory=dict_row) as conn:
        rider = models.riders.create_rider(conn, name="bench")
        for chunk in range(0, activities, 1000):
            models.activities.upsert_activities(
                conn, rider_id=rider, rows=rows[chunk : chunk + 1000], now=datetime.now(UTC)
            )
        conn.commit()
        conn.execute("analyze activities")
        for _ in range(repeats):
            started = time.perf_counter()
            with conn.transaction():
                numbers = models.activities.recompute_eddington(
                    conn, rider_id=rider, now=datetime.now(UTC)
                )
            timings.append(time.perf_counter() - started)
    return [
        ("activities", "Eddington (miles, km)", "recompute, median (ms)"),
        (
            f"{activities:,}",
            f"{numbers[0]}, {numbers[1]}",
            f"{statistics.median(timings) * 1000:.1f}",
        ),
    ]


# One pooled 50-rider call in a fresh process, run in a tree's checkout: only names that
# every version of bench/sync.py and bench/support.py has.
_ONE_CALL = """
import json, logging
logging.disable(logging.INFO)
from bench.support import CLIENT_ID, CLIENT_SECRET, temporary_database
from bench.sync import LATENCY_S, RIDERS, connect_fleet, one_call
from fake_strava import UNREACHED_LIMITS, FakeStrava, serve
fake = FakeStrava(
    client_id=CLIENT_ID, client_secret=CLIENT_SECRET, latency_s=LATENCY_S, **UNREACHED_LIMITS
)
with temporary_database() as url, serve(fake) as server:
    connect_fleet(url, fake, RIDERS)
    print(json.dumps(one_call(url, server, workers=8)))
"""


def compare(ref: str, rounds: int) -> None:
    """The pooled 50-rider call, this tree's and `ref`'s, in turns."""
    from bench.scale import checkout  # the worktree helper

    data_dir = ROOT / (os.environ.get("DATA_DIR") or ".data")
    server = os.environ.get("DATABASE_URL") or dbmod.embedded_database_url(data_dir)
    env = {**os.environ, "DATABASE_URL": server}
    env.pop("PYTHONPATH", None)
    with checkout(ref) as (commit, path):
        trees = [("this", ROOT), (f"baseline {commit}", path)]
        walls: dict[str, list[float]] = {label: [] for label, _ in trees}
        rows: list[tuple[str, ...]] = [("round", *(label for label, _ in trees), "ratio")]
        for index in range(rounds):
            order = trees if index % 2 == 0 else list(reversed(trees))
            for label, tree in order:
                done = subprocess.run(
                    [sys.executable, "-c", _ONE_CALL],
                    cwd=tree,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                walls[label].append(result["wall_s"])
            this, base = (walls[label][-1] for label, _ in trees)
            rows.append((str(index + 1), f"{this:.2f}", f"{base:.2f}", f"{this / base:.2f}x"))
        this, base = (statistics.median(walls[label]) for label, _ in trees)
        rows.append(("median", f"{this:.2f}", f"{base:.2f}", f"{this / base:.2f}x"))
    print(
        f"One pooled sync-strava call over {RIDERS} riders (8 at a time), fake Strava"
        f" answering in {LATENCY_S * 1000:.0f} ms, a fresh process each, wall time (s):"
    )
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.sync")
    parser.add_argument("--baseline", metavar="REF", help="only the 50-rider call, against REF")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the figures, not the service's log lines
    if args.baseline:
        compare(args.baseline, args.rounds)
        return
    print(
        f"One sync-strava call over {RIDERS} riders, fake Strava answering in "
        f"{LATENCY_S * 1000:.0f} ms over loopback HTTP:"
    )
    print(table(bench_call()))
    print(
        "\nStoring one page (median of 15, same database, one transaction each;"
        " the second link goes through a loopback proxy adding the round trip):"
    )
    print(table(bench_upsert()))
    print("\nThe Eddington number after a sync (one statement, in the sync's transaction):")
    print(table(bench_eddington()))


if __name__ == "__main__":
    main()
