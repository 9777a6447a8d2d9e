"""A small Strava API client: one requests.Session, typed errors, rate-limit headers.

It knows nothing of the database. Callers pass a `RateGate` (the shared budget) that is
asked before every API request and told what Strava's headers said after it, and a
deadline (seconds on the call's timer, monotonic) that no request, retry or backoff may
run past. Its clock and timer are the call's (services.clock), never read directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout

from services.clock import Clock, Timer, monotonic, utcnow

log = logging.getLogger(__name__)

PER_PAGE_MAX = 200
RETRY_STATUSES = (500, 502, 503, 504)


# --- rate limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitSnapshot:
    """What one answer's X-RateLimit-* and X-ReadRateLimit-* headers said."""

    limit_15min: int
    limit_daily: int
    usage_15min: int
    usage_daily: int
    read_limit_15min: int | None = None
    read_limit_daily: int | None = None
    read_usage_15min: int | None = None
    read_usage_daily: int | None = None

    @classmethod
    def from_headers(cls, headers: Any) -> RateLimitSnapshot | None:
        """Parse the headers; None when the overall pair is missing or malformed."""
        overall = _pair(headers.get("X-RateLimit-Limit")), _pair(headers.get("X-RateLimit-Usage"))
        if overall[0] is None or overall[1] is None:
            return None
        read_limit = _pair(headers.get("X-ReadRateLimit-Limit"))
        read_usage = _pair(headers.get("X-ReadRateLimit-Usage"))
        return cls(
            limit_15min=overall[0][0],
            limit_daily=overall[0][1],
            usage_15min=overall[1][0],
            usage_daily=overall[1][1],
            read_limit_15min=read_limit[0] if read_limit else None,
            read_limit_daily=read_limit[1] if read_limit else None,
            read_usage_15min=read_usage[0] if read_usage else None,
            read_usage_daily=read_usage[1] if read_usage else None,
        )

    def daily_exhausted(self) -> bool:
        """True when the daily limit (overall or read) is used up."""
        if self.usage_daily >= self.limit_daily:
            return True
        return (
            self.read_usage_daily is not None
            and self.read_limit_daily is not None
            and self.read_usage_daily >= self.read_limit_daily
        )


