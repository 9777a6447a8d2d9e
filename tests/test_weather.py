"""Weather: the route against a hand-worked case, batching, and the archive down, slow,
rate limited and answering nonsense (Strava work unaffected, the breaker opens and
closes, nothing retried forever). Real Postgres; the fake weather served on loopback."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import responses
from psycopg.rows import dict_row

import models
from config import ConfigError, load_settings
from fake_strava import FakeStrava, make_activity
from fake_strava.polyline import encode
from fake_strava.serve import serve_app
from fake_weather import ARCHIVE_PATH, FORECAST_PATH, FakeWeather
from fake_weather.serve import ServedWeather
from services.activities import page_rows
from services.weather import (
    BREAKER_FAILURES,
    MAX_ATTEMPTS,
    Sample,
    headwind_kmh,
    limit_reset,
    pick_source,
    plan_batches,
    route_summary,
    sample_route,
)
from services.weather import TIMEOUT_S as WEATHER_TIMEOUT_S
from tests.conftest import API_URL, OAUTH_URL, cron_headers
from tests.factories import connect_rider, execute, query
from tests.served_service import Held

START = datetime(2031, 5, 20, 12, 0, tzinfo=UTC)
KM_PER_DEG_LAT = 6371.0088 * math.pi / 180


class Clock:
    def __init__(self) -> None:
        self.at = START

    def now(self) -> datetime:
        return self.at

    def time(self) -> float:
        return self.at.timestamp()

    def advance(self, **step: float) -> None:
        self.at += timedelta(**step)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def weather_held() -> Held:
    """The fake weather's answers, which a test may hold back until released."""
    return Held()


@pytest.fixture
def weather(clock: Clock, weather_held: Held) -> Iterator[tuple[FakeWeather, str]]:
    fake = FakeWeather(clock=clock.time)
    with ServedWeather(*serve_app(weather_held.around(fake.wsgi_app), name="fake-weather")) as s:
        try:
            yield fake, s.archive_url
        finally:
            weather_held.release()


