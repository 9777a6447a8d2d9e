"""Syncing riders: which are due, the leases and rounds of sync-strava and Sync now, and
what each sync leaves behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from models.base import Conn
from models.enrichment import RACE_WAITING


@dataclass(frozen=True)
class RiderLease:
    """A rider claimed by one call, with what that call needs to work on it."""

    rider_id: int
    athlete_id: int
    lease_token: UUID
    scope: str
    sync_cursor: datetime | None
    connected_at: datetime
    history_walk_started_at: datetime | None
    history_cursor: datetime | None
    sync_listing_after: datetime | None = None
    sync_listing_page: int | None = None
    sync_listing_newest: datetime | None = None
    last_synced_at: datetime | None = None
    # What a history walk's progress and completion estimate are measured with.
    history_activities: int = 0
    athlete_created_at: datetime | None = None
    last_look_back_at: datetime | None = None
    # Whether the rider shares with the club: only then are routes cut as they are stored.
    shares_with_club: bool = False

    @property
    def read_all(self) -> bool:
        return "activity:read_all" in self.scope.split(",")


# Not synced (or tried) since the open sync round opened; every rider when none is open.
NOT_DONE_IN_ROUND = """
    (c.last_sync_attempt_at is null
     or c.last_sync_attempt_at < coalesce(
         (select w.opened_at from work_rounds w
           where w.kind = 'sync-strava' and w.closed_at is null), 'infinity'))
"""


# The rider's poll is due at %(now)s: its planned time has come (none planned: at once)
# and the floor since the last sync has passed; a listing cut short resumes at once.
POLL_DUE = """
    (c.sync_listing_page is not null
     or ((c.next_poll_at is null or c.next_poll_at <= %(now)s)
         and (c.last_synced_at is null
              or c.last_synced_at <= %(now)s - make_interval(secs => %(min_interval_s)s))))
"""


# Due for sync-strava at the instant %(now)s: an active connection with auto sync on, not
# held by any call, not backing off, its poll due, and not already synced or tried in the
# open round (see open_sync_round).
_SYNC_DUE = f"""
    c.status = 'active' and r.auto_sync
    and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
    and (c.next_attempt_at is null or c.next_attempt_at <= %(now)s)
    and {POLL_DUE}
    and {NOT_DONE_IN_ROUND}
"""


# Riders whose poll may be due at %(now)s, found through the indexes of planned polls and
# of unfinished listings (migration plan_what_changed), so finding what is due reads what
# is due, not every rider; _SYNC_DUE then decides.
DUE_CANDIDATES = """
    select rider_id from strava_connections
     where status = 'active' and next_poll_at <= %(now)s
    union all
    select rider_id from strava_connections
     where status = 'active' and next_poll_at is null
    union all
    select rider_id from strava_connections
     where status = 'active' and sync_listing_page is not null
"""


# "Everyone now" (sync-strava with all=true): every rider not synced within the
# interval is due, whatever their plan; the lease, the backoff and the round still hold.
_FLOOR_PASSED = """
    (c.last_synced_at is null
     or c.last_synced_at <= %(now)s - make_interval(secs => %(min_interval_s)s))
"""
_SYNC_DUE_EVERYONE = f"""
    c.status = 'active' and r.auto_sync
    and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
    and (c.next_attempt_at is null or c.next_attempt_at <= %(now)s)
    and (c.sync_listing_page is not null or {_FLOOR_PASSED})
    and {NOT_DONE_IN_ROUND}
"""


def _due(everyone: bool) -> str:
    """The condition on `c` (a connection) and `r` (its rider) of being due; a planned
    call looks only at the candidates the indexes of planned polls give, read once
    into an array (as `in (...)`, the planner may read them again for each rider it
    looks at: the riders due, squared)."""
    if everyone:
        return _SYNC_DUE_EVERYONE
    return f"c.rider_id = any(array({DUE_CANDIDATES})) and {_SYNC_DUE}"


LEASE_COLUMNS = """
    c.rider_id, c.athlete_id, c.lease_token, c.scope, c.sync_cursor, c.connected_at,
    c.history_walk_started_at, c.history_cursor,
    c.sync_listing_after, c.sync_listing_page, c.sync_listing_newest, c.last_synced_at,
    c.history_activities, c.athlete_created_at, c.last_look_back_at,
    (select r.share_with_club_at is not null from riders r where r.id = c.rider_id)
        as shares_with_club
