"""Sharing with the club: a rider's consent, the settings the club_activities view reads,
and how many Strava athletes are connected (the application's capacity)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.base import Conn


def save_club_settings(conn: Conn, *, route_trim_m: int, now: datetime) -> bool:
    """Write what the view needs of the service's settings; True if it changed."""
    return (
        conn.execute(
            """
            insert into club_settings (id, route_trim_m, updated_at) values (1, %s, %s)
            on conflict (id) do update
               set route_trim_m = excluded.route_trim_m, updated_at = excluded.updated_at
             where club_settings.route_trim_m is distinct from excluded.route_trim_m
            """,
            (route_trim_m, now),
        ).rowcount
        > 0
    )


def set_sharing(conn: Conn, *, rider_id: int, share: bool, now: datetime) -> datetime | None:
    """Turn a rider's sharing on (keeping the first consent's time) or off (at once);
    returns since when the rider shares, or None."""
    row = conn.execute(
        """
        update riders
           set share_with_club_at = case when %(share)s
                                         then coalesce(share_with_club_at, %(now)s) end
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
