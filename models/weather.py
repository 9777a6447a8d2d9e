"""All SQL of the service: named functions with parameterised queries (psycopg 3).

Every function takes an open connection; the caller's `with db.connection()` block is the
unit of work (commit at the end, roll back on error). Writes are idempotent upserts,
since any cron call may be retried or overlap another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

# Every connection of the service returns rows as dicts (db.py sets the row factory).
Conn = psycopg.Connection[DictRow]

# --- migrations ----------------------------------------------------------------------

# Transaction-level, so it holds through Supabase's transaction pooler.
_MIGRATION_LOCK = 7_226_101_842


def apply_migrations(conn: Conn, migrations: list[tuple[str, str, str]]) -> list[str]:
    """Apply the (version, name, sql) migrations not yet recorded; return those applied.

    Uses the Supabase CLI's own history table, so `supabase db push` and the service agree.
    """
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        done = {
            row["version"] if isinstance(row, dict) else row[0]
            for row in conn.execute("select version from supabase_migrations.schema_migrations")
        }
        applied = []
        for version, name, sql in migrations:
            if version in done:
                continue
            conn.execute(sql.encode())  # a whole file: several statements, no parameters
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                (version, name),
            )
            applied.append(version)
    return applied


# --- riders and connections ----------------------------------------------------------


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

    @property
    def read_all(self) -> bool:
        return "activity:read_all" in self.scope.split(",")


def create_rider(
    conn: Conn,
    *,
    name: str,
    auth_user_id: UUID | str | None = None,
    created_at: datetime | None = None,
) -> int:
    """Insert a rider (created at `created_at`, else by the column's default) and return
    its id. The service creates riders with ensure_rider_for_user; this is for seeding."""
    if created_at is None:
        row = conn.execute(
            "insert into riders (name, auth_user_id) values (%s, %s) returning id",
            (name, auth_user_id),
        ).fetchone()
    else:
        row = conn.execute(
            "insert into riders (name, auth_user_id, created_at) values (%s, %s, %s) returning id",
            (name, auth_user_id, created_at),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def save_connection(
    conn: Conn,
    *,
    rider_id: int,
    athlete_id: int,
    access_sealed: str,
    refresh_sealed: str,
    expires_at: datetime,
    scope: str,
    now: datetime,
) -> None:
    """Store a (re)connected rider's grant, connected at `now`: active, history to be
    discovered. The tokens come sealed (services/sealing.py); SQL never sees them plain."""
    conn.execute(
        """
        insert into strava_connections
            (rider_id, athlete_id, access_token, refresh_token, expires_at, scope, status,
             connected_at, sync_cursor, updated_at)
        values (%(rider_id)s, %(athlete_id)s, %(access)s, %(refresh)s, %(expires_at)s, %(scope)s,
                'active', %(now)s, %(now)s, %(now)s)
        on conflict (rider_id) do update set
            athlete_id = excluded.athlete_id, access_token = excluded.access_token,
            refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
            scope = excluded.scope, status = 'active', last_error = null, error_class = null,
            failure_count = 0, next_attempt_at = null, history_complete_at = null,
            history_walk_started_at = null, history_cursor = null, history_pages = 0,
            history_activities = 0, history_races = 0,
            sync_cursor = coalesce(strava_connections.sync_cursor, excluded.sync_cursor),
            updated_at = excluded.updated_at
        """,
        {
            "rider_id": rider_id,
            "athlete_id": athlete_id,
            "access": access_sealed,
            "refresh": refresh_sealed,
            "expires_at": expires_at,
            "scope": scope,
            "now": now,
        },
    )


# Not synced (or tried) since the open sync round opened; every rider when none is open.
_NOT_DONE_IN_ROUND = """
    (c.last_sync_attempt_at is null
     or c.last_sync_attempt_at < coalesce(
         (select w.opened_at from work_rounds w
           where w.kind = 'sync-strava' and w.closed_at is null), 'infinity'))
"""

# The rider's poll is due at %(now)s: its planned time has come (none planned: at once)
# and the floor since the last sync has passed; a listing cut short resumes at once.
_POLL_DUE = """
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
    and {_POLL_DUE}
    and {_NOT_DONE_IN_ROUND}
"""

_LEASE_COLUMNS = """
    c.rider_id, c.athlete_id, c.lease_token, c.scope, c.sync_cursor, c.connected_at,
    c.history_walk_started_at, c.history_cursor,
    c.sync_listing_after, c.sync_listing_page, c.sync_listing_newest, c.last_synced_at
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
                            where lease_kind = 'sync' and lease_expires_at >= %(now)s)
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
) -> list[RiderLease]:
    """Lease up to `limit` riders due for sync at `now`, least recently synced first.

    One statement; SKIP LOCKED lets overlapping calls split the riders between them.
    """
    rows = conn.execute(
        f"""
        with due as (
            select c.rider_id from strava_connections c join riders r on r.id = c.rider_id
            where {_SYNC_DUE}
            order by c.last_synced_at nulls first, c.rider_id
            limit %(limit)s
            for update of c skip locked
        )
        update strava_connections c
           set lease_token = %(token)s, lease_kind = 'sync',
               lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from due where c.rider_id = due.rider_id
        returning {_LEASE_COLUMNS}
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


def count_riders_due_for_sync(conn: Conn, *, min_interval_s: int, now: datetime) -> int:
    """Riders due for sync at `now` and not held by any call."""
    row = conn.execute(
        f"""
        select count(*) as n from strava_connections c join riders r on r.id = c.rider_id
        where {_SYNC_DUE}
        """,
        {"min_interval_s": min_interval_s, "now": now},
    ).fetchone()
    assert row is not None
    return int(row["n"])


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
) -> None:
    """Advance the cursor, mark the rider synced at `now` and healthy, and release the
    lease."""
    conn.execute(
        """
        update strava_connections
           set sync_cursor = greatest(sync_cursor, %(cursor)s),
               last_synced_at = %(now)s, last_sync_attempt_at = %(now)s,
               last_sync_added = %(added)s,
               last_sync_updated = %(updated)s, last_error = null, error_class = null,
               sync_listing_after = null, sync_listing_page = null, sync_listing_newest = null,
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


# --- tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTokens:
    """A connection's tokens as stored: sealed (services/sealing.py), or plain text in a
    row written before tokens were sealed."""

    rider_id: int
    access_token: str
    refresh_token: str
    expires_at: datetime
    status: str

    def __repr__(self) -> str:  # never print tokens, even sealed
        return f"StoredTokens(rider_id={self.rider_id}, status={self.status!r})"


_TOKEN_COLUMNS = "rider_id, access_token, refresh_token, expires_at, status"


def read_tokens(conn: Conn, *, rider_id: int, for_update: bool = False) -> StoredTokens | None:
    """The rider's stored tokens; with for_update, lock the row so refreshes are serialized."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        f"select {_TOKEN_COLUMNS} from strava_connections where rider_id = %s{lock}",
        (rider_id,),
    ).fetchone()
    return StoredTokens(**row) if row else None


def store_tokens(
    conn: Conn,
    *,
    rider_id: int,
    access_sealed: str,
    refresh_sealed: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """Keep the newest tokens, sealed (Strava rotates the refresh token)."""
    conn.execute(
        """
        update strava_connections
           set access_token = %s, refresh_token = %s, expires_at = %s, updated_at = %s
         where rider_id = %s
        """,
        (access_sealed, refresh_sealed, expires_at, now, rider_id),
    )


def reseal_tokens(
    conn: Conn,
    *,
    rider_id: int,
    stored_access: str,
    stored_refresh: str,
    access_sealed: str,
    refresh_sealed: str,
) -> bool:
    """Replace the stored tokens by the same tokens sealed anew, only if the row still
    holds exactly `stored_*` (compare-and-set) and no other transaction has it locked
    (a refresh in flight, which stores new tokens sealed anyway): a stale token never
    overwrites a newer one, and nothing waits. Whether the row was written.

    The same tokens, so `updated_at` is left alone. A row this transaction has locked
    itself (rotate_token_key's batches) is not skipped.
    """
    return (
        conn.execute(
            """
            update strava_connections c
               set access_token = %(access)s, refresh_token = %(refresh)s
              from (select rider_id from strava_connections
                     where rider_id = %(rider_id)s
                       and access_token = %(stored_access)s
                       and refresh_token = %(stored_refresh)s
                     for update skip locked) s
             where c.rider_id = s.rider_id
            """,
            {
                "rider_id": rider_id,
                "stored_access": stored_access,
                "stored_refresh": stored_refresh,
                "access": access_sealed,
                "refresh": refresh_sealed,
            },
        ).rowcount
        == 1
    )


# A row some token of which is not sealed under the key whose values start %(prefix)s.
_NOT_UNDER_KEY = """
    not (starts_with(access_token, %(prefix)s) and starts_with(refresh_token, %(prefix)s))
    and rider_id <> all(%(skip)s::bigint[])
"""


def lock_tokens_to_reseal(
    conn: Conn, *, current_prefix: str, after_rider_id: int, skip: list[int], limit: int
) -> list[StoredTokens]:
    """Up to `limit` connections after `after_rider_id` (by rider id) with a token not
    under the current key, locked for this transaction; rows another transaction holds
    (a token refresh in flight) are skipped, not waited for, and `skip` is left out."""
    rows = conn.execute(
        f"""
        select {_TOKEN_COLUMNS} from strava_connections
         where rider_id > %(after)s and {_NOT_UNDER_KEY}
         order by rider_id
         limit %(limit)s
         for update skip locked
        """,
        {"prefix": current_prefix, "after": after_rider_id, "skip": skip, "limit": limit},
    ).fetchall()
    return [StoredTokens(**row) for row in rows]


def count_tokens_to_reseal(conn: Conn, *, current_prefix: str, skip: list[int]) -> tuple[int, int]:
    """(connections, those with a token not under the current key but those in `skip`)."""
    row = conn.execute(
        f"select count(*) as total, count(*) filter (where {_NOT_UNDER_KEY}) as left"
        " from strava_connections",
        {"prefix": current_prefix, "skip": skip},
    ).fetchone()
    assert row is not None
    return int(row["total"]), int(row["left"])


def mark_needs_reauth(conn: Conn, *, rider_id: int, message: str, now: datetime) -> None:
    """The grant is gone: skip this rider until it reconnects."""
    conn.execute(
        """
        update strava_connections
           set status = 'needs_reauth', last_error = %s, error_class = 'needs_reauth',
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = %s
         where rider_id = %s
        """,
        (message, now, rider_id),
    )


# --- activities ----------------------------------------------------------------------

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
_STORED_SUMMARY_COLUMNS = [c for c in _STORED_COLUMNS if c != "strava_id"]


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    races_inserted: int = 0


_UPSERT_ACTIVITIES = f"""
    insert into activities as a (rider_id, {", ".join(_STORED_COLUMNS)},
                                 enrichment_status, seen_at, created_at, updated_at)
    select %(rider_id)s, {", ".join("r." + c for c in _STORED_COLUMNS)},
           case when r.is_race then 'pending' end, %(now)s, %(now)s, %(now)s
      from json_to_recordset(%(rows)s::json) as r(
           {", ".join(f"{c} {t}" for c, t in _STORED_COLUMNS.items())})
    on conflict (strava_id) do update set
           {", ".join(f"{c} = excluded.{c}" for c in _STORED_SUMMARY_COLUMNS)},
           enrichment_status = case when excluded.is_race
                                    then coalesce(a.enrichment_status, 'pending') end,
           -- weather is looked up again when its points or times change (issue 12)
           weather_status = case
               when (a.start_lat, a.start_lng, a.start_date, a.elapsed_time_s)
                    is distinct from (excluded.start_lat, excluded.start_lng,
                                      excluded.start_date, excluded.elapsed_time_s)
               then null else a.weather_status end,
           seen_at = excluded.seen_at, updated_at = excluded.updated_at
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


# --- the shared rate budget ----------------------------------------------------------


@dataclass
class BudgetRow:
    limit_15min: int
    limit_daily: int
    read_limit_15min: int
    read_limit_daily: int
    usage_15min: int
    usage_daily: int
    read_usage_15min: int
    read_usage_daily: int
    window_start: datetime
    day_start: datetime
    blocked_until: datetime | None
    blocked_reason: str | None
    headers_seen_at: datetime | None


_BUDGET_FIELDS = list(BudgetRow.__dataclass_fields__)


def read_rate_budget(conn: Conn, *, for_update: bool = False) -> BudgetRow:
    """The application's budget row (locked with for_update, so reservations are atomic)."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        f"select {', '.join(_BUDGET_FIELDS)} from strava_rate_budget where id = 1{lock}"
    ).fetchone()
    if row is None:  # the migration inserts it; recreate if someone deleted it
        # (its windows start at the epoch, so the first reservation rolls them to the clock)
        conn.execute("insert into strava_rate_budget (id) values (1) on conflict do nothing")
        return read_rate_budget(conn, for_update=for_update)
    return BudgetRow(**row)


def count_request(conn: Conn, *, window_start: datetime, work_class: str) -> None:
    """One Strava request reserved by `work_class` in the window starting `window_start`."""
    conn.execute(
        """
        insert into strava_request_windows as w (window_start, work_class, requests)
        values (%s, %s, 1)
        on conflict (window_start, work_class) do update set requests = w.requests + 1
        """,
        (window_start, work_class),
    )


def requests_by_class(conn: Conn, *, since: datetime) -> list[dict[str, Any]]:
    """Requests per window and class from `since` on, oldest window first."""
    return conn.execute(
        """
        select window_start, work_class, requests from strava_request_windows
         where window_start >= %s order by window_start, work_class
        """,
        (since,),
    ).fetchall()


def prune_request_windows(conn: Conn, *, before: datetime) -> int:
    """Forget the request counts of windows that started before `before`."""
    return conn.execute(
        "delete from strava_request_windows where window_start < %s", (before,)
    ).rowcount


def save_rate_budget(conn: Conn, budget: BudgetRow, *, now: datetime) -> None:
    """Write the budget row back at `now` (the caller holds its lock)."""
    conn.execute(
        f"""
        update strava_rate_budget
           set {", ".join(f"{f} = %({f})s" for f in _BUDGET_FIELDS)}, updated_at = %(now)s
         where id = 1
        """,
        {**budget.__dict__, "now": now},
    )


# --- runs ----------------------------------------------------------------------------


def start_run(conn: Conn, *, kind: str, now: datetime) -> int:
    """Log the start of a call at `now`; a row never finished is a call that died."""
    row = conn.execute(
        "insert into cron_runs (kind, started_at) values (%s, %s) returning id", (kind, now)
    ).fetchone()
    assert row is not None
    return int(row["id"])


def prune_runs(conn: Conn, *, kind: str, keep_days: int, now: datetime) -> int:
    """Delete a kind's runs older than `keep_days` before `now` (the log must not fill the
    database)."""
    cursor = conn.execute(
        "delete from cron_runs where kind = %s and started_at < %s - make_interval(days => %s)",
        (kind, now, keep_days),
    )
    return cursor.rowcount


def finish_run(conn: Conn, *, run_id: int, summary: dict[str, Any], now: datetime) -> None:
    """Record a call's end at `now`: its counts, rate-limit snapshot and items."""
    conn.execute(
        """
        update cron_runs
           set finished_at = %(now)s, processed = %(processed)s, succeeded = %(succeeded)s,
               failed = %(failed)s, skipped = %(skipped)s, remaining = %(remaining)s,
               rate_limited = %(rate_limited)s, rate_limit = %(rate_limit)s,
               items = %(items)s, error_summary = %(error_summary)s
         where id = %(run_id)s
        """,
        {
            "now": now,
            "run_id": run_id,
            "processed": summary["processed"],
            "succeeded": summary["succeeded"],
            "failed": summary["failed"],
            "skipped": summary["skipped"],
            "remaining": summary["remaining"],
            "rate_limited": summary["rate_limited"],
            "rate_limit": Jsonb(summary["rate_limit"]),
            "items": Jsonb(json.loads(json.dumps(summary["items"], default=str))),
            "error_summary": summary.get("error_summary"),
        },
    )


def fail_run(conn: Conn, *, run_id: int, error_summary: str, now: datetime) -> None:
    """Close the run row of a call that raised, at `now`."""
    conn.execute(
        "update cron_runs set finished_at = %s, error_summary = %s where id = %s",
        (now, error_summary, run_id),
    )


def ping(conn: Conn) -> None:
    """A trivial query: is the database there?"""
    conn.execute("select 1")


# --- discovery: history walks (issue 3) ----------------------------------------------

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
        returning {_LEASE_COLUMNS}
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
) -> None:
    """Advance the walk by one page at `now`: cursor and progress, in the page's
    transaction.

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
               error_class = null, last_progress_at = %(now)s, updated_at = %(now)s
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
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


# --- enrichment: race details (issue 3) ----------------------------------------------

# A race whose fetch failed but has attempts left (after the maximum it stays failed).
_RETRYABLE = "a.enrichment_status = 'failed' and a.enrichment_attempts < %(max_attempts)s"

# Races still to be detailed: pending, or failed with attempts left.
_RACE_WAITING = f"(a.enrichment_status = 'pending' or ({_RETRYABLE}))"

# Due for enrich at the instant %(now)s: a race pending, or failed with attempts left and
# its backoff over; not held by any call; its rider connected (riders who must reconnect
# are left alone).
_ENRICH_DUE = f"""
    a.is_race
    and (a.enrichment_status = 'pending'
         or ({_RETRYABLE}
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


def finish_enrichment(
    conn: Conn,
    *,
    strava_id: int,
    lease_token: UUID,
    description: str | None,
    polyline: str | None,
    details: dict[str, Any],
    now: datetime,
) -> bool:
    """Store a race's details, enriched at `now`, and release it; False if this call no
    longer holds it (or it is no longer a race)."""
    row = conn.execute(
        """
        update activities
           set description = %(description)s, polyline = %(polyline)s,
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


# --- riders' own endpoints, OAuth and admin status (issue 4) -------------------------


def rider_id_for_user(conn: Conn, *, auth_user_id: UUID) -> int | None:
    """The rider of a Supabase user, if one was created."""
    row = conn.execute("select id from riders where auth_user_id = %s", (auth_user_id,)).fetchone()
    return int(row["id"]) if row else None


def ensure_rider_for_user(conn: Conn, *, auth_user_id: UUID, now: datetime) -> int:
    """The rider of a Supabase user, created at `now` on first connect (and locked)."""
    row = conn.execute(
        """
        insert into riders (auth_user_id, created_at) values (%s, %s)
        on conflict (auth_user_id) do update set auth_user_id = excluded.auth_user_id
        returning id
        """,
        (auth_user_id, now),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def rider_exists(conn: Conn, *, rider_id: int) -> bool:
    return conn.execute("select 1 from riders where id = %s", (rider_id,)).fetchone() is not None


def save_oauth_state(
    conn: Conn, *, nonce: UUID, auth_user_id: UUID, ttl_s: int, now: datetime
) -> None:
    """Record a Connect Strava's state nonce made at `now` (and forget states long
    expired)."""
    conn.execute("delete from oauth_states where expires_at < %s - interval '1 day'", (now,))
    conn.execute(
        "insert into oauth_states (nonce, auth_user_id, created_at, expires_at)"
        " values (%(nonce)s, %(user)s, %(now)s, %(now)s + make_interval(secs => %(ttl)s))",
        {"nonce": nonce, "user": auth_user_id, "now": now, "ttl": ttl_s},
    )


def consume_oauth_state(
    conn: Conn, *, nonce: UUID, auth_user_id: UUID, now: datetime
) -> bool | None:
    """Use a state once, in one statement: True if it was live at `now`, False if it had
    expired, None if it is unknown or already used."""
    row = conn.execute(
        "delete from oauth_states where nonce = %s and auth_user_id = %s"
        " returning expires_at > %s as live",
        (nonce, auth_user_id, now),
    ).fetchone()
    return None if row is None else bool(row["live"])


def connection_rider_for_athlete(conn: Conn, *, athlete_id: int) -> int | None:
    """The rider an athlete is linked to (row locked), if any."""
    row = conn.execute(
        "select rider_id from strava_connections where athlete_id = %s for update", (athlete_id,)
    ).fetchone()
    return int(row["rider_id"]) if row else None


def connected_athlete(conn: Conn, *, rider_id: int) -> int | None:
    """The athlete a rider is linked to (row locked), if any."""
    row = conn.execute(
        "select athlete_id from strava_connections where rider_id = %s for update", (rider_id,)
    ).fetchone()
    return int(row["athlete_id"]) if row else None


def replace_grant(
    conn: Conn,
    *,
    rider_id: int,
    access_sealed: str,
    refresh_sealed: str,
    expires_at: datetime,
    scope: str,
    now: datetime,
) -> None:
    """Keep the newest grant of an already linked athlete (sealed tokens and scope, nothing
    else)."""
    conn.execute(
        """
        update strava_connections
           set access_token = %s, refresh_token = %s, expires_at = %s, scope = %s,
               status = 'active', updated_at = %s
         where rider_id = %s
        """,
        (access_sealed, refresh_sealed, expires_at, scope, now, rider_id),
    )


def set_athlete_created_at(conn: Conn, *, rider_id: int, created_at: datetime | None) -> None:
    """The Strava account's creation date: the floor discovery's progress is measured to."""
    conn.execute(
        "update strava_connections set athlete_created_at = %s where rider_id = %s",
        (created_at, rider_id),
    )


def delete_rider_activities(conn: Conn, *, rider_id: int) -> int:
    """Remove every activity of a rider; returns how many."""
    return conn.execute("delete from activities where rider_id = %s", (rider_id,)).rowcount


def delete_strava_data(conn: Conn, *, rider_id: int) -> tuple[bool, int]:
    """Remove a rider's connection (tokens) and activities, and what was derived from them.

    Deleting the connection waits for its row lock, so a call writing a page for this
    rider commits first and its rows are then removed too.
    """
    had_connection = (
        conn.execute("delete from strava_connections where rider_id = %s", (rider_id,)).rowcount > 0
    )
    activities = delete_rider_activities(conn, rider_id=rider_id)
    conn.execute(
        "update riders set eddington_miles = null, eddington_km = null,"
        " eddington_updated_at = null where id = %s",
        (rider_id,),
    )
    return had_connection, activities


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
        returning {_LEASE_COLUMNS}
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
_SYNC_STATE = f"""
    case
      when c.rider_id is null then 'not_connected'
      when c.status <> 'active' then 'stopped'
      when c.lease_expires_at >= %(now)s then 'in_progress'
      when not r.auto_sync then 'paused'
      when c.next_attempt_at > %(now)s then 'backing_off'
      when {_POLL_DUE} and {_NOT_DONE_IN_ROUND} then 'due'
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
        select r.id as rider_id, r.name, r.auto_sync, r.created_at,
               r.eddington_miles, r.eddington_km, r.eddington_updated_at,
               c.rider_id is not null as connected, c.athlete_id, c.status, c.scope,
               c.expires_at as token_expires_at, c.connected_at,
               {_SYNC_STATE} as sync_state,
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
                     count(*) filter (where {_RACE_WAITING}) as races_waiting,
                     count(*) filter (where a.enrichment_status = 'pending') as races_pending,
                     count(*) filter (where a.enrichment_status = 'done') as races_done,
                     count(*) filter (where a.enrichment_status = 'failed'
                                      and a.enrichment_attempts >= %(max_attempts)s)
                         as races_failed,
                     min(a.start_date) as first_activity_at,
                     max(a.start_date) as last_activity_at
                from activities a where a.rider_id = r.id
          ) q
         where r.id = %(rider_id)s
        """,
        {
            "rider_id": rider_id,
            "min_interval_s": min_interval_s,
            "max_attempts": max_attempts,
            "now": now,
        },
    ).fetchone()


def failed_races(conn: Conn, *, rider_id: int, limit: int) -> list[dict[str, Any]]:
    """A rider's races whose details could not be fetched, newest first."""
    return conn.execute(
        """
        select strava_id, name, start_date, enrichment_status, enrichment_attempts,
               enrichment_error, enrichment_next_attempt_at
          from activities
         where rider_id = %s and is_race and enrichment_status = 'failed'
         order by start_date desc limit %s
        """,
        (rider_id, limit),
    ).fetchall()


def recompute_eddington(conn: Conn, *, rider_id: int, now: datetime) -> tuple[int, int]:
    """Store the rider's cycling Eddington number in miles and km, updated at `now`; one
    statement.

    Days are local start dates and a day's rides are summed. E is the largest k with k
    days of at least k: with the days ranked by distance, max over ranks n of
    min(n, floor(distance of day n)).
    """
    from services.activities import RIDE_SPORTS  # pure module; here to keep models' imports light

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


# Operator actions.


def reset_rider(conn: Conn, *, rider_id: int, now: datetime) -> bool:
    """Clear a rider's backoff and failure count and release any lease; False if unconnected.

    A call still working on the rider then fails its next hold_lease and writes nothing.
    """
    return (
        conn.execute(
            """
            update strava_connections
               set failure_count = 0, next_attempt_at = null, error_class = null,
                   lease_token = null, lease_kind = null, lease_expires_at = null,
                   updated_at = %s
             where rider_id = %s
            """,
            (now, rider_id),
        ).rowcount
        > 0
    )


def set_auto_sync(conn: Conn, *, rider_id: int, enabled: bool) -> bool:
    """Pause or resume a rider's scheduled sync; False for an unknown rider."""
    return (
        conn.execute("update riders set auto_sync = %s where id = %s", (enabled, rider_id)).rowcount
        > 0
    )


# The admin status.


def status_sync_buckets(conn: Conn, *, min_interval_s: int, now: datetime) -> list[dict[str, Any]]:
    """Riders counted by connection status and sync state at `now`."""
    return conn.execute(
        f"""
        select coalesce(c.status, 'not_connected') as connection, {_SYNC_STATE} as sync_state,
               count(*) as riders,
               count(*) filter (where c.rider_id is not null and c.last_synced_at is null)
                   as never_synced
          from riders r left join strava_connections c on c.rider_id = r.id
         group by 1, 2
        """,
        {"min_interval_s": min_interval_s, "now": now},
    ).fetchall()


def status_rider_page(
    conn: Conn,
    *,
    min_interval_s: int,
    max_attempts: int,
    limit: int,
    offset: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """One page of every rider (by id) with its connection, sync state, history walk and
    race counts at `now`, for the status's rider list; one statement."""
    return conn.execute(
        f"""
        select r.id as rider_id, r.name, r.auto_sync,
               c.rider_id is not null as connected,
               coalesce(c.status, 'not_connected') as connection,
               {_SYNC_STATE} as sync_state,
               c.last_synced_at, c.last_sync_added, c.last_error, c.failure_count,
               c.next_attempt_at, c.next_poll_at, c.polls_per_day, c.poll_reason,
               c.history_complete_at, c.history_walk_started_at, c.history_cursor,
               c.history_pages, c.history_activities, c.history_races,
               c.full_refresh_requested_at, c.athlete_created_at, c.last_progress_at,
               q.*
          from riders r
          left join strava_connections c on c.rider_id = r.id
          cross join lateral (
              select count(*) as activities,
                     count(*) filter (where a.is_race) as races,
                     count(*) filter (where a.is_race and {_RACE_WAITING}) as races_waiting,
                     count(*) filter (where a.is_race and a.enrichment_status = 'failed'
                                      and a.enrichment_attempts >= %(max_attempts)s)
                         as races_failed
                from activities a where a.rider_id = r.id
          ) q
         order by r.id
         limit %(limit)s offset %(offset)s
        """,
        {
            "min_interval_s": min_interval_s,
            "max_attempts": max_attempts,
            "limit": limit,
            "offset": offset,
            "now": now,
        },
    ).fetchall()


def incomplete_histories(conn: Conn) -> list[dict[str, Any]]:
    """Connections whose history is still to be walked (new, or a full refresh asked)."""
    return conn.execute(
        """
        select rider_id, status, connected_at, history_walk_started_at, history_cursor,
               history_pages, history_activities, history_races, history_complete_at,
               full_refresh_requested_at, athlete_created_at, last_progress_at,
               failure_count, next_attempt_at, last_error
          from strava_connections
         where history_complete_at is null or full_refresh_requested_at is not null
         order by rider_id
        """
    ).fetchall()


def race_counts(conn: Conn, *, max_attempts: int) -> dict[str, Any]:
    """Races by enrichment state; waiting ones split by whether their rider can be served."""
    row = conn.execute(
        f"""
        select count(*) as races,
               count(*) filter (where a.enrichment_status = 'pending') as pending,
               count(*) filter (where a.enrichment_status = 'done') as done,
               count(*) filter (where {_RETRYABLE}) as failed_retrying,
               count(*) filter (where a.enrichment_status = 'failed'
                                and a.enrichment_attempts >= %(max_attempts)s) as failed_final,
               count(*) filter (where {_RACE_WAITING}
                                and c.status is distinct from 'active') as waiting_on_reconnect,
               count(*) filter (where {_RACE_WAITING} and c.status = 'active') as workable
          from activities a left join strava_connections c on c.rider_id = a.rider_id
         where a.is_race
        """,
        {"max_attempts": max_attempts},
    ).fetchone()
    assert row is not None
    return dict(row)


def count_auto_sync_riders(conn: Conn) -> int:
    """Riders the scheduled sync serves (active connection, auto sync on)."""
    row = conn.execute(
        "select count(*) as n from strava_connections c join riders r on r.id = c.rider_id"
        " where c.status = 'active' and r.auto_sync"
    ).fetchone()
    assert row is not None
    return int(row["n"])


_RUN_COLUMNS = """
    id, kind, started_at, finished_at, processed, succeeded, failed, skipped, remaining,
    rate_limited, rate_limit, error_summary
"""


def last_runs(conn: Conn, *, kinds: list[str], per_kind: int) -> list[dict[str, Any]]:
    """The latest runs of each kind (newest first), by the (kind, started_at) index."""
    return conn.execute(
        f"""
        select r.* from unnest(%s::text[]) as k(kind)
        cross join lateral (
            select {_RUN_COLUMNS} from cron_runs
             where cron_runs.kind = k.kind
             order by started_at desc, id desc limit %s
        ) r
        """,
        (kinds, per_kind),
    ).fetchall()


def run_stats_since(conn: Conn, *, hours: int, now: datetime) -> list[dict[str, Any]]:
    """Per kind over the `hours` before `now`: runs, unfinished, failed runs and item
    counts."""
    return conn.execute(
        """
        select kind, count(*) as runs,
               count(*) filter (where finished_at is null) as unfinished,
               count(*) filter (where finished_at is not null and processed is null)
                   as raised,
               count(*) filter (where rate_limited) as rate_limited,
               count(*) filter (where finished_at is not null and processed is not null
                                and failed = 0) as clean,
               coalesce(sum(processed), 0) as items,
               coalesce(sum(succeeded), 0) as items_succeeded,
               coalesce(sum(failed), 0) as items_failed,
               coalesce(sum(skipped), 0) as items_skipped
          from cron_runs
         where started_at > %s - make_interval(hours => %s)
         group by kind
        """,
        (now, hours),
    ).fetchall()


def rider_runs(conn: Conn, *, rider_id: int, limit: int) -> list[dict[str, Any]]:
    """The runs that took this rider or one of its races, newest first, with their items.

    Every item names its rider (enrich items too), so containment on `items` finds them
    by the GIN index.
    """
    return conn.execute(
        f"""
        select {_RUN_COLUMNS}, items from cron_runs
         where items @> jsonb_build_array(jsonb_build_object('rider_id', %s::bigint))
         order by started_at desc, id desc limit %s
        """,
        (rider_id, limit),
    ).fetchall()


# What may be stuck. Each query names the rows and since when they made no progress.


def expired_rider_leases(
    conn: Conn, *, now: datetime, rider_id: int | None = None
) -> list[dict[str, Any]]:
    """Riders whose lease ran out by `now`: the call holding them died or overran."""
    return conn.execute(
        """
        select rider_id, lease_kind, lease_expires_at as since
          from strava_connections
         where lease_token is not null and lease_expires_at < %(now)s
           and (%(rider_id)s::bigint is null or rider_id = %(rider_id)s)
         order by lease_expires_at
        """,
        {"rider_id": rider_id, "now": now},
    ).fetchall()


def expired_race_leases(
    conn: Conn, *, now: datetime, rider_id: int | None = None
) -> list[dict[str, Any]]:
    """Races whose enrichment lease ran out by `now`."""
    return conn.execute(
        """
        select strava_id, rider_id, enrichment_lease_expires_at as since
          from activities
         where enrichment_lease_token is not null and enrichment_lease_expires_at < %(now)s
           and (%(rider_id)s::bigint is null or rider_id = %(rider_id)s)
         order by enrichment_lease_expires_at
        """,
        {"rider_id": rider_id, "now": now},
    ).fetchall()


def stalled_histories(
    conn: Conn, *, stuck_after_s: int, now: datetime, rider_id: int | None = None
) -> list[dict[str, Any]]:
    """Active riders with history left to walk and no progress for stuck_after_s before
    `now`, not held by a live call."""
    return conn.execute(
        """
        select rider_id, since, next_attempt_at, failure_count, last_error from (
            select rider_id, next_attempt_at, failure_count, last_error,
                   greatest(coalesce(last_progress_at, connected_at),
                            full_refresh_requested_at, connected_at) as since
              from strava_connections
             where status = 'active'
               and (history_complete_at is null or full_refresh_requested_at is not null)
               and not coalesce(lease_expires_at >= %(now)s, false)
               and (%(rider_id)s::bigint is null or rider_id = %(rider_id)s)
        ) s
         where since < %(now)s - make_interval(secs => %(stuck)s)
         order by since
        """,
        {"stuck": stuck_after_s, "rider_id": rider_id, "now": now},
    ).fetchall()


def overdue_syncs(
    conn: Conn,
    *,
    min_interval_s: int,
    stuck_after_s: int,
    now: datetime,
    rider_id: int | None = None,
) -> list[dict[str, Any]]:
    """Active auto-sync riders due for longer than stuck_after_s at `now` and not held by
    a call."""
    return conn.execute(
        """
        select c.rider_id, c.next_attempt_at, c.failure_count, c.last_error,
               case when c.last_synced_at is null then c.connected_at
                    else greatest(c.next_poll_at,
                                  c.last_synced_at + make_interval(secs => %(interval)s))
               end as since
          from strava_connections c join riders r on r.id = c.rider_id
         where c.status = 'active' and r.auto_sync
           and not coalesce(c.lease_expires_at >= %(now)s, false)
           and case when c.last_synced_at is null then c.connected_at
                    else greatest(c.next_poll_at,
                                  c.last_synced_at + make_interval(secs => %(interval)s))
               end < %(now)s - make_interval(secs => %(stuck)s)
           and (%(rider_id)s::bigint is null or c.rider_id = %(rider_id)s)
         order by since
        """,
        {"interval": min_interval_s, "stuck": stuck_after_s, "rider_id": rider_id, "now": now},
    ).fetchall()


def stalled_races(
    conn: Conn,
    *,
    stuck_after_s: int,
    max_attempts: int,
    limit: int,
    now: datetime,
    rider_id: int | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Races of active riders waiting for details longer than stuck_after_s at `now` (past
    any backoff) and not held by a live call: how many, and the oldest `limit`."""
    where = f"""
          from activities a join strava_connections c on c.rider_id = a.rider_id
         where a.is_race and {_RACE_WAITING} and c.status = 'active'
           and not coalesce(a.enrichment_lease_expires_at >= %(now)s, false)
           and coalesce(a.enrichment_next_attempt_at, a.created_at)
               < %(now)s - make_interval(secs => %(stuck)s)
           and (%(rider_id)s::bigint is null or a.rider_id = %(rider_id)s)
    """
    params = {
        "stuck": stuck_after_s,
        "max_attempts": max_attempts,
        "rider_id": rider_id,
        "now": now,
    }
    count = conn.execute(f"select count(*) as n {where}", params).fetchone()
    assert count is not None
    rows = conn.execute(
        f"""
        select a.strava_id, a.rider_id, a.enrichment_status, a.enrichment_attempts,
               a.enrichment_error,
               coalesce(a.enrichment_next_attempt_at, a.created_at) as since
        {where}
         order by since limit %(limit)s
        """,
        {**params, "limit": limit},
    ).fetchall()
    return int(count["n"]), rows


def unfinished_runs(conn: Conn, *, stuck_after_s: int, now: datetime) -> list[dict[str, Any]]:
    """Runs started longer than stuck_after_s before `now` that never finished: calls that
    died."""
    return conn.execute(
        """
        select id, kind, started_at as since from cron_runs
         where finished_at is null and started_at < %s - make_interval(secs => %s)
         order by started_at
        """,
        (now, stuck_after_s),
    ).fetchall()


# --- polling by need and the rate plan (issue 8) --------------------------------------


def poll_habits(conn: Conn, *, since: datetime) -> list[dict[str, Any]]:
    """What polling needs of each active auto-sync rider: the last sync and whether it
    found something, the end times of activities started since `since` (an upload comes
    after its ride ends), the latest UTC offset and the newest start."""
    return conn.execute(
        """
        select c.rider_id, c.last_synced_at,
               (c.last_sync_added + c.last_sync_updated) > 0 as last_found,
               coalesce(h.ends, '{}') as ends, h.offset_s, n.newest
          from strava_connections c join riders r on r.id = c.rider_id
          left join lateral (
                select array_agg(a.start_date
                                 + make_interval(secs => coalesce(a.elapsed_time_s, 0))) as ends,
                       (array_agg(extract(epoch from a.start_date_local
                                          - (a.start_date at time zone 'utc'))
                                  order by a.start_date desc))[1]::int as offset_s
                  from activities a
                 where a.rider_id = c.rider_id and a.start_date >= %(since)s
          ) h on true
          left join lateral (
                select max(a.start_date) as newest from activities a
                 where a.rider_id = c.rider_id
          ) n on true
         where c.status = 'active' and r.auto_sync
         order by c.rider_id
        """,
        {"since": since},
    ).fetchall()


def save_poll_plan(conn: Conn, *, decisions: list[dict[str, Any]]) -> None:
    """Store each rider's next poll, its polls a day and the reason, in one statement."""
    if not decisions:
        return
    conn.execute(
        """
        update strava_connections c
           set next_poll_at = d.next_poll_at, polls_per_day = d.polls_per_day,
               poll_reason = d.reason
          from json_to_recordset(%s::json)
               as d(rider_id bigint, next_poll_at timestamptz, polls_per_day int, reason text)
         where c.rider_id = d.rider_id
        """,
        (json.dumps(decisions, default=str),),
    )


def incremental_polls_before(conn: Conn, *, until: datetime, now: datetime) -> dict[str, int]:
    """Active auto-sync riders whose next poll comes before `until`, and the polls a day
    they are planned for, for the incremental class's need."""
    row = conn.execute(
        """
        select count(*) filter (where coalesce(c.next_poll_at, %(now)s) < %(until)s) as riders,
               coalesce(sum(coalesce(c.polls_per_day, 1)), 0) as polls_per_day
          from strava_connections c join riders r on r.id = c.rider_id
         where c.status = 'active' and r.auto_sync
        """,
        {"until": until, "now": now},
    ).fetchone()
    assert row is not None
    return {"riders": int(row["riders"]), "polls_per_day": int(row["polls_per_day"])}


def class_requests(conn: Conn, *, window_start: datetime, day_start: datetime) -> dict[str, Any]:
    """Requests each class sent in the window starting `window_start` and since
    `day_start`, and its average a day over the seven days before `day_start`."""
    rows = conn.execute(
        """
        select work_class,
               coalesce(sum(requests) filter (where window_start = %(window)s), 0) as window,
               coalesce(sum(requests) filter (where window_start >= %(day)s), 0) as today,
               coalesce(sum(requests) filter (where window_start < %(day)s), 0) / 7.0
                   as per_day
          from strava_request_windows
         where window_start >= %(day)s - interval '7 days'
         group by work_class
        """,
        {"window": window_start, "day": day_start},
    ).fetchall()
    return {r["work_class"]: r for r in rows}


def class_requests_now(conn: Conn, *, window_start: datetime, work_class: str) -> int:
    """Requests `work_class` has reserved in the window (read under the budget's lock)."""
    row = conn.execute(
        "select requests from strava_request_windows where window_start = %s and work_class = %s",
        (window_start, work_class),
    ).fetchone()
    return int(row["requests"]) if row else 0


def backfill_backlog(conn: Conn, *, max_attempts: int, recent_since: datetime) -> dict[str, int]:
    """What the backfill classes have waiting: races to detail, recent and old, and
    histories still to walk."""
    row = conn.execute(
        f"""
        select
          (select count(*) from activities a
            where a.is_race and {_RACE_WAITING} and a.start_date >= %(recent)s) as recent_races,
          (select count(*) from activities a
            where a.is_race and {_RACE_WAITING} and a.start_date < %(recent)s) as old_races,
          (select count(*) from strava_connections c
            where c.status = 'active' and c.history_complete_at is null) as histories
        """,
        {"max_attempts": max_attempts, "recent": recent_since},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


# --- places and one ride recorded twice (issue 12) ------------------------------------

# Two activities of one rider are one ride recorded twice when they are of the same kind,
# their time ranges overlap for at least this share of the longer one, and their
# distances differ by at most this share of the longer one.
DUPLICATE_MIN_OVERLAP = 0.7
DUPLICATE_MAX_DISTANCE_GAP = 0.15
# Bike computers (over phones) by the detailed activity's device name or the upload's
# external id; the copy kept is the better device, then the longer, then the first upload.
_BIKE_COMPUTERS = (
    r"garmin|edge|wahoo|elemnt|hammerhead|karoo|bryton|coros|polar|suunto|lezyne|sigma|srm|igpsport"  # noqa: E501
)

# The columns the duplicate rule compares, for an activity row `a`.
_DUPLICATE_FACTS = """
    a.id, a.strava_id, a.start_date, a.distance_m,
    greatest(coalesce(a.elapsed_time_s, a.moving_time_s, 0), 1) as seconds,
    a.start_date + make_interval(
        secs => greatest(coalesce(a.elapsed_time_s, a.moving_time_s, 0), 1)) as end_at,
    case when a.sport_type = any(%(rides)s) then 'ride'
         when a.sport_type = any(%(runs)s) then 'run'
         else a.sport_type end as kind,
    case when a.manual then 0
         when coalesce(a.details ->> 'device_name', '') ~* %(computers)s
           or coalesce(a.external_id, '') ~* '(^garmin|\\.fit$)' then 2
         else 1 end as device_rank
"""

# Each activity of the span is compared only with the rider's activities that started
# near it (an index range scan on activities_rider_start), so a page costs its size, not
# the square of the rider's history.
_MARK_DUPLICATES = f"""
    with scope as (
        select {_DUPLICATE_FACTS}
          from activities a
         where a.rider_id = %(rider_id)s
           and a.start_date >= %(since)s::timestamptz - interval '2 days'
           and a.start_date <= %(until)s::timestamptz + interval '2 days'
    ), candidates as (
        select x.id, y.id as keep_id,
               row_number() over (partition by x.id
                                  order by y.device_rank desc, y.distance_m desc, y.strava_id)
                   as n
          from scope x
          cross join lateral (
                select {_DUPLICATE_FACTS}
                  from activities a
                 where a.rider_id = %(rider_id)s and a.id <> x.id
                   and a.start_date >= x.start_date - interval '2 days'
                   and a.start_date < x.end_at
                union  -- and whatever an operator paired with it, wherever it lies
                select {_DUPLICATE_FACTS}
                  from duplicate_overrules p
                  join activities a
                    on a.strava_id = case when p.first_strava_id = x.strava_id
                                          then p.second_strava_id else p.first_strava_id end
                 where p.verdict = 'duplicate'
                   and x.strava_id in (p.first_strava_id, p.second_strava_id)
                   and a.rider_id = %(rider_id)s
          ) y
          left join duplicate_overrules o
            on o.first_strava_id = least(x.strava_id, y.strava_id)
           and o.second_strava_id = greatest(x.strava_id, y.strava_id)
         where case
             when o.verdict = 'distinct' then false
             when o.verdict = 'duplicate' then o.keep_strava_id = y.strava_id
             else y.kind = x.kind
                  and extract(epoch from least(x.end_at, y.end_at)
                                         - greatest(x.start_date, y.start_date))
                      >= %(overlap)s * greatest(x.seconds, y.seconds)
                  and abs(x.distance_m - y.distance_m)
                      <= %(gap)s * greatest(x.distance_m, y.distance_m)
                  and (y.device_rank, y.distance_m, -y.strava_id)
                      > (x.device_rank, x.distance_m, -x.strava_id)
         end
    ), wanted as (
        select s.id, c.keep_id
          from scope s left join candidates c on c.id = s.id and c.n = 1
    )
    update activities a
       set duplicate_of = w.keep_id
      from wanted w
     where a.id = w.id and a.duplicate_of is distinct from w.keep_id
    returning a.strava_id, w.keep_id
"""


def mark_duplicates(conn: Conn, *, rider_id: int, since: datetime, until: datetime) -> int:
    """Mark (and unmark) one rider's rides recorded twice among the activities started
    between `since` and `until` (with a margin either side); one statement. Returns how
    many rows changed."""
    from services.activities import RIDE_SPORTS, RUN_SPORTS

    rows = conn.execute(
        _MARK_DUPLICATES,
        {
            "rider_id": rider_id,
            "since": since,
            "until": until,
            "rides": sorted(RIDE_SPORTS),
            "runs": sorted(RUN_SPORTS),
            "computers": _BIKE_COMPUTERS,
            "overlap": DUPLICATE_MIN_OVERLAP,
            "gap": DUPLICATE_MAX_DISTANCE_GAP,
        },
    ).fetchall()
    return len(rows)


def _rows_span(rows: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    from services.activities import parse_start_date

    starts = [parse_start_date(r["start_date"]) for r in rows if r.get("start_date")]
    return (min(starts), max(starts)) if starts else None


def activity_span(
    conn: Conn, *, rider_id: int, strava_ids: list[int]
) -> tuple[datetime, datetime] | None:  # noqa: E501
    """The first and last start of some of a rider's activities (None if none is theirs)."""
    row = conn.execute(
        "select min(start_date) as lo, max(start_date) as hi from activities"
        " where rider_id = %s and strava_id = any(%s)",
        (rider_id, strava_ids),
    ).fetchone()
    return (row["lo"], row["hi"]) if row and row["lo"] else None


def save_duplicate_overrule(
    conn: Conn,
    *,
    rider_id: int,
    strava_ids: tuple[int, int],
    verdict: str | None,
    keep_strava_id: int | None,
    now: datetime,
) -> None:
    """Record an operator's word on a pair (verdict None: forget it, back to the rule)."""
    first, second = sorted(strava_ids)
    if verdict is None:
        conn.execute(
            "delete from duplicate_overrules where first_strava_id = %s and second_strava_id = %s",
            (first, second),
        )
        return
    conn.execute(
        """
        insert into duplicate_overrules
               (first_strava_id, second_strava_id, rider_id, verdict, keep_strava_id, created_at)
        values (%s, %s, %s, %s, %s, %s)
        on conflict (first_strava_id, second_strava_id) do update
           set verdict = excluded.verdict, keep_strava_id = excluded.keep_strava_id,
               created_at = excluded.created_at
        """,
        (first, second, rider_id, verdict, keep_strava_id, now),
    )


def rider_duplicates(conn: Conn, *, rider_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """A rider's copies and the activity each copies, newest first, with any overrule."""
    return conn.execute(
        """
        select d.strava_id as activity_id, k.strava_id as duplicate_of,
               d.sport_type, d.start_date, d.distance_m, k.distance_m as kept_distance_m,
               d.name, o.verdict as overruled
          from activities d
          join activities k on k.id = d.duplicate_of
          left join duplicate_overrules o
            on o.first_strava_id = least(d.strava_id, k.strava_id)
           and o.second_strava_id = greatest(d.strava_id, k.strava_id)
         where d.rider_id = %s
         order by d.start_date desc, d.strava_id
         limit %s
        """,
        (rider_id, limit),
    ).fetchall()


def rider_overrules(conn: Conn, *, rider_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """
        select first_strava_id, second_strava_id, verdict, keep_strava_id, created_at
          from duplicate_overrules where rider_id = %s order by created_at desc
        """,
        (rider_id,),
    ).fetchall()


def count_rider_activities(conn: Conn, *, rider_id: int, strava_ids: list[int]) -> int:
    row = conn.execute(
        "select count(*) as n from activities where rider_id = %s and strava_id = any(%s)",
        (rider_id, strava_ids),
    ).fetchone()
    return int(row["n"]) if row else 0


def better_copy(conn: Conn, *, strava_ids: list[int]) -> int:
    """Of two activities, the one the duplicate rule would keep."""
    row = conn.execute(
        """
        select strava_id from activities where strava_id = any(%(ids)s)
         order by case when manual then 0
                       when coalesce(details ->> 'device_name', '') ~* %(computers)s
                         or coalesce(external_id, '') ~* '(^garmin|\\.fit$)' then 2
                       else 1 end desc,
                  distance_m desc, strava_id
         limit 1
        """,
        {"ids": strava_ids, "computers": _BIKE_COMPUTERS},
    ).fetchone()
    assert row is not None
    return int(row["strava_id"])


# --- weather (issue 12): a leased phase of its own, and the source's circuit breaker --

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
    row = conn.execute(
        """
        select count(*) filter (where weather_status = 'done') as done,
               count(*) filter (where weather_status is null and duplicate_of is null)
                   as pending,
               count(*) filter (where weather_status = 'waiting') as waiting,
               count(*) filter (where weather_status = 'failed'
                                  and weather_attempts < %(max)s) as backing_off,
               count(*) filter (where weather_status = 'failed'
                                  and weather_attempts >= %(max)s) as failed,
               count(*) filter (where weather_status = 'skipped') as skipped
          from activities
        """,
        {"max": max_attempts},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


# --- webhooks: Strava's push subscription and its events (services/webhooks.py) ---------

_WEBHOOK_CLAIM_LOCK = 7_226_101_909  # claims of events are serialized: one fetch per object


def read_push_subscription(conn: Conn) -> dict[str, Any] | None:
    """The application's push subscription, if one was made."""
    return conn.execute(
        "select subscription_id, callback_url, created_at, confirmed_at, missing_since"
        " from strava_push_subscription where id = 1"
    ).fetchone()


def save_push_subscription(
    conn: Conn, *, subscription_id: int, callback_url: str, now: datetime
) -> None:
    """Keep the subscription Strava made (or listed), confirmed at `now`."""
    conn.execute(
        """
        insert into strava_push_subscription as s
               (id, subscription_id, callback_url, created_at, confirmed_at)
        values (1, %(id)s, %(url)s, %(now)s, %(now)s)
        on conflict (id) do update set
               subscription_id = excluded.subscription_id, callback_url = excluded.callback_url,
               created_at = case when s.subscription_id = excluded.subscription_id
                                 then s.created_at else excluded.created_at end,
               confirmed_at = excluded.confirmed_at, missing_since = null
        """,
        {"id": subscription_id, "url": callback_url, "now": now},
    )


def confirm_push_subscription(conn: Conn, *, listed: bool, now: datetime) -> None:
    """What Strava's list said of the stored subscription at `now`."""
    if listed:
        conn.execute(
            "update strava_push_subscription set confirmed_at = %s, missing_since = null"
            " where id = 1",
            (now,),
        )
    else:
        conn.execute(
            "update strava_push_subscription set missing_since = coalesce(missing_since, %s)"
            " where id = 1",
            (now,),
        )


def delete_push_subscription(conn: Conn) -> bool:
    return conn.execute("delete from strava_push_subscription where id = 1").rowcount > 0


def webhook_rider(conn: Conn, *, athlete_id: int) -> int | None:
    """The rider an event's owner is, if connected (active or waiting to reconnect)."""
    row = conn.execute(
        "select rider_id from strava_connections"
        " where athlete_id = %s and status in ('active', 'needs_reauth')",
        (athlete_id,),
    ).fetchone()
    return int(row["rider_id"]) if row else None


def count_pending_events(conn: Conn, *, rider_id: int) -> int:
    row = conn.execute(
        "select count(*) as n from strava_webhook_events"
        " where rider_id = %s and status = 'pending'",
        (rider_id,),
    ).fetchone()
    return int(row["n"]) if row else 0


def store_webhook_event(
    conn: Conn,
    *,
    delivery_key: str,
    subscription_id: int,
    object_type: str,
    object_id: int,
    aspect_type: str,
    owner_id: int,
    rider_id: int,
    event_time: datetime,
    updates: dict[str, str],
    now: datetime,
) -> bool:
    """Store an event once; False if this delivery repeats one already stored."""
    row = conn.execute(
        """
        insert into strava_webhook_events
               (delivery_key, subscription_id, object_type, object_id, aspect_type, owner_id,
                rider_id, event_time, updates, received_at)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (delivery_key) do nothing
        returning id
        """,
        (
            delivery_key,
            subscription_id,
            object_type,
            object_id,
            aspect_type,
            owner_id,
            rider_id,
            event_time,
            Jsonb(updates),
            now,
        ),
    ).fetchone()
    return row is not None


def count_ignored_delivery(conn: Conn, *, reason: str, now: datetime) -> None:
    """Count a delivery refused without storing anything, per hour and reason."""
    conn.execute(
        """
        insert into strava_webhook_ignored (hour, reason, count)
        values (date_trunc('hour', %s::timestamptz), %s, 1)
        on conflict (hour, reason) do update set count = strava_webhook_ignored.count + 1
        """,
        (now, reason),
    )


def last_event_received_at(conn: Conn) -> datetime | None:
    row = conn.execute("select max(received_at) as at from strava_webhook_events").fetchone()
    return row["at"] if row else None


@dataclass(frozen=True)
class EventGroup:
    """The pending events of one object (an activity or an athlete), claimed together:
    one look at Strava answers them all."""

    rider_id: int
    object_type: str
    object_id: int
    aspects: frozenset[str]
    deauthorization: bool
    attempts: int  # failed attempts so far (the most of the group's events)
    events: int
    claimed_at: datetime
    latest_event_time: datetime  # Strava's clock


# Objects with a due event (backoff over) whose events no call holds, within their
# athlete's cap of objects looked at in the last hour.
_EVENT_OBJECTS_DUE = """
    with due as (
        select e.rider_id, e.object_type, e.object_id, min(e.received_at) as first_received
          from strava_webhook_events e
         where e.status = 'pending'
           and (e.next_attempt_at is null or e.next_attempt_at <= %(now)s)
           and (%(rider_ids)s::bigint[] is null or e.rider_id = any(%(rider_ids)s::bigint[]))
           and (%(object_id)s::bigint is null or e.object_id = %(object_id)s::bigint)
           and not exists (
               select 1 from strava_webhook_events x
                where x.status = 'pending' and x.rider_id = e.rider_id
                  and x.object_type = e.object_type and x.object_id = e.object_id
                  and x.lease_expires_at > %(now)s)
         group by 1, 2, 3
    ), spent as (
        select rider_id, count(distinct (object_type, object_id)) as n
          from strava_webhook_events
         where attempted_at > %(now)s - interval '1 hour'
           and rider_id in (select rider_id from due)
         group by rider_id
    ), ranked as (
        select d.*, coalesce(s.n, 0)
                    + row_number() over (partition by d.rider_id
                                         order by d.first_received, d.object_id) as nth
          from due d left join spent s using (rider_id)
    )
    select rider_id, object_type, object_id, first_received
      from ranked where nth <= %(cap)s
"""


def claim_event_groups(
    conn: Conn,
    *,
    lease_token: UUID,
    limit: int,
    hourly_cap: int,
    lease_ttl_s: int,
    now: datetime,
    rider_ids: list[int] | None = None,
    object_id: int | None = None,
) -> list[EventGroup]:
    """Lease the pending events of up to `limit` due objects, oldest first (optionally
    of some riders, or one object)."""
    conn.execute("select pg_advisory_xact_lock(%s)", (_WEBHOOK_CLAIM_LOCK,))
    rows = conn.execute(
        f"""
        with chosen as (
            {_EVENT_OBJECTS_DUE}
             order by first_received, object_id
             limit %(limit)s
        )
        update strava_webhook_events e
           set lease_token = %(token)s, attempted_at = %(now)s,
               lease_expires_at = %(now)s + make_interval(secs => %(ttl)s)
          from chosen c
         where e.status = 'pending' and e.rider_id = c.rider_id
           and e.object_type = c.object_type and e.object_id = c.object_id
        returning e.rider_id, e.object_type, e.object_id, e.aspect_type, e.attempts,
                  e.event_time, (e.updates ->> 'authorized') = 'false' as deauthorization,
                  c.first_received
        """,
        {
            "now": now,
            "rider_ids": rider_ids,
            "object_id": object_id,
            "cap": hourly_cap,
            "limit": limit,
            "token": lease_token,
            "ttl": lease_ttl_s,
        },
    ).fetchall()
    groups: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["rider_id"], row["object_type"], row["object_id"]), []).append(row)
    ordered = sorted(groups.items(), key=lambda item: (item[1][0]["first_received"], item[0][2]))
    return [
        EventGroup(
            rider_id=rider_id,
            object_type=object_type,
            object_id=object_id,
            aspects=frozenset(r["aspect_type"] for r in events),
            deauthorization=any(bool(r["deauthorization"]) for r in events),
            attempts=max(int(r["attempts"]) for r in events),
            events=len(events),
            claimed_at=now,
            latest_event_time=max(r["event_time"] for r in events),
        )
        for (rider_id, object_type, object_id), events in ordered
    ]


def count_event_groups_due(conn: Conn, *, hourly_cap: int, now: datetime) -> int:
    row = conn.execute(
        f"select count(*) as n from ({_EVENT_OBJECTS_DUE}) as due",
        {"now": now, "rider_ids": None, "object_id": None, "cap": hourly_cap},
    ).fetchone()
    return int(row["n"]) if row else 0


def finish_event_group(
    conn: Conn, *, group: EventGroup, lease_token: UUID, outcome: str, now: datetime
) -> int:
    """Mark the group's events done with what processing found; returns how many."""
    return conn.execute(
        """
        update strava_webhook_events
           set status = 'done', outcome = %s, processed_at = %s, last_error = null,
               lease_token = null, lease_expires_at = null, next_attempt_at = null
         where lease_token = %s and status = 'pending'
           and rider_id = %s and object_type = %s and object_id = %s
        """,
        (outcome, now, lease_token, group.rider_id, group.object_type, group.object_id),
    ).rowcount


def fail_event_group(
    conn: Conn,
    *,
    group: EventGroup,
    lease_token: UUID,
    error: str,
    backoff_s: float,
    max_attempts: int,
    now: datetime,
) -> bool:
    """Count a failed attempt: back the group's events off, or fail them for good once
    they reach `max_attempts`. Returns whether they failed for good."""
    row = conn.execute(
        """
        update strava_webhook_events
           set attempts = attempts + 1, last_error = %(error)s,
               status = case when attempts + 1 >= %(max)s then 'failed' else 'pending' end,
               outcome = case when attempts + 1 >= %(max)s then %(error)s end,
               processed_at = case when attempts + 1 >= %(max)s then %(now)s end,
               next_attempt_at = %(now)s + make_interval(secs => %(backoff)s),
               lease_token = null, lease_expires_at = null
         where lease_token = %(token)s and status = 'pending'
           and rider_id = %(rider)s and object_type = %(type)s and object_id = %(id)s
        returning status
        """,
        {
            "error": error[:200],
            "max": max_attempts,
            "now": now,
            "backoff": backoff_s,
            "token": lease_token,
            "rider": group.rider_id,
            "type": group.object_type,
            "id": group.object_id,
        },
    ).fetchall()
    return any(r["status"] == "failed" for r in row)


def release_event_group(conn: Conn, *, group: EventGroup, lease_token: UUID) -> None:
    """Hand a group back untouched (a stop that is not its fault)."""
    conn.execute(
        """
        update strava_webhook_events set lease_token = null, lease_expires_at = null
         where lease_token = %s and status = 'pending'
           and rider_id = %s and object_type = %s and object_id = %s
        """,
        (lease_token, group.rider_id, group.object_type, group.object_id),
    )


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


def store_race_details(
    conn: Conn,
    *,
    rider_id: int,
    strava_id: int,
    description: str | None,
    polyline: str | None,
    details: dict[str, Any],
    now: datetime,
) -> bool:
    """A race's details from a detailed fetch made for another reason (an event): stored
    as enrichment would, unless an enrich call holds the race (it writes the same)."""
    row = conn.execute(
        """
        update activities
           set description = %(description)s, polyline = %(polyline)s,
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
            "details": Jsonb(details),
            "rider_id": rider_id,
            "strava_id": strava_id,
        },
    ).fetchone()
    return row is not None


def revoke_connection(conn: Conn, *, rider_id: int, message: str, now: datetime) -> int:
    """The rider deauthorized the application at Strava (confirmed): their tokens and
    Strava data are deleted, the connection stays as `revoked`. Returns activities deleted."""
    conn.execute(
        """
        update strava_connections
           set status = 'revoked', access_token = null, refresh_token = null,
               last_error = %s, error_class = 'revoked',
               lease_token = null, lease_kind = null, lease_expires_at = null, updated_at = %s
         where rider_id = %s
        """,
        (message, now, rider_id),
    )
    activities = delete_rider_activities(conn, rider_id=rider_id)
    conn.execute(
        "update riders set eddington_miles = null, eddington_km = null,"
        " eddington_updated_at = null where id = %s",
        (rider_id,),
    )
    return activities


def webhook_counts(conn: Conn, *, since: datetime, now: datetime) -> dict[str, Any]:
    """The status's event figures: events received since `since` by where they stand,
    deliveries ignored by reason, the oldest pending event, and the lag from event_time
    to processed (p50, p95) of events processed since `since`."""
    row = conn.execute(
        """
        select count(*) filter (where received_at >= %(since)s) as received,
               count(*) filter (where received_at >= %(since)s and status = 'done') as processed,
               count(*) filter (where status = 'pending') as pending,
               count(*) filter (where received_at >= %(since)s and status = 'failed') as failed,
               min(received_at) filter (where status = 'pending') as oldest_pending,
               max(received_at) as last_received,
               percentile_disc(0.5) within group (order by extract(epoch from lag))
                   filter (where status = 'done' and processed_at >= %(since)s) as lag_p50_s,
               percentile_disc(0.95) within group (order by extract(epoch from lag))
                   filter (where status = 'done' and processed_at >= %(since)s) as lag_p95_s
          from (select *, processed_at - event_time as lag from strava_webhook_events) as e
        """,
        {"since": since},
    ).fetchone()
    ignored = conn.execute(
        "select reason, sum(count)::int as n from strava_webhook_ignored"
        " where hour >= date_trunc('hour', %s::timestamptz) group by reason order by reason",
        (since,),
    ).fetchall()
    counts = dict(row) if row else {}
    counts["ignored"] = {r["reason"]: int(r["n"]) for r in ignored}
    return counts


def prune_webhook_events(conn: Conn, *, before: datetime) -> int:
    """Forget processed events and ignored counts older than `before`."""
    deleted = conn.execute(
        "delete from strava_webhook_events where status <> 'pending' and received_at < %s",
        (before,),
    ).rowcount
    conn.execute("delete from strava_webhook_ignored where hour < %s", (before,))
    return deleted


def event_connection(
    conn: Conn, *, rider_id: int, lease_token: UUID | None, now: datetime
) -> dict[str, Any] | None:
    """Lock a rider's connection for writing what an event's fetch found; None when
    another call holds the rider (its listing may write older data after ours), else
    the athlete, scope and status. `lease_token` is the caller's own rider lease, if any."""
    row = conn.execute(
        "select athlete_id, scope, status, lease_token, lease_expires_at"
        " from strava_connections where rider_id = %s for update",
        (rider_id,),
    ).fetchone()
    if row is None:
        return {"athlete_id": None, "scope": "", "status": "none"}
    held = row["lease_token"] is not None and row["lease_expires_at"] > now
    if held and row["lease_token"] != lease_token:
        return None
    return {"athlete_id": row["athlete_id"], "scope": row["scope"], "status": row["status"]}
