"""Strava's push subscription and its events: storing, claiming by object, finishing, counting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from models.base import Conn

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


def has_pending_events(conn: Conn, *, rider_id: int) -> bool:
    """Whether the rider has an event waiting (one look at the pending events' index)."""
    row = conn.execute(
        "select exists (select 1 from strava_webhook_events"
        " where rider_id = %s and status = 'pending') as pending",
        (rider_id,),
    ).fetchone()
    return bool(row and row["pending"])


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


def any_activity_started_since(conn: Conn, *, since: datetime) -> bool:
    """Whether any rider has an activity that started after `since` (by the start-date
    index: one row read at most)."""
    row = conn.execute(
        "select exists (select 1 from activities where start_date > %s) as found", (since,)
    ).fetchone()
    return bool(row and row["found"])


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


def events_waiting(conn: Conn, *, now: datetime) -> dict[str, datetime | None]:
    """For an events call that took nothing: the earliest end of a lease on a pending
    event, and the earliest retry of one backing off (by the index of pending events)."""
    row = conn.execute(
        """
        select min(lease_expires_at) filter (where lease_expires_at > %(now)s) as held_until,
               min(next_attempt_at) filter (where next_attempt_at > %(now)s)
                   as backing_off_until
          from strava_webhook_events where status = 'pending'
        """,
        {"now": now},
    ).fetchone()
    assert row is not None
    return {**row, "next_planned_at": None}


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
