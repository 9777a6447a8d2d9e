"""FakeStrava: an in-memory, thread-safe Strava API and OAuth server with the real semantics.

Paths handed to `handle()` are normalized: API routes start with "/api/v3" and OAuth routes
with "/oauth", whatever host the client was configured with (see `install()` and `serve()`).
"""

from __future__ import annotations

import copy
import html
import json
import pickle
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import parse_qsl, urlsplit

from werkzeug.wrappers import Request, Response

from fake_strava import errors, mock
from fake_strava.data import iso_z, legacy_type, parse_iso_z, summary_athlete
from fake_strava.detail import detailed_activity
from fake_strava.push import PushSender
from fake_strava.ratelimit import RateLimits

if TYPE_CHECKING:
    import responses
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ORDERS = frozenset({"strava", "newest_first", "oldest_first", "shuffled"})
API_PREFIX = "/api/v3"
PUSH_PATH = API_PREFIX + "/push_subscriptions"
OAUTH_PREFIX = "/oauth"
_READ_ALL = "activity:read_all"
_ACTIVITY_SCOPES = frozenset({"activity:read", _READ_ALL})
_ACTIVITY_PATH = re.compile(r"/api/v3/activities/(\d+)")
_INTEGER = re.compile(r"-?[0-9]+")
_KEEP_TOKEN_S = 3600  # a refresh returns the current access token while it has more left
_DEFAULT_PER_PAGE = 30
_MAX_PER_PAGE = 200


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake answered it; tokens are never kept, only the athlete."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float
    athlete_id: int | None


@dataclass
class _Grant:
    """An athlete's authorization of the app: one live access token and refresh token."""

    athlete_id: int
    scope: str
    access_token: str
    expires_at: int
    refresh_token: str

    @property
    def scopes(self) -> frozenset[str]:
        """The granted scopes as a set."""
        return frozenset(self.scope.split(","))


@dataclass
class _Fault:
    """A pending injected failure (see FakeStrava.fail_next)."""

    remaining: int
    status: int
    path_contains: str | None
    body: dict[str, Any] | None
    delay_s: float
    after: int = 0  # matching requests let through before the fault starts
    drop: bool = False  # the connection is dropped (reset) instead of answered


FAULT_KINDS = ("5xx", "reset", "timeout", "expiry")


@dataclass(frozen=True)
class RandomFaults:
    """Faults injected at random (see FakeStrava.inject_faults): a share of requests,
    split between the kinds by `mix`, decided by a seeded hash of the request."""

    rate: float
    seed: int
    timeout_s: float
    mix: tuple[tuple[str, float], ...]

    def pick(self, key: str) -> tuple[str, int] | None:
        """The fault for the request `key` (its method, path, athlete and how many such
        requests came before), with the status a 5xx answers; or None."""
        rng = random.Random(f"{self.seed}:{key}")
        if rng.random() >= self.rate:
            return None
        kinds, weights = zip(*self.mix, strict=True)
        return rng.choices(kinds, weights=weights)[0], rng.choice((500, 502, 503, 504))


@dataclass
class _Activity:
    """A stored activity; `summary` is replaced on update, never mutated in place."""

    owner: int
    start: int  # epoch seconds of start_date, for the before/after filters
    summary: dict[str, Any]


@dataclass
class _Answer:
    """What a route decided: a status and a JSON payload (or an HTML string)."""

    status: int
    body: Any
    athlete_id: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[dict[str, str], bytes]:
        """Headers with Content-Type, and the body bytes (UTF-8, unescaped like Strava's)."""
        if isinstance(self.body, str):
            return {"Content-Type": "text/html; charset=utf-8", **self.headers}, self.body.encode()
        payload = json.dumps(self.body, ensure_ascii=False).encode()
        return {"Content-Type": "application/json; charset=utf-8", **self.headers}, payload


class _BadParam(ValueError):
    """A query parameter that is not an acceptable integer."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _new_token() -> str:
    """A random 40-hex-digit token, the shape of Strava's."""
    return secrets.token_hex(20)


