"""Polling by need: riders' upload habits, their planned polls, and the backlog the rate
plan weighs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from models.base import Conn
from models.enrichment import RACE_WAITING

_HABITS = """
    select c.rider_id, c.last_synced_at,
           (c.last_sync_added + c.last_sync_updated) > 0 as last_found,
           coalesce(h.ends, '{}') as ends, h.offset_s, n.newest,
           c.next_poll_at, c.polls_per_day, c.poll_reason
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
"""


def poll_habits(
    conn: Conn,
    *,
    since: datetime,
    rider_ids: list[int] | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """What polling needs of active auto-sync riders (these, or a slice by id: those
    after `after`, at most `limit`): the last sync and whether it found something, the
    end times of activities started since `since` (an upload comes after its ride ends),
    the latest UTC offset, the newest start, and the plan they have now."""
    return conn.execute(
        _HABITS
        + """
           and (%(ids)s::bigint[] is null or c.rider_id = any(%(ids)s::bigint[]))
           and (%(after)s::bigint is null or c.rider_id > %(after)s::bigint)
         order by c.rider_id limit %(limit)s
        """,
        {"since": since, "ids": rider_ids, "after": after, "limit": limit},
    ).fetchall()


def survey_uploads(
    conn: Conn, *, since: datetime, now: datetime, after: int, limit: int
) -> list[dict[str, Any]]:
    """Active auto-sync riders after id `after` (at most `limit`, by id): their uploads
    (activities that ended) between `since` and `now`, and whether they have any
    activity at all."""
    return conn.execute(
        """
        select c.rider_id,
               (select count(*) from activities a
                 where a.rider_id = c.rider_id and a.start_date >= %(since)s
                   and a.start_date + make_interval(secs => coalesce(a.elapsed_time_s, 0))
                       between %(since)s and %(now)s) as uploads,
               exists (select 1 from activities a where a.rider_id = c.rider_id) as known
          from strava_connections c join riders r on r.id = c.rider_id
         where c.status = 'active' and r.auto_sync and c.rider_id > %(after)s
         order by c.rider_id limit %(limit)s
        """,
        {"since": since, "now": now, "after": after, "limit": limit},
    ).fetchall()


def save_poll_plan(conn: Conn, *, decisions: list[dict[str, Any]]) -> int:
    """Store each rider's next poll, its polls a day and the reason, in one statement;
    rows whose plan is the same are not written. Returns the rows written."""
    if not decisions:
        return 0
    return conn.execute(
        """
        update strava_connections c
           set next_poll_at = d.next_poll_at, polls_per_day = d.polls_per_day,
               poll_reason = d.reason
          from json_to_recordset(%s::json)
               as d(rider_id bigint, next_poll_at timestamptz, polls_per_day int, reason text)
         where c.rider_id = d.rider_id
           -- the ids again, as an array: the planner takes a set-returning function for
           -- 100 rows and would read every rider to join them; an array it counts
           and c.rider_id = any(%s)
           and (c.next_poll_at, c.polls_per_day, c.poll_reason)
               is distinct from (d.next_poll_at, d.polls_per_day, d.reason)
        """,
        (json.dumps(decisions, default=str), [int(d["rider_id"]) for d in decisions]),
    ).rowcount


def fleet_counts(conn: Conn) -> dict[str, int]:
    """Active auto-sync riders and their planned polls a day, as the triggers keep them
    (counted once, and the row put back, if it is missing)."""
    row = conn.execute("select riders, polls_per_day from poll_fleet where id = 1").fetchone()
    if row is None:
        row = conn.execute(
            """
            insert into poll_fleet (id, riders, polls_per_day)
            select 1, count(*), coalesce(sum(coalesce(c.polls_per_day, 1)), 0)
              from strava_connections c join riders r on r.id = c.rider_id
             where c.status = 'active' and r.auto_sync
            on conflict (id) do update set riders = poll_fleet.riders
            returning riders, polls_per_day
            """
        ).fetchone()
    assert row is not None
    return {"riders": int(row["riders"]), "polls_per_day": int(row["polls_per_day"])}


def riders_polled_before(conn: Conn, *, until: datetime, cap: int | None = None) -> int:
    """Active auto-sync riders whose next poll comes before `until` (or was never
    planned): read from the index of planned polls, so it costs what is due; with
    `cap`, counted up to `cap` only (a bigger club has more polls in a window, and a
    decision that cannot tell more than `cap` apart need not read them)."""
    if cap is not None and cap <= 0:
        return 0
    row = conn.execute(
        """
        select count(*) as n from (
          select 1
            from strava_connections c join riders r on r.id = c.rider_id
           where c.status = 'active' and r.auto_sync
             and c.rider_id in (select rider_id from strava_connections
                                 where status = 'active' and next_poll_at < %(until)s
                                union all
                                select rider_id from strava_connections
                                 where status = 'active' and next_poll_at is null)
           limit %(cap)s) polled
        """,
        {"until": until, "cap": cap},
    ).fetchone()
    assert row is not None
    return int(row["n"])


def backfill_backlog(
    conn: Conn, *, max_attempts: int, recent_since: datetime, cap: int | None = None
) -> dict[str, int]:
    """What the backfill classes have waiting: races to detail, recent and old, and
    histories still to walk; each counted up to `cap` (a day's whole budget weighs the
    same as any larger backlog, and counting stops there)."""
    row = conn.execute(
        f"""
        select
          (select count(*) from (select 1 from activities a
            where a.is_race and {RACE_WAITING} and a.start_date >= %(recent)s
            limit %(cap)s) w) as recent_races,
          (select count(*) from (select 1 from activities a
            where a.is_race and {RACE_WAITING} and a.start_date < %(recent)s
            limit %(cap)s) w) as old_races,
          (select count(*) from (select 1 from strava_connections c
            where c.status = 'active' and c.history_complete_at is null
            limit %(cap)s) w) as histories
        """,
        {"max_attempts": max_attempts, "recent": recent_since, "cap": cap},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


@dataclass(frozen=True)
class PlanState:
    """The plan the riders' polls follow, and a whole-club re-plan under way (poll_plan)."""

    kind: str | None = None
    share_per_day: int | None = None
    level: float | None = None
    typical_rate: float | None = None
    expected_per_day: float | None = None
    fits: bool | None = None
    note: str | None = None
    planned_at: datetime | None = None
    replan_kind: str | None = None
    replan_share: int | None = None
    replan_started_at: datetime | None = None
    replan_phase: str | None = None
    replan_after: int = 0
    replan_survey: dict[str, Any] | None = None
    replan_riders: int = 0


