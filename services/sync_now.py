"""A rider's "Sync now": the same incremental sync as the cron's, for this rider at once,
on the rate budget's Sync-now reserve, then the rider's new races detailed if budget is
left; and the state the button shows."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import models
from services.budget import try_reserve
from services.calls import FAILED, SUCCEEDED, Call, Outcome, Runtime, recorded
from services.clock import iso
from services.enrichment import enrich_rider_races
from services.planning import plan_riders
from services.progress import SYNC, Progress, stopped, sync_now_done
from services.rider_auth import RiderIdentity
from services.sharing import sharing_json
from services.status import history_percent
from services.strava import RateLimited, next_window_reset
from services.sync import sync_rider

log = logging.getLogger(__name__)

# Races detailed after a Sync now at most; the cron's enrich call takes any others.
ENRICH_LIMIT = 10

# The widget's button then reads "Reconnect Strava": the words name it.
_RECONNECT = "Strava access has expired or was withdrawn: press Reconnect Strava to continue."
_REVOKED = (
    "You withdrew this club's access on Strava, so your Strava data here was deleted. "
    "Press Reconnect Strava to connect again."
)

# The last error in plain words, by the error class the sync recorded.
_PLAIN_ERRORS = {
    "needs_reauth": _RECONNECT,
    "unauthorized": _RECONNECT,
    "token_rejected": _RECONNECT,
    "strava_unavailable": "Strava did not answer. We will try again automatically.",
    "bad_payload": "Strava sent something we could not read. We will try again automatically.",
    "not_found": "Strava could not find what we asked for. We will try again automatically.",
    "internal": "Something went wrong on our side. We will try again automatically.",
}


class SyncNowRefused(Exception):
    """Sync now cannot run for this rider now; the route turns it into a JSON error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.extra = extra or {}


@dataclass
class SyncNowResult:
    """The answer: 200 with what was added, or 202 when another call already holds the rider."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


# --- pure decisions ------------------------------------------------------------------


def plain_error(error_class: str | None, status: str | None) -> str | None:
    """The rider's last error as a sentence the page can show."""
    if status == "revoked":
        return _REVOKED
    if status == "needs_reauth":
        return _RECONNECT
    if error_class is None:
        return None
    return _PLAIN_ERRORS.get(
        error_class, "The last sync did not finish. We will try again automatically."
    )


def retry_after(resets_at: datetime, now: datetime) -> int:
    """Whole seconds until `resets_at`, at least 1 (the Retry-After header)."""
    return max(1, math.ceil((resets_at - now).total_seconds()))


def strava_url(strava_id: int) -> str:
    """Where Strava shows an activity (its "View on Strava" link)."""
    return f"https://www.strava.com/activities/{strava_id}"


def rider_state(
    row: dict[str, Any] | None, *, cooldown_s: int, route_trim_m: int = 500
) -> dict[str, Any]:
    """The state the Sync now button shows, from models.sync.rider_sync_state's row.

    What has not happened yet is null, never a zero that reads as a result: no
    `last_sync` before the first sync, no history estimate before the walk's first page.
    """
    if row is None or not row["connected"]:
        return {"connected": False, "in_progress": False, "sync_now_available": False}
    now: datetime = row["now"]
    complete = row["history_complete_at"] is not None and row["full_refresh_requested_at"] is None
    available_at = (
        row["last_sync_now_at"] + timedelta(seconds=cooldown_s) if row["last_sync_now_at"] else None
    )
    error = plain_error(row["error_class"], row["status"])
    return {
        "connected": True,
        "athlete_id": row["athlete_id"],
        "status": row["status"],
        "needs_reconnect": row["status"] != "active",
        "in_progress": bool(row["in_progress"]),
        "auto_sync": row["auto_sync"],
        "last_synced_at": iso(row["last_synced_at"]),
        "last_sync": (
            {"added": row["last_sync_added"], "updated": row["last_sync_updated"]}
            if row["last_synced_at"] is not None
            else None
        ),
        "history": {
            "complete": complete,
            "started": complete or row["history_walk_started_at"] is not None,
            "percent": history_percent(
                complete=complete,
                walk_started_at=row["history_walk_started_at"],
                cursor=row["history_cursor"],
                floor=row["athlete_created_at"],
            ),
            "oldest_reached": iso(row["history_cursor"]),
            "activities_found": row["history_activities"],
            "estimated_complete_on": (
                row["history_estimated_complete_on"].isoformat()
                if row["history_estimated_complete_on"] is not None and not complete
                else None
            ),
        },
        "activities": row["activities"],
        "latest_activity": (
            {
                "strava_id": row["latest_strava_id"],
                "name": row["latest_name"],
                "start_date": iso(row["latest_start_date"]),
                "strava_url": strava_url(row["latest_strava_id"]),
            }
            if row["latest_strava_id"] is not None
            else None
        ),
        "races": {
            "total": row["races"],
            "waiting_for_details": row["races_waiting"],
            "detailed": row["races_done"],
            "failed": row["races_failed"],
        },
        "last_error": (
            {"message": error, "retry_at": iso(row["next_attempt_at"])} if error else None
        ),
        "sync_now_available": row["status"] == "active"
        and not row["in_progress"]
        and (available_at is None or available_at <= now),
        "sync_now_available_at": iso(available_at) if available_at and available_at > now else None,
        "eddington": {
            "miles": row["eddington_miles"],
            "km": row["eddington_km"],
            "updated_at": iso(row["eddington_updated_at"]),
        },
        "sharing": sharing_json(row["share_with_club_at"], route_trim_m),
        # Where the widget hears this rider's live progress (Supabase Realtime Broadcast).
        "realtime": {"topic": f"rider:{row['auth_user_id']}", "event": "progress"}
        if row["auth_user_id"] is not None
        else None,
    }


