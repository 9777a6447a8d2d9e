"""Discovery: history walks of riders whose history is not complete, page by page, and full
refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from models.base import Conn
from models.sync import LEASE_COLUMNS, RiderLease

# Due for discover at the instant %(now)s: an active connection whose history walk is not
# complete (a new connection, or a full refresh asked for), not held by any call, not
# backing off.
_DISCOVER_DUE = """
    c.status = 'active' and c.history_complete_at is null
    and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
    and (c.next_attempt_at is null or c.next_attempt_at <= %(now)s)
"""


def claim_riders_for_discovery(
    conn: Conn, *, lease_token: UUID, limit: int, lease_ttl_s: int, now: datetime
) -> list[RiderLease]:
    """Lease up to `limit` riders whose history is not complete (due at `now`), least
    progress first.

    Fewest pages walked first, so one long history never starves a newly connected
    rider; among equals an operator's full refresh goes first, then the oldest
    connection. One statement; SKIP LOCKED lets overlapping calls split the riders.
    """
    rows = conn.execute(
        f"""
        with due as (
            select c.rider_id from strava_connections c
            where {_DISCOVER_DUE}
            order by c.history_pages, c.full_refresh_requested_at nulls last,
                     c.connected_at, c.rider_id
            limit %(limit)s
            for update of c skip locked
        )
        update strava_connections c
           set lease_token = %(token)s, lease_kind = 'discover',
               lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from due where c.rider_id = due.rider_id
        returning {LEASE_COLUMNS}
        """,
        {"limit": limit, "token": lease_token, "ttl": lease_ttl_s, "now": now},
    ).fetchall()
    return sorted((RiderLease(**row) for row in rows), key=lambda lease: lease.rider_id)


def count_riders_due_for_discovery(conn: Conn, *, now: datetime) -> int:
    """Riders whose history walk is due at `now` and not held by any call."""
    row = conn.execute(
        f"select count(*) as n from strava_connections c where {_DISCOVER_DUE}", {"now": now}
    ).fetchone()
    assert row is not None
    return int(row["n"])


def discovery_waiting(conn: Conn, *, now: datetime) -> dict[str, datetime | None]:
    """For a discover call that took nothing: the earliest end of a lease on an
    incomplete history, and the earliest retry of one backing off (by the index of
    incomplete histories). Nothing is planned: a history is due until complete."""
    row = conn.execute(
        """
        select min(lease_expires_at) filter (where lease_expires_at >= %(now)s) as held_until,
               min(next_attempt_at) filter (
                   where next_attempt_at > %(now)s
                     and (lease_expires_at is null or lease_expires_at < %(now)s)
               ) as backing_off_until
          from strava_connections
         where status = 'active' and history_complete_at is null
        """,
        {"now": now},
    ).fetchone()
    assert row is not None
    return {**row, "next_planned_at": None}


@dataclass(frozen=True)
class WalkPosition:
    """Where a rider's history walk stands in the database."""

    started_at: datetime | None
    cursor: datetime | None


def walk_position(conn: Conn, *, rider_id: int) -> WalkPosition:
    """The stored walk start and cursor (read under the lock hold_lease took)."""
    row = conn.execute(
        "select history_walk_started_at as started_at, history_cursor as cursor"
        " from strava_connections where rider_id = %s",
        (rider_id,),
    ).fetchone()
    return WalkPosition(**row) if row else WalkPosition(None, None)


def walk_seen_ids(conn: Conn, *, rider_id: int, strava_ids: list[int], since: datetime) -> set[int]:
    """Which of these activities the walk started at `since` has already seen."""
    if not strava_ids:
        return set()
    rows = conn.execute(
        "select strava_id from activities"
        " where rider_id = %s and strava_id = any(%s) and seen_at >= %s",
        (rider_id, strava_ids, since),
    ).fetchall()
    return {int(r["strava_id"]) for r in rows}


