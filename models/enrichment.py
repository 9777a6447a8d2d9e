"""Enrichment: races waiting for their detailed fetch, their leases, results and failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from models.activities import PLACE_COLUMNS
from models.base import Conn

# A race whose fetch failed but has attempts left (after the maximum it stays failed).
RACE_RETRYABLE = "a.enrichment_status = 'failed' and a.enrichment_attempts < %(max_attempts)s"


# Races still to be detailed: pending, or failed with attempts left.
RACE_WAITING = f"(a.enrichment_status = 'pending' or ({RACE_RETRYABLE}))"


# Due for enrich at the instant %(now)s: a race pending, or failed with attempts left and
# its backoff over; not held by any call; its rider connected (riders who must reconnect
# are left alone).
_ENRICH_DUE = f"""
    a.is_race
    and (a.enrichment_status = 'pending'
         or ({RACE_RETRYABLE}
             and (a.enrichment_next_attempt_at is null
                  or a.enrichment_next_attempt_at <= %(now)s)))
    and (a.enrichment_lease_expires_at is null or a.enrichment_lease_expires_at < %(now)s)
    and exists (select 1 from strava_connections c
                 where c.rider_id = a.rider_id and c.status = 'active')
    and (%(rider_id)s::bigint is null or a.rider_id = %(rider_id)s::bigint)
    and (%(since)s::timestamptz is null or a.start_date >= %(since)s::timestamptz)
