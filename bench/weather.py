"""The weather phase's figures: weather requests per 1,000 activities and per race, and
the time to fill a 10,000-activity history, against the fake weather served on loopback
(answering after WEATHER_LATENCY_S, as Open-Meteo's archive might), real Postgres.

    python3 -m bench.weather        (in the venv)
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

import models
from app_factory import create_app
from bench.support import CRON_SECRET, TOKEN_KEY, table, temporary_database
from fake_strava import make_activity
from fake_weather import ARCHIVE_PATH, FORECAST_PATH, FakeWeather, serve
from services.activities import page_rows

WEATHER_LATENCY_S = 0.2
NOW = datetime.now(UTC)
SETTINGS: dict[str, Any] = {
    "cron_secret": CRON_SECRET,
    "cron_time_budget_s": 8.0,
    "token_encryption_key": TOKEN_KEY,
}


def riders(database: str, n: int) -> list[int]:
    with psycopg.connect(database) as conn:
        return [
            conn.execute(
                "insert into riders (name) values (%s) returning id", (f"r{i}",)
            ).fetchone()[0]  # type: ignore[index]  # noqa: E501
            for i in range(n)
        ]


def store(database: str, rider: int, summaries: list[dict[str, Any]]) -> None:
    rows = page_rows(summaries, min_race_distance_km=10_000)
    with psycopg.connect(database, row_factory=dict_row) as conn:
        for start in range(0, len(rows), 200):
            models.activities.upsert_activities(
                conn, rider_id=rider, rows=rows[start : start + 200], now=NOW
            )


def run(database: str, url: str, *, limit: int = 50) -> tuple[int, float, list[dict[str, Any]]]:
    """Call the weather endpoint until done; (calls, seconds, answers)."""
    forecast = url.removesuffix(ARCHIVE_PATH) + FORECAST_PATH  # the fake serves both
    app = create_app(
        {"database_url": database, "weather_api_url": url, "weather_forecast_url": forecast,
         **SETTINGS},
        environ={},
    )  # fmt: skip
    client = app.test_client()
    answers = []
    started = time.perf_counter()
    try:
        while True:
            response = client.post(
                "/api/cron/weather",
                query_string={"limit": limit},
                headers={"Authorization": f"Bearer {CRON_SECRET}"},
            )
            answer = response.get_json()
            answers.append(answer)
            if answer["done"] or answer["processed"] == 0 or len(answers) > 2000:
                break
    finally:
        app.extensions["strava_sync"].db.close()
    return len(answers), time.perf_counter() - started, answers


def club(database: str, url: str, fake: FakeWeather) -> tuple[str, ...]:
    """50 riders riding three or four times a week for twelve weeks."""
    rng = random.Random(1)
    ids = riders(database, 50)
    total = 0
    for index, rider in enumerate(ids):
        summaries: list[dict[str, Any]] = []
        day = NOW - timedelta(days=90)
        while day < NOW - timedelta(days=7):
            day += timedelta(days=rng.choice((1, 2, 2, 3)), hours=rng.uniform(-2, 2))
            strava_id = 10_000_000 + index * 1000 + len(summaries)
            summaries.append(make_activity(strava_id, athlete_id=rider, start_date=day,
                                           distance_m=rng.uniform(20_000, 120_000)))  # fmt: skip
        store(database, rider, summaries)
        total += len(summaries)
    fake.reset_log()
    calls, seconds, _ = run(database, url)
    return (
        f"club: 50 riders, {total:,} activities over 12 weeks",
        f"{calls}",
        f"{fake.requests}",
        f"{fake.requests / total * 1000:.0f} per 1,000",
        f"{fake.locations() / total:.2f}",
        f"{seconds:.1f} s",
    )


def races(database: str, url: str, fake: FakeWeather) -> tuple[str, ...]:
    """20 brevets of 200 to 600 km, details in (the full polyline)."""
    (rider,) = riders(database, 1)
    rng = random.Random(2)
    summaries = [
        make_activity(20_000_000 + i, athlete_id=rider,
                      start_date=NOW - timedelta(days=30 + 9 * i),
                      distance_m=rng.choice((200, 300, 400, 600)) * 1000, workout_type=11)
        for i in range(20)
    ]  # fmt: skip
    store(database, rider, summaries)
    with psycopg.connect(database) as conn:
        conn.execute(
            "update activities set polyline = summary_polyline, enrichment_status = 'done'"
            " where rider_id = %s",
            (rider,),
        )
    fake.reset_log()
    calls, seconds, _ = run(database, url)
    with psycopg.connect(database) as conn:
        points = conn.execute(
            "select avg(jsonb_array_length(weather_route -> 'points')) from activities"
            " where rider_id = %s",
            (rider,),
        ).fetchone()[0]  # type: ignore[index]
    return (
        "races: 20 brevets of 200-600 km (a week apart)",
        f"{calls}",
        f"{fake.requests}",
        f"{fake.requests / 20:.2f} per race",
        f"{float(points):.1f}",
        f"{seconds:.1f} s",
    )


def history(database: str, url: str, fake: FakeWeather) -> tuple[tuple[str, ...], str]:
    """One rider's 10,000 activities over nine years."""
    (rider,) = riders(database, 1)
    span = timedelta(days=9 * 365)
    first = NOW - timedelta(days=7) - span
    summaries = [
        make_activity(30_000_000 + i, athlete_id=rider, start_date=first + span * i / 10_000,
                      distance_m=30_000)
        for i in range(10_000)
    ]  # fmt: skip
    store(database, rider, summaries)
    fake.reset_log()
    calls, seconds, answers = run(database, url)
    done = sum(a["succeeded"] for a in answers)
    longest = max(a["duration_ms"] for a in answers)
    schedule_runs = -(-calls // 20)  # the workflow: 20 calls a run, hourly
    row = (
        f"history: one rider, {done:,} activities over 9 years",
        f"{calls}",
        f"{fake.requests}",
        f"{fake.requests / done * 1000:.0f} per 1,000",
        f"{fake.locations() / done:.2f}",
        f"{seconds:.1f} s",
    )
    note = (
        f"10,000-activity history: {calls} calls of 50, {seconds:.0f} s of calls"
        f" (slowest call {longest / 1000:.2f} s), {schedule_runs} hourly runs of 20 calls"
        f" on the schedule"
    )
    return row, note


def main() -> None:
    fake = FakeWeather(slow_s=WEATHER_LATENCY_S)
    results: list[tuple[str, ...]] = [
        ("case", "calls", "weather requests", "requests", "locations / activity", "wall time")
    ]
    with serve(fake) as served, temporary_database() as database:
        results.append(club(database, served.archive_url, fake))
        results.append(races(database, served.archive_url, fake))
        row, note = history(database, served.archive_url, fake)
        results.append(row)
    print(f"Weather phase, fake archive answering in {WEATHER_LATENCY_S * 1000:.0f} ms")
    print(table(results))
    print(note)
    print(json.dumps({"rows": results[1:], "history": note}))


if __name__ == "__main__":
    main()