def _pair(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2:
        return None
    try:
        return int(parts[0].strip()), int(parts[1].strip())
    except ValueError:
        return None


def next_window_reset(now: datetime) -> datetime:
    """The next 15-minute boundary (:00, :15, :30, :45 UTC) after `now`."""
    now = now.astimezone(UTC)
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    return start + timedelta(minutes=15)


def next_day_reset(now: datetime) -> datetime:
    """The next midnight UTC after `now`."""
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


class RateGate(Protocol):
    """The shared budget: asked before each API request, told what came back."""

    def reserve(self) -> None:
        """Take one request from the budget or raise RateLimited."""

    def record(self, snapshot: RateLimitSnapshot | None, *, status: int) -> None:
        """Update the budget from an answer's headers (and a 429 or 403)."""


# --- errors --------------------------------------------------------------------------


class StravaError(Exception):
    """Strava answered with an error (or not at all). `code` is a short machine word."""

    code = "strava_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def from_response(cls, response: requests.Response, *, now: datetime) -> StravaError:
        """The typed error for an unsuccessful answer received at `now`."""
        status = response.status_code
        message = _error_text(response)
        if status == 429:
            snapshot = RateLimitSnapshot.from_headers(response.headers)
            daily = snapshot is not None and snapshot.daily_exhausted()
            resets_at = next_day_reset(now) if daily else next_window_reset(now)
            return RateLimited(
                "Strava rate limit reached",
                resets_at=resets_at,
                window="daily" if daily else "15min",
            )
        if status == 401:
            return Unauthorized(message or "authorization error", status=status)
        if status == 403 and "inactive" in message.lower():
            return ApplicationInactive(
                "Strava says this API application is inactive", status=status
            )
        if status == 403 and athlete_limit_reached(message):
            return AthleteCapacity(
                "Strava refused: the application's limit of connected athletes is reached",
                status=status,
            )
        if status == 404:
            return NotFound(message or "not found", status=status)
        if status >= 500:
            return StravaUnavailable(f"Strava answered {status}", status=status)
        return cls(message or f"Strava answered {status}", status=status)


class RateLimited(StravaError):
    """Strava's (or our shared budget's) limit is reached until `resets_at`."""

    code = "rate_limited"

    def __init__(self, message: str, *, resets_at: datetime, window: str = "15min") -> None:
        super().__init__(message, status=429)
        self.resets_at = resets_at
        self.window = window


class Unauthorized(StravaError):
    """The access token was refused (expired or revoked): refresh once, then give up."""

    code = "unauthorized"


class TokenRejected(StravaError):
    """The refresh token or authorization code was refused (invalid_grant)."""

    code = "token_rejected"


class ApplicationBlocked(StravaError):
    """The API application itself cannot call Strava: stop all calls."""

    code = "application_blocked"


class ApplicationInactive(ApplicationBlocked):
    """403: the application's developer-program status has lapsed."""

    code = "application_inactive"


class InvalidClient(ApplicationBlocked):
    """The token endpoint refused STRAVA_CLIENT_ID / STRAVA_CLIENT_SECRET."""

    code = "invalid_client"


class AthleteCapacity(StravaError):
    """403: the application is connected to as many athletes as its tier allows."""

    code = "athlete_capacity"


def athlete_limit_reached(text: str) -> bool:
    """Whether Strava's words refuse a connection for the application's athlete limit
    (its page and error read "Limit of connected athletes exceeded")."""
    words = text.lower()
    return "athlete" in words and ("limit" in words or "capacity" in words)


class NotFound(StravaError):
    """404: deleted, or not visible to this grant."""

    code = "not_found"


class StravaUnavailable(StravaError):
    """5xx, timeouts and connection errors, after the retries."""

    code = "strava_unavailable"


class BadPayload(StravaError):
    """The answer was not the JSON we expect."""

    code = "bad_payload"


class DeadlineReached(Exception):
    """The call's time budget is spent; the work is handed back, not failed."""


def _error_text(response: requests.Response) -> str:
    """A short, token-free description from Strava's JSON error body."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get("message", ""))]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append("/".join(str(error.get(k, "")) for k in ("resource", "field", "code")))
    return "; ".join(p for p in parts if p)[:200]


# --- deadline-aware transport --------------------------------------------------------


class _DeadlineTimeout(Timeout):
    """A urllib3 Timeout whose every attempt ends by the deadline."""

    def __init__(self, *, connect: float, read: float, deadline: float, timer: Timer) -> None:
        super().__init__(connect=connect, read=read)
        self._deadline = deadline
        self._timer = timer

    def clone(self) -> _DeadlineTimeout:
        return _DeadlineTimeout(
            connect=self._connect,  # type: ignore[arg-type]
            read=self._read,  # type: ignore[arg-type]
            deadline=self._deadline,
            timer=self._timer,
        )

    def _left(self) -> float:
        return max(0.001, self._deadline - self._timer())

    @property
    def connect_timeout(self) -> float:  # type: ignore[override]
        return min(float(self._connect), self._left())  # type: ignore[arg-type]

    @property
    def read_timeout(self) -> float:  # type: ignore[override]
        return min(float(self._read), self._left())  # type: ignore[arg-type]


def retry_backoff(retry: int) -> float:
    """Seconds to wait before the `retry`th retry of a request (1-based): none before the
    first, then 0.5 s doubling up to 2 s (urllib3's schedule with a 0.25 s factor)."""
    if retry <= 1:
        return 0.0
    return min(2.0, 0.25 * 2 ** (retry - 1))


def retry_fits(*, time_left_s: float | None, backoff_s: float, attempt_s: float) -> bool:
    """Whether a retry (its backoff, then an attempt as long as the last) ends before the
    deadline. One that would not is the call's own time running out: the work is handed
    back, not failed."""
    return time_left_s is None or backoff_s + attempt_s < time_left_s


# --- the client ----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """An answer of POST /oauth/token."""

    access_token: str
    refresh_token: str
    expires_at: datetime
    athlete: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never print tokens
        return f"TokenGrant(expires_at={self.expires_at.isoformat()}, athlete={bool(self.athlete)})"


class StravaClient:
    """Strava's API for one call of the service: list, get, refresh, exchange, deauthorize."""

    def __init__(
        self,
        *,
        api_url: str,
        oauth_url: str,
        client_id: str | None,
        client_secret: str | None,
        rate_gate: RateGate | None = None,
        deadline: float | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.05,
        retries: int = 2,
        pool_size: int = 16,
        in_flight: AbstractContextManager[Any] | None = None,
        clock: Clock = utcnow,
        timer: Timer = monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`deadline` is a reading of `timer`; `clock` dates a 429's reset; `retries`
        is how often a GET is tried again after a 5xx, a timeout or a connection error;
        `in_flight` (a semaphore, entered around each attempt) bounds the requests the
        client's threads have in flight at once."""
        self.api_url = api_url.rstrip("/")
        self.oauth_url = oauth_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self.rate_gate = rate_gate
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._timer = timer
        self.retries = retries
        self._sleep = sleep
        self.requests_made = 0
        self._in_flight = in_flight
        # No transport retries: _send retries itself, so that each attempt is reserved
        # from the budget and a retry that cannot fit in the deadline hands the work back.
        adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=pool_size)
        self.session = requests.Session()
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = "club-strava-sync/1.0"
        # The environment's proxies and CA bundle, read once for the client instead of
        # at every request (requests reads the whole environment each time, and that
        # under the GIL the call's other threads hold).
        found = self.session.merge_environment_settings(self.api_url, {}, None, None, None)
        self.session.proxies.update(found["proxies"])
        self.session.verify = found["verify"]
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> StravaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # API calls ---------------------------------------------------------------------

    def list_activities(
        self,
        access_token: str,
        *,
        after: int | None = None,
        before: int | None = None,
        page: int | None = None,
        per_page: int = PER_PAGE_MAX,
    ) -> list[dict[str, Any]]:
        """One page of GET /athlete/activities (summaries). Order is not relied upon."""
        params: dict[str, int] = {"per_page": min(per_page, PER_PAGE_MAX)}
        if after is not None:
            params["after"] = after
        if before is not None:
            params["before"] = before
        if page is not None:
            params["page"] = page
        body = self._api_get("/athlete/activities", access_token, params)
        if not isinstance(body, list) or not all(isinstance(a, dict) for a in body):
            raise BadPayload("activity list was not a JSON array of objects")
        return body

    def get_activity(self, access_token: str, activity_id: int) -> dict[str, Any]:
        """GET /activities/{id}: the detailed activity."""
        body = self._api_get(f"/activities/{int(activity_id)}", access_token, {})
        if not isinstance(body, dict) or "id" not in body:
            raise BadPayload("activity was not a JSON object with an id")
        return body

    def get_athlete(self, access_token: str) -> dict[str, Any]:
        """GET /athlete: the authenticated athlete (whether the grant still works)."""
        body = self._api_get("/athlete", access_token, {})
        if not isinstance(body, dict) or "id" not in body:
            raise BadPayload("athlete was not a JSON object with an id")
        return body

    # The application's push subscription: client credentials, no athlete token.

    def list_push_subscriptions(self) -> list[dict[str, Any]]:
        """GET /push_subscriptions. A GET has no body, so Strava takes the client secret
        in the query here (the one request that does); the URL is never logged."""
        client_id, client_secret = self._require_client()
        response = self._send(
            "GET",
            f"{self.api_url}/push_subscriptions",
            params={"client_id": client_id, "client_secret": client_secret},
        )
        body = self._subscription_answer(response)
        if not isinstance(body, list) or not all(isinstance(s, dict) for s in body):
            raise BadPayload("push subscriptions were not a JSON array of objects")
        return body

    def create_push_subscription(self, *, callback_url: str, verify_token: str) -> int:
        """POST /push_subscriptions: Strava validates the callback (a GET echoing the
        challenge) before answering; returns the new subscription's id."""
        client_id, client_secret = self._require_client()
        response = self._send(
            "POST",
            f"{self.api_url}/push_subscriptions",
            data={
                "client_id": client_id,
                "client_secret": client_secret,
                "callback_url": callback_url,
                "verify_token": verify_token,
            },
        )
        body = self._subscription_answer(response)
        if not isinstance(body, dict) or not isinstance(body.get("id"), int):
            raise BadPayload("push subscription answer had no id")
        return int(body["id"])

    def delete_push_subscription(self, subscription_id: int) -> None:
        """DELETE /push_subscriptions/{id} (credentials in the form body)."""
        client_id, client_secret = self._require_client()
        response = self._send(
            "DELETE",
            f"{self.api_url}/push_subscriptions/{int(subscription_id)}",
            data={"client_id": client_id, "client_secret": client_secret},
        )
        if response.status_code != 404:  # already gone is what was wanted
            self._subscription_answer(response)

    def _subscription_answer(self, response: requests.Response) -> Any:
        if response.status_code == 401:
            raise InvalidClient("Strava refused STRAVA_CLIENT_ID/STRAVA_CLIENT_SECRET", status=401)
        if response.status_code >= 400:
            raise StravaError.from_response(response, now=self._clock())
        return None if response.status_code == 204 else _json(response)

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token; Strava may rotate it, so store the answer at once."""
        return self._token_grant({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def exchange_code(self, code: str) -> TokenGrant:
        """Exchange an authorization code for the rider's first tokens and athlete."""
        return self._token_grant({"grant_type": "authorization_code", "code": code})

    def deauthorize(self, access_token: str) -> None:
        """Revoke the rider's grant at Strava."""
        response = self._send(
            "POST", f"{self.oauth_url}/deauthorize", headers=_bearer(access_token)
        )
        if response.status_code >= 400 and response.status_code != 401:
            raise StravaError.from_response(response, now=self._clock())

    def authorize_url(
        self, *, redirect_uri: str, state: str, scope: str = "read,activity:read_all"
    ) -> str:
        """The page the rider approves the grant on."""
        query = urlencode(
            {
                "client_id": self._require_client()[0],
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "approval_prompt": "auto",
                "scope": scope,
                "state": state,
            }
        )
        return f"{self.oauth_url}/authorize?{query}"

    # plumbing ----------------------------------------------------------------------

    def _api_get(self, path: str, access_token: str, params: dict[str, int]) -> Any:
        self._check_deadline()
        response = self._send(
            "GET",
            f"{self.api_url}{path}",
            retry=True,
            headers=_bearer(access_token),
            params=params,
        )
        if response.status_code >= 400:
            raise StravaError.from_response(response, now=self._clock())
        return _json(response)

    def _token_grant(self, grant: dict[str, str]) -> TokenGrant:
        client_id, client_secret = self._require_client()
        self._check_deadline()
        # Credentials travel in the form body, never in the URL.
        response = self._send(
            "POST",
            f"{self.oauth_url}/token",
            data={"client_id": client_id, "client_secret": client_secret, **grant},
        )
        if response.status_code == 401:
            raise InvalidClient("Strava refused STRAVA_CLIENT_ID/STRAVA_CLIENT_SECRET", status=401)
        if response.status_code == 403 and athlete_limit_reached(_error_text(response)):
            raise StravaError.from_response(response, now=self._clock())  # AthleteCapacity
        if response.status_code in (400, 403) and "inactive" not in _error_text(response).lower():
            raise TokenRejected(
                _error_text(response) or "invalid_grant", status=response.status_code
            )
        if response.status_code >= 400:
            raise StravaError.from_response(response, now=self._clock())
        body = _json(response)
        try:
            return TokenGrant(
                access_token=str(body["access_token"]),
                refresh_token=str(body["refresh_token"]),
                expires_at=datetime.fromtimestamp(int(body["expires_at"]), UTC),
                athlete=body.get("athlete") if isinstance(body.get("athlete"), dict) else None,
            )
        except (KeyError, TypeError, ValueError):
            raise BadPayload("token answer lacked access_token/refresh_token/expires_at") from None

    def _send(
        self, method: str, url: str, *, retry: bool = False, **kwargs: Any
    ) -> requests.Response:
        """Send a request; with `retry` (API GETs: each attempt reserved from the rate
        budget and recorded), try again after a 5xx, a timeout or a connection error,
        up to `retries` times, while a retry fits before the deadline.

        Raises DeadlineReached when the call's own time ran out: an attempt whose
        timeout the deadline cut short, or a retry that would not fit. What Strava gave
        (a 5xx or an unreachable Strava after every retry, a timeout the request had in
        full) is its answer: the last 5xx response, or StravaUnavailable.
        """
        gate = self.rate_gate if retry else None
        attempt = 0
        while True:
            response: requests.Response | None = None
            with self._in_flight or nullcontext():
                began = self._timer()
                left = None if self.deadline is None else self.deadline - began
                try:
                    response = self._exchange(gate, method, url, **kwargs)
                except requests.RequestException as exc:
                    if self._cut_by_deadline(exc, left):
                        raise DeadlineReached("time budget spent during a Strava request") from None
                    # The exception text can hold the URL (never a token); keep its class.
                    failure = StravaUnavailable(f"Strava unreachable ({type(exc).__name__})")
            if response is not None and (not retry or response.status_code not in RETRY_STATUSES):
                return response
            if not retry or attempt >= self.retries:
                if response is not None:
                    return response
                raise failure
            attempt += 1
            backoff = retry_backoff(attempt)
            now = self._timer()
            time_left = None if self.deadline is None else self.deadline - now
            if not retry_fits(time_left_s=time_left, backoff_s=backoff, attempt_s=now - began):
                raise DeadlineReached("the next retry would not fit in the time budget")
            if backoff:
                self._sleep(backoff)

    def _exchange(
        self, gate: RateGate | None, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        """One attempt: its request reserved from the budget, sent, and its answer's rate
        headers recorded. Under `in_flight` the three happen while the attempt holds
        its place, so a request that waited for one is reserved after the answers before
        it were recorded (a 429 among them refuses it)."""
        if gate is not None:
            gate.reserve()
        response = self._attempt(method, url, **kwargs)
        if gate is not None:
            gate.record(
                RateLimitSnapshot.from_headers(response.headers), status=response.status_code
            )
        return response

    def _cut_by_deadline(self, exc: requests.RequestException, left: float | None) -> bool:
        """Whether an attempt failed because the call's time ran out: it ended at the
        deadline, or timed out with a timeout the deadline had shortened."""
        if left is None or self.deadline is None:
            return False
        if self._timer() >= self.deadline - 0.01:
            return True
        if isinstance(exc, requests.ConnectTimeout):
            return left < self.connect_timeout_s
        return isinstance(exc, requests.Timeout) and left < self.timeout_s

    def _attempt(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        if self.deadline is not None:
            timeout: Any = _DeadlineTimeout(
                connect=self.connect_timeout_s,
                read=self.timeout_s,
                deadline=self.deadline,
                timer=self._timer,
            )
        else:
            timeout = (self.connect_timeout_s, self.timeout_s)
        self.requests_made += 1
        return self.session.request(method, url, timeout=timeout, **kwargs)

    def _check_deadline(self) -> None:
        if self.deadline is not None and self._timer() >= self.deadline:
            raise DeadlineReached("time budget spent")

    def _require_client(self) -> tuple[str, str]:
        if not self._client_id or not self._client_secret:
            raise InvalidClient("STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET must be set")
        return self._client_id, self._client_secret


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadPayload(f"Strava answered {response.status_code} with non-JSON") from None
