"""The fake archive: `GET /v1/archive` as Open-Meteo answers it, and `GET /v1/forecast`
as its historical forecast API (historical-forecast-api.open-meteo.com) does: the same
parameters and answers, hours behind instead of days, from 2022 on.

What it copies from Open-Meteo's historical weather API: `latitude` and `longitude` as
comma lists (several locations in one request; the answer is then a JSON list, one object
per location in order, else one object), `start_date` / `end_date` (YYYY-MM-DD,
inclusive), `hourly` (a comma list of variables), `timezone` (only UTC/GMT here); an
answer's `hourly.time` as "YYYY-MM-DDTHH:MM"; hours later than the archive's delay
(about 5 days before now; the forecast archive's: 2 hours) are null; errors as
`{"error": true, "reason": ...}` with 400, and 429 when the per-minute limit is exceeded.

The weather itself is a deterministic function of place and hour (or `weather`, set by a
test for a hand-worked case). Faults: `fail_next` (a status and body for the next
requests), `nonsense_next` (200 with a body that is not the answer), `down` (503 to
everything), `slow_s` (a delay before each answer), `per_minute` (429 past it).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

ARCHIVE_PATH = "/v1/archive"
FORECAST_PATH = "/v1/forecast"
VARIABLES = (
    "temperature_2m",
    "apparent_temperature",
    "relative_humidity_2m",
    "precipitation",
    "wind_speed_10m",
    "wind_direction_10m",
    "weather_code",
)
UNITS = {
    "temperature_2m": "°C",
    "apparent_temperature": "°C",
    "relative_humidity_2m": "%",
    "precipitation": "mm",
    "wind_speed_10m": "km/h",
    "wind_direction_10m": "°",
    "weather_code": "wmo code",
}
ARCHIVE_DELAY = timedelta(days=5)
FORECAST_DELAY = timedelta(hours=2)
FORECAST_SINCE = date(2022, 1, 1)  # the forecast archive's first day
MAX_LOCATIONS = 1000

Weather = Callable[[float, float, datetime], dict[str, float]]


def default_weather(lat: float, lng: float, at: datetime) -> dict[str, float]:
    """Plausible, deterministic hourly weather for a place and an hour."""
    day = at.toordinal()
    seed = (int(round(lat * 100)) * 7919 + int(round(lng * 100)) * 104729 + day * 31) % 10007
    hour = at.hour + at.minute / 60
    temperature = 15 - abs(lat) / 6 + 8 * math.sin(2 * math.pi * (hour - 9) / 24) + (seed % 11) - 5
    rainy = seed % 5 == 0 and at.hour % 3 == 0
    wind = 5 + (seed % 30) + 3 * math.sin(hour)
    return {
        "temperature_2m": round(temperature, 1),
        "apparent_temperature": round(temperature - wind / 10, 1),
        "relative_humidity_2m": float(40 + seed % 55),
        "precipitation": round(0.2 + (seed % 7) / 2, 1) if rainy else 0.0,
        "wind_speed_10m": round(wind, 1),
        "wind_direction_10m": float((seed * 37 + at.hour * 5) % 360),
        "weather_code": float(61 if rainy else (3 if seed % 3 == 0 else 1)),
    }


@dataclass
class Logged:
    path: str
    locations: int
    days: int
    status: int


@dataclass
class _Fault:
    status: int
    body: str
    count: int


def _error(status: int, reason: str) -> Response:
    return Response(
        json.dumps({"error": True, "reason": reason}), status=status, mimetype="application/json"
    )


@dataclass
class FakeWeather:
    """The fake archive. `clock` gives the fake's "now" (epoch seconds), for its delay."""

    clock: Callable[[], float] = time.time
    weather: Weather = default_weather
    per_minute: int | None = None
    slow_s: float = 0.0
    down: bool = False
    log: list[Logged] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _minute_log: list[float] = field(default_factory=list)

    # --- faults and the log -----------------------------------------------------------

    def fail_next(self, status: int = 500, *, reason: str = "fault", count: int = 1) -> None:
        """The next `count` requests answer `status` with Open-Meteo's error body."""
        body = json.dumps({"error": True, "reason": reason})
        self._faults.append(_Fault(status, body, count))

    def nonsense_next(self, body: str = '{"latitude": "what"}', count: int = 1) -> None:
        """The next `count` requests answer 200 with a body that is not the answer."""
        self._faults.append(_Fault(200, body, count))

    @property
    def requests(self) -> int:
        return len(self.log)

    def locations(self) -> int:
        return sum(entry.locations for entry in self.log)

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    # --- the API ----------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:  # noqa: E501
        request = Request(environ)
        response = self.answer(request)
        return response(environ, start_response)

    def _record(self, path: str, locations: int, days: int, status: int) -> None:
        with self._lock:
            self.log.append(Logged(path, locations, days, status))

    def answer(self, request: Request) -> Response:
        if self.slow_s:
            time.sleep(self.slow_s)
        args = request.args
        lats = [p for p in args.get("latitude", "").split(",") if p]
        count = max(1, len(lats))
        if request.path not in (ARCHIVE_PATH, FORECAST_PATH):
            self._record(request.path, count, 0, 404)
            return _error(404, "Not Found")
        with self._lock:
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.pop(0)
            minute_ago = self.clock() - 60
            recent = sum(1 for t in self._minute_log if t > minute_ago)
            limited = self.per_minute is not None and recent >= self.per_minute
            self._minute_log.append(self.clock())
        if self.down:
            self._record(request.path, count, 0, 503)
            return Response("<html>503 Service Unavailable</html>", status=503)
        if fault is not None:
            self._record(request.path, count, 0, fault.status)
            return Response(fault.body, status=fault.status, mimetype="application/json")
        if limited:
            self._record(request.path, count, 0, 429)
            return _error(
                429, "Minutely API request limit exceeded. Please try again in one minute."
            )  # noqa: E501
        try:
            body, days = self._archive(args, forecast=request.path == FORECAST_PATH)
        except ValueError as exc:
            self._record(request.path, count, 0, 400)
            return _error(400, str(exc))
        self._record(request.path, count, days, 200)
        return Response(json.dumps(body), status=200, mimetype="application/json")

    def forecast_requests(self) -> int:
        return sum(1 for entry in self.log if entry.path == FORECAST_PATH)

    def archive_requests(self) -> int:
        return sum(1 for entry in self.log if entry.path == ARCHIVE_PATH)

    def _archive(self, args: Any, *, forecast: bool = False) -> tuple[Any, int]:
        try:
            lats = [float(v) for v in args.get("latitude", "").split(",")]
            lngs = [float(v) for v in args.get("longitude", "").split(",")]
        except ValueError:
            raise ValueError("Parameter 'latitude' and 'longitude' must be numbers") from None
        if len(lats) != len(lngs):
            raise ValueError(
                "Parameter 'latitude' and 'longitude' must have the same number of elements"
            )  # noqa: E501
        if len(lats) > MAX_LOCATIONS:
            raise ValueError("Too many locations")
        for lat, lng in zip(lats, lngs, strict=True):
            if not (-90 <= lat <= 90 and -180 <= lng <= 180):
                raise ValueError(f"Latitude must be in range of -90 to 90°. Given: {lat}.")
        try:
            first = date.fromisoformat(args.get("start_date", ""))
            last = date.fromisoformat(args.get("end_date", ""))
        except ValueError:
            raise ValueError("Parameter 'start_date' and 'end_date' must be YYYY-MM-DD") from None
        if last < first:
            raise ValueError("Parameter 'end_date' must not be before 'start_date'")
        since = FORECAST_SINCE if forecast else date(1940, 1, 1)
        if first < since:
            raise ValueError(f"Parameter 'start_date' is out of allowed range from {since}")
        if args.get("timezone", "GMT") not in ("UTC", "GMT"):
            raise ValueError("only UTC in the fake")
        wanted = [v for v in args.get("hourly", "").split(",") if v]
        unknown = [v for v in wanted if v not in VARIABLES]
        if unknown:
            raise ValueError(
                f"Cannot initialize WeatherVariable from invalid String value {unknown[0]}"
            )  # noqa: E501
        days = (last - first).days + 1
        hours = [
            datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(hours=h)
            for h in range(days * 24)
        ]
        available = self.now() - (FORECAST_DELAY if forecast else ARCHIVE_DELAY)
        answers = []
        for index, (lat, lng) in enumerate(zip(lats, lngs, strict=True)):
            series: dict[str, list[Any]] = {"time": [h.strftime("%Y-%m-%dT%H:%M") for h in hours]}
            for variable in wanted:
                series[variable] = []
            for hour in hours:
                values = self.weather(lat, lng, hour) if hour <= available else {}
                for variable in wanted:
                    value = values.get(variable)
                    if variable == "weather_code" and value is not None:
                        value = int(value)
                    series[variable].append(value)
            answers.append(
                {
                    # Open-Meteo answers the grid cell's centre, not the point asked for.
                    "latitude": round(lat * 10) / 10,
                    "longitude": round(lng * 10) / 10,
                    "location_id": index,
                    "generationtime_ms": 0.5,
                    "utc_offset_seconds": 0,
                    "timezone": "GMT",
                    "timezone_abbreviation": "GMT",
                    "elevation": 100.0,
                    "hourly_units": {"time": "iso8601", **{v: UNITS[v] for v in wanted}},
                    "hourly": series,
                }
            )
        if len(answers) == 1:
            return answers[0], days
        return answers, days * len(answers)
