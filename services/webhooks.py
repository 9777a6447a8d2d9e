"""Strava's push events, as decisions without I/O: what a delivery says, which deliveries
are one event, when to answer Strava's validation, and whether the subscription is
healthy enough for polling to step back.

An event is a hint, never a fact: anyone can POST to the callback, and events carry no
signature. What an event names is looked at again with Strava (services/events.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

OBJECT_TYPES = frozenset({"activity", "athlete"})
ASPECT_TYPES = frozenset({"create", "update", "delete"})
# Strava's `updates` holds a few short fields (title, type, private, authorized).
MAX_UPDATES = 16
MAX_UPDATE_TEXT = 512
# Events dated before Strava had webhooks, or far in the future, are not Strava's.
EARLIEST_EVENT = datetime(2015, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
# An athlete's events waiting at once; beyond, deliveries are refused (a flood).
MAX_PENDING_PER_ATHLETE = 200


class Malformed(ValueError):
    """A delivery that is not an event of the documented shape; the text says why."""


@dataclass(frozen=True)
class Event:
    """One push event, as Strava documents it."""

    subscription_id: int
    object_type: str
    object_id: int
    aspect_type: str
    owner_id: int
    event_time: datetime
    updates: dict[str, str]

    @property
    def delivery_key(self) -> str:
        """The event's identity: Strava's retries and duplicates of it share this key."""
        updates = json.dumps(self.updates, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(updates.encode()).hexdigest()[:16]
        return ":".join(
            (
                str(self.subscription_id),
                self.object_type,
                str(self.object_id),
                self.aspect_type,
                str(int(self.event_time.timestamp())),
                digest,
            )
        )

    @property
    def deauthorization(self) -> bool:
        """An athlete who revoked the application (Strava sends `"authorized": "false"`)."""
        return (
            self.object_type == "athlete"
            and self.aspect_type == "update"
            and self.updates.get("authorized") == "false"
        )


def privacy_hint(event: Event) -> bool:
    """Whether an event may mean the club must stop showing an activity: a privacy change
    (Strava's `updates` carry `private` for any change of who sees it) or a deletion
    (also what an activity made "Only You" becomes under `activity:read`)."""
    if event.object_type != "activity":
        return False
    return event.aspect_type == "delete" or (
        event.aspect_type == "update" and "private" in event.updates
    )


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Malformed(f"{name} must be a positive integer")
    if value >= 2**63:
        raise Malformed(f"{name} is out of range")
    return value


def _choice(body: dict[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = body.get(name)
    # A list or an object is no word: tested first, since membership would hash it.
    if not isinstance(value, str) or value not in allowed:
        raise Malformed(f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def _updates(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_UPDATES:
        raise Malformed(f"updates must be an object of at most {MAX_UPDATES} fields")
    updates: dict[str, str] = {}
    for key, item in value.items():
        # Strava sends strings ("true", "false"); a number or boolean is taken as text.
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        if not isinstance(item, str) or len(key) > 64 or len(item) > MAX_UPDATE_TEXT:
            raise Malformed("updates must map short names to short texts")
        updates[key] = item
    return updates


def parse_event(body: Any, now: datetime) -> Event:
    """The event a delivery's JSON body carries, or Malformed with the reason."""
    if not isinstance(body, dict):
        raise Malformed("the body must be a JSON object")
    object_type = _choice(body, "object_type", OBJECT_TYPES)
    aspect_type = _choice(body, "aspect_type", ASPECT_TYPES)
    object_id = _positive_int(body, "object_id")
    owner_id = _positive_int(body, "owner_id")
    subscription_id = _positive_int(body, "subscription_id")
    seconds = _positive_int(body, "event_time")
    try:
        event_time = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Malformed("event_time is out of range") from None
    if not EARLIEST_EVENT <= event_time <= now + FUTURE_SLACK:
        raise Malformed("event_time is not a plausible time")
    if object_type == "athlete" and object_id != owner_id:
        raise Malformed("an athlete event's object_id must be its owner_id")
    return Event(
        subscription_id=subscription_id,
        object_type=object_type,
        object_id=object_id,
        aspect_type=aspect_type,
        owner_id=owner_id,
        event_time=event_time,
        updates=_updates(body.get("updates")),
    )


def validation_answer(
    query: dict[str, str], verify_token: str | None
) -> tuple[int, dict[str, str]]:
    """Strava's validation GET: (status, body). 503 without a token (fail closed), 403
    for anything but `hub.mode=subscribe` with the verify token (compared in constant
    time), else 200 echoing `hub.challenge`."""
    if not verify_token:
        return 503, {}
    given = query.get("hub.verify_token", "")
    right = hmac.compare_digest(given.encode(), verify_token.encode())
    challenge = query.get("hub.challenge")
    if query.get("hub.mode") != "subscribe" or not right or not challenge:
        return 403, {}
    return 200, {"hub.challenge": challenge[:256]}


# --- health: may polling step back? --------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """The application's push subscription as stored (models.webhooks.read_push_subscription)."""

    subscription_id: int
    callback_url: str
    created_at: datetime
    confirmed_at: datetime | None
    missing_since: datetime | None


@dataclass(frozen=True)
class Health:
    """Whether events can be trusted to bring changes, and why (for the status).

    `state` is one word: `none` (no subscription), `missing` (Strava no longer lists
    it), `unconfirmed`, `waiting_for_first_event`, `silent`, or `healthy`."""

    healthy: bool
    reason: str
    state: str = "healthy"

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "state": self.state, "reason": self.reason}


