"""Activities: the columns kept from Strava's summaries, the bulk upsert, single rows, and
the Eddington cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.base import RIDE_SPORTS, Conn
from models.duplicates import mark_duplicates

# Columns written from a Strava summary, in the order of `activity_columns` rows.
ACTIVITY_COLUMNS: dict[str, str] = {
    "strava_id": "bigint",
    "name": "text",
    "sport_type": "text",
    "workout_type": "integer",
    "start_date": "timestamptz",
    "start_date_local": "timestamp",
    "timezone": "text",
    "distance_m": "double precision",
    "moving_time_s": "integer",
    "elapsed_time_s": "integer",
    "total_elevation_gain_m": "double precision",
    "average_speed_mps": "double precision",
    "max_speed_mps": "double precision",
    "average_watts": "double precision",
    "average_heartrate": "double precision",
    "trainer": "boolean",
    "commute": "boolean",
    "manual": "boolean",
    "private": "boolean",
    "visibility": "text",
    "gear_id": "text",
    "upload_id": "text",
    "external_id": "text",
    "summary_polyline": "text",
    "is_race": "boolean",
}


_SUMMARY_COLUMNS = [c for c in ACTIVITY_COLUMNS if c != "strava_id"]


# Stored with each activity from its start point (services/places.py), beside Strava's
# summary fields; the bulk upsert writes them (and compares them) like the others.
PLACE_COLUMNS: dict[str, str] = {
    "start_lat": "double precision",
    "start_lng": "double precision",
    "end_lat": "double precision",
    "end_lng": "double precision",
    "start_city": "text",
    "start_region": "text",
    "start_country": "text",
}


# What the upsert writes: Strava's fields and the place columns (services/places.py).
_STORED_COLUMNS = {**ACTIVITY_COLUMNS, **PLACE_COLUMNS}

# The route as the club may see it (services/routes.py), cut from the summary route as
# the row is written and with it, so the two never disagree. Not compared to decide
# whether a row changed: a new trim alone is not a change of the activity (the club's
# re-trim pass takes those, models.sharing).
CLUB_ROUTE_COLUMNS: dict[str, str] = {
    "club_summary_polyline": "text",
    "club_summary_trim_m": "integer",
}
_WRITTEN_COLUMNS = {**_STORED_COLUMNS, **CLUB_ROUTE_COLUMNS}


_STORED_SUMMARY_COLUMNS = [c for c in _STORED_COLUMNS if c != "strava_id"]


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    races_inserted: int = 0


_UPSERT_ACTIVITIES = f"""
    insert into activities as a (rider_id, {", ".join(_WRITTEN_COLUMNS)},
                                 enrichment_status, seen_at, created_at, updated_at)
    select %(rider_id)s, {", ".join("r." + c for c in _WRITTEN_COLUMNS)},
           case when r.is_race then 'pending' end, %(now)s, %(now)s, %(now)s
      from json_to_recordset(%(rows)s::json) as r(
           {", ".join(f"{c} {t}" for c, t in _WRITTEN_COLUMNS.items())})
    on conflict (strava_id) do update set
           {", ".join(f"{c} = excluded.{c}" for c in _STORED_SUMMARY_COLUMNS)},
           {", ".join(f"{c} = excluded.{c}" for c in CLUB_ROUTE_COLUMNS)},
           enrichment_status = case when excluded.is_race
                                    then coalesce(a.enrichment_status, 'pending') end,
           -- weather is looked up again when its points or times change
           weather_status = case
               when (a.start_lat, a.start_lng, a.start_date, a.elapsed_time_s)
                    is distinct from (excluded.start_lat, excluded.start_lng,
                                      excluded.start_date, excluded.elapsed_time_s)
               then null else a.weather_status end,
           seen_at = excluded.seen_at, updated_at = excluded.updated_at,
           -- Strava's word on it now: a privacy change's event is answered
           privacy_pending_since = null
     where a.rider_id = excluded.rider_id
       and (({", ".join("a." + c for c in _STORED_SUMMARY_COLUMNS)})
            is distinct from ({", ".join("excluded." + c for c in _STORED_SUMMARY_COLUMNS)})
            or a.seen_at < %(seen_since)s::timestamptz)
    returning (xmax = 0) as inserted, is_race
