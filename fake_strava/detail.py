"""The detailed activity (resource_state 3) that `GET /activities/{id}` returns.

Built from the stored summary so the two always agree, in the shape of real payloads
(stravalib's activity.3.json and activity-manual.3.json test resources): manual
activities have no laps, splits or best efforts, and an empty segment_efforts list.
"""

from __future__ import annotations

import copy
import math
import random
from datetime import timedelta
from typing import Any

from fake_strava import polyline
from fake_strava.data import RIDE_TYPES, RUN_TYPES, iso_z, parse_iso_z

_BEST_EFFORTS_M = (
    ("400m", 400),
    ("1/2 mile", 805),
    ("1k", 1000),
    ("1 mile", 1609),
    ("2 mile", 3219),
    ("5k", 5000),
    ("10k", 10000),
    ("15k", 15000),
    ("10 mile", 16090),
    ("20k", 20000),
    ("Half-Marathon", 21097),
    ("Marathon", 42195),
)
_DESCRIPTIONS = (
    None,
    "",
    "Bonne sortie avec le club.",
    "Vent de face au retour 🌬️",
    "Crevaison à 40 km.",
)
_SEGMENT_NAMES = (
    "Montée de la Croix-Rousse",
    "Côte de Limonest",
    "Sprint Quai Rambaud",
    "Col du Mont Verdun",
)
_MILE_M = 1609.34