_PLAN_FIELDS = list(PlanState.__dataclass_fields__)


def read_plan_state(conn: Conn, *, lock: bool = False) -> PlanState | None:
    """The plan's row; with `lock`, locked for a slice of a re-plan, or None when another
    call holds it (or there is none yet)."""
    suffix = " for update skip locked" if lock else ""
    row = conn.execute(
        f"select {', '.join(_PLAN_FIELDS)} from poll_plan where id = 1{suffix}"
    ).fetchone()
    return PlanState(**row) if row else None


def save_plan_state_if_missing(conn: Conn) -> None:
    """Make the plan's row (nothing planned yet) unless it is there."""
    conn.execute("insert into poll_plan (id) values (1) on conflict (id) do nothing")


def save_plan_state(conn: Conn, state: PlanState) -> None:
    """Write the plan's row (made if missing)."""
    survey = None if state.replan_survey is None else Jsonb(state.replan_survey)
    values = {**state.__dict__, "replan_survey": survey}
    conn.execute(
        f"""
        insert into poll_plan (id, {", ".join(_PLAN_FIELDS)})
        values (1, {", ".join(f"%({f})s" for f in _PLAN_FIELDS)})
        on conflict (id) do update set
            {", ".join(f"{f} = excluded.{f}" for f in _PLAN_FIELDS)}
        """,
        values,
    )
