"""Strava's push subscriptions in the fake: `POST/GET/DELETE /push_subscriptions` (with
the validation GET to the callback), and a sender that delivers an event for each change
made in the fake, with Strava's flaws on demand: lost, duplicated and late deliveries,
and retries (three attempts in all) when the answer is not 200 within 2 seconds.

Deliveries go out over real HTTP (urllib, so a `responses` mock of Strava does not catch
them) unless a transport is given, e.g. a Flask test client in a simulation. They are
sent when `deliver_due()` (or `flush()`) is called: tests and simulations decide when.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

# (url, event) -> the HTTP status of the answer; raises (or returns >= 500) for none.
Transport = Callable[[str, dict[str, Any]], int]
# (url with query) -> (status, JSON body or None): the validation GET.
Validator = Callable[[str], tuple[int, Any]]

ANSWER_WITHIN_S = 2.0
ATTEMPTS = 3


def http_transport(url: str, event: dict[str, Any]) -> int:
    """POST the event as JSON; a slow answer counts as none (Strava waits 2 s)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "fake-strava-push"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_WITHIN_S) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return 599


def http_validator(url: str) -> tuple[int, Any]:
    """The validation GET, over real HTTP, 2 s to answer."""
    try:
        with urllib.request.urlopen(url, timeout=ANSWER_WITHIN_S) as answer:
            return int(answer.status), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return int(error.code), None
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError):
        return 599, None


@dataclass
class Delivery:
    """One event on its way: when it is due, and the attempts made."""

    event: dict[str, Any]
    due: float
    attempts: int = 0


@dataclass
class SentLog:
    """What the sender did, for tests and reports."""

    emitted: int = 0
    lost: int = 0
    duplicated: int = 0
    attempts: int = 0
    delivered: int = 0
    given_up: int = 0
    statuses: list[int] = field(default_factory=list)


class PushSender:
    """The subscription and its deliveries (the fake's part of Strava's webhooks)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        application_id: int,
        timer: Callable[[], float] = time.monotonic,
        seed: int = 0,
        transport: Transport = http_transport,
        validator: Validator = http_validator,
    ) -> None:
        self._clock = clock
        self.timer = timer  # how long the callback takes to answer (virtual in a simulation)
        self.application_id = application_id
        self.transport = transport
        self.validator = validator
        self.loss = 0.0  # share of events never delivered
        self.duplicate = 0.0  # share delivered twice
        self.delay_s = (0.0, 0.0)  # each event waits uniformly within this range
        self.retry_after_s = 0.0  # a failed attempt is retried this much later
        self.answer_within_s = ANSWER_WITHIN_S  # a slower answer counts as none
        self.subscription: dict[str, Any] | None = None
        self.verify_token: str | None = None
        self.log = SentLog()
        self._rng = random.Random(seed)
        self._queue: list[Delivery] = []
        self._lock = threading.Lock()
        self._next_id = 120_475

    # ---- the subscription endpoints ------------------------------------------------------

    def create(self, callback_url: str, verify_token: str) -> tuple[int, Any]:
        """POST /push_subscriptions: validate the callback, then store the subscription."""
        with self._lock:
            if self.subscription is not None:
                return 400, _error("PushSubscription", "", "already exists")
        challenge = secrets.token_hex(8)
        query = urlencode(
            {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
        )
        separator = "&" if "?" in callback_url else "?"
        started = self.timer()
        status, body = self.validator(f"{callback_url}{separator}{query}")
        slow = self.timer() - started > ANSWER_WITHIN_S
        echoed = isinstance(body, dict) and body.get("hub.challenge") == challenge
        if status != 200 or slow or not echoed:
            return 400, _error(
                "PushSubscription", "callback url", "GET to callback URL does not return 200"
            )
        with self._lock:
            now = int(self._clock())
            self.subscription = {
                "id": self._next_id,
                "resource_state": 2,
                "application_id": self.application_id,
                "callback_url": callback_url,
                "created_at": _iso(now),
                "updated_at": _iso(now),
            }
            self.verify_token = verify_token
            self._next_id += 1
            return 201, {"id": self.subscription["id"]}

    def list(self) -> tuple[int, Any]:
        with self._lock:
            return 200, [dict(self.subscription)] if self.subscription else []

    def delete(self, subscription_id: int) -> tuple[int, Any]:
        with self._lock:
            if self.subscription is None or self.subscription["id"] != subscription_id:
                return 404, _error("PushSubscription", "id", "not found")
            self.subscription = None
            self._queue.clear()
            return 204, None

    # ---- events -------------------------------------------------------------------------

    def emit(
        self,
        object_type: str,
        object_id: int,
        aspect_type: str,
        owner_id: int,
        updates: dict[str, str] | None = None,
    ) -> None:
        """Queue the event of a change (nothing without a subscription)."""
        with self._lock:
            if self.subscription is None:
                return
            now = self._clock()
            event = {
                "aspect_type": aspect_type,
                "event_time": int(now),
                "object_id": object_id,
                "object_type": object_type,
                "owner_id": owner_id,
                "subscription_id": self.subscription["id"],
                "updates": dict(updates or {}),
            }
            self.log.emitted += 1
            if self._rng.random() < self.loss:
                self.log.lost += 1
                return
            copies = 1
            if self._rng.random() < self.duplicate:
                copies, self.log.duplicated = 2, self.log.duplicated + 1
            for _ in range(copies):
                low, high = self.delay_s
                self._queue.append(Delivery(event, now + self._rng.uniform(low, high)))

    def discard(self) -> int:
        """Lose every queued delivery (as Strava sometimes does); returns how many."""
        with self._lock:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_due(self) -> float | None:
        with self._lock:
            return min((d.due for d in self._queue), default=None)

    def deliver_due(self) -> int:
        """Send every delivery due by the clock (in due order); a failed attempt is
        queued again `retry_after_s` later until the third. Returns attempts made."""
        made = 0
        while True:
            with self._lock:
                now = self._clock()
                due = sorted((d for d in self._queue if d.due <= now), key=lambda d: d.due)
                if not due or self.subscription is None:
                    return made
                delivery = due[0]
                self._queue.remove(delivery)
                url = self.subscription["callback_url"]
            started = self.timer()
            try:
                status = self.transport(url, delivery.event)
            except Exception:  # the callback did not answer
                status = 599
            if self.timer() - started > self.answer_within_s:
                status = 599  # too late counts as no answer
            made += 1
            with self._lock:
                delivery.attempts += 1
                self.log.attempts += 1
                self.log.statuses.append(status)
                if status == 200:
                    self.log.delivered += 1
                elif delivery.attempts < ATTEMPTS:
                    delivery.due = self._clock() + self.retry_after_s
                    self._queue.append(delivery)
                else:
                    self.log.given_up += 1

    def flush(self) -> int:
        """Deliver everything queued now, whatever its delay (retries included)."""
        with self._lock:
            for delivery in self._queue:
                delivery.due = min(delivery.due, self._clock())
            retry, self.retry_after_s = self.retry_after_s, 0.0
        try:
            return self.deliver_due()
        finally:
            self.retry_after_s = retry


def _error(resource: str, field_name: str, code: str) -> dict[str, Any]:
    return {
        "message": "Bad Request",
        "errors": [{"resource": resource, "field": field_name, "code": code}],
    }


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
