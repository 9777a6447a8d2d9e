"""The offline places lookup: the band index against the one-degree grid scan it replaced,
side by side on the same points in the same run, and each one's cold load.

    python3 -m bench.places [--points 5000] [--seed 17] [--repeat 3] [--loads 5]

(in the venv). Per lookup: nearest_place as it is, and as it was (the point checked, the
town found, its Place made), in microseconds, the two timed in turns (per_lookup_us), on
three sets of points: the start points of the fake Strava's activities (what the sync
and fleet benches store), points near towns (a random town of the table moved up to 0.2
degrees: where riders start, the world over) and points anywhere (uniform on the sphere:
mostly sea, where the answer is "no place" and the grid scan was cheap). Every answer of
the index is checked against the grid scan's first. The cold load is what a fresh
interpreter takes to load the table once its modules are imported (the first lookup's
extra cost): the best and the median of --loads processes; and the memory the loaded
table holds (traced in one more process).
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.support import ROOT, table
from fake_strava import make_activities
from services import places
from services.places import (
    DATA_FILE,
    MAX_DISTANCE_KM,
    Place,
    Point,
    haversine_km,
    start_point,
    strava_place,
    valid_point,
)

Town = tuple[float, float, str, int, int, int]  # lat, lng, city, country, region, row


class GridScan:
    """The lookup as it was before the band index: every town of the one-degree cells
    around the point measured, the nearest within max_km kept (the first met of equals).
    Kept as the baseline and as the reference the index is tested against: each town
    also carries its row in the table file, to compare answers to the row."""

    def __init__(self, path: Path = DATA_FILE) -> None:
        self.grid: dict[tuple[int, int], list[Town]] = {}
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            header = next(lines).rstrip("\n").split("\t")
            assert header[0] == "#countries", "places table: unexpected header"
            countries = [c.split("=", 1) for c in header[1:]]
            self.countries = {code: name for code, name in countries}
            self.codes = [code for code, _ in countries]
            self.regions = next(lines).rstrip("\n").split("\t")[1:]
            for row, line in enumerate(lines):
                lat_s, lng_s, cc, city, region = line.rstrip("\n").split("\t")
                lat, lng = float(lat_s), float(lng_s)
                cell = (math.floor(lat), math.floor(lng))
                town = (lat, lng, city, int(cc), int(region), row)
                self.grid.setdefault(cell, []).append(town)

    def search(self, point: Point, max_km: float) -> tuple[float, Town] | None:
        lat, lng = point
        lat_span = math.ceil(max_km / 111.0)
        cos_lat = max(0.01, math.cos(math.radians(min(89.0, abs(lat) + lat_span))))
        lng_span = min(180, math.ceil(max_km / (111.0 * cos_lat)))
        best: tuple[float, Town] | None = None
        base_lat, base_lng = math.floor(lat), math.floor(lng)
        for dlat in range(-lat_span, lat_span + 1):
            for dlng in range(-lng_span, lng_span + 1):
                cell_lng = (base_lng + dlng + 180) % 360 - 180
                for town in self.grid.get((base_lat + dlat, cell_lng), ()):
                    d = haversine_km(point, (town[0], town[1]))
                    if d <= max_km and (best is None or d < best[0]):
                        best = (d, town)
        return best

    def nearest(self, point: Point, max_km: float = MAX_DISTANCE_KM) -> Place | None:
        """What nearest_place answered (for a valid point)."""
        return self.place(self.search(point, max_km))

    def place(self, best: tuple[float, Town] | None) -> Place | None:
        if best is None:
            return None
        distance, (_, _, city, cc, region, _) = best
        code = self.codes[cc]
        return Place(
            city=city,
            region=self.regions[region] or None,
            country=self.countries.get(code) or code,
            distance_km=round(distance, 2),
        )


def ride_starts(count: int, seed: int) -> list[Point]:
    """The start points of the fake Strava's activities (those that have one)."""
    activities = make_activities(
        1, count * 2, start=datetime(2020, 1, 1, tzinfo=UTC), end=datetime(2025, 1, 1, tzinfo=UTC),
        seed=seed,
    )  # fmt: skip
    points = [start_point(strava_place(a)) for a in activities]
    return [p for p in points if p is not None][:count]


