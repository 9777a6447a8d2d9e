"""Sharing with the club by consent, and the application's athlete capacity.

Strava's API Agreement lets an application show a rider's data to that rider only,
unless the rider has explicitly agreed to more. A rider's consent is
`riders.share_with_club_at` (null until they turn it on; cleared at once when they turn
it off, disconnect or deauthorize). The club's pages read `club_activities`, a view that
shows only consenting riders' activities that Strava shows to everyone, with the ends of
every route removed (CLUB_ROUTE_TRIM_M, written to `club_settings` where the view reads
it: a view cannot read the service's environment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import models
from config import Settings
from services.calls import Runtime
from services.clock import Clock, iso
from services.errors import NotConnected
from services.rider_auth import RiderIdentity


def club_settings_writer(settings: Settings, clock: Clock) -> Callable[[models.Conn], None]:
    """What the database is told of the settings at each start (db.Database's
    after_migrate): the route trim the club's view applies."""

    def write(conn: models.Conn) -> None:
        models.sharing.save_club_settings(
            conn, route_trim_m=settings.club_route_trim_m, now=clock()
        )

    return write


def what_the_club_sees(route_trim_m: int) -> str:
    """The switch's sentence: what turning sharing on shows, and to whom."""
    ends = (
        f"without its first and last {route_trim_m} m"
        if route_trim_m > 0
        else "in full (this club does not trim routes)"
    )
    return (
        "Members signed in to the club's site will see your activities that Strava shows "
        "to everyone (name, date, distance, time, climb, and the route "
        f"{ends}), never your private or followers-only ones."
    )


def sharing_json(since: Any, route_trim_m: int) -> dict[str, Any]:
    return {
        "shared": since is not None,
        "since": iso(since),
        "route_trim_m": route_trim_m,
        "what_the_club_sees": what_the_club_sees(route_trim_m),
    }


def set_sharing(runtime: Runtime, identity: RiderIdentity, *, share: bool) -> dict[str, Any]:
    """PUT /api/riders/me/sharing: the rider turns sharing on or off (off at once).

    Turning it on needs a Strava connection (there is nothing to share otherwise);
    turning it off always succeeds, connected or not.
    """
    trim = runtime.settings.club_route_trim_m
    with runtime.db.connection() as conn:
        rider_id = models.riders.rider_id_for_user(conn, auth_user_id=identity.auth_user_id)
        state = (
            models.sharing.sharing_state(conn, rider_id=rider_id) if rider_id is not None else None
        )
        connected = state is not None and state["connection_status"] not in (None, "revoked")
        if share and not connected:
            raise NotConnected("Connect Strava first: there is nothing to share yet.")
        since = (
            models.sharing.set_sharing(conn, rider_id=rider_id, share=share, now=runtime.clock())
            if rider_id is not None
            else None
        )
    return sharing_json(since, trim)


def athletes(settings: Settings, connected: int) -> dict[str, Any]:
    """The status's athlete figure: connections holding a place, of the capacity."""
    capacity = settings.strava_athlete_capacity
    return {
        "connected": connected,
        "capacity": capacity,
        "full": capacity is not None and connected >= capacity,
    }