@pytest.fixture
def strava(fake: FakeStrava, weather: tuple[FakeWeather, str]) -> Iterator[FakeStrava]:
    """The fake Strava on Strava's URLs (through `responses`), the fake weather on loopback."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        rsps.add_passthru(weather[1].removesuffix(ARCHIVE_PATH))  # both of its endpoints
        yield fake


def app_on(make_app, clock: Clock, url: str, **settings: Any):
    forecast = url.removesuffix(ARCHIVE_PATH) + FORECAST_PATH  # the fake serves both
    app = make_app(weather_api_url=url, weather_forecast_url=forecast, **settings)
    runtime = app.extensions["strava_sync"]
    app.extensions["strava_sync"] = replace(runtime, clock=clock.now)
    return app.test_client()


@pytest.fixture
def client(make_app, clock, weather):
    return app_on(make_app, clock, weather[1])


def call(client, **params: Any) -> dict[str, Any]:
    response = client.post("/api/cron/weather", query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def store(database: str, rider: int, summaries: list[dict[str, Any]]) -> None:
    with psycopg.connect(database, row_factory=dict_row) as conn:
        models.activities.upsert_activities(
            conn, rider_id=rider, rows=page_rows(summaries, min_race_distance_km=200), now=START
        )


def rides(athlete: int, n: int, *, first: datetime, step: timedelta, **options: Any):
    return [
        make_activity(
            athlete * 1000 + i, athlete_id=athlete, start_date=first + step * i, **options
        )
        for i in range(n)
    ]


def weather_rows(database: str) -> dict[int, dict[str, Any]]:
    rows = query(
        database,
        "select strava_id, weather_status, weather_attempts, weather_error,"
        " weather_next_attempt_at, weather_temperature_c, weather_summary, weather_route,"
        " weather_lease_token from activities",
    )
    return {r["strava_id"]: r for r in rows}


# --- the route, by hand --------------------------------------------------------------


def north(km: float, *, lat: float = 45.0, lng: float = 5.0) -> tuple[float, float]:
    return (round(lat + km / KM_PER_DEG_LAT, 5), lng)


def test_two_points_due_north_with_a_north_wind_is_a_headwind_and_a_south_wind_a_tailwind():
    start = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    track = [north(0), north(20)]  # 20 km due north in two hours: start and finish only
    samples = sample_route(track, start=start, elapsed_s=7200)
    assert [(s.km, s.at, s.bearing) for s in samples] == [
        (0.0, start, 0.0),
        (pytest.approx(20.0, abs=0.01), start + timedelta(hours=2), 0.0),
    ]
    assert headwind_kmh(20, 0, 0) == pytest.approx(20)  # from the north, riding north
    assert headwind_kmh(20, 180, 0) == pytest.approx(-20)
    assert headwind_kmh(20, 90, 0) == pytest.approx(0, abs=1e-9)

    def values(temperature, wind, direction, rain):
        return {
            "temperature_2m": temperature,
            "apparent_temperature": temperature - 2,
            "relative_humidity_2m": 80.0,
            "precipitation": rain,
            "wind_speed_10m": wind,
            "wind_direction_10m": direction,
            "weather_code": 61.0 if rain else 1.0,
        }

    head = route_summary(samples, [values(12.0, 20.0, 10.0, 1.0), values(16.0, 30.0, 350.0, 0.5)])
    assert head["wind"] == "headwind"
    # 20 cos 10° and 30 cos 10°, averaged: 24.6 km/h against the rider
    assert head["mean_headwind_kmh"] == pytest.approx(25 * math.cos(math.radians(10)), abs=0.1)
    assert (head["min_temperature_c"], head["max_temperature_c"]) == (12.0, 16.0)
    assert head["max_wind_speed_kmh"] == 30.0
    # each point stands for an hour of the two: 1.0 mm/h + 0.5 mm/h
    assert head["precipitation_mm"] == pytest.approx(1.5)
    tail = route_summary(samples, [values(12, 20, 190, 0), values(16, 30, 170, 0)])
    assert tail["wind"] == "tailwind" and tail["precipitation_mm"] == 0
    cross = route_summary(samples, [values(12, 20, 90, 0), values(16, 30, 270, 0)])
    assert cross["wind"] == "crosswind"


def test_a_600_km_brevet_over_40_hours_is_sampled_every_25_km_across_days():
    start = datetime(2030, 6, 1, 6, 0, tzinfo=UTC)
    track = [north(k) for k in range(0, 601, 5)]
    samples = sample_route(track, start=start, elapsed_s=40 * 3600)
    assert len(samples) == 25  # 0, 25, ..., 600
    assert samples[12].km == pytest.approx(300, abs=0.01)
    assert samples[12].at == start + timedelta(hours=20)
    assert samples[-1].at == start + timedelta(hours=40)  # 22:00 the next day
    # Its points span two dates: one request (of up to three days), or two of one day.
    assert len(plan_batches([samples])) == 1
    assert len(plan_batches([samples], max_days=1)) == 2


def test_limits_reset_by_their_reason():
    now = datetime(2030, 6, 1, 6, 20, 5, tzinfo=UTC)
    assert limit_reset("Minutely API request limit exceeded.", now) == now + timedelta(minutes=1)
    assert limit_reset("Hourly API request limit exceeded.", now) == datetime(
        2030, 6, 1, 7, 0, tzinfo=UTC
    )
    assert limit_reset("Daily API request limit exceeded.", now) == datetime(2030, 6, 2, tzinfo=UTC)


# --- through the endpoint ------------------------------------------------------------


def test_a_race_gets_its_route_weather_from_the_archive(client, weather, database, strava):
    fake, _ = weather

    def wind_from_north(lat, lng, at):
        return {
            "temperature_2m": 10.0 + (lat - 45.0) * 10,
            "apparent_temperature": 8.0,
            "relative_humidity_2m": 70.0,
            "precipitation": 0.0,
            "wind_speed_10m": 15.0,
            "wind_direction_10m": 0.0,
            "weather_code": 3.0,
        }

    fake.weather = wind_from_north
    rider = connect_rider(database, strava, 7001)
    began = START - timedelta(days=20)
    race = make_activity(7001, athlete_id=7001, start_date=began, distance_m=100_000,
                         workout_type=11, elapsed_time=4 * 3600)  # fmt: skip
    store(database, rider, [race])
    track = [north(k) for k in range(0, 101, 2)]
    execute(
        database,
        "update activities set polyline = %s, enrichment_status = 'done' where strava_id = 7001",
        encode(track),
    )
    answer = call(client)
    assert answer["succeeded"] == 1 and answer["done"] is True, str(answer["items"])
    assert answer["weather_requests"] == 1 and answer["weather_locations"] == 5
    assert answer["strava_requests"] == 0
    row = weather_rows(database)[7001]
    assert row["weather_status"] == "done" and row["weather_summary"] == "overcast"
    assert row["weather_temperature_c"] == 10.0
    route = row["weather_route"]
    assert [p["km"] for p in route["points"]] == pytest.approx([0, 25, 50, 75, 100], abs=0.01)
    assert route["points"][2]["at"] == "2031-04-30T14:00:00Z"  # half way, two hours in
    assert route["wind"] == "headwind" and route["mean_headwind_kmh"] == 15.0
    assert route["min_temperature_c"] == 10.0
    assert route["max_temperature_c"] == pytest.approx(10 + 100 / KM_PER_DEG_LAT * 10, abs=0.1)
    # A race whose details are not in yet waits for its full polyline.
    store(database, rider, [make_activity(7002, athlete_id=7001, start_date=began,
                                          workout_type=11)])  # fmt: skip
    assert call(client)["processed"] == 0


def test_n_activities_cost_the_expected_number_of_requests(client, weather, database, strava):
    fake, _ = weather
    rider = connect_rider(database, strava, 7101)
    # 120 short rides in two days (none overlapping another): 50 a call, one request each.
    store(database, rider, rides(7101, 120, first=START - timedelta(days=12),
                                 step=timedelta(minutes=20), distance_m=4000))  # fmt: skip
    calls = [call(client) for _ in range(3)]
    assert [c["succeeded"] for c in calls] == [50, 50, 20]
    assert calls[-1]["done"] is True
    assert fake.requests == 3 and fake.locations() == 120
    # Rides a week apart cannot share a request's dates: one request each.
    fake.reset_log()
    store(
        database, rider, rides(7102, 10, first=START - timedelta(days=90), step=timedelta(days=7))
    )  # noqa: E501
    assert call(client)["succeeded"] == 10
    assert fake.requests == 10
    assert all(r["weather_status"] == "done" for r in weather_rows(database).values())


def test_no_start_point_is_skipped_and_too_recent_waits_never_forever(
    client, weather, database, strava, clock
):
    fake, _ = weather
    rider = connect_rider(database, strava, 7201)
    manual = make_activity(72010, athlete_id=7201, start_date=START - timedelta(days=30),
                           manual=True)  # fmt: skip
    # Started two hours ago: too recent even for the forecast archive (3 hours behind).
    recent = make_activity(72011, athlete_id=7201, start_date=START - timedelta(hours=2))
    store(database, rider, [manual, recent])
    answer = call(client)
    reasons = {i["activity_id"]: (i["status"], i.get("reason")) for i in answer["items"]}
    assert reasons == {72010: ("skipped", "no_start_point"), 72011: ("skipped", "too_recent")}
    assert answer["done"] is True and fake.requests == 0
    rows = weather_rows(database)
    assert rows[72010]["weather_status"] == "skipped"
    assert rows[72011]["weather_status"] == "waiting"
    assert rows[72011]["weather_error"] == "too_recent"
    # It waits for the forecast archive's delay and a margin, then is due once, not before.
    assert rows[72011]["weather_next_attempt_at"] == START + timedelta(hours=-2 + 3 + 1)
    assert call(client)["processed"] == 0  # neither is due again now
    clock.advance(hours=1, minutes=50)
    assert call(client)["processed"] == 0
    clock.advance(minutes=10)
    done = call(client)
    assert done["succeeded"] == 1 and done["weather_requests_by_source"] == {
        "archive": 0, "forecast": 1}  # fmt: skip
    assert weather_rows(database)[72011]["weather_status"] == "done"
    # The archive answering nulls (its delay longer than ours): waits, then gives up.
    fake.clock = lambda: (START - timedelta(days=60)).timestamp()
    old = make_activity(72012, athlete_id=7201, start_date=START - timedelta(days=20))
    store(database, rider, [old])
    first = call(client)["items"][0]
    assert (first["status"], first["reason"]) == ("skipped", "not_in_archive_yet")
    clock.advance(days=11)
    last = call(client)["items"][0]
    assert (last["status"], last["reason"]) == ("skipped", "no_data")
    assert weather_rows(database)[72012]["weather_status"] == "skipped"
    clock.advance(days=30)
    assert call(client)["processed"] == 0


def test_the_archive_down_opens_the_breaker_and_strava_work_goes_on(
    client, weather, database, strava, clock
):
    fake, _ = weather
    fake.down = True
    rider = connect_rider(database, strava, 7301, activities=3)
    store(database, rider, rides(7302, 5, first=START - timedelta(days=60), step=timedelta(days=5)))  # noqa: E501
    down = call(client)
    assert down["failed"] == BREAKER_FAILURES and down["stopped_by"] == "weather_source_down"
    assert down["weather_source"]["state"] == "open" and down["done"] is False
    assert {i["reason"] for i in down["items"]} == {"weather_source_error", "weather_source_down"}
    assert fake.requests == BREAKER_FAILURES
    # While open: nothing is claimed, no request; the status says so.
    assert call(client)["processed"] == 0 and fake.requests == BREAKER_FAILURES
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert status["weather"]["source"]["state"] == "open"
    assert status["weather"]["source"]["last_error"] == "HTTP 503"
    assert status["weather"]["activities"]["backing_off"] == BREAKER_FAILURES
    # Strava work is untouched: a sync during the outage succeeds, no weather request,
    # and weather calls never draw on Strava's budget.
    synced = client.post("/api/cron/sync-strava", headers=cron_headers()).get_json()
    assert synced["succeeded"] == 1 and fake.requests == BREAKER_FAILURES
    used = query(database, "select read_usage_15min from strava_rate_budget")[0]
    assert call(client)["strava_requests"] == 0
    assert query(database, "select read_usage_15min from strava_rate_budget")[0] == used
    # After the cooldown the next request is the probe; it succeeds and closes it.
    fake.down = False
    clock.advance(minutes=5, seconds=1)
    probe = call(client)
    assert probe["weather_source"]["state"] == "closed", probe
    # the two handed back and sync's new rides (a race among them waits for its details)
    handed_back = {i["activity_id"] for i in down["items"] if i["status"] == "skipped"}
    assert handed_back <= {i["activity_id"] for i in probe["items"] if i["status"] == "succeeded"}
    assert probe["failed"] == 0 and probe["succeeded"] >= 3
    clock.advance(minutes=10)  # the failed ones' first backoff
    assert call(client)["succeeded"] == BREAKER_FAILURES
    assert call(client)["done"] is True


def test_a_source_down_for_good_stops_retrying_after_the_last_attempt(
    client, weather, database, strava, clock
):
    fake, _ = weather
    fake.down = True
    rider = connect_rider(database, strava, 7401)
    store(database, rider, rides(7401, 1, first=START - timedelta(days=40), step=timedelta(0)))
    for _ in range(12):
        call(client)
        clock.advance(hours=25)
    assert fake.requests == MAX_ATTEMPTS
    (row,) = weather_rows(database).values()
    assert row["weather_status"] == "failed" and row["weather_attempts"] == MAX_ATTEMPTS
    assert row["weather_error"] == "weather_source_error: HTTP 503"
    assert call(client)["remaining"] == 0


def test_slow_rate_limited_nonsense_and_refused_answers(
    make_app, weather, weather_held, database, strava, clock
):
    fake, url = weather
    rider = connect_rider(database, strava, 7501)
    store(
        database, rider, rides(7501, 2, first=START - timedelta(days=40), step=timedelta(days=10))
    )  # noqa: E501
    # Slow (the answer held back until the call is over): the request is cut off at the
    # call's time left (0.6 s at most), not at the source's own timeout.
    weather_held.hold()
    slow = call(app_on(make_app, clock, url, cron_time_budget_s=0.6))
    assert weather_held.waiting == 1, slow  # answered without the source's answer
    assert slow["duration_ms"] < WEATHER_TIMEOUT_S * 1000, slow
    items = {i["activity_id"]: i for i in slow["items"]}
    assert items[7501000]["status"] == "failed" and "Timeout" in items[7501000]["error"]
    assert items[7501001]["reason"] == "time_budget"  # not started: handed back
    weather_held.release()
    client = app_on(make_app, clock, url)
    clock.advance(minutes=11)
    # Rate limited (429): the breaker opens for a minute, no attempt counted.
    fake.per_minute = 1
    limited = call(client)
    assert limited["rate_limited"] is True and limited["stopped_by"] == "weather_rate_limited"
    statuses = {i["activity_id"]: i["status"] for i in limited["items"]}
    assert statuses == {7501000: "succeeded", 7501001: "skipped"}
    rows = weather_rows(database)
    assert (rows[7501000]["weather_attempts"], rows[7501001]["weather_attempts"]) == (1, 0)
    assert call(client)["processed"] == 0
    clock.advance(seconds=61)
    fake.per_minute = None
    assert call(client)["succeeded"] == 1
    # Nonsense (200, not the answer): a failure of the source and an attempt.
    store(
        database,
        rider,
        [make_activity(750200, athlete_id=7501, start_date=START - timedelta(days=9))],
    )  # noqa: E501
    fake.nonsense_next()
    nonsense = call(client)
    assert nonsense["items"][0]["reason"] == "weather_source_error"
    assert nonsense["weather_source"]["consecutive_failures"] == 1
    # Refused (400 with a reason): the activity's own failure; the source is fine.
    clock.advance(minutes=11)
    fake.fail_next(400, reason="Parameter 'start_date' is out of allowed range")
    refused = call(client)
    assert refused["items"][0]["reason"] == "weather_refused"
    assert "out of allowed range" in refused["items"][0]["error"]
    assert refused["weather_source"]["state"] == "closed"
    assert refused["weather_source"]["consecutive_failures"] == 0
    clock.advance(minutes=21)
    assert call(client)["succeeded"] == 1


def test_weather_waits_again_when_the_ride_changes_and_skips_copies(
    client, weather, database, strava
):
    rider = connect_rider(database, strava, 7601)
    ride = make_activity(7601, athlete_id=7601, start_date=START - timedelta(days=30),
                         external_id="garmin_push_1")  # fmt: skip
    phone = {**ride, "id": 7602, "external_id": "x.gpx", "distance": ride["distance"] * 0.98}
    store(database, rider, [ride, phone])
    assert call(client)["succeeded"] == 1  # the phone copy is not looked up
    assert weather_rows(database)[7602]["weather_status"] is None
    store(database, rider, [{**ride, "elapsed_time": ride["elapsed_time"] + 600}])
    assert weather_rows(database)[7601]["weather_status"] is None
    assert call(client)["succeeded"] == 1


def test_plan_batches_keeps_every_point_once():
    at = datetime(2030, 1, 1, tzinfo=UTC)
    points = [[Sample(45.0, 5.0, at + timedelta(hours=h), 0.0)] for h in range(0, 200, 2)]
    batches = plan_batches(points, max_locations=30, max_days=3)
    needs = sorted((a, p) for b in batches for a, p, _ in b.needs)
    assert needs == [(a, 0) for a in range(100)]
    assert all(len(b.needs) <= 30 and (b.last - b.first).days < 3 for b in batches)


def test_recent_days_come_from_the_forecast_archive_and_older_ones_from_the_archive(
    make_app, weather, database, strava, clock
):
    fake, url = weather
    rider = connect_rider(database, strava, 7701)
    two_days = make_activity(77010, athlete_id=7701, start_date=START - timedelta(days=2))
    a_month = make_activity(77011, athlete_id=7701, start_date=START - timedelta(days=30))
    store(database, rider, [two_days, a_month])
    answer = call(app_on(make_app, clock, url))
    assert answer["succeeded"] == 2 and answer["done"] is True, answer["items"]
    assert answer["weather_requests_by_source"] == {"archive": 1, "forecast": 1}
    by_path = sorted((entry.path, entry.status) for entry in fake.log)
    assert by_path == [(ARCHIVE_PATH, 200), (FORECAST_PATH, 200)]
    rows = weather_rows(database)
    assert rows[77010]["weather_status"] == rows[77011]["weather_status"] == "done"
    assert rows[77010]["weather_temperature_c"] is not None
    # The delays are settings: an archive said to lag 40 days sends both to the forecast.
    fake.reset_log()
    execute(database, "update activities set weather_status = null")
    later = call(app_on(make_app, clock, url, weather_archive_delay_days=40.0))
    assert later["succeeded"] == 2  # four weeks apart: a request each
    assert later["weather_requests_by_source"] == {"archive": 0, "forecast": 2}
    assert [entry.path for entry in fake.log] == [FORECAST_PATH] * 2


def test_the_source_is_picked_by_how_long_ago_the_activity_ended():
    now = START
    delays = {"archive_delay": timedelta(days=5), "forecast_delay": timedelta(hours=3)}
    assert pick_source(now - timedelta(days=30), now, **delays) == "archive"
    assert pick_source(now - timedelta(days=5), now, **delays) == "archive"
    assert pick_source(now - timedelta(days=2), now, **delays) == "forecast"
    assert pick_source(now - timedelta(hours=3), now, **delays) == "forecast"
    assert pick_source(now - timedelta(hours=2), now, **delays) is None
    points = [[Sample(45.0, 5.0, now - timedelta(days=d), 0.0)] for d in (30, 2, 29, 1)]
    batches = plan_batches(points, sources=["archive", "forecast", "archive", "forecast"])
    assert [(b.source, sorted(a for a, _, _ in b.needs)) for b in batches] == [
        ("archive", [0, 2]),
        ("forecast", [1, 3]),
    ]


def test_the_weather_delays_are_settings_with_ranges():
    settings = load_settings(
        {"WEATHER_ARCHIVE_DELAY_DAYS": "7", "WEATHER_FORECAST_DELAY_H": "0.5",
         "WEATHER_FORECAST_URL": "https://forecast.example/v1/forecast/"}
    )  # fmt: skip
    assert settings.weather_archive_delay_days == 7.0
    assert settings.weather_forecast_delay_h == 0.5
    assert settings.weather_forecast_url == "https://forecast.example/v1/forecast"
    defaults = load_settings({})
    assert defaults.weather_forecast_url == (
        "https://historical-forecast-api.open-meteo.com/v1/forecast"
    )
    for name, bad in (("WEATHER_ARCHIVE_DELAY_DAYS", "0"), ("WEATHER_FORECAST_DELAY_H", "73"),
                      ("WEATHER_FORECAST_URL", "forecast.example")):  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            load_settings({name: bad})