# Strava is asked whether the subscription still exists this often (events cron), and a
# confirmation older than twice that no longer counts.
CONFIRM_EVERY = timedelta(hours=6)
# A subscription that has had no event is trusted only once this long has passed
# without any rider uploading: until then nothing shows that events reach us.
FIRST_EVENT_GRACE = timedelta(days=1)


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"


def health(
    subscription: Subscription | None,
    last_event_at: datetime | None,
    now: datetime,
    *,
    silence_s: int,
    uploaded_since_created: bool = False,
) -> Health:
    """Healthy while the subscription exists at Strava and events arrived within
    `silence_s`. A subscription that has never had an event is `waiting_for_first_event`
    (not healthy: polling keeps its cadence) until one arrives, or until a day has passed
    with no upload by any rider (`uploaded_since_created`: an activity started since it
    was made, which Strava would have announced)."""
    if subscription is None:
        return Health(False, "no push subscription: polling at the normal cadence", "none")
    if subscription.missing_since is not None:
        return Health(
            False,
            f"Strava no longer lists subscription {subscription.subscription_id}"
            f" (since {subscription.missing_since.isoformat()}): polling at the normal cadence",
            "missing",
        )
    confirmed = subscription.confirmed_at
    if confirmed is None or now - confirmed > 2 * CONFIRM_EVERY:
        return Health(
            False,
            f"subscription {subscription.subscription_id} not confirmed at Strava for over"
            f" {_hours(2 * CONFIRM_EVERY)} (is the events workflow running?): polling at the"
            " normal cadence",
            "unconfirmed",
        )
    if last_event_at is None:
        age = now - subscription.created_at
        if uploaded_since_created:
            return Health(
                False,
                f"no event since subscription {subscription.subscription_id} was made"
                f" {_hours(age)} ago, though riders have uploaded since (is its callback"
                " this deployment's? see strava-webhook show): polling at the normal cadence",
                "waiting_for_first_event",
            )
        if age < FIRST_EVENT_GRACE:
            return Health(
                False,
                f"subscription {subscription.subscription_id} has had no event yet (made"
                f" {_hours(age)} ago): polling at the normal cadence until the first arrives",
                "waiting_for_first_event",
            )
        return Health(
            True,
            "no event yet, and no rider has uploaded since the subscription was made:"
            " riders are polled after their usual uploads, daily at least, as a safety"
            " net",
        )
    silent = now - last_event_at
    if silent > timedelta(seconds=silence_s):
        return Health(
            False,
            f"no event for {_hours(silent)} (threshold {_hours(timedelta(seconds=silence_s))}):"
            " polling resumed at the normal cadence",
            "silent",
        )
    return Health(
        True,
        "events arriving: riders are polled after their usual uploads, daily at least,"
        " as a safety net",
    )


def confirmation_due(subscription: Subscription | None, now: datetime) -> bool:
    """Whether to ask Strava again that the stored subscription exists."""
    if subscription is None:
        return False
    last = subscription.confirmed_at
    if subscription.missing_since is not None:
        last = max(t for t in (last, subscription.missing_since) if t is not None)
    return last is None or now - last >= CONFIRM_EVERY


# --- processing: what a group of events asks for ---------------------------------------


def event_backoff(attempts_before: int) -> timedelta:
    """How long an object's events wait after a failed attempt: 1 min, doubling, to 1 h."""
    exponent = min(max(attempts_before, 0), 10)
    return min(timedelta(hours=1), timedelta(minutes=1) * (2**exponent))
