"""Polling by need: riders' upload habits, their planned polls, and the backlog the rate
plan weighs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from models.base import Conn
from models.enrichment import RACE_WAITING


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


def backfill_backlog(conn: Conn, *, max_attempts: int, recent_since: datetime) -> dict[str, int]:
    """What the backfill classes have waiting: races to detail, recent and old, and
    histories still to walk."""
    row = conn.execute(
        f"""
        select
          (select count(*) from activities a
            where a.is_race and {RACE_WAITING} and a.start_date >= %(recent)s) as recent_races,
          (select count(*) from activities a
            where a.is_race and {RACE_WAITING} and a.start_date < %(recent)s) as old_races,
          (select count(*) from strava_connections c
            where c.status = 'active' and c.history_complete_at is null) as histories
        """,
        {"max_attempts": max_attempts, "recent": recent_since},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}