"""


def open_sync_round(conn: Conn, *, now: datetime) -> datetime:
    """Open a sync round at `now` unless one is open; returns when the open one opened.

    A round lasts until a call finds nothing of it left (close_sync_round): the calls of
    a workflow loop share it, so what one call synced is not due again in the next.
    """
    row = conn.execute(
        """
        insert into work_rounds as w (kind, opened_at) values ('sync-strava', %(now)s)
        on conflict (kind) do update set opened_at = excluded.opened_at, closed_at = null
         where w.closed_at is not null
        returning opened_at
        """,
        {"now": now},
    ).fetchone()
    if row is not None:
        return row["opened_at"]
    row = conn.execute("select opened_at from work_rounds where kind = 'sync-strava'").fetchone()
    assert row is not None
    return row["opened_at"]


def close_sync_round(conn: Conn, *, now: datetime) -> None:
    """Close the open sync round once nothing due is left and no call still syncs a rider
    of it (that call's riders would otherwise count as undone in the next round)."""
    conn.execute(
        """
        update work_rounds set closed_at = %(now)s
         where kind = 'sync-strava' and closed_at is null
           and not exists (select 1 from strava_connections
                            where lease_token is not null and lease_kind = 'sync'
                              and lease_expires_at >= %(now)s)
        """,
        {"now": now},
    )


def claim_riders_for_sync(
    conn: Conn,
    *,
    lease_token: UUID,
    limit: int,
    lease_ttl_s: int,
    min_interval_s: int,
    now: datetime,
    everyone: bool = False,
) -> list[RiderLease]:
    """Lease up to `limit` riders due for sync at `now` (with `everyone`, every rider
    past the interval, whatever their plan), least recently synced first.

    One statement; SKIP LOCKED lets overlapping calls split the riders between them.
    """
    rows = conn.execute(
        f"""
        with due as (
            select c.rider_id from strava_connections c join riders r on r.id = c.rider_id
            where {_due(everyone)}
            order by c.last_synced_at nulls first, c.rider_id
            limit %(limit)s
            for update of c skip locked
        )
        update strava_connections c
           set lease_token = %(token)s, lease_kind = 'sync',
               lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from due where c.rider_id = due.rider_id
        returning {LEASE_COLUMNS}
        """,
        {
            "min_interval_s": min_interval_s,
            "limit": limit,
            "token": lease_token,
            "ttl": lease_ttl_s,
            "now": now,
        },
    ).fetchall()
    return sorted((RiderLease(**row) for row in rows), key=lambda lease: lease.rider_id)


def count_riders_due_for_sync(
    conn: Conn, *, min_interval_s: int, now: datetime, everyone: bool = False
) -> int:
    """Riders due for sync at `now` (with `everyone`: past the interval, whatever their
    plan) and not held by any call."""
    row = conn.execute(
        f"""
        select count(*) as n from strava_connections c join riders r on r.id = c.rider_id
        where {_due(everyone)}
        """,
        {"min_interval_s": min_interval_s, "now": now},
    ).fetchone()
    assert row is not None
    return int(row["n"])


# How many riders' plans are looked at for the next planned poll: the earliest by
# next_poll_at (or by last sync, for everyone), read from an index, never every rider.
_NEXT_LOOKED_AT = 50


def sync_waiting(
    conn: Conn, *, min_interval_s: int, now: datetime, everyone: bool = False
) -> dict[str, datetime | None]:
    """For a call that took nothing: the earliest end of a lease on a rider otherwise
    due (`held_until`), the earliest retry of one backing off (`backing_off_until`),
    and the earliest planned poll (`next_planned_at`; None when nobody is planned)."""
    due = _FLOOR_PASSED if everyone else POLL_DUE
    order = "c.last_synced_at nulls first" if everyone else "c.next_poll_at nulls first"
    planned = (
        "coalesce(s.last_synced_at + make_interval(secs => %(min_interval_s)s), %(now)s)"
        if everyone
        else "greatest(coalesce(s.next_poll_at, %(now)s),"
        " s.last_synced_at + make_interval(secs => %(min_interval_s)s))"
    )
    row = conn.execute(
        f"""
        select
          (select min(c.lease_expires_at)
             from strava_connections c join riders r on r.id = c.rider_id
            where c.lease_token is not null and c.lease_expires_at >= %(now)s
              and c.status = 'active' and r.auto_sync and {due}) as held_until,
          (select min(c.next_attempt_at)
             from strava_connections c join riders r on r.id = c.rider_id
            where c.next_attempt_at > %(now)s and c.status = 'active' and r.auto_sync
              and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
              and {due}) as backing_off_until,
          (select min({planned}) from (
              select c.next_poll_at, c.last_synced_at
                from strava_connections c join riders r on r.id = c.rider_id
               where c.status = 'active' and r.auto_sync
                 and (c.next_attempt_at is null or c.next_attempt_at <= %(now)s)
               order by {order} limit {_NEXT_LOOKED_AT}) s) as next_planned_at
        """,
        {"min_interval_s": min_interval_s, "now": now},
    ).fetchone()
    assert row is not None
    return dict(row)


def hold_lease(conn: Conn, *, rider_id: int, lease_token: UUID) -> bool:
    """Lock the rider's row if this call still holds its lease (for a write-back)."""
    row = conn.execute(
        "select 1 from strava_connections where rider_id = %s and lease_token = %s for update",
        (rider_id, lease_token),
    ).fetchone()
    return row is not None


def release_lease(conn: Conn, *, rider_id: int, lease_token: UUID) -> None:
    """Hand a rider back (only if this call still holds it)."""
    conn.execute(
        """
        update strava_connections
           set lease_token = null, lease_kind = null, lease_expires_at = null
         where rider_id = %s and lease_token = %s
        """,
        (rider_id, lease_token),
    )


def release_leases(conn: Conn, *, lease_token: UUID, rider_ids: list[int]) -> None:
    """Hand back several riders a call claimed but did not start."""
    conn.execute(
        """
        update strava_connections
           set lease_token = null, lease_kind = null, lease_expires_at = null
         where rider_id = any(%s) and lease_token = %s
        """,
        (rider_ids, lease_token),
    )


def finish_sync(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    sync_cursor: datetime | None,
    added: int,
    updated: int,
    now: datetime,
    looked_back: bool = False,
) -> None:
    """Advance the cursor, mark the rider synced at `now` and healthy, and release the
    lease. `looked_back`: the listing was the rider's weekly look back."""
    conn.execute(
        """
        update strava_connections
           set sync_cursor = greatest(sync_cursor, %(cursor)s),
               last_synced_at = %(now)s, last_sync_attempt_at = %(now)s,
               last_sync_added = %(added)s,
               last_sync_updated = %(updated)s, last_error = null, error_class = null,
               sync_listing_after = null, sync_listing_page = null, sync_listing_newest = null,
               last_look_back_at = case when %(looked_back)s then %(now)s
                                        else last_look_back_at end,
               failure_count = 0, next_attempt_at = null, last_progress_at = %(now)s,
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = %(now)s
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
            "now": now,
            "cursor": sync_cursor,
            "added": added,
            "updated": updated,
            "looked_back": looked_back,
            "rider_id": rider_id,
            "token": lease_token,
        },
    )


def record_sync_listing(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    after: datetime,
    next_page: int,
    newest: datetime | None,
    now: datetime,
) -> None:
    """Where an unfinished listing resumes: its `after`, next page and newest start."""
    conn.execute(
        """
        update strava_connections
           set sync_listing_after = %s, sync_listing_page = %s, sync_listing_newest = %s,
               last_progress_at = %s, updated_at = %s
         where rider_id = %s and lease_token = %s
        """,
        (after, next_page, newest, now, now, rider_id, lease_token),
    )


def record_rider_failure(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    error_class: str,
    message: str,
    now: datetime,
    base_backoff_s: int = 60,
    max_backoff_s: int = 6 * 3600,
) -> None:
    """Count a failure at `now`, back the rider off exponentially and release the lease."""
    conn.execute(
        """
        update strava_connections
           set failure_count = failure_count + 1,
               next_attempt_at = %(now)s + make_interval(secs => least(
                   %(max)s, %(base)s * power(2, least(failure_count, 20)))),
               last_error = %(message)s, error_class = %(error_class)s,
               last_sync_attempt_at = case when lease_kind in ('sync', 'sync_now')
                                           then %(now)s else last_sync_attempt_at end,
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = %(now)s
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
            "now": now,
            "max": max_backoff_s,
            "base": base_backoff_s,
            "message": message,
            "error_class": error_class,
            "rider_id": rider_id,
            "token": lease_token,
        },
    )


