"""Webhook events, received and processed.

Receiving (`receive`, inside Strava's POST): an event of this application's subscription
for a connected athlete is stored once, committed, and then processed at once when the
rate budget allows and the answer is not at risk (WEBHOOK_INLINE_BUDGET_S, well inside
Strava's 2 seconds); otherwise it waits for `POST /api/cron/events` or the rider's next
sync-strava.

Processing (`process_group`): the pending events of one object are answered by one look
at Strava, whatever they claimed, since anyone can POST to the callback:
- an activity: `GET /activities/{id}` (the detailed activity, so a race gets its details
  in the same request); stored if it is the rider's and visible to the grant, removed
  on a 404 or when it turned private under a grant without `activity:read_all`. A
  create-only group for an activity a listing already stored costs nothing.
- an athlete's deauthorization: the grant is tried (`GET /athlete`, refreshing the token
  if refused); only when Strava refuses it are the rider's tokens and Strava data
  deleted and the connection marked `revoked`. A forged one deletes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import models
from services.activities import page_rows
from services.calls import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    Call,
    LeaseLost,
    Outcome,
    Runtime,
    bounded_call,
)
from services.clock import iso
from services.enrichment import full_polyline, race_details
from services.errors import NotConnected
from services.idle import Waiting
from services.planning import stored_subscription, webhook_health
from services.routes import trim_route
from services.strava import NotFound, StravaClient, StravaError
from services.tokens import NeedsReauth
from services.webhooks import (
    MAX_PENDING_PER_ATHLETE,
    Event,
    Malformed,
    confirmation_due,
    event_backoff,
    parse_event,
    privacy_hint,
)

log = logging.getLogger(__name__)

# Processed events and ignored counts are kept this long (the status looks back a day).
EVENT_LOG_DAYS = 30
# Pending events of one rider a sync-strava call takes after its listing.
EVENTS_PER_SYNCED_RIDER = 20
# How far Strava's clock (event_time) and ours may differ.
CLOCK_MARGIN = timedelta(minutes=1)


class RiderBusy(Exception):
    """Another call holds the rider (its listing could write older data after ours)."""


# --- receiving -----------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """What became of one delivery: stored (new), a repeat, or ignored with the reason;
    and, when processed at once, the outcome."""

    stored: bool
    ignored: str | None = None
    processed: Outcome | None = None

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"stored": self.stored}
        if self.ignored:
            answer["ignored"] = self.ignored
        if self.processed is not None:
            answer["processed"] = self.processed.as_item()
        return answer


def receive(runtime: Runtime, body: Any) -> Receipt:
    """Store one delivery's event (once) and try it at once. A database failure raises,
    so the callback answers 5xx and Strava delivers again."""
    now = runtime.clock()
    try:
        event = parse_event(body, now)
    except Malformed as exc:
        return _ignore(runtime, "malformed", now, detail=str(exc))
    with runtime.db.connection() as conn:
        subscription = models.webhooks.read_push_subscription(conn)
        rider_id = models.webhooks.webhook_rider(conn, athlete_id=event.owner_id)
        if subscription is None or subscription["subscription_id"] != event.subscription_id:
            reason: str | None = "unknown_subscription"
        elif rider_id is None:
            reason = "unknown_athlete"
        elif (
            models.webhooks.count_pending_events(conn, rider_id=rider_id) >= MAX_PENDING_PER_ATHLETE
        ):
            reason = "flood"
        else:
            reason = None
            stored = models.webhooks.store_webhook_event(
                conn, **_event_fields(event), rider_id=rider_id, now=now
            )
            if privacy_hint(event):
                # Hidden from the club at once, shown again once Strava is asked: a
                # forged event can only hide an activity until then, never show one.
                models.activities.hold_for_privacy_check(
                    conn, rider_id=rider_id, strava_id=event.object_id, now=now
                )
    if reason is not None:
        return _ignore(runtime, reason, now)
    if not stored:
        return _ignore(runtime, "duplicate", now)
    assert rider_id is not None
    return Receipt(stored=True, processed=_process_at_once(runtime, rider_id, event))


def _event_fields(event: Event) -> dict[str, Any]:
    return {
        "delivery_key": event.delivery_key,
        "subscription_id": event.subscription_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "aspect_type": event.aspect_type,
        "owner_id": event.owner_id,
        "event_time": event.event_time,
        "updates": event.updates,
    }


def _ignore(runtime: Runtime, reason: str, now: datetime, *, detail: str = "") -> Receipt:
    with runtime.db.connection() as conn:
        models.webhooks.count_ignored_delivery(conn, reason=reason, now=now)
    log.info("webhook delivery ignored", extra={"reason": reason, "detail": detail})
    return Receipt(stored=False, ignored=reason)


def _process_at_once(runtime: Runtime, rider_id: int, event: Event) -> Outcome | None:
    """Process the event's object inside the POST, within WEBHOOK_INLINE_BUDGET_S; any
    stop or failure leaves it pending (it is committed), never fails the answer."""
    budget_s = runtime.settings.webhook_inline_budget_s
    if budget_s <= 0:
        return None
    call = Call(runtime, kind="webhook", budget_s=budget_s)
    try:
        if not call.budget.check_share():
            return None
        with runtime.db.connection() as conn:
            groups = claim(conn, call, limit=1, rider_ids=[rider_id], object_id=event.object_id)
        outcomes = call.run(groups, lambda g: settle(call, g), lambda g: hand_back(call, g))
        return outcomes[0] if outcomes else None
    except Exception:  # the event is stored: the cron takes it
        log.exception("webhook event left pending", extra={"rider_id": rider_id})
        return None
    finally:
        call.close()


# --- processing ----------------------------------------------------------------------


def claim(
    conn: models.Conn,
    call: Call,
    *,
    limit: int,
    rider_ids: list[int] | None = None,
    object_id: int | None = None,
) -> list[models.webhooks.EventGroup]:
    settings = call.settings
    return models.webhooks.claim_event_groups(
        conn,
        lease_token=call.lease_token,
        limit=limit,
        hourly_cap=settings.webhook_athlete_hourly_cap,
        lease_ttl_s=settings.lease_ttl_s,
        now=call.now(),
        rider_ids=rider_ids,
        object_id=object_id,
    )


def _outcome(group: models.webhooks.EventGroup, status: str, detail: str, **more: Any) -> Outcome:
    key = "activity_id" if group.object_type == "activity" else "athlete_id"
    counts = {"rider_id": group.rider_id, "events": group.events}
    return Outcome(key, group.object_id, status, detail, counts=counts, **more)


def process_group(
    call: Call,
    group: models.webhooks.EventGroup,
    *,
    rider_lease: models.sync.RiderLease | None = None,
) -> Outcome:
    """Make the database equal to what Strava says of the group's object."""
    if group.object_type == "athlete":
        word = _athlete(call, group)
    else:
        word = _activity(call, group, rider_lease)
    return _outcome(group, SUCCEEDED, word)