# --- I/O -----------------------------------------------------------------------------


def sync_state(runtime: Runtime, identity: RiderIdentity) -> dict[str, Any]:
    """GET /api/riders/me/sync: this rider's state (a rider never reads another's)."""
    settings = runtime.settings
    with runtime.db.connection() as conn:
        rider_id = models.riders.rider_id_for_user(conn, auth_user_id=identity.auth_user_id)
        row = (
            models.sync.rider_sync_state(
                conn,
                rider_id=rider_id,
                min_interval_s=settings.sync_min_interval_s,
                max_attempts=settings.enrich_max_attempts,
                now=runtime.clock(),
            )
            if rider_id is not None
            else None
        )
    return rider_state(
        row, cooldown_s=settings.sync_now_cooldown_s, route_trim_m=settings.club_route_trim_m
    )


def sync_now(runtime: Runtime, identity: RiderIdentity) -> SyncNowResult:
    """POST /api/riders/me/sync: sync this rider now, or say plainly why not."""
    settings = runtime.settings
    with runtime.db.connection() as conn:
        rider_id = models.riders.rider_id_for_user(conn, auth_user_id=identity.auth_user_id)
    if rider_id is None:
        raise _not_connected()
    held = _refuse_or_hold(runtime, identity, rider_id, check_budget=True)
    if held is not None:
        return held
    call = Call(runtime, kind="sync-now")
    try:
        with runtime.db.connection() as conn:
            lease = models.sync.claim_rider_for_sync_now(
                conn,
                rider_id=rider_id,
                lease_token=call.lease_token,
                lease_ttl_s=settings.lease_ttl_s,
                cooldown_s=settings.sync_now_cooldown_s,
                now=call.started_at,
            )
        if lease is None:  # another call or click got there between our look and the claim
            return _refuse_or_hold(runtime, identity, rider_id, check_budget=False) or (
                _in_progress(runtime, identity)
            )
        answer = recorded(runtime, "sync-now", lambda: _run(call, lease))
    finally:
        call.close()
    return _result(runtime, identity, answer)


def _refuse_or_hold(
    runtime: Runtime, identity: RiderIdentity, rider_id: int, *, check_budget: bool
) -> SyncNowResult | None:
    """Raise SyncNowRefused, answer 202 for a rider held by another call, or None to go on."""
    settings = runtime.settings
    now = runtime.clock()
    with runtime.db.connection() as conn:
        position = models.sync.sync_now_position(
            conn, rider_id=rider_id, cooldown_s=settings.sync_now_cooldown_s, now=now
        )
        budget = models.budget.read_rate_budget(conn) if check_budget else None
    if position is None:
        raise _not_connected()
    if position["status"] != "active":
        raise SyncNowRefused(409, "needs_reauth", _RECONNECT)
    if position["leased"]:
        return _in_progress(runtime, identity)
    if position["cooldown_left_s"] > 0:
        wait = max(1, math.ceil(position["cooldown_left_s"]))
        raise SyncNowRefused(
            429,
            "cooldown",
            f"You synced a moment ago; Sync now is available again in {wait} seconds.",
            retry_after_s=wait,
        )
    if budget is not None:
        # Refuse before any Strava request when even the Sync-now reserve is spent.
        _, refusal = try_reserve(budget, now, held_back=0)
        if refusal is not None:
            raise _rate_limited(refusal.resets_at, now)
    return None


