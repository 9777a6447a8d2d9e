"""Sharing with the club: a rider's consent, the settings the club_activities view reads,
and how many Strava athletes are connected (the application's capacity)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.base import Conn


def save_club_settings(conn: Conn, *, route_trim_m: int) -> bool:
    """Write what the view needs of the service's settings; True if the trim changed,
    which starts a pass cutting the stored routes again (from the first row)."""
    return (
        conn.execute(
            """
            insert into club_settings (id, route_trim_m, retrim_after_id) values (1, %s, 0)
            on conflict (id) do update
               set route_trim_m = excluded.route_trim_m, retrim_after_id = 0
             where club_settings.route_trim_m is distinct from excluded.route_trim_m
            """,
            (route_trim_m,),
        ).rowcount
        > 0
    )


@dataclass(frozen=True)
class RetrimState:
    """The trim the view applies, the one every stored route is known to be cut with,
    and where a pass cutting them again has got to."""

    route_trim_m: int
    routes_trim_m: int | None
    after_id: int


def retrim_state(conn: Conn) -> RetrimState | None:
    row = conn.execute(
        "select route_trim_m, routes_trim_m, coalesce(retrim_after_id, 0) as after_id"
        " from club_settings where id = 1"
    ).fetchone()
    return RetrimState(**row) if row else None


# An activity whose club routes were not cut with %(trim)s (or not at all).
_NOT_CUT_WITH_TRIM = """
    (club_summary_trim_m is distinct from %(trim)s
     or (polyline is not null and club_polyline_trim_m is distinct from %(trim)s))
"""


def lock_stale_routes(
    conn: Conn, *, after_id: int, trim_m: int, limit: int
) -> list[dict[str, Any]]:
    """The next `limit` activities of riders who share, after `after_id` (by id), whose
    stored club routes were not cut with `trim_m`, locked until the transaction ends (rows
    another call is writing are skipped: that write cuts them with the trim of the day).
    Other riders' routes are cut if and when they turn sharing on."""
    return conn.execute(
        f"""
        select id, summary_polyline, polyline from activities
         where id > %(after)s
           and {_NOT_CUT_WITH_TRIM}
           and rider_id in (select id from riders where share_with_club_at is not null)
         order by id
         limit %(limit)s
         for update skip locked
        """,
        {"after": after_id, "trim": trim_m, "limit": limit},
    ).fetchall()


def riders_with_routes_pending(conn: Conn, *, limit: int) -> list[int]:
    """Riders who turned sharing on and whose routes are not all cut yet (an index of the
    few, never every rider)."""
    rows = conn.execute(
        "select id from riders where club_routes_pending_since is not null order by id limit %s",
        (limit,),
    ).fetchall()
    return [int(r["id"]) for r in rows]


def lock_routes_to_cut(
    conn: Conn, *, rider_id: int, trim_m: int, limit: int
) -> list[dict[str, Any]]:
    """The next `limit` activities of a rider whose club routes were not cut with
    `trim_m` (or at all), locked as lock_stale_routes locks them."""
    return conn.execute(
        f"""
        select id, summary_polyline, polyline from activities
         where rider_id = %(rider_id)s
           and {_NOT_CUT_WITH_TRIM}
         order by id
         limit %(limit)s
         for update skip locked
        """,
        {"rider_id": rider_id, "trim": trim_m, "limit": limit},
    ).fetchall()


def end_routes_pending(conn: Conn, *, rider_id: int, pending_before: datetime) -> None:
    """Every route of the rider is cut: no longer pending, unless sharing was turned on
    after `pending_before` (a call that leased the rider before that could still be
    storing routes it did not cut)."""
    conn.execute(
        """
        update riders set club_routes_pending_since = null
         where id = %(rider_id)s and club_routes_pending_since < %(before)s
        """,
        {"rider_id": rider_id, "before": pending_before},
    )


def save_club_routes(conn: Conn, *, routes: list[dict[str, Any]], trim_m: int) -> int:
    """Store routes cut again (`id`, `club_summary_polyline`, `club_polyline`) with the
    trim they were cut with, in one statement."""
    if not routes:
        return 0
    return conn.execute(
        """
        update activities a
           set club_summary_polyline = r.club_summary_polyline,
               club_summary_trim_m = %(trim)s,
               club_polyline = r.club_polyline,
               club_polyline_trim_m = case when a.polyline is null then null else %(trim)s end
          from json_to_recordset(%(routes)s::json)
               as r(id bigint, club_summary_polyline text, club_polyline text)
         where a.id = r.id
           and a.id = any(%(ids)s)  -- an array the planner counts: never every activity
        """,
        {"routes": json.dumps(routes), "trim": trim_m, "ids": [int(r["id"]) for r in routes]},
    ).rowcount


def advance_retrim(conn: Conn, *, after_id: int, trim_m: int, done: bool) -> None:
    """Where the pass has got to; when `done`, every stored route is cut with `trim_m`
    (unless the trim changed meanwhile: the pass then starts over)."""
    conn.execute(
        """
        update club_settings
           set retrim_after_id = case when %(done)s then null else %(after)s end,
               routes_trim_m = case when %(done)s then %(trim)s else routes_trim_m end
         where id = 1 and route_trim_m = %(trim)s
        """,
        {"after": after_id, "trim": trim_m, "done": done},
    )


def set_sharing(conn: Conn, *, rider_id: int, share: bool, now: datetime) -> datetime | None:
    """Turn a rider's sharing on (keeping the first consent's time) or off (at once);
    returns since when the rider shares, or None. Turning it on makes the rider's routes
    pending: stored while they did not share, they were not cut for the club."""
    row = conn.execute(
        """
        update riders
           set share_with_club_at = case when %(share)s
                                         then coalesce(share_with_club_at, %(now)s) end,
               club_routes_pending_since = case
                   when %(share)s and share_with_club_at is null then %(now)s
                   else club_routes_pending_since end
         where id = %(rider_id)s
        returning share_with_club_at
        """,
        {"share": share, "now": now, "rider_id": rider_id},
    ).fetchone()
    return row["share_with_club_at"] if row else None


def sharing_state(conn: Conn, *, rider_id: int) -> dict[str, Any] | None:
    """The rider's consent and whether they have a Strava connection to share from."""
    return conn.execute(
        """
        select r.share_with_club_at, c.status as connection_status
          from riders r left join strava_connections c on c.rider_id = r.id
         where r.id = %s
        """,
        (rider_id,),
    ).fetchone()


def athletes_connected(conn: Conn, *, up_to: int) -> int:
    """Connections that hold a place of the application's athlete capacity (all but
    `revoked`), counted up to `up_to`: the answer to "is it full?" reads at most that
    many rows, however large the club."""
    row = conn.execute(
        """
        select count(*) as n from (
            select 1 from strava_connections where status <> 'revoked' limit %s
        ) held
        """,
        (up_to,),
    ).fetchone()
    return int(row["n"]) if row else 0


def holds_athlete_place(conn: Conn, *, auth_user_id: Any) -> bool:
    """Whether this Supabase user's rider already has a connection holding a place (a
    reconnection takes no new one)."""
    row = conn.execute(
        """
        select 1 from riders r join strava_connections c on c.rider_id = r.id
         where r.auth_user_id = %s and c.status <> 'revoked'
        """,
        (auth_user_id,),
    ).fetchone()
    return row is not None
