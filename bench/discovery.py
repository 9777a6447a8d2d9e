"""Benchmarks of the two-phase backfill, printed as figures (not asserted):

1. a fleet of 24 riders (50 to 4,000 activities each; a quarter of them granted only
   activity:read, with private activities Strava drops from their pages) discovered,
   then enriched, through the real endpoints until `done`: Strava requests per 1,000
   activities discovered (the floor is 5: 200 a page) and per race enriched (floor 1);
2. one discover call with Strava answering in 150 ms: pages per second against the
   time budget, for one rider alone and for the default five riders side by side.

The fake Strava is served over loopback HTTP; the database is a fresh one on the
embedded Postgres under DATA_DIR (or DATABASE_URL's server), dropped at the end.

Run: python3 dev.py bench (after bench.sync), or .venv/bin/python -m bench.discovery
(no options)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from flask import Flask
from psycopg.rows import dict_row

from app_factory import create_app
from bench.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    CRON_SECRET,
    SEALER,
    bench_settings,
    table,
    temporary_database,
)
from fake_strava import UNREACHED_LIMITS, FakeStrava, ServedFake, make_activities, serve
from scripts.seeding import connect_athlete

LIST = "/athlete/activities"
DETAIL = "/api/v3/activities/"
# History sizes of the fleet: small and large, on and off page boundaries.
FLEET = [
    50, 75, 120, 150, 199, 200, 201, 350, 400, 640, 800, 999,
    1000, 1050, 1200, 1500, 1800, 2000, 2222, 2500, 3000, 3400, 3700, 4000,
]  # fmt: skip
READ_ONLY_EVERY = 4  # every fourth rider granted activity:read only
PRIVATE_FRACTION = 0.15  # of those riders' activities, "Only Me"
LATENCY_S = 0.150
BUDGET_S = 8.0  # the contract's default CRON_TIME_BUDGET_S
LONG_HISTORY = 10_000  # enough pages that one call cannot finish a rider at 150 ms


def new_fake(latency_s: float = 0.0) -> FakeStrava:
    """A fake Strava with limits far above what the benchmark uses."""
    return FakeStrava(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        latency_s=latency_s,
        **UNREACHED_LIMITS,
    )


def connect(
    database_url: str, fake: FakeStrava, athlete: int, size: int, *, read_all: bool = True
) -> None:
    """A newly connected rider (history not yet discovered) with `size` activities."""
    now = datetime.now(UTC)
    fake.add_athlete(athlete)
    fake.add_activities(
        athlete,
        make_activities(
            athlete,
            size,
            start=now - timedelta(days=12 * 365),
            end=now - timedelta(hours=2),
            seed=athlete,
            private_fraction=0.0 if read_all else PRIVATE_FRACTION,
        ),
    )
    scope = "read,activity:read_all" if read_all else "read,activity:read"
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        connect_athlete(
            conn, fake, athlete, sealer=SEALER, name=f"Bench rider {athlete}", scope=scope
        )


def build_app(database_url: str, server: ServedFake, **overrides: Any) -> Flask:
    return create_app(
        bench_settings(database_url, server.api_url, server.oauth_url, **overrides), environ={}
    )


def call(app: Flask, endpoint: str, **params: Any) -> dict[str, Any]:
    response = app.test_client().post(
        f"/api/cron/{endpoint}",
        query_string=params,
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    return body  # type: ignore[no-any-return]


def until_done(app: Flask, endpoint: str, max_calls: int = 1000) -> list[dict[str, Any]]:
    """Call an endpoint the way the workflow does: until `done`."""
    bodies = []
    for _ in range(max_calls):
        bodies.append(call(app, endpoint))
        if bodies[-1]["done"]:
            return bodies
    raise RuntimeError(f"{endpoint} not done after {max_calls} calls")


def scalar(database_url: str, sql: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def least_pages(size: int) -> int:
    """The fewest listings that can end a history of `size` at 200 a page: the last page
    must come back short (or empty) to show it is the last."""
    return size // 200 + 1


def bench_fleet() -> list[tuple[str, ...]]:
    fake = new_fake()
    with temporary_database() as url, serve(fake) as server:
        for i, size in enumerate(FLEET):
            connect(url, fake, 70_000 + i, size, read_all=(i + 1) % READ_ONLY_EVERY != 0)
        app = build_app(url, server)
        started = time.perf_counter()
        discovered = until_done(app, "discover")
        discover_s = time.perf_counter() - started
        lists = fake.count(path_contains=LIST)
        read_only = {70_000 + i for i in range(len(FLEET)) if (i + 1) % READ_ONLY_EVERY == 0}
        read_only_lists = sum(
            1 for r in fake.requests if r.path.endswith(LIST) and r.athlete_id in read_only
        )
        read_only_activities = scalar(
            url,
            "select count(*) from activities a join strava_connections c using (rider_id)"
            " where c.scope not like '%read_all%'",
        )
        activities = scalar(url, "select count(*) from activities")
        visible = sum(
            1 for i in range(len(FLEET)) for a in fake.activities_of(70_000 + i)
            if (i + 1) % READ_ONLY_EVERY != 0 or not a["private"]
        )  # fmt: skip
        complete = scalar(
            url, "select count(*) from strava_connections where history_complete_at is not null"
        )
        races = scalar(url, "select count(*) from activities where is_race")
        started = time.perf_counter()
        enriched = until_done(app, "enrich")
        enrich_s = time.perf_counter() - started
        details = fake.count(path_contains=DETAIL)
        done = scalar(url, "select count(*) from activities where enrichment_status = 'done'")
        refreshes = fake.count(path_contains="/oauth/token")
        app.extensions["strava_sync"].db.close()
    assert activities == visible and complete == len(FLEET) and done == races
    floor_lists = sum(least_pages(size) for size in FLEET)
    full_lists, full_activities = lists - read_only_lists, activities - read_only_activities
    full_floor = sum(
        least_pages(size) for i, size in enumerate(FLEET) if (i + 1) % READ_ONLY_EVERY != 0
    )
    return [
        ("phase", "calls", "wall (s)", "Strava requests", "work done", "requests per unit",
         "floor"),
        ("discover", str(len(discovered)), f"{discover_s:.1f}", str(lists),
         f"{activities} activities", f"{lists / activities * 1000:.2f} per 1,000",
         f"5 ({floor_lists / activities * 1000:.2f} for this fleet)"),
        ("  of which read_all riders", "", "", str(full_lists), f"{full_activities} activities",
         f"{full_lists / full_activities * 1000:.2f} per 1,000",
         f"{full_floor / full_activities * 1000:.2f} for them"),
        ("  of which activity:read riders", "", "", str(read_only_lists),
         f"{read_only_activities} activities",
         f"{read_only_lists / read_only_activities * 1000:.2f} per 1,000", ""),
        ("enrich", str(len(enriched)), f"{enrich_s:.1f}", str(details), f"{done} races",
         f"{details / done:.2f} per race", "1"),
        ("token refreshes", "", "", str(refreshes), "", "", "0"),
    ]  # fmt: skip


@dataclass
class TimedCall:
    riders: int
    pages: int
    duration_s: float
    strava_requests: int


def timed_discover(riders: int) -> TimedCall:
    """One discover call over `riders` long histories, Strava answering in 150 ms."""
    fake = new_fake(latency_s=LATENCY_S)
    with temporary_database() as url, serve(fake) as server:
        for i in range(riders):
            connect(url, fake, 80_000 + i, LONG_HISTORY)
        app = build_app(url, server, cron_time_budget_s=BUDGET_S)
        body = call(app, "discover", limit=riders)
        app.extensions["strava_sync"].db.close()
    return TimedCall(
        riders=riders,
        pages=sum(item["pages"] for item in body["items"]),
        duration_s=body["duration_ms"] / 1000,
        strava_requests=body["strava_requests"],
    )


def bench_latency() -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("riders in the call", "pages", "call (s)", "budget used",
             "pages per second", "ideal at 150 ms", "wasted requests")]  # fmt: skip
    for riders in (1, 5):
        run = timed_discover(riders)
        rows.append(
            (
                str(run.riders),
                str(run.pages),
                f"{run.duration_s:.2f}",
                f"{run.duration_s / BUDGET_S:.0%} of {BUDGET_S:.0f} s",
                f"{run.pages / run.duration_s:.1f}",
                f"{run.riders / LATENCY_S:.1f}",
                str(run.strava_requests - run.pages),
            )
        )
    return rows


def main() -> None:
    logging.disable(logging.WARNING)  # the figures, not the service's log lines
    started = time.perf_counter()
    print(
        f"A fleet of {len(FLEET)} riders ({sum(FLEET):,} activities on Strava, every"
        f" {READ_ONLY_EVERY}th rider without activity:read_all and {PRIVATE_FRACTION:.0%}"
        " private), discover then enrich called until done (default limits, loopback HTTP):"
    )
    print(table(bench_fleet()))
    print(
        f"\nOne discover call, Strava answering in {LATENCY_S * 1000:.0f} ms, riders with"
        f" {LONG_HISTORY:,} activities, CRON_TIME_BUDGET_S={BUDGET_S:.0f}:"
    )
    print(table(bench_latency()))
    print(f"\n(benchmark ran in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
