"""Riders and their Strava connections: creating them, OAuth state, grants, operator
actions, and deleting a rider's Strava data.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from models.base import Conn
from models.progress import forget_rider_progress


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
    delete_derived_data(conn, rider_id=rider_id)
    delete_rider_events(conn, rider_id=rider_id)
    return had_connection, activities


def delete_derived_data(conn: Conn, *, rider_id: int) -> None:
    """Remove what was made from a rider's Strava data beyond the activities themselves
    (their weather, places and duplicate pairs go with the rows): the operator's
    duplicate verdicts on them, the Eddington numbers, the progress messages Realtime
    keeps; and the consent to share, which a new connection asks for again."""
    conn.execute("delete from duplicate_overrules where rider_id = %s", (rider_id,))
    forget_rider_progress(conn, rider_id=rider_id)
    conn.execute(
        "update riders set eddington_miles = null, eddington_km = null,"
        " eddington_updated_at = null, share_with_club_at = null where id = %s",
        (rider_id,),
    )


def delete_rider_events(conn: Conn, *, rider_id: int) -> int:
    """Remove the rider's webhook events (they name activities, and carry titles)."""
    return conn.execute(
        "delete from strava_webhook_events where rider_id = %s", (rider_id,)
    ).rowcount


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


def name_from_strava(conn: Conn, *, rider_id: int, name: str) -> bool:
    """Name a rider after their Strava athlete, unless the operator has named them."""
    return (
        conn.execute(
            "update riders set name = %s where id = %s and named_by_operator_at is null",
            (name, rider_id),
        ).rowcount
        > 0
    )


def rename_rider(conn: Conn, *, rider_id: int, name: str, now: datetime) -> bool:
    """The operator's name for a rider, kept over Strava's from `now` on; False for an
    unknown rider."""
    return (
        conn.execute(
            "update riders set name = %s, named_by_operator_at = %s where id = %s",
            (name, now, rider_id),
        ).rowcount
        > 0
    )


def rider_names(conn: Conn, *, rider_ids: list[int]) -> dict[int, str]:
    """The names of these riders (by primary key), for what lists riders by id."""
    if not rider_ids:
        return {}
    rows = conn.execute(
        "select id, name from riders where id = any(%s)", (sorted(set(rider_ids)),)
    ).fetchall()
    return {int(r["id"]): str(r["name"]) for r in rows}


def set_auto_sync(conn: Conn, *, rider_id: int, enabled: bool) -> bool:
    """Pause or resume a rider's scheduled sync; False for an unknown rider."""
    return (
        conn.execute("update riders set auto_sync = %s where id = %s", (enabled, rider_id)).rowcount
        > 0
    )


def revoke_connection(conn: Conn, *, rider_id: int, message: str, now: datetime) -> int:
    """The rider deauthorized the application at Strava (confirmed): their tokens, Strava
    data and everything derived from it are deleted (the caller deletes the webhook
    events once the one being processed is done); the connection stays as `revoked`,
    holding nothing of theirs but the athlete id. Returns activities deleted."""
    conn.execute(
        """
        update strava_connections
           set status = 'revoked', access_token = null, refresh_token = null,
               last_error = %s, error_class = 'revoked',
               lease_token = null, lease_kind = null, lease_expires_at = null,
               sync_cursor = null, last_sync_added = 0, last_sync_updated = 0,
               sync_listing_after = null, sync_listing_page = null,
               sync_listing_newest = null,
               history_complete_at = null, history_walk_started_at = null,
               history_cursor = null, history_pages = 0, history_activities = 0,
               history_races = 0, history_estimated_complete_on = null,
               athlete_created_at = null, progress_sent_at = null,
               next_poll_at = null, polls_per_day = null, poll_reason = null,
               updated_at = %s
         where rider_id = %s
        """,
        (message, now, rider_id),
    )
    activities = delete_rider_activities(conn, rider_id=rider_id)
    delete_derived_data(conn, rider_id=rider_id)
    return activities