def record_walk_page(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    walk_started_at: datetime,
    cursor: datetime,
    activities: int,
    races: int,
    now: datetime,
    estimated_complete_on: date | None = None,
) -> None:
    """Advance the walk by one page at `now`: cursor, progress and the estimated day
    of completion, in the page's transaction.

    The first page of a walk (no start stored yet) restarts the counters.
    """
    conn.execute(
        """
        update strava_connections
           set history_pages = case when history_walk_started_at is null then 0
                                    else history_pages end + 1,
               history_activities = case when history_walk_started_at is null then 0
                                         else history_activities end + %(activities)s,
               history_races = case when history_walk_started_at is null then 0
                                    else history_races end + %(races)s,
               history_walk_started_at = %(started)s, history_cursor = %(cursor)s,
               failure_count = 0, next_attempt_at = null, last_error = null,
               error_class = null, last_progress_at = %(now)s, updated_at = %(now)s,
               history_estimated_complete_on = %(estimate)s
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
            "estimate": estimated_complete_on,
            "now": now,
            "activities": activities,
            "races": races,
            "started": walk_started_at,
            "cursor": cursor,
            "rider_id": rider_id,
            "token": lease_token,
        },
    )


@dataclass(frozen=True)
class Unseen:
    """What a finished walk did not see, against all the rider's activities."""

    unseen: int
    total: int


def count_unseen_by_walk(conn: Conn, *, rider_id: int, walk_started_at: datetime) -> Unseen:
    """Activities older than the walk's start that the walk did not see (gone from Strava)."""
    row = conn.execute(
        """
        select count(*) filter (where start_date < %(started)s and seen_at < %(started)s)
                 as unseen,
               count(*) as total
          from activities where rider_id = %(rider_id)s
        """,
        {"started": walk_started_at, "rider_id": rider_id},
    ).fetchone()
    assert row is not None
    return Unseen(unseen=int(row["unseen"]), total=int(row["total"]))


def delete_unseen_by_walk(conn: Conn, *, rider_id: int, walk_started_at: datetime) -> int:
    """Remove what the finished walk did not see; newer rows are sync's, left alone."""
    cursor = conn.execute(
        "delete from activities"
        " where rider_id = %(rider_id)s and start_date < %(started)s and seen_at < %(started)s",
        {"rider_id": rider_id, "started": walk_started_at},
    )
    return cursor.rowcount


def complete_walk(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    now: datetime,
    error_class: str | None = None,
    message: str | None = None,
) -> None:
    """Mark the history complete at `now`, clear the walk and release the lease.

    Progress counters stay, for the status page; `error_class`/`message` record a
    reconciliation that was refused.
    """
    conn.execute(
        """
        update strava_connections
           set history_complete_at = %(now)s, history_walk_started_at = null,
               history_cursor = null, full_refresh_requested_at = null,
               last_error = %(message)s, error_class = %(error_class)s,
               last_progress_at = %(now)s,
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = %(now)s
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
            "now": now,
            "message": message,
            "error_class": error_class,
            "rider_id": rider_id,
            "token": lease_token,
        },
    )


@dataclass(frozen=True)
class FullRefresh:
    """What asking for a full refresh found: is there such a rider, was it queued."""

    rider_exists: bool
    queued: bool


def request_full_refresh(conn: Conn, *, rider_id: int, now: datetime) -> FullRefresh:
    """Queue a new history walk for an actively connected rider, asked at `now`.

    Nothing is deleted here: rows stay readable, and the walk's end removes only what it
    did not see. A walk in progress is reset (its call notices and stops writing).
    """
    row = conn.execute(
        """
        with refreshed as (
            update strava_connections
               set full_refresh_requested_at = %(now)s, history_complete_at = null,
                   history_walk_started_at = null, history_cursor = null,
                   history_pages = 0, history_activities = 0, history_races = 0,
                   updated_at = %(now)s
             where rider_id = %(rider_id)s and status = 'active'
            returning rider_id
        )
        select exists (select 1 from riders where id = %(rider_id)s) as rider_exists,
               exists (select 1 from refreshed) as queued
        """,
        {"rider_id": rider_id, "now": now},
    ).fetchone()
    assert row is not None
    return FullRefresh(rider_exists=bool(row["rider_exists"]), queued=bool(row["queued"]))


@dataclass(frozen=True)
class DiscoveryProgress:
    """A rider's history walk as the admin status shows it."""

    rider_id: int
    pages: int
    activities: int
    races: int
    oldest_reached: datetime | None
    complete: bool
    complete_at: datetime | None
    walk_started_at: datetime | None
    full_refresh_requested_at: datetime | None
    last_progress_at: datetime | None


def discovery_progress(conn: Conn, *, rider_id: int) -> DiscoveryProgress | None:
    """The rider's walk progress; None without a connection.

    The oldest date reached is the cursor while walking, the oldest stored activity once
    complete, and unknown before the walk's first page.
    """
    row = conn.execute(
        """
        select c.rider_id, c.history_pages as pages, c.history_activities as activities,
               c.history_races as races,
               case when c.history_walk_started_at is not null then c.history_cursor
                    when c.history_complete_at is not null then
                         (select min(a.start_date) from activities a
                           where a.rider_id = c.rider_id)
               end as oldest_reached,
               c.history_complete_at is not null as complete,
               c.history_complete_at as complete_at,
               c.history_walk_started_at as walk_started_at,
               c.full_refresh_requested_at, c.last_progress_at
          from strava_connections c where c.rider_id = %s
        """,
        (rider_id,),
    ).fetchone()
    return DiscoveryProgress(**row) if row else None
