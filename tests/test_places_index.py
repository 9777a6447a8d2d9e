"""The places index answers exactly as the one-degree grid scan it replaced (kept in
bench/places.py as GridScan): the same town, the same distance to the bit, the same
choice between towns at the same distance; on thousands of seeded random points and at
the edges (the poles, the antimeridian, the edges of bands and cells, the open sea, a
town at exactly the distance limit). And the shipped index is the shipped table's."""

from __future__ import annotations

import gzip
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.places import GridScan
from services import places
from services.places import (
    DATA_FILE,
    INDEX_FILE,
    MAX_DISTANCE_KM,
    Point,
    build_index,
    haversine_km,
    index_bytes,
    nearest_place,
    read_table,
)
from tests.conftest import sizes

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240617


@pytest.fixture(scope="module")
def scan() -> GridScan:
    return GridScan()


@pytest.fixture(scope="module")
def towns(scan: GridScan) -> list[tuple[float, float]]:
    return sorted((t[0], t[1]) for cell in scan.grid.values() for t in cell)


def differences(index, scan, points: list[Point], max_km: float) -> list[tuple]:
    """The points where the index's answer is not the scan's: (point, scan's, index's),
    each answer as (distance, row in the table file) or None; and the same for the Place
    nearest_place makes of it."""
    found = []
    for point in points:
        expected = scan.search(point, max_km)
        answer = index.search(point[0], point[1], max_km)
        want = None if expected is None else (expected[0], expected[1][5])
        got = None if answer is None else (answer[0], index.rows[answer[1]])
        if got != want:
            found.append((point, want, got))
        elif index is places._loaded() and places.valid_point(*point):
            place = nearest_place(point, max_km=max_km)
            if place != scan.place(expected):
                found.append((point, scan.place(expected), place))
    return found


def near(rng: random.Random, towns, count: int, degrees: float) -> list[Point]:
    points = []
    for lat, lng in rng.sample(towns, count):
        points.append((lat + rng.uniform(-degrees, degrees), lng + rng.uniform(-degrees, degrees)))
    return [p for p in points if places.valid_point(*p)]


def anywhere(rng: random.Random, count: int) -> list[Point]:
    """Uniform on the sphere: mostly sea."""
    return [
        (math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)) for _ in range(count)
    ]


# Points near towns and anywhere: a thousand by default, five thousand under -m slow (the
# grid scan they are checked against takes about 7 ms a point).
@pytest.mark.parametrize(("near_towns", "elsewhere"), sizes((600, 400), (3000, 2000)))
def test_thousands_of_random_points_get_the_scans_answers(scan, towns, near_towns, elsewhere):
    rng = random.Random(SEED)
    index = places._loaded()
    points = near(rng, towns, near_towns, 0.3) + anywhere(rng, elsewhere)
    assert differences(index, scan, points, MAX_DISTANCE_KM) == []
    answered = [scan.search(p, MAX_DISTANCE_KM) for p in points]
    assert near_towns < sum(a is not None for a in answered) < len(points)  # both kinds


