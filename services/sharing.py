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

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import models
from config import Settings
from services.calls import Runtime
from services.clock import iso
from services.errors import NotConnected
from services.rider_auth import RiderIdentity
from services.routes import trim_route

log = logging.getLogger(__name__)

# Activities a batch of the re-trim pass cuts again (one transaction, rows locked).
RETRIM_BATCH = 200
# Time kept back from a call's budget when the pass runs at its end.
RETRIM_MARGIN_S = 1.0
# Time the switch's request spends cutting the routes of a rider who turned sharing on.
CUT_ON_SHARING_S = 2.0


def club_settings_writer(settings: Settings) -> Callable[[models.Conn], None]:
    """What the database is told of the settings at each start (db.Database's
    after_migrate): the route trim the club's view applies."""

    def write(conn: models.Conn) -> None:
        models.sharing.save_club_settings(conn, route_trim_m=settings.club_route_trim_m)

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
    if since is not None and rider_id is not None:
        # Most histories are cut in well under a second: shown as soon as the switch is
        # on. What is left (a long history) the enrich calls cut.
        ends = runtime.timer() + CUT_ON_SHARING_S
        cut_pending_routes(
            runtime, time_left=lambda: ends - runtime.timer(), rider_ids=[rider_id], margin_s=0
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


def cut_pending_routes(
    runtime: Runtime,
    *,
    time_left: Callable[[], float],
    rider_ids: list[int] | None = None,
    batch: int = RETRIM_BATCH,
    margin_s: float = RETRIM_MARGIN_S,
) -> int:
    """Cut the routes of riders who turned sharing on (stored while they did not share,
    they were not cut), a batch at a time while `time_left()` allows: `rider_ids`, or
    the pending riders. A rider stays pending until a pass finds nothing left to cut a
    lease's life after they turned sharing on, so that a call which leased them before
    cannot leave a route uncut behind it. Returns the activities cut."""
    settings = runtime.settings
    trim = settings.club_route_trim_m
    done = 0
    if rider_ids is None:
        with runtime.db.connection() as conn:
            rider_ids = models.sharing.riders_with_routes_pending(conn, limit=batch)
    for rider_id in rider_ids:
        while time_left() > margin_s:
            with runtime.db.connection() as conn:
                rows = models.sharing.lock_routes_to_cut(
                    conn, rider_id=rider_id, trim_m=trim, limit=batch
                )
                models.sharing.save_club_routes(conn, routes=cut_routes(rows, trim), trim_m=trim)
                if len(rows) < batch:
                    since = runtime.clock() - timedelta(seconds=settings.lease_ttl_s)
                    models.sharing.end_routes_pending(conn, rider_id=rider_id, pending_before=since)
            done += len(rows)
            if len(rows) < batch:
                break
    return done


def cut_routes(rows: list[dict[str, Any]], trim: int) -> list[dict[str, Any]]:
    """Activities' routes as the club may see them (services/routes.trim_route)."""
    return [
        {
            "id": r["id"],
            "club_summary_polyline": trim_route(r["summary_polyline"], trim),
            "club_polyline": trim_route(r["polyline"], trim),
        }
        for r in rows
    ]


def retrim_routes(
    runtime: Runtime, *, time_left: Callable[[], float], batch: int = RETRIM_BATCH
) -> int:
    """Cut the stored club routes again with CLUB_ROUTE_TRIM_M, a batch at a time, while
    `time_left()` allows: after the trim changed, and once for the rows stored before
    routes were cut. Meanwhile the view hides a route cut with less than the trim of the
    day, so nothing is shown uncut. Returns the activities cut again."""
    trim = runtime.settings.club_route_trim_m
    done = 0
    while time_left() > RETRIM_MARGIN_S:
        with runtime.db.connection() as conn:
            state = models.sharing.retrim_state(conn)
            if state is None or state.route_trim_m != trim or state.routes_trim_m == trim:
                return done  # nothing to do (or another deployment's trim is the view's)
            rows = models.sharing.lock_stale_routes(
                conn, after_id=state.after_id, trim_m=trim, limit=batch
            )
            models.sharing.save_club_routes(conn, routes=cut_routes(rows, trim), trim_m=trim)
            finished = len(rows) < batch
            models.sharing.advance_retrim(
                conn,
                after_id=rows[-1]["id"] if rows else state.after_id,
                trim_m=trim,
                done=finished,
            )
        done += len(rows)
        if finished:
            log.info("club routes cut again", extra={"trim_m": trim, "activities": done})
            return done
    return done