def sync_now_position(
    conn: Conn, *, rider_id: int, cooldown_s: int, now: datetime
) -> dict[str, Any] | None:
    """What decides a Sync now at `now`: status, whether a call holds the rider, cooldown
    left."""
    return conn.execute(
        """
        select status, lease_kind,
               (lease_token is not null and lease_expires_at >= %(now)s) as leased,
               greatest(0, extract(epoch from
                   last_sync_now_at + make_interval(secs => %(cooldown)s) - %(now)s))::float
                   as cooldown_left_s
          from strava_connections where rider_id = %(rider_id)s
        """,
        {"cooldown": cooldown_s, "rider_id": rider_id, "now": now},
    ).fetchone()


def claim_rider_for_sync_now(
    conn: Conn,
    *,
    rider_id: int,
    lease_token: UUID,
    lease_ttl_s: int,
    cooldown_s: int,
    now: datetime,
) -> RiderLease | None:
    """Lease this rider for a Sync now in one statement, only if no call holds it and its
    cooldown is over at `now`; starts the cooldown."""
    row = conn.execute(
        f"""
        update strava_connections c
           set lease_token = %(token)s, lease_kind = 'sync_now',
               lease_expires_at = %(now)s + make_interval(secs => %(ttl)s),
               last_sync_now_at = %(now)s
         where c.rider_id = %(rider_id)s and c.status = 'active'
           and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
           and (c.last_sync_now_at is null
                or c.last_sync_now_at <= %(now)s - make_interval(secs => %(cooldown)s))
        returning {LEASE_COLUMNS}
        """,
        {
            "token": lease_token,
            "ttl": lease_ttl_s,
            "rider_id": rider_id,
            "cooldown": cooldown_s,
            "now": now,
        },
    ).fetchone()
    return RiderLease(**row) if row else None


