"""What the admin status reads: riders by sync state, histories, races, and what may be stuck."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.base import Conn
from models.enrichment import RACE_RETRYABLE, RACE_WAITING
from models.sync import DUE_CANDIDATES, NOT_DONE_IN_ROUND, POLL_DUE, SYNC_STATE


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


# The admin status.


def _rider_counts(conn: Conn) -> dict[str, int]:
    """Riders, and connections by status, as the triggers keep them (counted once, and
    the row put back, if it is missing)."""
    row = conn.execute(
        "select riders, active, needs_reauth, revoked from rider_counts where id = 1"
    ).fetchone()
    if row is None:
        row = conn.execute(
            """
            insert into rider_counts (id, riders, active, needs_reauth, revoked)
            select 1, (select count(*) from riders),
                   count(*) filter (where status = 'active'),
                   count(*) filter (where status = 'needs_reauth'),
                   count(*) filter (where status = 'revoked')
              from strava_connections
            on conflict (id) do update set riders = rider_counts.riders
            returning riders, active, needs_reauth, revoked
            """
        ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


def rider_state_counts(conn: Conn, *, min_interval_s: int, now: datetime) -> dict[str, Any]:
    """Riders counted by connection status and by sync state at `now` (the states of
    SYNC_STATE, first match wins), and those never synced: from the kept counts, and the
    indexes of the few riders held by a call, paused, backing off or due; up to date is
    the rest of the active ones."""
    counts = _rider_counts(conn)
    row = conn.execute(
        f"""
        select
          (select count(*) from strava_connections
            where lease_token is not null and lease_expires_at >= %(now)s
              and status = 'active') as in_progress,
          (select count(*) from riders r join strava_connections c on c.rider_id = r.id
            where not r.auto_sync and c.status = 'active'
              and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)) as paused,
          (select count(*) from strava_connections c join riders r on r.id = c.rider_id
            where c.next_attempt_at > %(now)s and c.status = 'active' and r.auto_sync
              and (c.lease_expires_at is null or c.lease_expires_at < %(now)s))
              as backing_off,
          (select count(*) from strava_connections c join riders r on r.id = c.rider_id
            where c.rider_id in ({DUE_CANDIDATES})
              and c.status = 'active' and r.auto_sync
              and (c.lease_expires_at is null or c.lease_expires_at < %(now)s)
              and (c.next_attempt_at is null or c.next_attempt_at <= %(now)s)
              and {POLL_DUE} and {NOT_DONE_IN_ROUND}) as due,
          (select count(*) from strava_connections where last_synced_at is null)
              as never_synced
        """,
        {"min_interval_s": min_interval_s, "now": now},
    ).fetchone()
    assert row is not None
    states = {k: int(row[k]) for k in ("in_progress", "paused", "backing_off", "due")}
    connected = counts["active"] + counts["needs_reauth"] + counts["revoked"]
    return {
        "total": counts["riders"],
        "by_connection_status": {
            "active": counts["active"],
            "needs_reauth": counts["needs_reauth"],
            "revoked": counts["revoked"],
            "not_connected": counts["riders"] - connected,
        },
        "by_sync_state": {
            **states,
            "up_to_date": counts["active"] - sum(states.values()),
            "stopped": counts["needs_reauth"] + counts["revoked"],
            "not_connected": counts["riders"] - connected,
        },
        "never_synced": int(row["never_synced"]),
    }


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
               {SYNC_STATE} as sync_state,
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
                     count(*) filter (where a.is_race and {RACE_WAITING}) as races_waiting,
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


# Connections whose history is still to be walked (new, or a full refresh asked), found
# through the indexes of each (migration status_indexes), not by reading every rider.
_HISTORY_LEFT = """
    rider_id in (select rider_id from strava_connections where history_complete_at is null
                 union
                 select rider_id from strava_connections
                  where full_refresh_requested_at is not null)
"""


def incomplete_histories(conn: Conn) -> list[dict[str, Any]]:
    """Connections whose history is still to be walked (new, or a full refresh asked)."""
    return conn.execute(
        f"""
        select rider_id, status, connected_at, history_walk_started_at, history_cursor,
               history_pages, history_activities, history_races, history_complete_at,
               full_refresh_requested_at, athlete_created_at, last_progress_at,
               failure_count, next_attempt_at, last_error
          from strava_connections
         where {_HISTORY_LEFT}
         order by rider_id
        """
    ).fetchall()


def race_counts(conn: Conn, *, max_attempts: int) -> dict[str, Any]:
    """Races by enrichment state; waiting ones split by whether their rider can be served.
    The detailed ones from their index, the rest from the enrichment queue's."""
    row = conn.execute(
        f"""
        select d.n + u.n + q.queued as races, q.pending, d.n as done, q.failed_retrying,
               q.failed_final, q.waiting_on_reconnect, q.workable
          from (select count(*) as n from activities
                 where is_race and enrichment_status = 'done') d,
               (select count(*) as n from activities
                 where is_race and enrichment_status is null) u,
               (select count(*) as queued,
                       count(*) filter (where a.enrichment_status = 'pending') as pending,
                       count(*) filter (where {RACE_RETRYABLE}) as failed_retrying,
                       count(*) filter (where a.enrichment_status = 'failed'
                                        and a.enrichment_attempts >= %(max_attempts)s)
                           as failed_final,
                       count(*) filter (where {RACE_WAITING}
                                        and c.status is distinct from 'active')
                           as waiting_on_reconnect,
                       count(*) filter (where {RACE_WAITING} and c.status = 'active')
                           as workable
                  from activities a left join strava_connections c on c.rider_id = a.rider_id
                 where a.is_race and a.enrichment_status in ('pending', 'failed')) q
        """,
        {"max_attempts": max_attempts},
    ).fetchone()
    assert row is not None
    return dict(row)


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
        f"""
        select rider_id, since, next_attempt_at, failure_count, last_error from (
            select rider_id, next_attempt_at, failure_count, last_error,
                   greatest(coalesce(last_progress_at, connected_at),
                            full_refresh_requested_at, connected_at) as since
              from strava_connections
             where status = 'active' and {_HISTORY_LEFT}
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
    a call. Only riders whose poll came before that (or never planned, or never synced)
    can be: they are found through the indexes of planned polls and of syncs."""
    return conn.execute(
        """
        select c.rider_id, c.next_attempt_at, c.failure_count, c.last_error,
               case when c.last_synced_at is null then c.connected_at
                    else greatest(c.next_poll_at,
                                  c.last_synced_at + make_interval(secs => %(interval)s))
               end as since
          from strava_connections c join riders r on r.id = c.rider_id
         where c.status = 'active' and r.auto_sync
           and c.rider_id in (
               select rider_id from strava_connections
                where status = 'active'
                  and next_poll_at < %(now)s - make_interval(secs => %(stuck)s)
               union all
               select rider_id from strava_connections
                where status = 'active' and next_poll_at is null
               union all
               select rider_id from strava_connections
                where status = 'active' and last_synced_at is null)
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
         where a.is_race and {RACE_WAITING} and c.status = 'active'
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
