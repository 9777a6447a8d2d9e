"""Weather for activities: a leased phase of its own, and the weather source's circuit breaker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from models.activities import PLACE_COLUMNS
from models.base import Conn

# Due for weather at %(now)s: not a copy of another ride, not held by any call, never
# looked up (or its points changed), or waiting / failed with attempts left and its time
# come; a race only once its details are in (the full polyline) or failed for good.
_WEATHER_DUE = """
    a.duplicate_of is null
    and (a.weather_lease_expires_at is null or a.weather_lease_expires_at < %(now)s)
    and (a.weather_status is null
         or (a.weather_status = 'waiting' and a.weather_next_attempt_at <= %(now)s)
         or (a.weather_status = 'failed' and a.weather_attempts < %(max_attempts)s
             and a.weather_next_attempt_at <= %(now)s))
    and (not a.is_race or a.enrichment_status = 'done'
         or (a.enrichment_status = 'failed' and a.enrichment_attempts >= %(enrich_max)s))
"""


@dataclass(frozen=True)
class WeatherLease:
    """An activity claimed by one weather call."""

    strava_id: int
    rider_id: int
    start_date: datetime
    elapsed_time_s: int | None
    is_race: bool
    start_lat: float | None
    start_lng: float | None
    summary_polyline: str | None
    polyline: str | None
    attempts: int


def claim_weather(
    conn: Conn,
    *,
    lease_token: UUID,
    limit: int,
    lease_ttl_s: int,
    max_attempts: int,
    enrich_max_attempts: int,
    now: datetime,
) -> list[WeatherLease]:
    """Lease up to `limit` activities due for weather at `now`, newest first; one statement."""
    rows = conn.execute(
        f"""
        with due as (
            select a.id from activities a
             where {_WEATHER_DUE}
             order by a.start_date desc, a.id desc
             limit %(limit)s
             for update of a skip locked
        )
        update activities a
           set weather_lease_token = %(token)s,
               weather_lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from due where a.id = due.id
        returning a.strava_id, a.rider_id, a.start_date, a.elapsed_time_s, a.is_race,
                  a.start_lat, a.start_lng, a.summary_polyline, a.polyline,
                  a.weather_attempts as attempts
        """,
        {
            "now": now,
            "max_attempts": max_attempts,
            "enrich_max": enrich_max_attempts,
            "limit": limit,
            "token": lease_token,
            "ttl": lease_ttl_s,
        },
    ).fetchall()
    leases = [WeatherLease(**row) for row in rows]
    return sorted(leases, key=lambda w: (w.start_date, w.strava_id), reverse=True)


def weather_waiting(conn: Conn, *, now: datetime) -> dict[str, datetime | None]:
    """For a weather call that took nothing (by the weather queue's index): the earliest
    end of a lease, the earliest retry of a failure, and the earliest activity waiting
    for the archive to reach its day (`next_planned_at`)."""
    row = conn.execute(
        """
        select min(weather_lease_expires_at) filter (where weather_lease_expires_at >= %(now)s)
                   as held_until,
               min(weather_next_attempt_at) filter (
                   where weather_status = 'failed' and weather_next_attempt_at > %(now)s)
                   as backing_off_until,
               min(weather_next_attempt_at) filter (where weather_status = 'waiting')
                   as next_planned_at
          from activities
         where weather_status is null or weather_status in ('waiting', 'failed')
        """,
        {"now": now},
    ).fetchone()
    assert row is not None
    return dict(row)


def count_weather_due(
    conn: Conn, *, max_attempts: int, enrich_max_attempts: int, now: datetime
) -> int:
    row = conn.execute(
        f"select count(*) as n from activities a where {_WEATHER_DUE}",
        {"now": now, "max_attempts": max_attempts, "enrich_max": enrich_max_attempts},
    ).fetchone()
    return int(row["n"]) if row else 0


_WEATHER_COLUMNS = (
    "weather_temperature_c",
    "weather_feels_like_c",
    "weather_humidity_pct",
    "weather_precipitation_mm",
    "weather_wind_speed_kmh",
    "weather_wind_direction_deg",
    "weather_code",
    "weather_summary",
)


def finish_weather(
    conn: Conn,
    *,
    strava_id: int,
    lease_token: UUID,
    start: dict[str, Any],
    route: dict[str, Any] | None,
    place: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """Store an activity's weather (and its place, if it had none) and release it."""
    place = place or {}
    row = conn.execute(
        f"""
        update activities
           set {", ".join(f"{c} = %({c})s" for c in _WEATHER_COLUMNS)},
               weather_route = %(route)s, weather_status = 'done', weather_error = null,
               weather_next_attempt_at = null, weather_fetched_at = %(now)s,
               weather_lease_token = null, weather_lease_expires_at = null,
               start_lat = coalesce(start_lat, %(start_lat)s),
               start_lng = coalesce(start_lng, %(start_lng)s),
               start_city = coalesce(start_city, %(start_city)s),
               start_region = coalesce(start_region, %(start_region)s),
               start_country = coalesce(start_country, %(start_country)s)
         where strava_id = %(strava_id)s and weather_lease_token = %(token)s
        returning 1
        """,
        {
            **{c: start.get(c) for c in _WEATHER_COLUMNS},
            **{k: place.get(k) for k in PLACE_COLUMNS},
            "route": Jsonb(route) if route is not None else None,
            "now": now,
            "strava_id": strava_id,
            "token": lease_token,
        },
    ).fetchone()
    return row is not None


def settle_weather(
    conn: Conn,
    *,
    strava_id: int,
    lease_token: UUID,
    status: str,
    reason: str,
    next_attempt_at: datetime | None,
    count_attempt: bool,
) -> bool:
    """Leave an activity `waiting`, `failed` (counting an attempt) or `skipped`, with the
    reason, and release it."""
    row = conn.execute(
        """
        update activities
           set weather_status = %(status)s, weather_error = left(%(reason)s, 200),
               weather_next_attempt_at = %(next)s,
               weather_attempts = weather_attempts + %(attempt)s,
               weather_lease_token = null, weather_lease_expires_at = null
         where strava_id = %(strava_id)s and weather_lease_token = %(token)s
        returning 1
        """,
        {
            "status": status,
            "reason": reason,
            "next": next_attempt_at,
            "attempt": 1 if count_attempt else 0,
            "strava_id": strava_id,
            "token": lease_token,
        },
    ).fetchone()
    return row is not None


def release_weather(conn: Conn, *, lease_token: UUID, strava_ids: list[int]) -> None:
    """Hand activities back untouched (not reached, or the source stopped the call)."""
    conn.execute(
        """
        update activities set weather_lease_token = null, weather_lease_expires_at = null
         where strava_id = any(%s) and weather_lease_token = %s
        """,
        (strava_ids, lease_token),
    )


def read_weather_source(conn: Conn, *, for_update: bool = False) -> dict[str, Any]:
    """The weather source's row (made again if a reset emptied the table)."""
    conn.execute("insert into weather_source (id) values (1) on conflict do nothing")
    row = conn.execute(
        "select * from weather_source where id = 1" + (" for update" if for_update else "")
    ).fetchone()
    assert row is not None
    return dict(row)


def save_weather_source(conn: Conn, values: dict[str, Any]) -> None:
    columns = [c for c in values if c != "id"]
    conn.execute(
        f"update weather_source set {', '.join(f'{c} = %({c})s' for c in columns)} where id = 1",
        values,
    )


def weather_counts(conn: Conn, *, max_attempts: int) -> dict[str, int]:
    """Activities by weather state, for the fleet status."""
    # The settled states from an index of weather states (entries, not rows); the rest
    # from the weather queue's index.
    row = conn.execute(
        """
        select (select count(*) from activities where weather_status = 'done') as done,
               q.pending, q.waiting, q.backing_off, q.failed,
               (select count(*) from activities where weather_status = 'skipped') as skipped
          from (select
                  count(*) filter (where weather_status is null and duplicate_of is null)
                      as pending,
                  count(*) filter (where weather_status = 'waiting') as waiting,
                  count(*) filter (where weather_status = 'failed'
                                     and weather_attempts < %(max)s) as backing_off,
                  count(*) filter (where weather_status = 'failed'
                                     and weather_attempts >= %(max)s) as failed
                  from activities
                 where weather_status is null or weather_status in ('waiting', 'failed')) q
        """,
        {"max": max_attempts},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}