def near_towns(rng: random.Random, count: int, towns: Sequence[Point]) -> list[Point]:
    """Points up to 0.2 degrees from random towns (where riders start)."""
    points: list[Point] = []
    while len(points) < count:
        lat, lng = rng.choice(towns)
        point = (lat + rng.uniform(-0.2, 0.2), lng + rng.uniform(-0.2, 0.2))
        if valid_point(*point):
            points.append(point)
    return points


def anywhere(rng: random.Random, count: int) -> list[Point]:
    """Points uniform on the sphere."""
    return [
        (math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)) for _ in range(count)
    ]


def per_lookup_us(
    lookups: list[Callable[[Point], object]], points: list[Point], repeat: int, chunk: int = 100
) -> list[float]:
    """Each lookup's time per point in microseconds: the points in chunks, each chunk
    timed `repeat` times for each lookup in turn (so a busy moment of the machine hits
    both alike), the best of each chunk's times summed."""
    totals = [0.0] * len(lookups)
    for start in range(0, len(points), chunk):
        part = points[start : start + chunk]
        best = [math.inf] * len(lookups)
        for _ in range(repeat):
            for n, lookup in enumerate(lookups):
                started = time.perf_counter()
                for point in part:
                    lookup(point)
                best[n] = min(best[n], time.perf_counter() - started)
        totals = [total + b for total, b in zip(totals, best, strict=True)]
    return [total / len(points) * 1e6 for total in totals]


LOAD_SCRIPT = """
import sys, time, tracemalloc
sys.path.insert(0, {root!r})
{imports}
traced = {traced!r}
if traced:
    tracemalloc.start()
started = time.perf_counter()
loaded = {load}
elapsed = time.perf_counter() - started
print(tracemalloc.get_traced_memory()[0] if traced else elapsed)
"""
LOADS = {  # (imports, load): only the load is measured
    "grid scan (table file)": ("from bench.places import GridScan", "GridScan()"),
    "band index": ("from services import places", "places._loaded()"),
}


def cold_load(imports: str, load: str, runs: int) -> tuple[list[float], float]:
    """The load's time in ms in `runs` fresh interpreters, each after its imports, and
    the memory in MB it holds after (traced in one more, tracing slowing the load)."""

    def fresh(traced: bool) -> float:
        script = LOAD_SCRIPT.format(root=str(ROOT), imports=imports, load=load, traced=traced)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        return float(out.strip().splitlines()[-1])

    return [fresh(False) * 1e3 for _ in range(runs)], fresh(True) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5000, help="points per set")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--loads", type=int, default=5, help="fresh processes per load")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each chunk")
    args = parser.parse_args(argv)

    loads = {name: cold_load(*code, args.loads) for name, code in LOADS.items()}
    scan = GridScan()
    index = places._loaded()

    def as_it_was(point: Point) -> Place | None:
        return scan.nearest(point) if valid_point(*point) else None

    rng = random.Random(args.seed)
    towns = [(t[0], t[1]) for cell in scan.grid.values() for t in cell]
    sets = {
        "fake Strava rides": ride_starts(args.points, args.seed),
        "near towns": near_towns(rng, args.points, towns),
        "anywhere": anywhere(rng, args.points),
    }
    rows: list[tuple[str, ...]] = [
        ("points", "lookups", "found", "grid scan us", "band index us", "speed-up")
    ]
    for name, points in sets.items():
        answers = [as_it_was(p) for p in points]
        mismatches = sum(places.nearest_place(p) != a for p, a in zip(points, answers, strict=True))
        if mismatches:
            raise SystemExit(f"{name}: {mismatches} answers differ from the grid scan's")
        old, new = per_lookup_us([as_it_was, places.nearest_place], points, args.repeat)
        found = sum(a is not None for a in answers)
        rows.append((name, f"{len(points):,}", f"{found:,}", f"{old:,.1f}", f"{new:,.2f}",
                     f"{old / new:,.0f}x"))  # fmt: skip
    print(f"Places lookup, same points, same run (seed {args.seed}; all answers identical)")
    print(table(rows))
    print()
    rows = [("cold load", "best ms", "median ms", "memory held")]
    for name, (times, held_mb) in loads.items():
        rows.append((name, f"{min(times):,.0f}", f"{statistics.median(times):,.0f}",
                     f"{held_mb:,.1f} MB"))  # fmt: skip
    print(table(rows))
    print(f"\nindex: {index.towns:,} towns, {places.INDEX_FILE.name} "
          f"{places.INDEX_FILE.stat().st_size / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
