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
from psycopg.types.json import Jsonb

# --- migrations ----------------------------------------------------------------------

# Transaction-level, so it holds through Supabase's transaction pooler.
_MIGRATION_LOCK = 7_226_101_842


def apply_migrations(conn: psycopg.Connection, migrations: list[tuple[str, str, str]]) -> list[str]:
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

    @property
    def read_all(self) -> bool:
        return "activity:read_all" in self.scope.split(",")


def create_rider(
    conn: psycopg.Connection, *, name: str, auth_user_id: UUID | str | None = None
) -> int:
    """Insert a rider and return its id."""
    row = conn.execute(
        "insert into riders (name, auth_user_id) values (%s, %s) returning id",
        (name, auth_user_id),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def save_connection(
    conn: psycopg.Connection,
    *,
    rider_id: int,
    athlete_id: int,
    access_token: str,
    refresh_token: str,
    expires_at: datetime,
    scope: str,
) -> None:
    """Store a (re)connected rider's grant: active, history to be discovered."""
    conn.execute(
        """
        insert into strava_connections
            (rider_id, athlete_id, access_token, refresh_token, expires_at, scope, status,
             connected_at, sync_cursor)
        values (%(rider_id)s, %(athlete_id)s, %(access)s, %(refresh)s, %(expires_at)s, %(scope)s,
                'active', now(), now())
        on conflict (rider_id) do update set
            athlete_id = excluded.athlete_id, access_token = excluded.access_token,
            refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
            scope = excluded.scope, status = 'active', last_error = null, error_class = null,
            failure_count = 0, next_attempt_at = null, history_complete_at = null,
            history_walk_started_at = null, history_cursor = null, history_pages = 0,
            history_activities = 0, history_races = 0,
            sync_cursor = coalesce(strava_connections.sync_cursor, excluded.sync_cursor),
            updated_at = now()
        """,
        {
            "rider_id": rider_id,
            "athlete_id": athlete_id,
            "access": access_token,
            "refresh": refresh_token,
            "expires_at": expires_at,
            "scope": scope,
        },
    )


_SYNC_DUE = """
    c.status = 'active' and r.auto_sync
    and (c.lease_expires_at is null or c.lease_expires_at < now())
    and (c.next_attempt_at is null or c.next_attempt_at <= now())
    and (c.last_synced_at is null
         or c.last_synced_at <= now() - make_interval(secs => %(min_interval_s)s))
"""

_LEASE_COLUMNS = """
    c.rider_id, c.athlete_id, c.lease_token, c.scope, c.sync_cursor, c.connected_at,
    c.history_walk_started_at, c.history_cursor
"""


def claim_riders_for_sync(
    conn: psycopg.Connection,
    *,
    lease_token: UUID,
    limit: int,
    lease_ttl_s: int,
    min_interval_s: int,
) -> list[RiderLease]:
    """Lease up to `limit` riders due for sync, least recently synced first.

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
               lease_expires_at = now() + make_interval(secs => %(ttl)s)
          from due where c.rider_id = due.rider_id
        returning {_LEASE_COLUMNS}
        """,
        {
            "min_interval_s": min_interval_s,
            "limit": limit,
            "token": lease_token,
            "ttl": lease_ttl_s,
        },
    ).fetchall()
    return sorted((RiderLease(**row) for row in rows), key=lambda lease: lease.rider_id)


def count_riders_due_for_sync(conn: psycopg.Connection, *, min_interval_s: int) -> int:
    """Riders due for sync now and not held by any call."""
    row = conn.execute(
        f"""
        select count(*) as n from strava_connections c join riders r on r.id = c.rider_id
        where {_SYNC_DUE}
        """,
        {"min_interval_s": min_interval_s},
    ).fetchone()
    assert row is not None
    return int(row["n"])


def hold_lease(conn: psycopg.Connection, *, rider_id: int, lease_token: UUID) -> bool:
    """Lock the rider's row if this call still holds its lease (for a write-back)."""
    row = conn.execute(
        "select 1 from strava_connections where rider_id = %s and lease_token = %s for update",
        (rider_id, lease_token),
    ).fetchone()
    return row is not None