"""


def upsert_activities(
    conn: Conn,
    *,
    rider_id: int,
    rows: list[dict[str, Any]],
    now: datetime,
    seen_since: datetime | None = None,
) -> UpsertCounts:
    """Write a page of activities, seen at `now`, in one statement, touching only rows
    that changed.

    `seen_since` (a history walk's start) also refreshes `seen_at` on unchanged rows the
    walk has not marked yet, so the walk's end can tell what Strava no longer has.
    """
    if not rows:
        return UpsertCounts()
    result = conn.execute(
        _UPSERT_ACTIVITIES,
        # Plain json text: Postgres parses it faster than jsonb, and it is read once.
        {"rider_id": rider_id, "rows": json.dumps(rows), "seen_since": seen_since, "now": now},
    ).fetchall()
    inserted = sum(1 for r in result if r["inserted"])
    span = _rows_span(rows) if result else None
    if span is not None:  # something was written: pair (or unpair) rides recorded twice
        mark_duplicates(conn, rider_id=rider_id, since=span[0], until=span[1])
    return UpsertCounts(
        inserted=inserted,
        updated=len(result) - inserted,
        races_inserted=sum(1 for r in result if r["inserted"] and r["is_race"]),
    )


def insert_activity_row(conn: Conn, *, rider_id: int, row: dict[str, Any]) -> None:
    """One plain INSERT ... ON CONFLICT for one activity (the benchmark's baseline)."""
    columns = list(_STORED_COLUMNS)
    conn.execute(
        f"""
        insert into activities (rider_id, {", ".join(columns)})
        values (%s, {", ".join(["%s"] * len(columns))})
        on conflict (strava_id) do update set
            {", ".join(f"{c} = excluded.{c}" for c in _STORED_SUMMARY_COLUMNS)}
        """,
        [rider_id, *(row[c] for c in columns)],
    )
    span = _rows_span([row])
    if span is not None:
        mark_duplicates(conn, rider_id=rider_id, since=span[0], until=span[1])


def recompute_eddington(conn: Conn, *, rider_id: int, now: datetime) -> tuple[int, int]:
    """Store the rider's cycling Eddington number in miles and km, updated at `now`; one
    statement.

    Days are local start dates and a day's rides are summed. E is the largest k with k
    days of at least k: with the days ranked by distance, max over ranks n of
    min(n, floor(distance of day n)).
    """
    row = conn.execute(
        """
        with days as (
            select sum(distance_m)::numeric as metres
              from activities
             where rider_id = %(rider_id)s and sport_type = any(%(sports)s)
               and duplicate_of is null  -- one ride recorded twice counts once
             group by coalesce(start_date_local::date, (start_date at time zone 'UTC')::date)
        ), ranked as (
            select metres, row_number() over (order by metres desc) as n from days
        ), e as (
            select coalesce(max(least(n, floor(metres / 1609.344))), 0)::int as miles,
                   coalesce(max(least(n, floor(metres / 1000))), 0)::int as km
              from ranked
        )
        update riders r
           set eddington_miles = e.miles, eddington_km = e.km, eddington_updated_at = %(now)s
          from e
         where r.id = %(rider_id)s
        returning e.miles, e.km
        """,
        {"rider_id": rider_id, "sports": sorted(RIDE_SPORTS), "now": now},
    ).fetchone()
    return (int(row["miles"]), int(row["km"])) if row else (0, 0)


def _rows_span(rows: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    # Rows come from services.activities.activity_row: start_date checked, ISO 8601 text.
    starts = [datetime.fromisoformat(r["start_date"]) for r in rows if r.get("start_date")]
    return (min(starts), max(starts)) if starts else None


def activity_of_rider(
    conn: Conn, *, rider_id: int, strava_id: int, written_since: datetime | None = None
) -> bool:
    """Whether the rider has this activity stored (and written since `written_since`)."""
    row = conn.execute(
        "select 1 from activities where rider_id = %s and strava_id = %s"
        " and (%s::timestamptz is null or seen_at >= %s::timestamptz)",
        (rider_id, strava_id, written_since, written_since),
    ).fetchone()
    return row is not None


def hold_for_privacy_check(conn: Conn, *, rider_id: int, strava_id: int, now: datetime) -> bool:
    """Keep one of the rider's activities out of what the club sees from `now` until
    Strava has been asked about it again (a webhook said its privacy changed, or that
    it was deleted); False if it is not stored."""
    return (
        conn.execute(
            "update activities set privacy_pending_since = coalesce(privacy_pending_since, %s)"
            " where rider_id = %s and strava_id = %s",
            (now, rider_id, strava_id),
        ).rowcount
        > 0
    )


def release_privacy_hold(conn: Conn, *, rider_id: int, strava_id: int) -> None:
    """What is stored was written from Strava after the event: it stands."""
    conn.execute(
        "update activities set privacy_pending_since = null"
        " where rider_id = %s and strava_id = %s and privacy_pending_since is not null",
        (rider_id, strava_id),
    )


def remove_activity(conn: Conn, *, rider_id: int, strava_id: int) -> bool:
    """Delete one of a rider's activities (Strava said it is gone or hidden), and pair
    again the rides around it; False if it was not stored."""
    row = conn.execute(
        "delete from activities where rider_id = %s and strava_id = %s returning start_date",
        (rider_id, strava_id),
    ).fetchone()
    if row is None:
        return False
    mark_duplicates(conn, rider_id=rider_id, since=row["start_date"], until=row["start_date"])
    return True