def _run(call: Call, lease: models.sync.RiderLease) -> dict[str, Any]:
    """The recorded body: sync the rider, then detail its new races if budget is left."""
    rider_id = lease.rider_id
    live = Progress(rider_id, call.now)
    try:
        # The rider asked: the full overlap, webhooks or not (a lost event is caught now).
        synced = sync_rider(call, lease, events_healthy=False, progress=live, last_phase=False)
    except Exception as exc:  # the rider's lease must be handed back whatever happened
        synced = call.settle_rider(lease, exc)
        if synced.detail == "rate_limited":  # a click the budget refused costs no cooldown
            with call.db.connection() as conn:
                models.sync.clear_sync_now_cooldown(conn, rider_id=rider_id)
    outcomes: list[Outcome] = [synced]
    if synced.status == SUCCEEDED:  # its next poll moves (a find brings it forward)
        with call.db.connection() as conn:
            plan_riders(conn, [rider_id], call.settings, call.now())
    if synced.status == SUCCEEDED and not call.should_stop():
        outcomes.extend(enrich_rider_races(call, rider_id, limit=ENRICH_LIMIT, live=live))
    races = outcomes[1:]
    with call.db.connection() as conn:
        row = models.sync.rider_sync_state(
            conn,
            rider_id=rider_id,
            min_interval_s=call.settings.sync_min_interval_s,
            max_attempts=call.settings.enrich_max_attempts,
            now=call.now(),
        )
        # The run's last message, in the transaction that reads its result.
        live.report(
            conn,
            sync_now_done(synced.counts, sum(1 for r in races if r.status == SUCCEEDED), len(races))
            if synced.status == SUCCEEDED
            else stopped(SYNC, synced.detail, added=synced.counts.get("added", 0)),
        )
    waiting = int(row["races_waiting"]) if row else 0
    answer = call.answer(outcomes, remaining=waiting + (0 if synced.status == SUCCEEDED else 1))
    refusal = call.budget.refusal or (
        call.stopped_by if isinstance(call.stopped_by, RateLimited) else None
    )
    answer["resets_at"] = iso(refusal.resets_at) if refusal else None
    return answer


def _result(runtime: Runtime, identity: RiderIdentity, answer: dict[str, Any]) -> SyncNowResult:
    """The rider's answer from the recorded call's answer."""
    rider, *races = answer["items"]
    status, reason = rider["status"], rider.get("reason")
    if status == FAILED and reason == "needs_reauth":
        raise SyncNowRefused(409, "needs_reauth", _RECONNECT)
    if reason == "rate_limited":
        resets = answer["resets_at"]
        now = runtime.clock()
        resets_at = (
            datetime.fromisoformat(resets.replace("Z", "+00:00"))
            if resets
            else next_window_reset(now)
        )
        raise _rate_limited(resets_at, now)
    if reason == "lease_lost":
        return _in_progress(runtime, identity)
    if reason == "not_connected":  # disconnected while the sync ran
        raise _not_connected()
    if reason in ("application_inactive", "application_blocked", "invalid_client"):
        raise SyncNowRefused(
            503,
            "strava_unavailable",
            "Strava is not accepting this service's requests at the moment. Try again later.",
        )
    if status == FAILED:
        raise SyncNowRefused(
            500 if reason == "internal" else 502,
            "sync_failed",
            plain_error(reason, "active") or "The sync failed.",
            extra={"reason": reason},
        )
    finished = status == SUCCEEDED
    return SyncNowResult(
        200,
        {
            "status": "synced" if finished else "incomplete",
            "message": (
                "Your new activities are in."
                if finished
                else "Strava was slow; the rest follows with the next sync."
            ),
            "added": rider.get("added", 0),
            "updated": rider.get("updated", 0),
            "races_found": rider.get("races", 0),
            "races_enriched": sum(1 for r in races if r["status"] == SUCCEEDED),
            "rate_limited": answer["rate_limited"],
            "strava_requests": answer["strava_requests"],
            "duration_ms": answer["duration_ms"],
            "sync": sync_state(runtime, identity),
        },
    )


def _in_progress(runtime: Runtime, identity: RiderIdentity) -> SyncNowResult:
    return SyncNowResult(
        202,
        {
            "status": "in_progress",
            "message": "A sync of your activities is already running; it will be done shortly.",
            "sync": sync_state(runtime, identity),
        },
    )


def _not_connected() -> SyncNowRefused:
    return SyncNowRefused(409, "not_connected", "Connect Strava first: there is nothing to sync.")


def _rate_limited(resets_at: datetime, now: datetime) -> SyncNowRefused:
    return SyncNowRefused(
        429,
        "rate_limited",
        "The club has used its Strava allowance for now; Sync now works again after "
        f"{resets_at.astimezone(UTC):%H:%M} UTC.",
        retry_after_s=retry_after(resets_at, now),
        extra={"resets_at": iso(resets_at)},
    )