def _finish(call: Call, conn: models.Conn, group: models.webhooks.EventGroup, word: str) -> str:
    if not models.webhooks.finish_event_group(
        conn, group=group, lease_token=call.lease_token, outcome=word, now=call.now()
    ):
        raise LeaseLost()
    return word


def _activity(
    call: Call, group: models.webhooks.EventGroup, rider_lease: models.sync.RiderLease | None
) -> str:
    rider_id, strava_id = group.rider_id, group.object_id
    if "delete" not in group.aspects:
        # A listing that stored the activity, or wrote a change of it, after the events
        # (a margin for the two clocks) has answered them: no request.
        since = None if group.aspects == {"create"} else group.latest_event_time + CLOCK_MARGIN
        with call.db.connection() as conn:
            if models.activities.activity_of_rider(
                conn, rider_id=rider_id, strava_id=strava_id, written_since=since
            ):
                models.activities.release_privacy_hold(conn, rider_id=rider_id, strava_id=strava_id)
                return _finish(call, conn, group, "covered")
    try:
        detail: dict[str, Any] | None = call.tokens.call(
            rider_id, lambda token: call.strava.get_activity(token, strava_id)
        )
    except NotFound:
        detail = None
    with call.db.connection() as conn:
        lease_token = rider_lease.lease_token if rider_lease else None
        facts = models.webhooks.event_connection(
            conn, rider_id=rider_id, lease_token=lease_token, now=call.now()
        )
        if facts is None:
            raise RiderBusy()
        word = _reconcile(call, conn, rider_id, strava_id, detail, facts)
        return _finish(call, conn, group, word)