def detailed_activity(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the DetailedActivity for a stored summary (never mutates it)."""
    detail = copy.deepcopy(summary)
    rng = random.Random(f"detail:{summary['id']}")
    sport = summary["sport_type"]
    manual = bool(summary.get("manual"))
    summary_line = summary["map"].get("summary_polyline")
    detail["resource_state"] = 3
    detail["description"] = rng.choice(_DESCRIPTIONS)
    detail["calories"] = round(summary.get("kilojoules") or summary["moving_time"] * 0.25, 1)
    detail["device_name"] = None if manual else _device_name(rng, sport)
    detail["embed_token"] = f"{rng.getrandbits(160):040x}"
    detail["hide_from_home"] = False
    detail["available_zones"] = []
    detail["map"] = {
        "id": summary["map"]["id"],
        "polyline": _full_polyline(rng, summary_line) if summary_line else summary_line,
        "resource_state": 3,
        "summary_polyline": summary_line,
    }
    detail["segment_efforts"] = [] if manual or not summary_line else _segment_efforts(rng, summary)
    detail["photos"] = _photos(rng, summary.get("total_photo_count", 0))
    if summary.get("gear_id"):
        detail["gear"] = {
            "id": summary["gear_id"],
            "primary": True,
            "name": "Vélo de route" if sport in RIDE_TYPES else "Chaussures",
            "nickname": None,
            "resource_state": 2,
            "retired": False,
            "distance": rng.randrange(100_000, 40_000_000),
        }
    if not manual:
        detail["laps"] = _laps(rng, summary)
        detail["splits_metric"] = _splits(summary, 1000.0)
        detail["splits_standard"] = _splits(summary, _MILE_M)
        if sport in RUN_TYPES:
            detail["best_efforts"] = _best_efforts(rng, summary)
    return detail


def _device_name(rng: random.Random, sport: str) -> str:
    """Pick a recording device plausible for the sport."""
    if sport.startswith("Virtual"):
        return "Zwift"
    if sport in RUN_TYPES:
        return rng.choice(("Garmin Forerunner 265", "COROS PACE 3", "Strava App"))
    return rng.choice(("Garmin Edge 840", "Wahoo ELEMNT BOLT", "Strava App"))


def _full_polyline(rng: random.Random, summary_line: str) -> str:
    """Densify the summary track so the full polyline is longer but traces the same route."""
    points = polyline.decode(summary_line)
    dense: list[polyline.Point] = []
    for (lat_a, lng_a), (lat_b, lng_b) in zip(points, points[1:], strict=False):
        for step in range(6):
            t = step / 6
            jitter = rng.uniform(-0.00005, 0.00005) if step else 0.0
            dense.append((lat_a + (lat_b - lat_a) * t + jitter, lng_a + (lng_b - lng_a) * t))
    dense.append(points[-1])
    return polyline.encode(dense)


def _ref(summary: dict[str, Any]) -> dict[str, Any]:
    """The activity and athlete references carried by efforts and laps."""
    return {
        "activity": {"id": summary["id"], "resource_state": 1},
        "athlete": {"id": summary["athlete"]["id"], "resource_state": 1},
    }


def _offset_dates(summary: dict[str, Any], seconds: int) -> dict[str, str]:
    """start_date and start_date_local of a moment `seconds` into the activity."""
    start = parse_iso_z(summary["start_date"]) + timedelta(seconds=seconds)
    return {
        "start_date": iso_z(start),
        "start_date_local": iso_z(start + timedelta(seconds=summary["utc_offset"])),
    }


def _segment_efforts(rng: random.Random, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A few segment efforts; their ids exceed 2**53, as Strava's now do."""
    efforts = []
    lat, lng = summary["start_latlng"] or (0.0, 0.0)
    for index in range(rng.randrange(0, 4)):
        length = round(rng.uniform(300, 6000), 1)
        seconds = round(length / max(summary["average_speed"], 0.5) * rng.uniform(1.0, 1.4))
        offset = rng.randrange(0, max(1, summary["elapsed_time"] - seconds))
        name = rng.choice(_SEGMENT_NAMES)
        efforts.append(
            {
                "id": rng.randrange(2**61, 2**62),
                "resource_state": 2,
                "name": name,
                **_ref(summary),
                "elapsed_time": seconds,
                "moving_time": seconds,
                **_offset_dates(summary, offset),
                "distance": length,
                "start_index": index * 100,
                "end_index": index * 100 + 90,
                "segment": {
                    "id": rng.randrange(10**6, 4 * 10**7),
                    "resource_state": 2,
                    "name": name,
                    "activity_type": summary["type"],
                    "distance": length,
                    "average_grade": round(rng.uniform(-2, 9), 1),
                    "maximum_grade": round(rng.uniform(9, 18), 1),
                    "elevation_high": round(rng.uniform(300, 700), 1),
                    "elevation_low": round(rng.uniform(150, 300), 1),
                    "start_latlng": [lat, lng],
                    "end_latlng": [round(lat + 0.01, 6), round(lng + 0.01, 6)],
                    "climb_category": rng.randrange(0, 4),
                    "city": "Lyon",
                    "state": "Auvergne-Rhône-Alpes",
                    "country": "France",
                    "private": False,
                    "hazardous": False,
                    "starred": False,
                },
                "kom_rank": None,
                "pr_rank": rng.choice((None, None, 1, 2, 3)),
                "achievements": [],
                "hidden": False,
            }
        )
    return efforts


def _laps(rng: random.Random, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Split the activity into a few equal laps (auto-lap or lap button)."""
    count = rng.randrange(1, 4)
    distance, moving, elapsed = summary["distance"], summary["moving_time"], summary["elapsed_time"]
    laps = []
    for index in range(count):
        lap_moving = moving // count
        laps.append(
            {
                "id": rng.randrange(10**10, 5 * 10**10),
                "resource_state": 2,
                "name": f"Lap {index + 1}",
                **_ref(summary),
                "elapsed_time": elapsed // count,
                "moving_time": lap_moving,
                **_offset_dates(summary, index * (elapsed // count)),
                "distance": round(distance / count, 1),
                "start_index": index * 1000,
                "end_index": (index + 1) * 1000 - 1,
                "total_elevation_gain": round(summary["total_elevation_gain"] / count, 1),
                "average_speed": summary["average_speed"],
                "max_speed": summary["max_speed"],
                "lap_index": index + 1,
                "split": index + 1,
                "pace_zone": 0,
            }
        )
    return laps


def _splits(summary: dict[str, Any], unit_m: float) -> list[dict[str, Any]]:
    """One split per kilometre or mile, the last one partial, as Strava lists them."""
    distance = summary["distance"]
    speed = max(summary["average_speed"], 0.1)
    splits = []
    for index in range(math.ceil(distance / unit_m)):
        length = round(min(unit_m, distance - index * unit_m), 1)
        seconds = max(1, round(length / speed))
        splits.append(
            {
                "distance": length,
                "elapsed_time": seconds,
                "elevation_difference": 0.0,
                "moving_time": seconds,
                "split": index + 1,
                "average_speed": round(length / seconds, 2),
                "pace_zone": 0,
            }
        )
    return splits


def _best_efforts(rng: random.Random, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Best efforts over the standard running distances the run covered."""
    efforts = []
    speed = max(summary["average_speed"], 0.5)
    for name, length in _BEST_EFFORTS_M:
        if length > summary["distance"]:
            break
        seconds = round(length / speed * rng.uniform(0.9, 1.0))
        efforts.append(
            {
                "id": rng.randrange(2**61, 2**62),
                "resource_state": 2,
                "name": name,
                **_ref(summary),
                "elapsed_time": seconds,
                "moving_time": seconds,
                **_offset_dates(summary, 0),
                "distance": length,
                "start_index": 0,
                "end_index": length // 3,
                "pr_rank": None,
                "achievements": [],
            }
        )
    return efforts


def _photos(rng: random.Random, count: int) -> dict[str, Any]:
    """The photos summary: null primary when there are none."""
    if not count:
        return {"primary": None, "count": 0}
    unique = f"{rng.getrandbits(128):032x}"
    return {
        "primary": {
            "id": None,
            "unique_id": unique,
            "urls": {
                "100": f"https://dgtzuqphqg23d.cloudfront.net/{unique}-128x96.jpg",
                "600": f"https://dgtzuqphqg23d.cloudfront.net/{unique}-768x576.jpg",
            },
            "source": 1,
        },
        "use_primary_photo": True,
        "count": count,
    }