def release_lease(conn: psycopg.Connection, *, rider_id: int, lease_token: UUID) -> None:
    """Hand a rider back (only if this call still holds it)."""
    conn.execute(
        """
        update strava_connections
           set lease_token = null, lease_kind = null, lease_expires_at = null
         where rider_id = %s and lease_token = %s
        """,
        (rider_id, lease_token),
    )


def release_leases(conn: psycopg.Connection, *, lease_token: UUID, rider_ids: list[int]) -> None:
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
    conn: psycopg.Connection,
    *,
    rider_id: int,
    lease_token: UUID,
    sync_cursor: datetime | None,
    added: int,
    updated: int,
) -> None:
    """Advance the cursor, mark the rider synced and healthy, and release the lease."""
    conn.execute(
        """
        update strava_connections
           set sync_cursor = greatest(sync_cursor, %(cursor)s),
               last_synced_at = now(), last_sync_added = %(added)s,
               last_sync_updated = %(updated)s, last_error = null, error_class = null,
               failure_count = 0, next_attempt_at = null, last_progress_at = now(),
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = now()
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
            "cursor": sync_cursor,
            "added": added,
            "updated": updated,
            "rider_id": rider_id,
            "token": lease_token,
        },
    )


def record_rider_failure(
    conn: psycopg.Connection,
    *,
    rider_id: int,
    lease_token: UUID,
    error_class: str,
    message: str,
    base_backoff_s: int = 60,
    max_backoff_s: int = 6 * 3600,
) -> None:
    """Count a failure, back the rider off exponentially and release the lease."""
    conn.execute(
        """
        update strava_connections
           set failure_count = failure_count + 1,
               next_attempt_at = now() + make_interval(secs => least(
                   %(max)s, %(base)s * power(2, least(failure_count, 20)))),
               last_error = %(message)s, error_class = %(error_class)s,
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = now()
         where rider_id = %(rider_id)s and lease_token = %(token)s
        """,
        {
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
class ConnectionTokens:
    rider_id: int
    access_token: str
    refresh_token: str
    expires_at: datetime
    status: str

    def __repr__(self) -> str:  # never print tokens
        return f"ConnectionTokens(rider_id={self.rider_id}, status={self.status!r})"


def read_tokens(
    conn: psycopg.Connection, *, rider_id: int, for_update: bool = False
) -> ConnectionTokens | None:
    """The rider's tokens; with for_update, lock the row so refreshes are serialized."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        "select rider_id, access_token, refresh_token, expires_at, status"
        f" from strava_connections where rider_id = %s{lock}",
        (rider_id,),
    ).fetchone()
    return ConnectionTokens(**row) if row else None


def store_tokens(
    conn: psycopg.Connection,
    *,
    rider_id: int,
    access_token: str,
    refresh_token: str,
    expires_at: datetime,
) -> None:
    """Keep the newest tokens (Strava rotates the refresh token)."""
    conn.execute(
        """
        update strava_connections
           set access_token = %s, refresh_token = %s, expires_at = %s, updated_at = now()
         where rider_id = %s
        """,
        (access_token, refresh_token, expires_at, rider_id),
    )