@pytest.mark.parametrize("max_km", [0.5, 5.0, 100.0, 400.0])
def test_other_distance_limits_get_the_scans_answers(scan, towns, max_km):
    rng = random.Random(SEED + int(max_km))
    count = 100 if max_km > 100 else 300  # the scan is slow at 400 km: 60 cells a row
    points = near(rng, towns, count, 1.0) + anywhere(rng, count // 3)
    assert differences(places._loaded(), scan, points, max_km) == []


def test_a_towns_own_point_and_towns_sharing_one_get_the_first_in_the_file(scan, towns):
    index = places._loaded()
    rows: dict[tuple[float, float], list[int]] = {}
    for cell in scan.grid.values():
        for lat, lng, *_, row in cell:
            rows.setdefault((lat, lng), []).append(row)
    twins = sorted(p for p, at in rows.items() if len(at) > 1)
    assert len(twins) >= 40  # the table has towns recorded at one point
    points = twins + random.Random(SEED).sample(towns, 500)
    assert differences(index, scan, points, MAX_DISTANCE_KM) == []
    assert differences(index, scan, points, 0.0) == []
    for twin in twins:  # the first in the file, at distance 0
        found = index.search(twin[0], twin[1], MAX_DISTANCE_KM)
        assert found is not None and found[0] == 0.0
        assert index.rows[found[1]] == min(rows[twin])


def test_points_on_the_edges_of_bands_and_cells(scan, towns):
    rng = random.Random(SEED)
    points: list[Point] = []
    for lat, lng in rng.sample(towns, 200):
        band_edge = math.floor(lat * places.BAND_SCALE) / places.BAND_SCALE
        points += [
            (band_edge, lng),  # on the band's lower edge
            (math.nextafter(band_edge, -90), lng),  # just inside the band below
            (float(round(lat)), lng),  # on a one-degree cell's edge
            (lat, float(round(lng))),
            (float(round(lat)), float(round(lng))),
            (round(lat), round(lng)),  # whole numbers, as ints
        ]
    points = [p for p in points if places.valid_point(*p)]
    assert differences(places._loaded(), scan, points, MAX_DISTANCE_KM) == []


@pytest.mark.parametrize("max_km", [MAX_DISTANCE_KM, 100.0])
def test_the_poles_and_the_antimeridian(scan, max_km):
    points = [
        (90.0, 0.0), (-90.0, 0.0), (90.0, 180.0), (-90.0, -180.0), (89.999, 45.0),
        (-89.5, 120.0), (78.2233, 15.6469), (78.5, -180.0),
        # Chukotka (Egvekinot, 66.32 N 179.12 W) and Fiji and Tuvalu, across 180 degrees
        (66.3232, 180.0), (66.3232, -180.0), (66.3, 179.99), (66.3, -179.99),
        (-16.4332, 180.0), (-16.4332, -180.0), (-16.43, -179.9), (-8.52, -179.95),
        (-8.52, 180.0), (-18.07, 179.999), (-17.8, -179.8),
    ]  # fmt: skip
    assert differences(places._loaded(), scan, points, max_km) == []
    across = places._loaded().search(66.3, 179.99, 100.0)
    assert across is not None and places._loaded().city(across[1]) == "Egvekinot"


def test_a_limit_past_the_antipodes_finds_the_nearest_town_anywhere(scan):
    # Every band searched whole; the scan measured every town too.
    points = [(45.0, -30.0), (-60.0, 0.0), (0.0, -140.0), (89.0, 100.0)]
    assert differences(places._loaded(), scan, points, 25_000.0) == []
    assert all(places._loaded().search(p[0], p[1], 25_000.0) is not None for p in points)


def test_a_negative_limit_finds_nothing_and_one_not_a_number_is_refused(scan):
    assert differences(places._loaded(), scan, [(48.8566, 2.3522)], -1.0) == []
    assert nearest_place((48.8566, 2.3522), max_km=-1.0) is None
    for limit in (math.nan, math.inf):
        with pytest.raises(ValueError, match="max_km"):
            nearest_place((48.8566, 2.3522), max_km=limit)


def test_the_open_sea_has_no_place(scan):
    ocean = [(45.0, -30.0), (0.0, -140.0), (-40.0, 80.0), (-60.0, 0.0), (30.0, 170.0)]
    assert differences(places._loaded(), scan, ocean, MAX_DISTANCE_KM) == []
    assert [nearest_place(p) for p in ocean] == [None] * len(ocean)
    assert [scan.search(p, MAX_DISTANCE_KM) for p in ocean] == [None] * len(ocean)


def test_a_town_at_exactly_the_distance_limit(scan, towns):
    """Found at its exact distance as the limit, not one float below it."""
    rng = random.Random(SEED)
    index = places._loaded()
    checked = 0
    for point in near(rng, towns, 300, 0.2):
        nearest = scan.search(point, MAX_DISTANCE_KM)
        if nearest is None:
            continue
        distance, town = nearest
        assert distance == haversine_km(point, (town[0], town[1]))
        below = math.nextafter(distance, 0.0)
        assert differences(index, scan, [point], distance) == []
        assert differences(index, scan, [point], below) == []
        found = index.search(point[0], point[1], distance)
        assert found is not None and index.rows[found[1]] == town[5]
        tied = scan.search(point, below)  # another town at the same distance, if any
        assert (index.search(point[0], point[1], below) is None) == (tied is None)
        checked += 1
    assert checked > 250


# --- a made-up table: ties and wraps the real one may not have -------------------------


def write_table(path: Path, towns: list[tuple[float, float, str]]) -> Path:
    """A table in the shipped file's format: one country, one region."""
    lines = ["#countries\tXT=Testland", "#regions\t\tMiddle"]
    lines += [f"{lat!r}\t{lng!r}\t0\t{city}\t1" for lat, lng, city in towns]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    return path


def made_up(tmp_path: Path, towns: list[tuple[float, float, str]]):
    table = write_table(tmp_path / "towns.tsv.gz", towns)
    build_index(table, tmp_path / "index.bin")
    return places._Index(tmp_path / "index.bin"), GridScan(table)


def test_towns_at_the_same_distance_go_to_the_one_the_scan_met_first(tmp_path):
    # Each point has two towns at exactly the same distance, listed north before south,
    # east before west: the scan met the south's and the west's one-degree cells first,
    # whatever the order of the file. Two towns at one point: the first in the file.
    ties = {
        (0.0, 10.0): [(0.125, 10.0, "North"), (-0.125, 10.0, "South")],
        (45.0, 0.0): [(45.0, 0.125, "East"), (45.0, -0.125, "West")],
        (20.5, 30.25): [(20.5, 30.25, "Here"), (20.5, 30.25, "Here too")],
    }
    winners = {(0.0, 10.0): "South", (45.0, 0.0): "West", (20.5, 30.25): "Here"}
    index, scan = made_up(tmp_path, [town for pair in ties.values() for town in pair])
    for point, (a, b) in ties.items():
        assert haversine_km(point, a[:2]) == haversine_km(point, b[:2])  # a true tie
        found = index.search(point[0], point[1], MAX_DISTANCE_KM)
        assert found is not None and index.city(found[1]) == winners[point]
        assert differences(index, scan, [point], MAX_DISTANCE_KM) == []


def test_the_search_wraps_round_the_antimeridian(tmp_path):
    index, scan = made_up(tmp_path, [
        (10.0, 179.95, "West of the line"), (10.0, -179.9, "East of the line"),
        (-30.0, -179.99, "Far east"), (-30.1, 179.7, "Far west"),
    ])  # fmt: skip
    cases = {
        (10.0, 180.0): "West of the line", (10.0, -180.0): "West of the line",
        (10.0, -179.985): "West of the line", (10.0, -179.93): "East of the line",
        (10.0, 179.5): "West of the line", (-30.0, 179.9): "Far east",
        (-30.05, 179.8): "Far west", (-30.0, -179.5): "Far east",
    }  # fmt: skip
    for point, city in cases.items():
        found = index.search(point[0], point[1], MAX_DISTANCE_KM * 3)
        assert found is not None and index.city(found[1]) == city, point
    rng = random.Random(SEED)
    points = [
        (rng.uniform(-31, 11), rng.choice([-1, 1]) * rng.uniform(179, 180)) for _ in range(500)
    ]
    for max_km in (MAX_DISTANCE_KM, 100.0):
        assert differences(index, scan, points, max_km) == []


def test_a_town_across_the_pole_is_found(tmp_path):
    # The old scan looked only 16 degrees of longitude either side so near a pole, and
    # missed this town; the table has no town north of 78.3 degrees, so it never showed.
    index, _ = made_up(tmp_path, [(89.95, 170.0, "Over the top"), (85.0, 0.0, "Far")])
    for point in [(89.9, -10.0), (90.0, 0.0), (90.0, -180.0)]:
        found = index.search(point[0], point[1], MAX_DISTANCE_KM)
        assert found is not None and index.city(found[1]) == "Over the top"
        assert found[0] == haversine_km(point, (89.95, 170.0))


# --- the shipped files -----------------------------------------------------------------


def test_the_shipped_index_is_the_shipped_tables():
    """Rebuild with `python -m services.places index` after changing the table."""
    assert INDEX_FILE.read_bytes() == index_bytes(read_table(DATA_FILE))


def test_an_index_of_another_format_or_cut_short_is_refused(tmp_path):
    stale = tmp_path / "index.bin"
    data = INDEX_FILE.read_bytes()
    stale.write_bytes(data.replace(b"places-index/1", b"places-index/0", 1))
    with pytest.raises(ValueError, match="rebuild"):
        places._Index(stale)
    stale.write_bytes(data[:-1000])  # cut short
    with pytest.raises(ValueError, match="rebuild"):
        places._Index(stale)


def test_the_index_loads_once_on_the_first_lookup():
    script = (
        "from services import places\n"
        "assert places._index is None\n"
        "assert places.nearest_place((48.8566, 2.3522)).city == 'Paris'\n"
        "loaded = places._index\n"
        "assert loaded is not None and places.nearest_place((45.76, 4.84)) is not None\n"
        "assert places._index is loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
