"""Pure decisions about activities: what a summary becomes as a row, which are races,
where listing cursors go and when a listing has ended."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from models.base import RIDE_SPORTS, RUN_SPORTS
from services.places import row_place, strava_place
from services.routes import trim_route
from services.strava import PER_PAGE_MAX, BadPayload

RUN_RACE, RIDE_RACE = 1, 11


def is_race(
    *,
    sport_type: str,
    workout_type: int | None,
    distance_m: float,
    trainer: bool,
    min_distance_km: float,
) -> bool:
    """The contract's rule: workout_type says race (1 run, 11 ride), or a long outdoor ride."""
    if sport_type in RUN_SPORTS and workout_type == RUN_RACE:
        return True
    if sport_type in RIDE_SPORTS and workout_type == RIDE_RACE:
        return True
    outdoor_ride = sport_type in RIDE_SPORTS and sport_type != "VirtualRide" and not trainer
    return outdoor_ride and distance_m >= min_distance_km * 1000


def parse_start_date(value: Any) -> datetime:
    """Strava's UTC start_date ("2024-05-01T06:12:00Z") as an aware datetime."""
    if not isinstance(value, str):
        raise BadPayload("activity start_date missing")
    try:
        parsed = datetime.fromisoformat(value)  # reads "Z" as UTC since Python 3.11
    except ValueError:
        raise BadPayload("activity start_date is not ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (Strava sends nulls)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def as_integer(value: Any) -> int | None:
    """A JSON number as an int; None for anything else."""
    number = as_number(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def activity_row(summary: dict[str, Any], *, min_race_distance_km: float) -> dict[str, Any]:
    """A summary (resource_state 2) as the JSON-ready row that
    models.activities.upsert_activities takes."""
    strava_id = summary.get("id")
    if not isinstance(strava_id, int) or isinstance(strava_id, bool):
        raise BadPayload("activity without an integer id")
    sport_type = summary.get("sport_type") or summary.get("type")
    if not isinstance(sport_type, str) or not sport_type:
        raise BadPayload(f"activity {strava_id} has no sport_type")
    start_date = parse_start_date(summary.get("start_date"))
    distance_m = max(0.0, as_number(summary.get("distance")) or 0.0)
    workout_type = as_integer(summary.get("workout_type"))
    trainer = bool(summary.get("trainer"))
    summary_map: dict[str, Any] = summary["map"] if isinstance(summary.get("map"), dict) else {}
    upload_id = summary.get("upload_id_str") or summary.get("upload_id")
    return {
        "strava_id": strava_id,
        "name": str(summary.get("name") or ""),
        "sport_type": sport_type,
        "workout_type": workout_type,
        "start_date": start_date.isoformat(),
        "start_date_local": _text(summary.get("start_date_local")),
        "timezone": _text(summary.get("timezone")),
        "distance_m": distance_m,
        "moving_time_s": as_integer(summary.get("moving_time")),
        "elapsed_time_s": as_integer(summary.get("elapsed_time")),
        "total_elevation_gain_m": as_number(summary.get("total_elevation_gain")),
        "average_speed_mps": as_number(summary.get("average_speed")),
        "max_speed_mps": as_number(summary.get("max_speed")),
        "average_watts": as_number(summary.get("average_watts")),
        "average_heartrate": as_number(summary.get("average_heartrate")),
        "trainer": trainer,
        "commute": bool(summary.get("commute")),
        "manual": bool(summary.get("manual")),
        "private": bool(summary.get("private")),
        "visibility": _text(summary.get("visibility")),
        "gear_id": _text(summary.get("gear_id")),
        "upload_id": _text(upload_id),
        "external_id": _text(summary.get("external_id")),
        "summary_polyline": _text(summary_map.get("summary_polyline")) or None,
        "is_race": is_race(
            sport_type=sport_type,
            workout_type=workout_type,
            distance_m=distance_m,
            trainer=trainer,
            min_distance_km=min_race_distance_km,
        ),
    }


def page_rows(
    summaries: Iterable[dict[str, Any]],
    *,
    min_race_distance_km: float,
    route_trim_m: int | None = None,
) -> list[dict[str, Any]]:
    """A page's rows, one per id (a page must not upsert the same row twice), with their
    place: Strava's start_latlng, end_latlng and location_* where present, else the
    polyline's ends and the offline table (services/places); and with `route_trim_m`,
    the route as the club may see it (services/routes), cut as it is stored."""
    rows: dict[int, dict[str, Any]] = {}
    for summary in summaries:
        row = activity_row(summary, min_race_distance_km=min_race_distance_km)
        rows[row["strava_id"]] = {**row, **row_place(strava_place(summary))}
        if route_trim_m is not None:
            rows[row["strava_id"]].update(
                club_summary_polyline=trim_route(row["summary_polyline"], route_trim_m),
                club_summary_trim_m=route_trim_m,
            )
    return list(rows.values())


def listing_ended(page_size: int, *, per_page: int = PER_PAGE_MAX, read_all: bool) -> bool:
    """Has a listing reached its end?

    An empty page always ends it. A short page ends it only when the grant sees every
    activity (activity:read_all): otherwise Strava filters private activities out after
    paging, so a short page can come before more results.
    """
    if page_size == 0:
        return True
    return read_all and page_size < per_page


def newest_start(rows: Iterable[dict[str, Any]]) -> datetime | None:
    """The latest start_date of a page's rows (order within a page is not relied upon)."""
    return max((parse_start_date(r["start_date"]) for r in rows), default=None)


def oldest_start(rows: Iterable[dict[str, Any]]) -> datetime | None:
    """The earliest start_date of a page's rows."""
    return min((parse_start_date(r["start_date"]) for r in rows), default=None)