def mark_needs_reauth(conn: psycopg.Connection, *, rider_id: int, message: str) -> None:
    """The grant is gone: skip this rider until it reconnects."""
    conn.execute(
        """
        update strava_connections
           set status = 'needs_reauth', last_error = %s, error_class = 'needs_reauth',
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = now()
         where rider_id = %s
        """,
        (message, rider_id),
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


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    races_inserted: int = 0


_UPSERT_ACTIVITIES = f"""
    insert into activities as a (rider_id, {", ".join(ACTIVITY_COLUMNS)},
                                 enrichment_status, seen_at)
    select %(rider_id)s, {", ".join("r." + c for c in ACTIVITY_COLUMNS)},
           case when r.is_race then 'pending' end, now()
      from json_to_recordset(%(rows)s::json) as r(
           {", ".join(f"{c} {t}" for c, t in ACTIVITY_COLUMNS.items())})
    on conflict (strava_id) do update set
           {", ".join(f"{c} = excluded.{c}" for c in _SUMMARY_COLUMNS)},
           enrichment_status = case when excluded.is_race
                                    then coalesce(a.enrichment_status, 'pending') end,
           seen_at = now(), updated_at = now()
     where a.rider_id = excluded.rider_id
       and (({", ".join("a." + c for c in _SUMMARY_COLUMNS)})
            is distinct from ({", ".join("excluded." + c for c in _SUMMARY_COLUMNS)})
            or a.seen_at < %(seen_since)s::timestamptz)
    returning (xmax = 0) as inserted, is_race
"""


def upsert_activities(
    conn: psycopg.Connection,
    *,
    rider_id: int,
    rows: list[dict[str, Any]],
    seen_since: datetime | None = None,
) -> UpsertCounts:
    """Write a page of activities in one statement, touching only rows that changed.

    `seen_since` (a history walk's start) also refreshes `seen_at` on unchanged rows the
    walk has not marked yet, so the walk's end can tell what Strava no longer has.
    """
    if not rows:
        return UpsertCounts()
    result = conn.execute(
        _UPSERT_ACTIVITIES,
        # Plain json text: Postgres parses it faster than jsonb, and it is read once.
        {"rider_id": rider_id, "rows": json.dumps(rows), "seen_since": seen_since},
    ).fetchall()
    inserted = sum(1 for r in result if r["inserted"])
    return UpsertCounts(
        inserted=inserted,
        updated=len(result) - inserted,
        races_inserted=sum(1 for r in result if r["inserted"] and r["is_race"]),
    )


def insert_activity_row(conn: psycopg.Connection, *, rider_id: int, row: dict[str, Any]) -> None:
    """One plain INSERT ... ON CONFLICT for one activity (the benchmark's baseline)."""
    columns = list(ACTIVITY_COLUMNS)
    conn.execute(
        f"""
        insert into activities (rider_id, {", ".join(columns)})
        values (%s, {", ".join(["%s"] * len(columns))})
        on conflict (strava_id) do update set
            {", ".join(f"{c} = excluded.{c}" for c in _SUMMARY_COLUMNS)}
        """,
        [rider_id, *(row[c] for c in columns)],
    )


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


def read_rate_budget(conn: psycopg.Connection, *, for_update: bool = False) -> BudgetRow:
    """The application's budget row (locked with for_update, so reservations are atomic)."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        f"select {', '.join(_BUDGET_FIELDS)} from strava_rate_budget where id = 1{lock}"
    ).fetchone()
    if row is None:  # the migration inserts it; recreate if someone deleted it
        conn.execute("insert into strava_rate_budget (id) values (1) on conflict do nothing")
        return read_rate_budget(conn, for_update=for_update)
    return BudgetRow(**row)


def save_rate_budget(conn: psycopg.Connection, budget: BudgetRow) -> None:
    """Write the budget row back (the caller holds its lock)."""
    conn.execute(
        f"""
        update strava_rate_budget
           set {", ".join(f"{f} = %({f})s" for f in _BUDGET_FIELDS)}, updated_at = now()
         where id = 1
        """,
        budget.__dict__,
    )


# --- runs ----------------------------------------------------------------------------


def start_run(conn: psycopg.Connection, *, kind: str) -> int:
    """Log the start of a call; a row never finished is a call that died."""
    row = conn.execute("insert into cron_runs (kind) values (%s) returning id", (kind,)).fetchone()
    assert row is not None
    return int(row["id"])


def finish_run(conn: psycopg.Connection, *, run_id: int, summary: dict[str, Any]) -> None:
    """Record a call's counts, rate-limit snapshot and items."""
    conn.execute(
        """
        update cron_runs
           set finished_at = now(), processed = %(processed)s, succeeded = %(succeeded)s,
               failed = %(failed)s, skipped = %(skipped)s, remaining = %(remaining)s,
               rate_limited = %(rate_limited)s, rate_limit = %(rate_limit)s,
               items = %(items)s, error_summary = %(error_summary)s
         where id = %(run_id)s
        """,
        {
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


def fail_run(conn: psycopg.Connection, *, run_id: int, error_summary: str) -> None:
    """Close the run row of a call that raised."""
    conn.execute(
        "update cron_runs set finished_at = now(), error_summary = %s where id = %s",
        (error_summary, run_id),
    )


def ping(conn: psycopg.Connection) -> None:
    """A trivial query: is the database there?"""
    conn.execute("select 1")


# --- discovery: history walks (issue 3) ----------------------------------------------


# --- enrichment: race details (issue 3) ----------------------------------------------


# --- riders' own endpoints, OAuth and admin status (issue 4) -------------------------