def _reconcile(
    call: Call,
    conn: models.Conn,
    rider_id: int,
    strava_id: int,
    detail: dict[str, Any] | None,
    facts: dict[str, Any],
) -> str:
    """Write what Strava said of one activity; returns what was done."""
    now = call.now()
    owner = detail.get("athlete") if detail is not None else None
    owner_id = owner.get("id") if isinstance(owner, dict) else None
    if detail is not None and owner_id != facts["athlete_id"]:
        return "not_owned"  # another athlete's activity: never stored under this rider
    read_all = "activity:read_all" in str(facts["scope"]).split(",")
    hidden = (
        detail is not None
        and not read_all
        and (bool(detail.get("private")) or detail.get("visibility") == "only_me")
    )
    if detail is None or hidden:
        if not models.activities.remove_activity(conn, rider_id=rider_id, strava_id=strava_id):
            return "absent"
        models.activities.recompute_eddington(conn, rider_id=rider_id, now=now)
        return "hidden" if hidden else "removed"
    rows = page_rows(
        [detail],
        min_race_distance_km=call.settings.race_min_distance_km,
        route_trim_m=call.settings.club_route_trim_m,
    )
    written = models.activities.upsert_activities(conn, rider_id=rider_id, rows=rows, now=now)
    # Stored as Strava shows it now (visibility and `private` included): the club may
    # see it again if that allows.
    models.activities.release_privacy_hold(conn, rider_id=rider_id, strava_id=strava_id)
    if rows[0]["is_race"]:
        description = detail.get("description")
        polyline, trim = full_polyline(detail), call.settings.club_route_trim_m
        models.enrichment.store_race_details(
            conn,
            rider_id=rider_id,
            strava_id=strava_id,
            description=description if isinstance(description, str) else None,
            polyline=polyline,
            details=race_details(detail),
            now=now,
            club_polyline=trim_route(polyline, trim),
            club_polyline_trim_m=trim,
        )
    if written.inserted or written.updated:
        models.activities.recompute_eddington(conn, rider_id=rider_id, now=now)
    return "stored" if written.inserted else "updated" if written.updated else "unchanged"


def _athlete(call: Call, group: models.webhooks.EventGroup) -> str:
    if not group.deauthorization:
        with call.db.connection() as conn:
            return _finish(call, conn, group, "unchanged")  # nothing of an athlete is kept
    try:
        call.tokens.call(group.rider_id, call.strava.get_athlete)
    except NeedsReauth:
        revoked = True
    else:
        revoked = False
    with call.db.connection() as conn:
        if not revoked:
            return _finish(call, conn, group, "still_authorized")  # forged, or re-granted
        deleted = models.riders.revoke_connection(
            conn,
            rider_id=group.rider_id,
            message="the rider deauthorized the application at Strava",
            now=call.now(),
        )
        word = _finish(call, conn, group, "revoked")
        # The events named the rider's activities (with their titles): gone with them.
        models.riders.delete_rider_events(conn, rider_id=group.rider_id)
    log.warning(
        "rider deauthorized at Strava: tokens and Strava data deleted",
        extra={"rider_id": group.rider_id, "activities": deleted},
    )
    return word


def settle(
    call: Call,
    group: models.webhooks.EventGroup,
    *,
    rider_lease: models.sync.RiderLease | None = None,
) -> Outcome:
    """Process a group; a failure of its own backs it off (then fails it for good), a
    stop that is not its fault hands it back untouched."""
    try:
        return process_group(call, group, rider_lease=rider_lease)
    except RiderBusy:
        return hand_back(call, group, reason="rider_busy")
    except (NeedsReauth, NotConnected) as exc:
        # The rider cannot be asked (or is gone): nothing to fetch until they reconnect,
        # and a reconnect lists their activities anyway.
        word = "needs_reauth" if isinstance(exc, NeedsReauth) else "not_connected"
        with call.db.connection() as conn:
            models.webhooks.finish_event_group(
                conn, group=group, lease_token=call.lease_token, outcome=word, now=call.now()
            )
        return _outcome(group, SKIPPED, word)
    except Exception as exc:
        key = "activity_id" if group.object_type == "activity" else "athlete_id"
        outcome, error_class = call.failure(key, group.object_id, exc)
        if error_class is None:
            return hand_back(call, group, reason=outcome.detail or call.stop_reason())
        message = f"{error_class}: {outcome.error or error_class}"
        with call.db.connection() as conn:
            failed = models.webhooks.fail_event_group(
                conn,
                group=group,
                lease_token=call.lease_token,
                error=message,
                backoff_s=event_backoff(group.attempts).total_seconds(),
                max_attempts=call.settings.webhook_max_attempts,
                now=call.now(),
            )
        result = _outcome(group, FAILED, error_class, error=outcome.error)
        result.counts["attempts"] = group.attempts + 1
        if failed:
            result.counts["gave_up"] = 1
        return result


def hand_back(
    call: Call, group: models.webhooks.EventGroup, *, reason: str | None = None
) -> Outcome:
    with call.db.connection() as conn:
        models.webhooks.release_event_group(conn, group=group, lease_token=call.lease_token)
    return _outcome(group, SKIPPED, reason or call.stop_reason())


def process_rider_events(call: Call, lease: models.sync.RiderLease) -> list[Outcome]:
    """A synced rider's pending events, in its sync's worker (its lease held): what the
    listing brought costs nothing more; updates and deletes get their look. A rider with
    no event waiting (most) costs one look at an index, not the claims' lock."""
    with call.db.connection() as conn:
        if not models.webhooks.has_pending_events(conn, rider_id=lease.rider_id):
            return []
        groups = claim(conn, call, limit=EVENTS_PER_SYNCED_RIDER, rider_ids=[lease.rider_id])
    outcomes = []
    for group in groups:
        if call.should_stop():
            outcomes.append(hand_back(call, group))
        else:
            outcomes.append(settle(call, group, rider_lease=lease))
    return outcomes