def _int_param(query: Mapping[str, str], name: str, *, minimum: int | None = None) -> int | None:
    """Parse an optional integer query parameter."""
    text = query.get(name)
    if text is None:
        return None
    # Stricter than int(), which would also take " 5" or "1_000".
    if not _INTEGER.fullmatch(text):
        raise _BadParam(name)
    value = int(text)
    if minimum is not None and value < minimum:
        raise _BadParam(name)
    return value


def _copy(document: Any) -> Any:
    """A deep copy of a JSON-like document (what is stored never shares a list or a dict
    with what was given or answered): a pickle round trip, several times faster than
    copy.deepcopy for the 300,000 activities of a fleet's world."""
    return pickle.loads(pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL))


def _start_epoch(summary: Mapping[str, Any]) -> int:
    """Epoch seconds of a summary's start_date."""
    return int(parse_iso_z(summary["start_date"]).timestamp())


def _parse_form(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """Read POST parameters from a JSON or form-encoded body."""
    if headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class Limits(TypedDict):
    """FakeStrava's rate-limit arguments."""

    limit_15min: int
    limit_daily: int
    read_limit_15min: int
    read_limit_daily: int


# Rate limits no test or benchmark reaches, for those about something else than the
# budget: FakeStrava(..., **UNREACHED_LIMITS).
UNREACHED_LIMITS: Limits = {
    "limit_15min": 1_000_000,
    "limit_daily": 10_000_000,
    "read_limit_15min": 1_000_000,
    "read_limit_daily": 10_000_000,
}


class FakeStrava:
    """A stateful Strava simulator reached through responses, WSGI, or serve()."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        client_id: str = "1234",
        client_secret: str = "fake-client-secret",
        order: str = "strava",
        limit_15min: int = 200,
        limit_daily: int = 2000,
        read_limit_15min: int = 100,
        read_limit_daily: int = 1000,
        latency_s: float = 0.0,
        token_ttl_s: int = 21600,
        rotate_refresh_tokens: bool = True,
        seed: int = 0,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {sorted(ORDERS)}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.order = order
        self.latency_s = latency_s
        self.token_ttl_s = token_ttl_s
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.application_inactive = False
        self.requests: list[RecordedRequest] = []
        self._clock = clock
        self._seed = seed
        self._serial = 0  # numbers requests so "shuffled" differs per request, reproducibly
        self._lock = threading.Lock()
        self._limits = RateLimits(limit_15min, limit_daily, read_limit_15min, read_limit_daily)
        self._athletes: dict[int, dict[str, Any]] = {}
        self._activities: dict[int, _Activity] = {}
        self._owned: dict[int, dict[int, _Activity]] = {}  # athlete -> its activities by id
        self._grants: dict[int, _Grant] = {}
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._codes: dict[str, tuple[int, str]] = {}
        self._refreshes: Counter[int] = Counter()
        self._faults: list[_Fault] = []
        # Webhooks: the push subscription and the events of changes made here.
        self.push = PushSender(
            clock=clock, application_id=int(client_id) if client_id.isdigit() else 1, seed=seed
        )
        self._random_faults: RandomFaults | None = None
        self._seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # random faults injected, by kind

    # ---- time ---------------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The one clock (epoch seconds) the rate windows, token expiry and the request log
        follow; a simulation passes the same virtual time to the service's Runtime (as its
        clock and timer). Latency and fault delays are real sleeps."""
        return self._clock

    def now(self) -> datetime:
        """The fake's clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self._clock(), UTC)

    # ---- data ---------------------------------------------------------------------------

    def add_athlete(
        self, athlete_id: int, *, firstname: str = "Test", lastname: str = "Rider"
    ) -> None:
        """Register (or rename) an athlete; other methods create unknown athletes on first use."""
        with self._lock:
            self._athletes[athlete_id] = summary_athlete(athlete_id, firstname, lastname)

    def add_activities(self, athlete_id: int, activities: Iterable[dict[str, Any]]) -> None:
        """Store summary activities of an athlete, replacing any with the same id."""
        incoming = [_copy(activity) for activity in activities]
        with self._lock:
            for summary in incoming:
                owner = summary.get("athlete", {}).get("id", athlete_id)
                existing = self._activities.get(summary["id"])
                if owner != athlete_id or (existing and existing.owner != athlete_id):
                    raise ValueError(f"activity {summary['id']} belongs to another athlete")
            self._ensure_athlete(athlete_id)
            for summary in incoming:
                summary["athlete"] = {"id": athlete_id, "resource_state": 1}
                new = summary["id"] not in self._activities
                self._store(_Activity(athlete_id, _start_epoch(summary), summary))
                if new:
                    self.push.emit("activity", summary["id"], "create", athlete_id)

    def update_activity(self, activity_id: int, **fields: Any) -> None:
        """Change fields of a stored activity, keeping dependent fields consistent like Strava.

        `private` and `visibility` follow each other, `type` follows `sport_type`, and
        `start_date` may be an aware datetime (start_date_local then moves with it).
        """
        if "id" in fields or "athlete" in fields:
            raise ValueError("an activity's id and athlete cannot change")
        fields = copy.deepcopy(fields)
        if isinstance(fields.get("start_date"), datetime):
            start = fields["start_date"].astimezone(UTC)
            fields["start_date"] = iso_z(start)
        if "private" in fields and "visibility" not in fields:
            fields["visibility"] = "only_me" if fields["private"] else "everyone"
        if "visibility" in fields and "private" not in fields:
            fields["private"] = fields["visibility"] == "only_me"
        if "sport_type" in fields and "type" not in fields:
            fields["type"] = legacy_type(fields["sport_type"])
        with self._lock:
            stored = self._activities[activity_id]
            summary = {**stored.summary, **fields}
            if "start_date" in fields and "start_date_local" not in fields:
                offset = timedelta(seconds=summary["utc_offset"])
                summary["start_date_local"] = iso_z(parse_iso_z(summary["start_date"]) + offset)
            self._store(_Activity(stored.owner, _start_epoch(summary), summary))
            self._emit_update(stored.owner, stored.summary, summary)

    def delete_activity(self, activity_id: int) -> None:
        """Delete an activity, as its owner would on Strava (KeyError if unknown)."""
        with self._lock:
            stored = self._activities.pop(activity_id)
            del self._owned[stored.owner][activity_id]
            self.push.emit("activity", activity_id, "delete", stored.owner)

    def activities_of(self, athlete_id: int) -> list[dict[str, Any]]:
        """Copies of an athlete's current summaries, oldest first."""
        with self._lock:
            owned = sorted(self._owned.get(athlete_id, {}).values(), key=_chronological)
            return [_copy(stored.summary) for stored in owned]

    # ---- tokens / OAuth -----------------------------------------------------------------

    def issue_tokens(
        self,
        athlete_id: int,
        *,
        scope: str = "read,activity:read_all",
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        """Authorize the app for an athlete, replacing any earlier grant, and return its tokens."""
        with self._lock:
            ttl = self.token_ttl_s if expires_in is None else expires_in
            grant = self._new_grant(athlete_id, scope, ttl)
            return {
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_at": grant.expires_at,
                "scope": scope,
            }

    def add_authorization_code(
        self, athlete_id: int, *, scope: str = "read,activity:read_all"
    ) -> str:
        """Return a one-time code, as the authorize redirect would, for that athlete and scope."""
        code = _new_token()
        with self._lock:
            self._ensure_athlete(athlete_id)
            self._codes[code] = (athlete_id, scope)
        return code

    def revoke_athlete(self, athlete_id: int) -> None:
        """Deauthorize the app for an athlete: every token of theirs stops working."""
        with self._lock:
            self._revoke(athlete_id)
            self.push.emit("athlete", athlete_id, "update", athlete_id, {"authorized": "false"})

    def current_refresh_token(self, athlete_id: int) -> str | None:
        """The refresh token that works now for the athlete, if they are authorized."""
        with self._lock:
            grant = self._grants.get(athlete_id)
            return grant.refresh_token if grant else None

    def refresh_count(self, athlete_id: int) -> int:
        """How many refresh_token grants succeeded for the athlete."""
        with self._lock:
            return self._refreshes[athlete_id]

    # ---- faults / rate limits / observation ---------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        path_contains: str | None = None,
        body: dict[str, Any] | None = None,
        delay_s: float = 0.0,
        after: int = 0,
        drop: bool = False,
    ) -> None:
        """Make the next n requests whose path contains path_contains fail with `status`,
        once `after` such requests have gone through normally; with `drop`, the
        connection is reset instead of answered.

        The failure replaces the answer without touching state or rate-limit usage (API
        answers still carry the usage headers); delay_s is waited before answering.
        """
        if n < 1 or after < 0:
            raise ValueError("n must be at least 1 and after at least 0")
        with self._lock:
            self._faults.append(_Fault(n, status, path_contains, body, delay_s, after, drop))

    def inject_faults(
        self,
        rate: float,
        *,
        seed: int = 0,
        timeout_s: float = 1.5,
        mix: Mapping[str, float] | None = None,
    ) -> None:
        """Fail a share `rate` of API and token requests at random, by kind (`mix`, by
        default 55% 5xx, 20% connection resets, 15% timeouts, 10% early token expiries):

        - "5xx": 500, 502, 503 or 504, state untouched;
        - "reset": the connection dropped without an answer, state untouched;
        - "timeout": the answer held back `timeout_s` (longer than the client waits),
          then a 504, state untouched;
        - "expiry": the athlete's access token expires now (Strava revoking it early),
          so the request answers 401 and the next refresh hands out a new one (a token
          handed out in the last 5 seconds is left alone).

        Which request fails is decided by a hash of `seed`, the request (method, path,
        query) and how many times that request was made before, so a run's faults do
        not depend on the order overlapping callers' requests arrive in. rate=0 stops.
        """
        if not 0 <= rate < 1:
            raise ValueError("rate must be in [0, 1)")
        weights = dict(mix or {"5xx": 0.55, "reset": 0.20, "timeout": 0.15, "expiry": 0.10})
        if set(weights) - set(FAULT_KINDS):
            raise ValueError(f"fault kinds are {FAULT_KINDS}")
        with self._lock:
            self._random_faults = (
                RandomFaults(rate, seed, timeout_s, tuple(weights.items())) if rate else None
            )

    def set_usage(
        self,
        *,
        usage_15min: int | None = None,
        usage_daily: int | None = None,
        read_usage_15min: int | None = None,
        read_usage_daily: int | None = None,
    ) -> None:
        """Set the usage of the current rate-limit windows, as if other calls had been made."""
        with self._lock:
            limits = self._limits
            limits.roll(self._clock())
            if usage_15min is not None:
                limits.usage_15min = usage_15min
            if usage_daily is not None:
                limits.usage_daily = usage_daily
            if read_usage_15min is not None:
                limits.read_usage_15min = read_usage_15min
            if read_usage_daily is not None:
                limits.read_usage_daily = read_usage_daily

    def count(
        self,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        status: int | None = None,
    ) -> int:
        """How many recorded requests match every given filter."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (path_contains is None or path_contains in r.path)
                and (method is None or r.method == method.upper())
                and (status is None or r.status == status)
            )

    def reset_log(self) -> None:
        """Forget recorded requests (state, tokens and rate-limit usage are kept)."""
        with self._lock:
            self.requests.clear()

    # ---- transport ----------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, body)."""
        method = method.upper()
        if path == PUSH_PATH or path.startswith(PUSH_PATH + "/"):
            # Outside the lock: creating one calls the callback, which may call us.
            return self._push_subscriptions(method, path, query, headers, body)
        at = self._clock()
        # Sleep outside the lock so concurrent requests overlap as on a real network.
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        lowered = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self._serial += 1
            fault = self._take_fault(path)
            picked = (
                None if fault is not None else self._pick_random_fault(method, path, lowered, body)
            )
            injected, status = picked or (None, 0)
            if injected == "expiry":
                self._expire_early(lowered)
            if fault is not None:
                answer = self._fault_answer(fault, path)
            elif injected in ("5xx", "reset", "timeout"):
                status = {"timeout": 504, "reset": 0}.get(injected, status)
                answer = self._fault_answer(_Fault(1, status or 502, None, None, 0.0), path)
                answer.status = status
            else:
                answer = self._route(method, path, query, lowered, body)
            safe_query = {k: "[redacted]" if k == "access_token" else v for k, v in query.items()}
            self.requests.append(
                RecordedRequest(method, path, safe_query, answer.status, at, answer.athlete_id)
            )
            random_faults = self._random_faults
        if fault is not None and fault.delay_s > 0:
            time.sleep(fault.delay_s)
        if injected == "reset" or (fault is not None and fault.drop):
            raise errors.ConnectionDropped()
        if injected == "timeout" and random_faults is not None:
            time.sleep(random_faults.timeout_s)
        response_headers, payload = answer.encode()
        return answer.status, response_headers, payload

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """A WSGI application serving the fake at the root ("/api/v3/...", "/oauth/...")."""
        request = Request(environ)
        try:
            status, headers, body = self.handle(
                request.method,
                request.path,
                request.args.to_dict(),
                dict(request.headers.items()),
                request.get_data(),
            )
        except errors.ConnectionDropped:
            # Close both directions at once: the client reads the end of the connection
            # with no answer; the server's handler sees a dropped connection (quietly).
            connection = environ.get("werkzeug.socket")
            if isinstance(connection, socket.socket):
                connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("injected connection reset") from None
        return Response(body, status=status, headers=headers)(environ, start_response)

    def install(
        self,
        rsps: responses.RequestsMock,
        *,
        api_url: str = "https://www.strava.com/api/v3",
        oauth_url: str = "https://www.strava.com/oauth",
    ) -> None:
        """Route every request under api_url and oauth_url, any method, through handle().

        One callback is registered, so a RequestsMock asserting that all its responses
        fire only requires that Strava was called at least once.
        """
        mock.install(self.handle, rsps, {api_url: API_PREFIX, oauth_url: OAUTH_PREFIX})

    # ---- webhooks -------------------------------------------------------------------------

    def _push_subscriptions(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """The application's push subscription, authenticated by its client credentials
        (in the query or a form body), outside the athletes' rate limits."""
        lowered = {name.lower(): value for name, value in headers.items()}
        form = {**query, **_parse_form(lowered, body)}
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            status, payload = 401, errors.bad_request("Application", "client_id")
        elif method == "POST" and path == PUSH_PATH:
            status, payload = self.push.create(
                form.get("callback_url", ""), form.get("verify_token", "")
            )
        elif method == "GET" and path == PUSH_PATH:
            status, payload = self.push.list()
        elif method == "DELETE" and path != PUSH_PATH and path[len(PUSH_PATH) + 1 :].isdigit():
            status, payload = self.push.delete(int(path[len(PUSH_PATH) + 1 :]))
        else:
            status, payload = 404, errors.not_found("resource", "path")
        with self._lock:
            self.requests.append(RecordedRequest(method, path, {}, status, self._clock(), None))
        if payload is None:
            return status, {}, b""
        return (
            status,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(payload).encode(),
        )

    def _emit_update(self, owner: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        """The update event of an activity's change, for the fields Strava reports
        (title, type, privacy: Everyone to Followers is a privacy change too). Turned
        private under a grant without activity:read_all, it arrives as a delete (as third
        parties report)."""
        updates: dict[str, str] = {}
        if before.get("name") != after.get("name"):
            updates["title"] = str(after.get("name"))
        if before.get("sport_type") != after.get("sport_type"):
            updates["type"] = str(after.get("sport_type"))
        # Any change of who sees it: "true" for Only You, "false" for Followers or Everyone.
        if bool(before.get("private")) != bool(after.get("private")) or before.get(
            "visibility"
        ) != after.get("visibility"):
            updates["private"] = "true" if after.get("private") else "false"
        if not updates:
            return
        grant = self._grants.get(owner)
        sees_private = grant is not None and _READ_ALL in grant.scopes
        if updates.get("private") == "true" and not sees_private:
            self.push.emit("activity", after["id"], "delete", owner)
        else:
            self.push.emit("activity", after["id"], "update", owner, updates)

    # ---- internals (called with the lock held) ------------------------------------------

    def _ensure_athlete(self, athlete_id: int) -> None:
        """Create an athlete with default names if unknown."""
        if athlete_id not in self._athletes:
            self._athletes[athlete_id] = summary_athlete(athlete_id, "Test", "Rider")

    def _store(self, stored: _Activity) -> None:
        """Insert or replace an activity in both indexes."""
        activity_id = stored.summary["id"]
        self._activities[activity_id] = stored
        self._owned.setdefault(stored.owner, {})[activity_id] = stored

    def _new_grant(self, athlete_id: int, scope: str, ttl: int) -> _Grant:
        """Replace the athlete's grant with fresh tokens."""
        self._ensure_athlete(athlete_id)
        self._revoke(athlete_id)
        expires_at = int(self._clock()) + ttl
        grant = _Grant(athlete_id, scope, _new_token(), expires_at, _new_token())
        self._grants[athlete_id] = grant
        self._by_access[grant.access_token] = grant
        self._by_refresh[grant.refresh_token] = grant
        return grant

    def _revoke(self, athlete_id: int) -> None:
        """Drop the athlete's grant and both its tokens."""
        grant = self._grants.pop(athlete_id, None)
        if grant is not None:
            del self._by_access[grant.access_token]
            del self._by_refresh[grant.refresh_token]

    def _take_fault(self, path: str) -> _Fault | None:
        """Consume one use of the first pending fault matching path."""
        for fault in self._faults:
            if fault.path_contains is None or fault.path_contains in path:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _pick_random_fault(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, int] | None:
        """The random fault (if any) for this request: API requests and token grants.

        Keyed by the athlete (of the bearer token, or of the refresh token) and how many
        such requests of theirs came before, not by query or arrival order, so two
        versions of the service walking the same histories meet the same faults.
        """
        faults = self._random_faults
        if faults is None or not (_is_api(path) or path == "/oauth/token"):
            return None
        if _is_api(path):
            _, _, token = headers.get("authorization", "").partition(" ")
            grant = self._by_access.get(token.strip())
        else:
            grant = self._by_refresh.get(_parse_form(headers, body).get("refresh_token", ""))
        key = f"{method} {path} athlete={grant.athlete_id if grant else None}"
        nth = self._seen[key]
        self._seen[key] += 1
        picked = faults.pick(f"{key}#{nth}")
        if picked is not None and picked[0] == "expiry" and not _is_api(path):
            picked = None  # only an API request carries an access token to expire
        if picked is not None:
            self.injected[picked[0]] += 1
        return picked

    def _expire_early(self, headers: Mapping[str, str]) -> None:
        """Expire the bearer token's grant now, as Strava revoking an access token early."""
        _, _, token = headers.get("authorization", "").partition(" ")
        grant = self._by_access.get(token.strip())
        now = int(self._clock())
        # A token handed out in the last 5 s is left alone: one refused right after a
        # refresh would be a broken grant (the service asks the rider to reconnect).
        if grant is not None and grant.expires_at - now < self.token_ttl_s - 5:
            grant.expires_at = min(grant.expires_at, now - 1)

    def _fault_answer(self, fault: _Fault, path: str) -> _Answer:
        """The answer of an injected fault."""
        body = fault.body if fault.body is not None else errors.for_status(fault.status)
        answer = _Answer(fault.status, body)
        if _is_api(path):
            self._limits.roll(self._clock())
            answer.headers.update(self._limits.headers())
        return answer

    def _authenticate(self, query: Mapping[str, str], headers: Mapping[str, str]) -> _Grant | None:
        """The grant of a valid bearer token, or None."""
        # Strava is dropping tokens in query strings (they leak into logs): refuse them.
        if "access_token" in query:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        grant = self._by_access.get(token.strip())
        if grant is None or self._clock() >= grant.expires_at:
            return None
        return grant

    def _route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Answer:
        """Dispatch a request that no fault intercepted."""
        if _is_api(path):
            admitted = self._limits.admit(self._clock(), read=method == "GET")
            answer = self._api(admitted, method, path, query, headers)
            answer.headers.update(self._limits.headers())
            return answer
        if self.application_inactive:
            return _Answer(403, errors.application_inactive())
        if method == "POST" and path == "/oauth/token":
            return self._token(headers, body)
        if method == "POST" and path == "/oauth/deauthorize":
            return self._deauthorize(query, headers)
        if method == "GET" and path == "/oauth/authorize":
            return self._authorize(query)
        return _Answer(404, errors.not_found("resource", "path"))

    def _api(
        self,
        admitted: bool,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> _Answer:
        """Answer an API request that has already been counted against the rate limits."""
        if not admitted:
            return _Answer(429, errors.rate_limited())
        if self.application_inactive:
            return _Answer(403, errors.application_inactive())
        grant = self._authenticate(query, headers)
        if grant is None:
            return _Answer(401, errors.invalid_token())
        answer = _Answer(404, errors.not_found("resource", "path"))
        if method == "GET":
            if path == "/api/v3/athlete":
                answer = _Answer(200, self._athletes[grant.athlete_id])
            elif path == "/api/v3/athlete/activities":
                answer = self._list_activities(grant, query)
            elif match := _ACTIVITY_PATH.fullmatch(path):
                answer = self._get_activity(grant, int(match[1]))
        answer.athlete_id = grant.athlete_id
        return answer

    def _list_activities(self, grant: _Grant, query: Mapping[str, str]) -> _Answer:
        """GET /athlete/activities: filter, order, page, then drop what the scope hides."""
        if not grant.scopes & _ACTIVITY_SCOPES:
            return _Answer(401, errors.missing_scope("activity:read"))
        try:
            before = _int_param(query, "before")
            after = _int_param(query, "after")
            page = _int_param(query, "page", minimum=1) or 1
            per_page = _int_param(query, "per_page", minimum=1) or _DEFAULT_PER_PAGE
        except _BadParam as bad:
            return _Answer(400, errors.bad_request("Application", bad.name))
        per_page = min(per_page, _MAX_PER_PAGE)
        matching = [
            stored
            for stored in self._owned.get(grant.athlete_id, {}).values()
            if (before is None or stored.start < before) and (after is None or stored.start > after)
        ]
        matching.sort(key=_chronological, reverse=self._newest_first(before, after))
        selected = matching[(page - 1) * per_page : page * per_page]
        if self.order == "shuffled":
            random.Random(f"{self._seed}:{self._serial}").shuffle(selected)
        # Strava hides "Only Me" activities after paging, so a page can come back short.
        if _READ_ALL not in grant.scopes:
            selected = [stored for stored in selected if not stored.summary.get("private")]
        return _Answer(200, [stored.summary for stored in selected])

    def _newest_first(self, before: int | None, after: int | None) -> bool:
        """Whether a listing runs newest first under the configured order."""
        if self.order == "newest_first":
            return True
        if self.order == "oldest_first":
            return False
        # What clients observe on Strava: oldest first with `after` alone, else newest first.
        # "shuffled" pages like this and then shuffles within each page.
        return not (after is not None and before is None)

    def _get_activity(self, grant: _Grant, activity_id: int) -> _Answer:
        """GET /activities/{id}: the detailed activity, if this grant may see it."""
        if not grant.scopes & _ACTIVITY_SCOPES:
            return _Answer(401, errors.missing_scope("activity:read"))
        stored = self._activities.get(activity_id)
        hidden = (
            stored is not None and stored.summary.get("private") and _READ_ALL not in grant.scopes
        )
        if stored is None or stored.owner != grant.athlete_id or hidden:
            return _Answer(404, errors.not_found("Activity", "id"))
        return _Answer(200, detailed_activity(stored.summary))

    def _token(self, headers: Mapping[str, str], body: bytes) -> _Answer:
        """POST /oauth/token: authorization_code and refresh_token grants."""
        form = _parse_form(headers, body)
        for name, expected in (
            ("client_id", self.client_id),
            ("client_secret", self.client_secret),
        ):
            if form.get(name) != expected:
                return _Answer(401, errors.bad_request("Application", name))
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        if grant_type == "authorization_code":
            return self._exchange_code(form.get("code", ""))
        return _Answer(400, errors.bad_request("Application", "grant_type"))

    def _refresh(self, refresh_token: str) -> _Answer:
        """Refresh: same access token while it has over an hour left, else rotate."""
        grant = self._by_refresh.get(refresh_token)
        if grant is None:
            return _Answer(400, errors.bad_request("RefreshToken", "refresh_token"))
        now = self._clock()
        if grant.expires_at - now <= _KEEP_TOKEN_S:
            # The old access token dies at once; so does the old refresh token when rotating.
            del self._by_access[grant.access_token]
            grant.access_token = _new_token()
            grant.expires_at = int(now) + self.token_ttl_s
            self._by_access[grant.access_token] = grant
            if self.rotate_refresh_tokens:
                del self._by_refresh[grant.refresh_token]
                grant.refresh_token = _new_token()
                self._by_refresh[grant.refresh_token] = grant
        self._refreshes[grant.athlete_id] += 1
        return _Answer(200, self._token_body(grant, now), athlete_id=grant.athlete_id)

    def _exchange_code(self, code: str) -> _Answer:
        """Exchange a one-time authorization code for a new grant."""
        entry = self._codes.pop(code, None)
        if entry is None:
            return _Answer(400, errors.bad_request("AuthorizationCode", "code"))
        athlete_id, scope = entry
        grant = self._new_grant(athlete_id, scope, self.token_ttl_s)
        body = self._token_body(grant, self._clock())
        body["athlete"] = self._athletes[athlete_id]
        return _Answer(200, body, athlete_id=athlete_id)

    @staticmethod
    def _token_body(grant: _Grant, now: float) -> dict[str, Any]:
        """The token endpoint's answer for a grant."""
        return {
            "token_type": "Bearer",
            "access_token": grant.access_token,
            "expires_at": grant.expires_at,
            "expires_in": grant.expires_at - int(now),
            "refresh_token": grant.refresh_token,
        }

    def _deauthorize(self, query: Mapping[str, str], headers: Mapping[str, str]) -> _Answer:
        """POST /oauth/deauthorize with the bearer token: revoke the athlete's grant."""
        grant = self._authenticate(query, headers)
        if grant is None:
            return _Answer(401, errors.invalid_token())
        token = grant.access_token
        self._revoke(grant.athlete_id)
        athlete = grant.athlete_id
        self.push.emit("athlete", athlete, "update", athlete, {"authorized": "false"})
        return _Answer(200, {"access_token": token}, athlete_id=grant.athlete_id)

    def _authorize(self, query: Mapping[str, str]) -> _Answer:
        """GET /oauth/authorize: validate the request and show a minimal consent page."""
        if query.get("client_id") != self.client_id:
            return _Answer(400, errors.bad_request("Application", "client_id"))
        if urlsplit(query.get("redirect_uri", "")).scheme not in ("http", "https"):
            return _Answer(400, errors.bad_request("Application", "redirect_uri"))
        if query.get("response_type") != "code":
            return _Answer(400, errors.bad_request("Application", "response_type"))
        scope = html.escape(query.get("scope", "read"))
        return _Answer(
            200,
            "<!doctype html><title>Authorize | Fake Strava</title>"
            f"<p>Authorize application {html.escape(self.client_id)} to access: {scope}</p>",
        )


def _is_api(path: str) -> bool:
    """Whether a normalized path is an API route (rate limited) rather than OAuth."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _chronological(stored: _Activity) -> tuple[int, int]:
    """Sort key: start time, then id for activities starting the same second."""
    return stored.start, stored.summary["id"]
