"""Weather, degrading gracefully: the weather each activity was ridden in, from Open-Meteo's
historical weather API (keyless; WEATHER_API_URL), in a phase of its own.

- Every activity with a start point gets the weather at its start (the hour nearest the
  start time). A race gets the weather along its route: the detailed polyline sampled
  every 25 km (at least start and finish), each point at the time the rider passed it
  (interpolated from the elapsed time), summarized as min / max temperature, the
  strongest wind, the average head- or tailwind against the direction of travel and the
  total precipitation.
- One request carries several locations (comma lists of latitude and longitude over one
  date range): the points of the activities claimed are packed into as few requests as
  their dates allow (at most MAX_LOCATIONS a request, MAX_RANGE_DAYS of dates).
- Its own cron endpoint, lease, HTTP session and timeouts: weather never takes Strava's
  rate budget and never slows a sync or an enrichment (which never call it).
- A request that fails (no answer, a timeout, 5xx, nonsense) counts an attempt for the
  activities in it (backoff 10 min doubling, `failed` for good after MAX_ATTEMPTS) and a
  failure of the source; BREAKER_FAILURES failures in a row open the circuit breaker
  (one row in the database, weather_source) for 5 min, doubling up to an hour, while
  which calls take nothing; the first request after it is the probe. A 429 opens it
  until Open-Meteo's limit resets, costing the activities nothing. A 400 is the
  activities' own failure (counted, not the source's).
- Recent days come from Open-Meteo's historical forecast API (WEATHER_FORECAST_URL, its
  archive of past forecasts, hours behind) until the archive (about 5 days behind,
  WEATHER_ARCHIVE_DELAY_DAYS) has them; the same parameters and answers.
- Nothing is retried forever: an activity without a start point is `skipped`
  (`no_start_point`); one too recent even for the forecast archive `waits`
  (`too_recent`) until it is in; one still without values a month after is `skipped`
  (`no_data`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import requests

import models
from services import places
from services.budget import describe as describe_budget
from services.calls import FAILED, SKIPPED, SUCCEEDED, Outcome, Runtime, outcome_counts, recorded
from services.clock import iso
from services.idle import Idle, Waiting, idle_reason, took_nothing

log = logging.getLogger(__name__)

HOURLY = (
    "temperature_2m",
    "apparent_temperature",
    "relative_humidity_2m",
    "precipitation",
    "wind_speed_10m",
    "wind_direction_10m",
    "weather_code",
)
SAMPLE_EVERY_KM = 25.0
MAX_LOCATIONS = 50
MAX_RANGE_DAYS = 3
ARCHIVE, FORECAST = "archive", "forecast"  # the two sources, by how recent the activity is
FORECAST_MARGIN = timedelta(hours=1)  # a too-recent activity is tried this long after it is in
NO_DATA_AFTER = timedelta(days=30)  # still no values this long after: skipped
WAIT_FOR_DATA = timedelta(days=1)
TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(minutes=10)
BACKOFF_MAX = timedelta(hours=24)
BREAKER_FAILURES = 3
BREAKER_BASE = timedelta(minutes=5)
BREAKER_MAX = timedelta(hours=1)
CROSSWIND_KMH = 2.0  # an average head/tail component smaller than this is "crosswind"

WMO_CODES = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "depositing rime fog",
    51: "light drizzle",
    53: "moderate drizzle",
    55: "dense drizzle",
    56: "light freezing drizzle",
    57: "dense freezing drizzle",
    61: "slight rain",
    63: "moderate rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "slight snow fall",
    73: "moderate snow fall",
    75: "heavy snow fall",
    77: "snow grains",
    80: "slight rain showers",
    81: "moderate rain showers",
    82: "violent rain showers",
    85: "slight snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with slight hail",
    99: "thunderstorm with heavy hail",
}


# --- pure: the route, the wind, the batches ------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A point of an activity at the time the rider passed it."""

    lat: float
    lng: float
    at: datetime
    km: float
    bearing: float | None = None  # direction of travel, degrees from north


def bearing_deg(a: places.Point, b: places.Point) -> float:
    """Initial great-circle bearing from a to b, degrees clockwise from north."""
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlng = math.radians(b[1] - a[1])
    x = math.sin(dlng) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlng)
    return math.degrees(math.atan2(x, y)) % 360