"""


@dataclass(frozen=True)
class RaceLease:
    """A race claimed by one call for its detailed fetch."""

    strava_id: int
    rider_id: int
    start_date: datetime
    attempts: int


def claim_races_for_enrichment(
    conn: Conn,
    *,
    lease_token: UUID,
    limit: int,
    lease_ttl_s: int,
    max_attempts: int,
    now: datetime,
    recent_since: datetime,
    rider_id: int | None = None,
    started_since: datetime | None = None,
) -> list[RaceLease]:
    """Lease up to `limit` races due at `now` (of one rider, if given): races started
    since `recent_since` first, then the others, each in turns over riders (every
    rider's newest, then every rider's second newest, ...), so one rider's hundred races
    do not hold back everyone else's.

    One statement; SKIP LOCKED and the lease keep two calls off the same race (the turns
    are ranked first: a window function cannot sit beside FOR UPDATE).
    """
    rows = conn.execute(
        f"""
        with ranked as (
            select a.id, a.start_date, a.start_date >= %(recent)s as recent,
                   row_number() over (partition by a.rider_id, a.start_date >= %(recent)s
                                      order by a.start_date desc, a.id desc) as turn
              from activities a
             where {_ENRICH_DUE}
        ), due as (
            -- The lease is checked again here, on the row as locked: a race another
            -- call claimed (and committed) since `ranked` read it fails this check and
            -- is skipped, rather than claimed twice and detailed twice.
            select a.id from activities a join ranked r on r.id = a.id
             where (a.enrichment_lease_expires_at is null
                    or a.enrichment_lease_expires_at < %(now)s)
               and a.enrichment_status is distinct from 'done'
            order by r.recent desc, r.turn, r.start_date desc, a.id desc
            limit %(limit)s
            for update of a skip locked
        )
        update activities a
           set enrichment_lease_token = %(token)s,
               enrichment_lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from due where a.id = due.id
        returning a.strava_id, a.rider_id, a.start_date, a.enrichment_attempts as attempts
        """,
        {
            "now": now,
            "max_attempts": max_attempts,
            "rider_id": rider_id,
            "since": started_since,
            "recent": recent_since,
            "limit": limit,
            "token": lease_token,
            "ttl": lease_ttl_s,
        },
    ).fetchall()
    races = [RaceLease(**row) for row in rows]
    return sorted(races, key=lambda race: (race.start_date, race.strava_id), reverse=True)


def enrichment_waiting(
    conn: Conn, *, max_attempts: int, now: datetime
) -> dict[str, datetime | None]:
    """For an enrich call that took nothing: the earliest end of a lease on a waiting
    race, and the earliest retry of a failed one with attempts left (by the index of
    pending and failed races), of riders whose connection is active."""
    row = conn.execute(
        f"""
        select min(a.enrichment_lease_expires_at)
                 filter (where a.enrichment_lease_expires_at >= %(now)s) as held_until,
               min(a.enrichment_next_attempt_at) filter (
                   where a.enrichment_status = 'failed' and a.enrichment_next_attempt_at > %(now)s
                     and (a.enrichment_lease_expires_at is null
                          or a.enrichment_lease_expires_at < %(now)s)
               ) as backing_off_until
          from activities a
         where a.enrichment_status in ('pending', 'failed') and {RACE_WAITING}
           and exists (select 1 from strava_connections c
                        where c.rider_id = a.rider_id and c.status = 'active')
        """,
        {"now": now, "max_attempts": max_attempts},
    ).fetchone()
    assert row is not None
    return {**row, "next_planned_at": None}


def count_races_due_for_enrichment(
    conn: Conn, *, max_attempts: int, now: datetime, rider_id: int | None = None
) -> int:
    """Races due for enrichment at `now` and not held by any call."""
    row = conn.execute(
        f"select count(*) as n from activities a where {_ENRICH_DUE}",
        {"max_attempts": max_attempts, "rider_id": rider_id, "now": now, "since": None},
    ).fetchone()
    assert row is not None
    return int(row["n"])


def race_due_since(conn: Conn, *, max_attempts: int, now: datetime, since: datetime) -> bool:
    """Whether a race started since `since` is due for enrichment at `now` (the queue's
    index, read up to the first)."""
    row = conn.execute(
        f"select exists (select 1 from activities a where {_ENRICH_DUE}) as due",
        {"max_attempts": max_attempts, "rider_id": None, "now": now, "since": since},
    ).fetchone()
    assert row is not None
    return bool(row["due"])


def finish_enrichment(
    conn: Conn,
    *,
    strava_id: int,
    lease_token: UUID,
    description: str | None,
    polyline: str | None,
    details: dict[str, Any],
    now: datetime,
    club_polyline: str | None = None,
    club_polyline_trim_m: int | None = None,
) -> bool:
    """Store a race's details, enriched at `now`, and release it; False if this call no
    longer holds it (or it is no longer a race). The detailed route as the club may see
    it (services/routes.py) is written with it, never apart."""
    row = conn.execute(
        """
        update activities
           set description = %(description)s, polyline = %(polyline)s,
               club_polyline = %(club_polyline)s, club_polyline_trim_m = %(club_trim)s,
               details = %(details)s, enrichment_status = 'done', enriched_at = %(now)s,
               enrichment_error = null, enrichment_next_attempt_at = null,
               enrichment_lease_token = null, enrichment_lease_expires_at = null,
               updated_at = %(now)s
         where strava_id = %(strava_id)s and enrichment_lease_token = %(token)s
           and is_race  -- a listing may have reclassified it meanwhile
        returning 1
        """,
        {
            "now": now,
            "description": description,
            "polyline": polyline,
            "club_polyline": club_polyline,
            "club_trim": club_polyline_trim_m,
            "details": Jsonb(details),
            "strava_id": strava_id,
            "token": lease_token,
        },
    ).fetchone()
    return row is not None


def store_detail_place(conn: Conn, *, strava_id: int, place: dict[str, Any], now: datetime) -> bool:
    """A detailed activity's place (services/places.row_place of it) over the summary's,
    where they differ; a moved start point is looked up for weather again. True if the
    row changed."""
    columns = list(PLACE_COLUMNS)
    row = conn.execute(
        f"""
        update activities a
           set {", ".join(f"{c} = %({c})s" for c in columns)},
               weather_status = case
                   when (a.start_lat, a.start_lng) is distinct from
                        (%(start_lat)s::double precision, %(start_lng)s::double precision)
                   then null else a.weather_status end,
               updated_at = %(now)s
         where a.strava_id = %(strava_id)s
           and ({", ".join("a." + c for c in columns)}) is distinct from
               ({", ".join(f"%({c})s::{t}" for c, t in PLACE_COLUMNS.items())})
        returning 1
        """,
        {**{c: place.get(c) for c in columns}, "strava_id": strava_id, "now": now},
    ).fetchone()
    return row is not None


def remove_race(conn: Conn, *, strava_id: int, lease_token: UUID) -> bool:
    """Delete a race Strava no longer has (404); False if this call no longer holds it."""
    cursor = conn.execute(
        "delete from activities where strava_id = %s and enrichment_lease_token = %s",
        (strava_id, lease_token),
    )
    return cursor.rowcount > 0


def record_enrichment_failure(
    conn: Conn,
    *,
    strava_id: int,
    lease_token: UUID,
    message: str,
    backoff_s: float,
    now: datetime,
) -> bool:
    """Count a failed attempt at `now`, back the race off and release it."""
    row = conn.execute(
        """
        update activities
           set enrichment_attempts = enrichment_attempts + 1,
               enrichment_status = 'failed', enrichment_error = left(%(message)s, 200),
               enrichment_next_attempt_at = %(now)s + make_interval(secs => %(backoff)s),
               enrichment_lease_token = null, enrichment_lease_expires_at = null,
               updated_at = %(now)s
         where strava_id = %(strava_id)s and enrichment_lease_token = %(token)s
           and is_race  -- a listing may have reclassified it meanwhile
        returning 1
        """,
        {
            "message": message,
            "backoff": backoff_s,
            "strava_id": strava_id,
            "token": lease_token,
            "now": now,
        },
    ).fetchone()
    return row is not None


def release_races(conn: Conn, *, lease_token: UUID, strava_ids: list[int]) -> None:
    """Hand races back untouched (not started, or stopped by the rate or time budget)."""
    conn.execute(
        """
        update activities
           set enrichment_lease_token = null, enrichment_lease_expires_at = null
         where strava_id = any(%s) and enrichment_lease_token = %s
        """,
        (strava_ids, lease_token),
    )


def store_race_details(
    conn: Conn,
    *,
    rider_id: int,
    strava_id: int,
    description: str | None,
    polyline: str | None,
    details: dict[str, Any],
    now: datetime,
    club_polyline: str | None = None,
    club_polyline_trim_m: int | None = None,
) -> bool:
    """A race's details from a detailed fetch made for another reason (an event): stored
    as enrichment would, unless an enrich call holds the race (it writes the same)."""
    row = conn.execute(
        """
        update activities
           set description = %(description)s, polyline = %(polyline)s,
               club_polyline = %(club_polyline)s, club_polyline_trim_m = %(club_trim)s,
               details = %(details)s, enrichment_status = 'done', enriched_at = %(now)s,
               enrichment_error = null, enrichment_next_attempt_at = null, updated_at = %(now)s
         where rider_id = %(rider_id)s and strava_id = %(strava_id)s and is_race
           and (enrichment_lease_expires_at is null or enrichment_lease_expires_at <= %(now)s)
        returning 1
        """,
        {
            "now": now,
            "description": description,
            "polyline": polyline,
            "club_polyline": club_polyline,
            "club_trim": club_polyline_trim_m,
            "details": Jsonb(details),
            "rider_id": rider_id,
            "strava_id": strava_id,
        },
    ).fetchone()
    return row is not None