# --- the cron call -------------------------------------------------------------------


def run_events(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """One bounded `events` call: confirm the subscription at Strava when due, then
    process pending events, oldest first, one look per object."""
    _, asked = confirm_subscription(runtime)
    answer = bounded_call(
        runtime,
        "events",
        claim=lambda conn, call: claim(conn, call, limit=limit),
        work=lambda call, group: settle(call, group),
        hand_back=lambda call, group: hand_back(call, group),
        remaining=lambda conn, call: _remaining(conn, call),
        waiting=lambda conn, call: Waiting(**models.webhooks.events_waiting(conn, now=call.now())),
    )
    with runtime.db.connection() as conn:
        models.webhooks.prune_webhook_events(
            conn, before=runtime.clock() - timedelta(days=EVENT_LOG_DAYS)
        )
    # the subscription check was this call's Strava request too
    return {**answer, "strava_requests": answer["strava_requests"] + asked}


def _remaining(conn: models.Conn, call: Call) -> int:
    return models.webhooks.count_event_groups_due(
        conn, hourly_cap=call.settings.webhook_athlete_hourly_cap, now=call.started_at
    )


def confirm_subscription(runtime: Runtime) -> tuple[bool | None, int]:
    """Ask Strava (every few hours) whether the stored subscription still exists; None
    when not due or Strava could not say. With the requests it made."""
    now = runtime.clock()
    with runtime.db.connection() as conn:
        subscription = stored_subscription(conn)
    if subscription is None or not confirmation_due(subscription, now):
        return None, 0
    strava = strava_for_subscriptions(runtime)
    try:
        with strava:
            listed = strava.list_push_subscriptions()
    except StravaError as exc:
        log.warning("could not confirm the push subscription", extra={"error": exc.code})
        return None, strava.requests_made
    exists = any(s.get("id") == subscription.subscription_id for s in listed)
    with runtime.db.connection() as conn:
        models.webhooks.confirm_push_subscription(conn, listed=exists, now=runtime.clock())
    if not exists:
        log.warning(
            "Strava no longer lists the push subscription",
            extra={"subscription_id": subscription.subscription_id},
        )
    return exists, strava.requests_made


def strava_for_subscriptions(runtime: Runtime, *, timeout_s: float = 10.0) -> StravaClient:
    """A Strava client for the application's own requests (client credentials)."""
    settings = runtime.settings
    return StravaClient(
        api_url=settings.strava_api_url,
        oauth_url=settings.strava_oauth_url,
        client_id=settings.strava_client_id,
        client_secret=settings.strava_client_secret,
        timeout_s=timeout_s,
        clock=runtime.clock,
        timer=runtime.timer,
    )


# --- the status ----------------------------------------------------------------------


def webhook_status(conn: models.Conn, settings: Any, now: datetime) -> dict[str, Any]:
    """The status JSON's `webhooks`: the subscription and its health, and the events of
    the last 24 hours (received, processed, pending, failed, ignored), the oldest pending
    one's age and the lag from event_time to processed."""
    subscription = stored_subscription(conn)
    health = webhook_health(conn, settings, now)
    counts = models.webhooks.webhook_counts(conn, since=now - timedelta(hours=24), now=now)
    oldest = counts.get("oldest_pending")
    oldest_age = int((now - oldest).total_seconds()) if oldest else None
    answer: dict[str, Any] = {
        "subscription": None
        if subscription is None
        else {
            "id": subscription.subscription_id,
            "callback_url": subscription.callback_url,
            "created_at": iso(subscription.created_at),
            "confirmed_at": iso(subscription.confirmed_at),
            "missing_since": iso(subscription.missing_since),
        },
        **health.as_dict(),
        "last_event_at": iso(counts.get("last_received")),
        "events_24h": {
            "received": int(counts.get("received") or 0),
            "processed": int(counts.get("processed") or 0),
            "failed": int(counts.get("failed") or 0),
            "ignored": counts.get("ignored", {}),
        },
        "pending": int(counts.get("pending") or 0),
        "oldest_pending_age_s": oldest_age,
        "lag_s": {
            "p50": _seconds(counts.get("lag_p50_s")),
            "p95": _seconds(counts.get("lag_p95_s")),
        },
    }
    if oldest_age is not None and oldest_age > settings.stuck_after_s:
        answer["warning"] = (
            f"the oldest pending event has waited {oldest_age // 60} min: is the events"
            " workflow running, or is the rate budget spent?"
        )
    return answer


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