def clear_sync_now_cooldown(conn: Conn, *, rider_id: int) -> None:
    """A Sync now that could not start (rate limit) does not cost the rider a cooldown."""
    conn.execute(
        "update strava_connections set last_sync_now_at = null where rider_id = %s", (rider_id,)
    )


# What a rider's sync is doing at %(now)s, first match wins, so every connection is in one
# bucket. 'due' is exactly the set count_riders_due_for_sync counts.
SYNC_STATE = f"""
    case
      when c.rider_id is null then 'not_connected'
      when c.status <> 'active' then 'stopped'
      when c.lease_expires_at >= %(now)s then 'in_progress'
      when not r.auto_sync then 'paused'
      when c.next_attempt_at > %(now)s then 'backing_off'
      when {POLL_DUE} and {NOT_DONE_IN_ROUND} then 'due'
      else 'up_to_date'
    end
"""


def rider_sync_state(
    conn: Conn, *, rider_id: int, min_interval_s: int, max_attempts: int, now: datetime
) -> dict[str, Any] | None:
    """A rider, its connection (never the tokens) and its activity counts as they stand at
    `now`, in one row (`now` included)."""
    return conn.execute(
        f"""
        select r.id as rider_id, r.name, r.auto_sync, r.created_at, r.auth_user_id,
               r.eddington_miles, r.eddington_km, r.eddington_updated_at,
               r.share_with_club_at, c.history_estimated_complete_on,
               l.strava_id as latest_strava_id, l.name as latest_name,
               l.start_date as latest_start_date,
               c.rider_id is not null as connected, c.athlete_id, c.status, c.scope,
               c.expires_at as token_expires_at, c.connected_at,
               {SYNC_STATE} as sync_state,
               (c.lease_token is not null and c.lease_expires_at >= %(now)s) as in_progress,
               c.lease_kind, c.lease_expires_at,
               c.last_synced_at, c.last_sync_added, c.last_sync_updated, c.sync_cursor,
               c.last_error, c.error_class, c.failure_count, c.next_attempt_at,
               c.history_complete_at, c.history_walk_started_at, c.history_cursor,
               c.history_pages, c.history_activities, c.history_races,
               c.full_refresh_requested_at, c.athlete_created_at, c.last_progress_at,
               c.last_sync_now_at, c.next_poll_at, c.polls_per_day, c.poll_reason,
               q.*, %(now)s::timestamptz as now
          from riders r
          left join strava_connections c on c.rider_id = r.id
          cross join lateral (
              select count(*) as activities,
                     count(*) filter (where a.is_race) as races,
                     count(*) filter (where {RACE_WAITING}) as races_waiting,
                     count(*) filter (where a.enrichment_status = 'pending') as races_pending,
                     count(*) filter (where a.enrichment_status = 'done') as races_done,
                     count(*) filter (where a.enrichment_status = 'failed'
                                      and a.enrichment_attempts >= %(max_attempts)s)
                         as races_failed,
                     min(a.start_date) as first_activity_at,
                     max(a.start_date) as last_activity_at
                from activities a where a.rider_id = r.id
          ) q
          left join lateral (
              select a.strava_id, a.name, a.start_date from activities a
               where a.rider_id = r.id order by a.start_date desc limit 1
          ) l on true
         where r.id = %(rider_id)s
        """,
        {
            "rider_id": rider_id,
            "min_interval_s": min_interval_s,
            "max_attempts": max_attempts,
            "now": now,
        },
    ).fetchone()