def headwind_kmh(speed_kmh: float, wind_from_deg: float, travel_deg: float) -> float:
    """The wind's component against the direction of travel: positive a headwind, negative
    a tailwind (wind direction is where it blows *from*, as Open-Meteo gives it)."""
    return speed_kmh * math.cos(math.radians(wind_from_deg - travel_deg))


def sample_route(
    track: list[places.Point],
    *,
    start: datetime,
    elapsed_s: float,
    every_km: float = SAMPLE_EVERY_KM,
) -> list[Sample]:
    """The track sampled every `every_km` along its length (start and finish always), each
    point at the time interpolated from the elapsed time, with the direction of travel."""
    if not track:
        return []
    cumulative = [0.0]
    for a, b in zip(track, track[1:], strict=False):
        cumulative.append(cumulative[-1] + places.haversine_km(a, b))
    total = cumulative[-1]
    if total <= 0 or len(track) < 2:
        return [Sample(track[0][0], track[0][1], start, 0.0)]
    marks = [k * every_km for k in range(int(total // every_km) + 1)]
    if total - marks[-1] > 1e-6:
        marks.append(total)
    points: list[tuple[float, float, float]] = []
    segment = 0
    for mark in marks:
        while segment < len(track) - 2 and cumulative[segment + 1] < mark:
            segment += 1
        a, b = track[segment], track[segment + 1]
        length = cumulative[segment + 1] - cumulative[segment]
        share = 0.0 if length <= 0 else min(1.0, (mark - cumulative[segment]) / length)
        points.append((a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share, mark))
    samples = []
    for i, (lat, lng, km) in enumerate(points):
        j, k = (i, i + 1) if i + 1 < len(points) else (i - 1, i)
        travel = bearing_deg(points[j][:2], points[k][:2])
        at = start + timedelta(seconds=round(elapsed_s * km / total))
        samples.append(Sample(round(lat, 5), round(lng, 5), at, round(km, 3), round(travel, 1)))
    return samples


def activity_points(lease: models.weather.WeatherLease) -> list[Sample]:
    """What to look up for an activity: a race's route samples, else its start."""
    start = (lease.start_lat, lease.start_lng)
    if start[0] is None or start[1] is None:
        point = places.start_point(
            {"summary_polyline": lease.summary_polyline, "polyline": lease.polyline}
        )
        if point is None:
            return []
        start = point
    if lease.is_race:
        track = places.decode_polyline(lease.polyline or lease.summary_polyline or "")
        if len(track) >= 2:
            return sample_route(track, start=lease.start_date, elapsed_s=lease.elapsed_time_s or 0)
    assert start[0] is not None and start[1] is not None
    return [Sample(float(start[0]), float(start[1]), lease.start_date, 0.0)]


def pick_source(
    end: datetime, now: datetime, *, archive_delay: timedelta, forecast_delay: timedelta
) -> str | None:
    """Where an activity that ended at `end` is looked up at `now`: the archive once its
    delay has passed, else the forecast archive once its (shorter) delay has, else
    nowhere yet (None: too recent)."""
    if end <= now - archive_delay:
        return ARCHIVE
    if end <= now - forecast_delay:
        return FORECAST
    return None


@dataclass
class Batch:
    """One request: several locations over one date range, to one source."""

    first: datetime  # midnight UTC of the first date
    last: datetime  # midnight UTC of the last date
    needs: list[tuple[int, int, Sample]] = field(default_factory=list)  # (activity, point)
    source: str = ARCHIVE

    def params(self) -> dict[str, str]:
        return {
            "latitude": ",".join(f"{s.lat:.4f}" for _, _, s in self.needs),
            "longitude": ",".join(f"{s.lng:.4f}" for _, _, s in self.needs),
            "start_date": self.first.date().isoformat(),
            "end_date": self.last.date().isoformat(),
            "hourly": ",".join(HOURLY),
            "timezone": "UTC",
        }


def _day(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def plan_batches(
    points: list[list[Sample]],
    *,
    max_locations: int = MAX_LOCATIONS,
    max_days: int = MAX_RANGE_DAYS,
    sources: list[str] | None = None,
) -> list[Batch]:
    """Pack every point of every activity into as few requests as dates allow: points
    sorted by time, a request taking the next while it spans at most `max_days` dates and
    holds at most `max_locations` locations. With `sources` (each activity's), a request
    goes to one source only: the archive's requests, then the forecast archive's."""
    if sources is not None:
        batches: list[Batch] = []
        for source in (ARCHIVE, FORECAST):
            chosen = [i for i, s in enumerate(sources) if s == source]
            for batch in plan_batches(
                [points[i] for i in chosen], max_locations=max_locations, max_days=max_days
            ):
                batch.source = source
                batch.needs = [(chosen[a], p, sample) for a, p, sample in batch.needs]
                batches.append(batch)
        return batches
    needs = sorted(
        ((a, p, s) for a, samples in enumerate(points) for p, s in enumerate(samples)),
        key=lambda need: need[2].at,
    )
    batches = []
    for need in needs:
        first = _day(need[2].at)
        last = _day(need[2].at + timedelta(hours=1))  # the hour after, for the nearest
        current = batches[-1] if batches else None
        if (
            current is None
            or len(current.needs) >= max_locations
            or (max(last, current.last) - current.first).days + 1 > max_days
        ):
            current = Batch(first=first, last=last)
            batches.append(current)
        current.last = max(current.last, last)
        current.needs.append(need)
    return batches


class Nonsense(Exception):
    """An answer that is not Open-Meteo's: counted as a failure of the source."""


def parse_answer(body: Any, count: int) -> list[dict[str, Any]]:
    """The hourly series of each location of a multi-location answer (a list), or of a
    one-location answer (an object); Nonsense otherwise."""
    answers = body if isinstance(body, list) else [body]
    if len(answers) != count:
        raise Nonsense(f"{len(answers)} locations answered for {count}")
    series = []
    for answer in answers:
        hourly = answer.get("hourly") if isinstance(answer, dict) else None
        if not isinstance(hourly, dict) or not isinstance(hourly.get("time"), list):
            raise Nonsense("an answer without hourly.time")
        times = hourly["time"]
        for variable in HOURLY:
            values = hourly.get(variable)
            if not isinstance(values, list) or len(values) != len(times):
                raise Nonsense(f"hourly.{variable} missing or of another length")
            if any(v is not None and not isinstance(v, int | float) for v in values):
                raise Nonsense(f"hourly.{variable} holds something other than numbers")
        series.append(hourly)
    return series


def value_at(hourly: dict[str, Any], at: datetime) -> dict[str, float | None] | None:
    """The hourly values of the hour nearest `at` (None if the series does not cover it)."""
    times = hourly["time"]
    if not times:
        return None
    try:
        first = datetime.fromisoformat(times[0]).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise Nonsense("hourly.time is not ISO 8601") from None
    index = round((at - first).total_seconds() / 3600)
    if not 0 <= index < len(times):
        return None
    return {variable: hourly[variable][index] for variable in HOURLY}


def describe_code(code: float | None) -> str | None:
    return None if code is None else WMO_CODES.get(int(code), f"weather code {int(code)}")


def start_columns(values: dict[str, float | None]) -> dict[str, Any]:
    """The start weather as the activity's columns."""
    code = values["weather_code"]
    return {
        "weather_temperature_c": values["temperature_2m"],
        "weather_feels_like_c": values["apparent_temperature"],
        "weather_humidity_pct": values["relative_humidity_2m"],
        "weather_precipitation_mm": values["precipitation"],
        "weather_wind_speed_kmh": values["wind_speed_10m"],
        "weather_wind_direction_deg": values["wind_direction_10m"],
        "weather_code": None if code is None else int(code),
        "weather_summary": describe_code(code),
    }


def route_summary(samples: list[Sample], values: list[dict[str, float | None]]) -> dict[str, Any]:
    """A race's weather along its route (the JSON stored in weather_route)."""
    temperatures = [v["temperature_2m"] for v in values if v["temperature_2m"] is not None]
    winds = [v["wind_speed_10m"] for v in values if v["wind_speed_10m"] is not None]
    components = []
    points = []
    spans: list[float] = []
    for i, (sample, value) in enumerate(zip(samples, values, strict=True)):
        speed, direction = value["wind_speed_10m"], value["wind_direction_10m"]
        component = None
        if speed is not None and direction is not None and sample.bearing is not None:
            component = round(headwind_kmh(speed, direction, sample.bearing), 1)
            components.append(component)
        before = samples[i - 1].at if i > 0 else sample.at
        after = samples[i + 1].at if i + 1 < len(samples) else sample.at
        span_h = (after - before).total_seconds() / 7200
        spans.append(span_h)
        points.append(
            {
                "km": sample.km,
                "at": iso(sample.at),
                "lat": sample.lat,
                "lng": sample.lng,
                "temperature_c": value["temperature_2m"],
                "wind_speed_kmh": speed,
                "wind_direction_deg": direction,
                "headwind_kmh": component,
                "precipitation_mm": value["precipitation"],
                "weather": describe_code(value["weather_code"]),
                "hours": round(span_h, 3),
            }
        )
    mean = sum(components) / len(components) if components else None
    wind = None
    if mean is not None:
        wind = (
            "headwind"
            if mean >= CROSSWIND_KMH
            else "tailwind"
            if mean <= -CROSSWIND_KMH
            else "crosswind"
        )  # noqa: E501
    precipitation = 0.0
    if len(samples) > 1:
        for sample_values, span in zip(values, spans, strict=True):
            precipitation += (sample_values["precipitation"] or 0.0) * span
    return {
        "sample_every_km": SAMPLE_EVERY_KM,
        "distance_km": samples[-1].km if samples else 0.0,
        "min_temperature_c": min(temperatures, default=None),
        "max_temperature_c": max(temperatures, default=None),
        "max_wind_speed_kmh": max(winds, default=None),
        "mean_headwind_kmh": None if mean is None else round(mean, 1),
        "wind": wind,
        "precipitation_mm": round(precipitation, 2),
        "points": points,
    }


def backoff(attempts_before: int) -> timedelta:
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(max(attempts_before, 0), 20)))


# --- the source: one session, its own timeouts, the breaker in the database -----------


class SourceFailed(Exception):
    """No usable answer (no connection, a timeout, 5xx, nonsense): the source's fault."""


class SourceLimited(Exception):
    """429: Open-Meteo's own limit (per minute, hour or day); open until it resets."""

    def __init__(self, reason: str, until: datetime) -> None:
        super().__init__(reason)
        self.reason = reason
        self.until = until


class Refused(Exception):
    """400 with Open-Meteo's error body: the request's own fault (its activities')."""


def limit_reset(reason: str, now: datetime) -> datetime:
    """When a 429's limit resets, from its reason ("Minutely / Hourly / Daily ...")."""
    text = reason.lower()
    if "daily" in text:
        return _day(now) + timedelta(days=1)
    if "hourly" in text:
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return now + timedelta(minutes=1)


def breaker_state(source: dict[str, Any], now: datetime) -> str:
    """closed, open (calls take nothing) or half_open (the next request is the probe)."""
    if source["open_until"] is not None and source["open_until"] > now:
        return "open"
    if source["consecutive_failures"] >= BREAKER_FAILURES:
        return "half_open"
    return "closed"


def describe_source(source: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The weather source as the status and a weather call's answer show it."""
    today = source["day_start"] >= _day(now)
    return {
        "state": breaker_state(source, now),
        "open_until": iso(source["open_until"])
        if source["open_until"] and source["open_until"] > now
        else None,
        "consecutive_failures": source["consecutive_failures"],
        "last_error": source["last_error"],
        "last_failure_at": iso(source["last_failure_at"]) if source["last_failure_at"] else None,
        "last_success_at": iso(source["last_success_at"]) if source["last_success_at"] else None,
        "requests_today": source["requests_today"] if today else 0,
        "locations_today": source["locations_today"] if today else 0,
    }


def weather_status(conn: models.Conn, now: datetime) -> dict[str, Any]:
    """The fleet status's `weather`: the source (breaker, requests today) and activities
    by weather state."""
    return {
        "source": describe_source(models.weather.read_weather_source(conn), now),
        "activities": models.weather.weather_counts(conn, max_attempts=MAX_ATTEMPTS),
    }


class Breaker:
    """The weather source's row: request counts and the circuit breaker."""

    def __init__(self, runtime: Runtime) -> None:
        self.db = runtime.db
        self.clock = runtime.clock

    def read(self) -> dict[str, Any]:
        with self.db.connection() as conn:
            return models.weather.read_weather_source(conn)

    def _update(self, change: Any) -> dict[str, Any]:
        now = self.clock()
        with self.db.connection() as conn:
            source = models.weather.read_weather_source(conn, for_update=True)
            if source["day_start"] < _day(now):
                source.update(day_start=_day(now), requests_today=0, locations_today=0)
            change(source, now)
            models.weather.save_weather_source(conn, source)
            return source

    def requested(self, locations: int) -> None:
        def change(source: dict[str, Any], now: datetime) -> None:
            source["requests_today"] += 1
            source["locations_today"] += locations
            source["requests_total"] += 1

        self._update(change)

    def succeeded(self) -> None:
        def change(source: dict[str, Any], now: datetime) -> None:
            source.update(consecutive_failures=0, opened_count=0, open_until=None)
            source["last_success_at"] = now

        self._update(change)

    def failed(self, reason: str) -> dict[str, Any]:
        def change(source: dict[str, Any], now: datetime) -> None:
            source["consecutive_failures"] += 1
            source["last_error"] = reason[:200]
            source["last_failure_at"] = now
            if source["consecutive_failures"] >= BREAKER_FAILURES:
                source["opened_count"] += 1
                cooldown = BREAKER_BASE * (2 ** min(source["opened_count"] - 1, 10))
                source["open_until"] = now + min(BREAKER_MAX, cooldown)
                log.warning("weather source down: breaker open", extra={"reason": reason[:200]})

        return self._update(change)

    def limited(self, reason: str, until: datetime) -> None:
        def change(source: dict[str, Any], now: datetime) -> None:
            source["open_until"] = until
            source["last_error"] = reason[:200]
            source["last_failure_at"] = now

        self._update(change)


class WeatherClient:
    """Open-Meteo over its own Session: timeouts capped at the call's time left."""

    def __init__(self, urls: dict[str, str], *, runtime: Runtime, deadline: float) -> None:
        self.urls = urls  # by source: the archive, the forecast archive
        self.timer = runtime.timer
        self.deadline = deadline
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "club-strava-sync weather"
        self.requests_made = 0
        self.locations = 0
        self.by_source = dict.fromkeys(urls, 0)

    def close(self) -> None:
        self.session.close()

    def time_left(self) -> float:
        return self.deadline - self.timer()

    def fetch(self, batch: Batch, now: datetime) -> list[dict[str, Any]]:
        timeout = min(TIMEOUT_S, self.time_left())
        if timeout <= 0.05:
            raise TimeoutError("time budget")
        self.requests_made += 1
        self.locations += len(batch.needs)
        self.by_source[batch.source] += 1
        url = self.urls[batch.source]
        try:
            response = self.session.get(url, params=batch.params(), timeout=timeout)
        except requests.RequestException as exc:
            raise SourceFailed(f"{type(exc).__name__}") from None
        reason = _reason(response)
        if response.status_code == 429:
            reason = reason or "rate limited"
            raise SourceLimited(reason, limit_reset(reason, now))
        if response.status_code == 400 and reason:
            raise Refused(reason)
        if response.status_code != 200:
            raise SourceFailed(f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise SourceFailed("an answer that is not JSON") from None
        try:
            return parse_answer(body, len(batch.needs))
        except Nonsense as exc:
            raise SourceFailed(f"nonsense: {exc}") from None


def _reason(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("error") is True:
        return str(body.get("reason") or "error")[:200]
    return None


# --- the call ------------------------------------------------------------------------


@dataclass
class _Activity:
    lease: models.weather.WeatherLease
    samples: list[Sample]
    values: list[dict[str, float | None] | None]
    outcome: Outcome | None = None
    source: str = ARCHIVE


class WeatherCall:
    """One bounded weather call: claim, look up in batches, write back, answer."""

    def __init__(self, runtime: Runtime, *, limit: int) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.limit = limit
        self.started = runtime.timer()
        self.started_at = runtime.clock()
        budget_s = settings.cron_time_budget_s
        self.deadline = self.started + max(0.05, budget_s - min(0.25, budget_s * 0.1))
        self.lease_token = uuid4()
        self.breaker = Breaker(runtime)
        self.client = WeatherClient(
            {ARCHIVE: settings.weather_api_url, FORECAST: settings.weather_forecast_url},
            runtime=runtime,
            deadline=self.deadline,
        )
        self.archive_delay = timedelta(days=settings.weather_archive_delay_days)
        self.forecast_delay = timedelta(hours=settings.weather_forecast_delay_h)
        self.stopped_by: str | None = None

    def now(self) -> datetime:
        return self.runtime.clock()

    def _outcome(self, lease: models.weather.WeatherLease, status: str, **more: Any) -> Outcome:
        return Outcome(
            "activity_id", lease.strava_id, status, counts={"rider_id": lease.rider_id}, **more
        )

    def run(self) -> dict[str, Any]:
        settings = self.runtime.settings
        source = self.breaker.read()
        activities: list[_Activity] = []
        if breaker_state(source, self.started_at) == "open":
            self.stopped_by = "weather_source_down"
        else:
            with self.runtime.db.connection() as conn:
                leases = models.weather.claim_weather(
                    conn,
                    lease_token=self.lease_token,
                    limit=self.limit,
                    lease_ttl_s=settings.lease_ttl_s,
                    max_attempts=MAX_ATTEMPTS,
                    enrich_max_attempts=settings.enrich_max_attempts,
                    now=self.started_at,
                )
            activities = [self._prepare(lease) for lease in leases]
            self._look_up([a for a in activities if a.outcome is None])
            for activity in activities:
                if activity.outcome is None:
                    activity.outcome = self._store(activity)
        with self.runtime.db.connection() as conn:
            remaining = models.weather.count_weather_due(
                conn,
                max_attempts=MAX_ATTEMPTS,
                enrich_max_attempts=settings.enrich_max_attempts,
                now=self.started_at,
            )
            budget = models.budget.read_rate_budget(conn)
        outcomes = [a.outcome for a in activities if a.outcome is not None]
        answer: dict[str, Any] = {
            **outcome_counts(outcomes),
            "remaining": remaining,
            "done": remaining == 0,
            "rate_limited": self.stopped_by == "weather_rate_limited",
            "rate_limit": describe_budget(budget, self.now()),
            "strava_requests": 0,
            "duration_ms": int((self.runtime.timer() - self.started) * 1000),
            "items": [o.as_item() for o in outcomes],
            "weather_requests": self.client.requests_made,
            "weather_locations": self.client.locations,
            "weather_requests_by_source": dict(self.client.by_source),
            "weather_source": describe_source(self.breaker.read(), self.now()),
        }
        if self.stopped_by is not None:
            answer["stopped_by"] = self.stopped_by
        if took_nothing(answer["items"]):
            answer.update(self._idle(source).as_dict())
        return answer

    def _idle(self, source: dict[str, Any]) -> Idle:
        """Why this call took nothing (services/idle.py decides)."""
        now = self.now()
        with self.runtime.db.connection() as conn:
            waiting = Waiting(**models.weather.weather_waiting(conn, now=now))
        down = self.stopped_by == "weather_source_down"
        return idle_reason(
            now,
            waiting=waiting,
            source_down_until=source["open_until"] if down else None,
            rate_limited_until=now if self.stopped_by == "weather_rate_limited" else None,
        )

    def _settle(
        self,
        activity: _Activity,
        status: str,
        reason: str,
        *,
        next_at: datetime | None = None,
        attempt: bool = False,
        error: str | None = None,
    ) -> Outcome:
        lease = activity.lease
        with self.runtime.db.connection() as conn:
            kept = models.weather.settle_weather(
                conn,
                strava_id=lease.strava_id,
                lease_token=self.lease_token,
                status=status,
                reason=reason if error is None else f"{reason}: {error}",
                next_attempt_at=next_at,
                count_attempt=attempt,
            )
        if not kept:
            return self._outcome(lease, SKIPPED, detail="lease_lost")
        outcome_status = FAILED if status == "failed" else SKIPPED
        outcome = self._outcome(lease, outcome_status, detail=reason, error=error)
        if attempt:
            outcome.counts["attempts"] = lease.attempts + 1
        return outcome

    def _prepare(self, lease: models.weather.WeatherLease) -> _Activity:
        samples = activity_points(lease)
        activity = _Activity(lease, samples, [None] * len(samples))
        if not samples:
            activity.outcome = self._settle(activity, "skipped", "no_start_point")
            return activity
        end = samples[-1].at
        source = pick_source(
            end,
            self.started_at,
            archive_delay=self.archive_delay,
            forecast_delay=self.forecast_delay,
        )
        if source is None:  # too recent even for the forecast archive: waits, with why
            activity.outcome = self._settle(
                activity,
                "waiting",
                "too_recent",
                next_at=end + self.forecast_delay + FORECAST_MARGIN,
            )
        else:
            activity.source = source
        return activity

    def _hand_back(self, activities: list[_Activity], reason: str) -> None:
        waiting = [a for a in activities if a.outcome is None]
        if not waiting:
            return
        with self.runtime.db.connection() as conn:
            models.weather.release_weather(
                conn, lease_token=self.lease_token, strava_ids=[a.lease.strava_id for a in waiting]
            )
        for activity in waiting:
            activity.outcome = self._outcome(activity.lease, SKIPPED, detail=reason)

    def _fail(self, activities: list[_Activity], reason: str, error: str) -> None:
        for activity in activities:
            if activity.outcome is not None:
                continue
            attempts = activity.lease.attempts
            activity.outcome = self._settle(
                activity,
                "failed",
                reason,
                next_at=self.now() + backoff(attempts),
                attempt=True,
                error=error,
            )

    def _look_up(self, activities: list[_Activity]) -> None:
        batches = plan_batches(
            [a.samples for a in activities], sources=[a.source for a in activities]
        )
        for index, batch in enumerate(batches):
            in_batch = list({id(activities[a]): activities[a] for a, _, _ in batch.needs}.values())
            if self.client.time_left() <= 0.05:
                self._hand_back(
                    [a for b in batches[index:] for a in self._of(b, activities)], "time_budget"
                )  # noqa: E501
                return
            self.breaker.requested(len(batch.needs))
            try:
                series = self.client.fetch(batch, self.now())
            except TimeoutError:
                self._hand_back(
                    [a for b in batches[index:] for a in self._of(b, activities)], "time_budget"
                )  # noqa: E501
                return
            except SourceLimited as exc:
                self.breaker.limited(exc.reason, exc.until)
                self.stopped_by = "weather_rate_limited"
                self._hand_back(
                    [a for b in batches[index:] for a in self._of(b, activities)],
                    "weather_rate_limited",
                )  # noqa: E501
                return
            except Refused as exc:
                self.breaker.succeeded()  # it answered, and said why
                self._fail(in_batch, "weather_refused", str(exc))
                continue
            except SourceFailed as exc:
                source = self.breaker.failed(str(exc))
                self._fail(in_batch, "weather_source_error", str(exc))
                if breaker_state(source, self.now()) == "open":
                    self.stopped_by = "weather_source_down"
                    self._hand_back(
                        [a for b in batches[index + 1 :] for a in self._of(b, activities)],
                        "weather_source_down",
                    )  # noqa: E501
                    return
                continue
            self.breaker.succeeded()
            for (a, p, sample), hourly in zip(batch.needs, series, strict=True):
                try:
                    activities[a].values[p] = value_at(hourly, sample.at)
                except Nonsense:
                    activities[a].values[p] = None

    @staticmethod
    def _of(batch: Batch, activities: list[_Activity]) -> list[_Activity]:
        return [activities[a] for a, _, _ in batch.needs]

    def _store(self, activity: _Activity) -> Outcome:
        lease = activity.lease
        values = activity.values
        if any(v is None or v["temperature_2m"] is None for v in values):
            if activity.samples[-1].at < self.started_at - NO_DATA_AFTER:
                return self._settle(activity, "skipped", "no_data")
            return self._settle(
                activity, "waiting", "not_in_archive_yet", next_at=self.now() + WAIT_FOR_DATA
            )
        complete = [v for v in values if v is not None]
        route = route_summary(activity.samples, complete) if len(activity.samples) > 1 else None
        place = None
        if lease.start_lat is None:
            place = places.row_place(
                {"start_latlng": [activity.samples[0].lat, activity.samples[0].lng]}
            )  # noqa: E501
            if lease.summary_polyline:
                place = places.row_place({"summary_polyline": lease.summary_polyline})
        with self.runtime.db.connection() as conn:
            stored = models.weather.finish_weather(
                conn,
                strava_id=lease.strava_id,
                lease_token=self.lease_token,
                start=start_columns(complete[0]),
                route=route,
                place=place,
                now=self.now(),
            )
        if not stored:
            return self._outcome(lease, SKIPPED, detail="lease_lost")
        counts = {"points": len(activity.samples)}
        outcome = self._outcome(lease, SUCCEEDED)
        outcome.counts.update(counts)
        return outcome


def run_weather(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """One bounded `weather` call, recorded in cron_runs."""

    def body() -> dict[str, Any]:
        call = WeatherCall(runtime, limit=limit)
        try:
            return call.run()
        finally:
            call.client.close()

    return recorded(runtime, "weather", body)
