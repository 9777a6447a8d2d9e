"""Cron runs: one row per call, with its summary, and the queries the status reads them by."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from models.base import Conn


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
               items = %(items)s, error_summary = %(error_summary)s,
               idle_reason = %(idle_reason)s, next_due_at = %(next_due_at)s
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
            "idle_reason": summary.get("idle_reason"),
            "next_due_at": summary.get("next_due_at"),
        },
    )


def fail_run(conn: Conn, *, run_id: int, error_summary: str, now: datetime) -> None:
    """Close the run row of a call that raised, at `now`."""
    conn.execute(
        "update cron_runs set finished_at = %s, error_summary = %s where id = %s",
        (now, error_summary, run_id),
    )


_RUN_COLUMNS = """
    id, kind, started_at, finished_at, processed, succeeded, failed, skipped, remaining,
    rate_limited, rate_limit, error_summary, idle_reason, next_due_at
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
