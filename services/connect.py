"""Connecting a rider's Strava account: the authorize URL, the callback, disconnecting.

The OAuth `state` is a short JWT (HS256, PyJWT) naming the Supabase user and a nonce,
signed with a key derived from STRAVA_CLIENT_SECRET (the one secret the flow needs
anyway; rotating it voids only pending states), valid STATE_TTL_S. The nonce is
recorded when the flow starts and deleted by the one statement that accepts it, so a
state works once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID, uuid4

import jwt
import psycopg

import models
from services.calls import Call, Runtime
from services.errors import NotConnected
from services.rider_auth import RiderIdentity
from services.strava import (
    AthleteCapacity,
    BadPayload,
    DeadlineReached,
    InvalidClient,
    StravaClient,
    StravaError,
    TokenRejected,
    athlete_limit_reached,
)
from services.tokens import NeedsReauth, seal_tokens

log = logging.getLogger(__name__)

SCOPE = "read,activity:read_all"
ACTIVITY_SCOPES = frozenset({"activity:read", "activity:read_all"})
STATE_TTL_S = 600
_STATE_AUDIENCE = "strava-connect"
_STATE_KEY_LABEL = b"club-strava-sync oauth state v1"


class ConnectError(Exception):
    """The connect flow cannot go on; `code` is what the rider's page is told."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Connected:
    rider_id: int
    athlete_id: int
    scope: str
    reconnected: bool


# --- pure: the state token and the granted scope -------------------------------------


def state_key(client_secret: str) -> bytes:
    """The state's signing key, derived so the client secret itself never signs anything."""
    return hmac.new(client_secret.encode(), _STATE_KEY_LABEL, hashlib.sha256).digest()


def make_state(key: bytes, *, auth_user_id: UUID, nonce: UUID, now: datetime) -> str:
    """A signed state naming the user and the nonce, expiring STATE_TTL_S after `now`."""
    issued = int(now.timestamp())
    claims = {
        "sub": str(auth_user_id),
        "jti": str(nonce),
        "aud": _STATE_AUDIENCE,
        "iat": issued,
        "exp": issued + STATE_TTL_S,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def read_state(key: bytes, state: str, *, now: datetime) -> tuple[UUID, UUID]:
    """(auth_user_id, nonce) of a state we signed that has not expired, else ConnectError."""
    try:
        claims = jwt.decode(
            state,
            key,
            algorithms=["HS256"],
            audience=_STATE_AUDIENCE,
            # Expiry is checked against `now` below, never PyJWT's real clock (which would
            # also refuse an `iat` ahead of it), so the state follows the runtime's clock.
            options={"require": ["sub", "jti", "exp"], "verify_exp": False, "verify_iat": False},
        )
        user, nonce = UUID(str(claims["sub"])), UUID(str(claims["jti"]))
        expires = int(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError):
        raise ConnectError(
            400, "invalid_state", _START_AGAIN.format("was not recognised")
        ) from None
    if now.timestamp() >= expires:
        raise ConnectError(400, "state_expired", _START_AGAIN.format("has expired"))
    return user, nonce


_START_AGAIN = "This Strava connection link {}: press Connect Strava again."


def has_activity_scope(scope: str | None) -> bool:
    """Whether a granted scope (comma-separated) lets us read activities."""
    return bool(ACTIVITY_SCOPES & {s.strip() for s in (scope or "").split(",")})


NAME_MAX = 80


def athlete_name(athlete: dict[str, Any]) -> str | None:
    """A rider's name from their Strava athlete: the first name and the last name's
    initial ("Anna B."), short and on one line; None when Strava gave no first name."""

    def part(key: str) -> str:
        value = athlete.get(key)
        return " ".join(value.split()) if isinstance(value, str) else ""

    first, last = part("firstname"), part("lastname")
    if not first:
        return None
    initial = f" {last[0].upper()}." if last else ""
    return (first[: NAME_MAX - len(initial)] + initial).strip()


def _created_at(athlete: dict[str, Any]) -> datetime | None:
    value = athlete.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- the flow ------------------------------------------------------------------------


def _client(runtime: Runtime) -> StravaClient:
    settings = runtime.settings
    if not settings.strava_client_id or not settings.strava_client_secret:
        raise ConnectError(
            503, "strava_not_configured", "Connecting Strava is not configured on the server."
        )
    return StravaClient(
        api_url=settings.strava_api_url,
        oauth_url=settings.strava_oauth_url,
        client_id=settings.strava_client_id,
        client_secret=settings.strava_client_secret,
        deadline=runtime.timer() + settings.cron_time_budget_s,
        timeout_s=settings.strava_timeout_s,
        clock=runtime.clock,
        timer=runtime.timer,
    )


def _state_key(runtime: Runtime) -> bytes:
    secret = runtime.settings.strava_client_secret
    if not secret:  # never sign or accept states with a key derived from nothing
        raise ConnectError(
            503, "strava_not_configured", "Connecting Strava is not configured on the server."
        )
    return state_key(secret)


def capacity_refusal(capacity: int) -> ConnectError:
    return ConnectError(
        409,
        "athlete_capacity",
        f"This club's Strava application is already connected to {capacity} athletes, "
        "the most Strava allows it, so no new rider can connect for now. The club's "
        "operator can ask Strava to raise the limit.",
    )


def start_connect(runtime: Runtime, identity: RiderIdentity, *, redirect_uri: str) -> str:
    """Strava's authorize URL for this user, with a fresh single-use state.

    With STRAVA_ATHLETE_CAPACITY set and reached, a new athlete is refused here (409
    athlete_capacity) rather than sent to Strava, which would refuse them on its own
    page, leaving them there; a rider reconnecting their own athlete holds a place
    already and is never refused.
    """
    capacity = runtime.settings.strava_athlete_capacity
    with _client(runtime) as strava:
        nonce = uuid4()
        key = _state_key(runtime)
        now = runtime.clock()
        state = make_state(key, auth_user_id=identity.auth_user_id, nonce=nonce, now=now)
        with runtime.db.connection() as conn:
            if (
                capacity is not None
                and not models.sharing.holds_athlete_place(conn, auth_user_id=identity.auth_user_id)
                and models.sharing.athletes_connected(conn, up_to=capacity) >= capacity
            ):
                log.info("connect refused: athlete capacity reached", extra={"capacity": capacity})
                raise capacity_refusal(capacity)
            models.riders.save_oauth_state(
                conn, nonce=nonce, auth_user_id=identity.auth_user_id, ttl_s=STATE_TTL_S, now=now
            )
        return strava.authorize_url(redirect_uri=redirect_uri, state=state, scope=SCOPE)


def _consume_state(runtime: Runtime, state: str | None) -> UUID:
    if not state:
        raise ConnectError(400, "invalid_state", _START_AGAIN.format("is incomplete"))
    key = _state_key(runtime)
    now = runtime.clock()
    user, nonce = read_state(key, state, now=now)
    with runtime.db.connection() as conn:
        live = models.riders.consume_oauth_state(conn, nonce=nonce, auth_user_id=user, now=now)
    if live is None:
        raise ConnectError(400, "state_used", _START_AGAIN.format("was already used"))
    if not live:
        raise ConnectError(400, "state_expired", _START_AGAIN.format("has expired"))
    return user


def finish_connect(
    runtime: Runtime,
    *,
    state: str | None,
    code: str | None,
    scope: str | None,
    error: str | None,
) -> Connected:
    """Strava's redirect back: check the state, exchange the code, store the grant."""
    if error:
        # Burn the state if it is ours, but a refusal is reported whatever the state says.
        try:
            _consume_state(runtime, state)
        except ConnectError:
            pass
        if error == "access_denied":
            raise ConnectError(
                400, "access_denied", "Strava access was not approved, so nothing was connected."
            )
        if athlete_limit_reached(error):
            raise _strava_capacity_refusal(runtime)
        raise ConnectError(400, "strava_error", "Strava did not complete the connection.")
    with _client(runtime) as strava:
        auth_user_id = _consume_state(runtime, state)
        if not has_activity_scope(scope):
            raise ConnectError(
                400,
                "missing_scope",
                "Strava was connected without permission to read your activities. Press "
                'Connect Strava again and keep "View data about your activities" ticked.',
            )
        if not code:
            raise ConnectError(400, "missing_code", "Strava sent no authorization code.")
        try:
            grant = _exchange(strava, code)
        except AthleteCapacity:
            raise _strava_capacity_refusal(runtime) from None
    athlete = grant.athlete or {}
    athlete_id = athlete.get("id")
    if not isinstance(athlete_id, int) or isinstance(athlete_id, bool):
        raise ConnectError(502, "strava_error", "Strava's answer named no athlete.")
    granted = ",".join(s.strip() for s in (scope or "").split(",") if s.strip())
    return _store(
        runtime,
        auth_user_id,
        athlete_id,
        granted,
        grant,
        _created_at(athlete),
        athlete_name(athlete),
    )


def _strava_capacity_refusal(runtime: Runtime) -> ConnectError:
    """Strava itself refused for the athlete limit: the operator must know (the tier, or
    STRAVA_ATHLETE_CAPACITY, is wrong or the limit is reached) and the rider be told."""
    log.warning(
        "Strava refused a connection: the application's athlete limit is reached",
        extra={"capacity": runtime.settings.strava_athlete_capacity},
    )
    return ConnectError(
        409,
        "athlete_capacity",
        "Strava refused the connection: this club's Strava application has reached the "
        "number of athletes its Strava tier allows. The club's operator can ask Strava "
        "to raise the limit; nothing was connected.",
    )


def _exchange(strava: StravaClient, code: str) -> Any:
    try:
        return strava.exchange_code(code)
    except AthleteCapacity:
        raise
    except TokenRejected:
        raise ConnectError(
            400, "invalid_code", "Strava refused the authorization: press Connect Strava again."
        ) from None
    except InvalidClient:
        raise ConnectError(
            503, "strava_not_configured", "Strava refused this service's API credentials."
        ) from None
    except (StravaError, DeadlineReached, BadPayload):
        raise ConnectError(
            502, "strava_unavailable", "Strava could not be reached: try again in a minute."
        ) from None


def _store(
    runtime: Runtime,
    auth_user_id: UUID,
    athlete_id: int,
    scope: str,
    grant: Any,
    athlete_created_at: datetime | None,
    name: str | None = None,
) -> Connected:
    linked_elsewhere = False
    rider_id: int | None = None
    previous: int | None = None
    try:
        with runtime.db.connection() as conn:
            now = runtime.clock()
            rider_id = models.riders.rider_id_for_user(conn, auth_user_id=auth_user_id)
            owner = models.riders.connection_rider_for_athlete(conn, athlete_id=athlete_id)
            if owner is not None and owner != rider_id:
                # The exchange made a new grant for that athlete; keep the existing link on
                # the newest tokens so it goes on working, and refuse the second link.
                access, refresh = seal_tokens(
                    runtime.sealer, owner, grant.access_token, grant.refresh_token
                )
                models.riders.replace_grant(
                    conn,
                    rider_id=owner,
                    access_sealed=access,
                    refresh_sealed=refresh,
                    expires_at=grant.expires_at,
                    scope=scope,
                    now=now,
                )
                linked_elsewhere = True
            else:
                rider_id = models.riders.ensure_rider_for_user(
                    conn, auth_user_id=auth_user_id, now=now
                )
                previous = models.riders.connected_athlete(conn, rider_id=rider_id)
                if previous is not None and previous != athlete_id:
                    # Another Strava account replaces the old one: its activities would
                    # never be synced or deleted again.
                    models.riders.delete_rider_activities(conn, rider_id=rider_id)
                access, refresh = seal_tokens(
                    runtime.sealer, rider_id, grant.access_token, grant.refresh_token
                )
                models.riders.save_connection(
                    conn,
                    rider_id=rider_id,
                    athlete_id=athlete_id,
                    access_sealed=access,
                    refresh_sealed=refresh,
                    expires_at=grant.expires_at,
                    scope=scope,
                    now=now,
                )
                models.riders.set_athlete_created_at(
                    conn, rider_id=rider_id, created_at=athlete_created_at
                )
                if name:  # the operator's name, if they gave one, is kept
                    models.riders.name_from_strava(conn, rider_id=rider_id, name=name)
    except psycopg.errors.UniqueViolation:  # linked by a callback running at the same time
        linked_elsewhere = True
    if linked_elsewhere or rider_id is None:
        raise ConnectError(
            409,
            "athlete_linked",
            "This Strava account is already connected to another rider of the club.",
        )
    reconnected = previous is not None
    log.info("rider connected Strava", extra={"rider_id": rider_id, "reconnected": reconnected})
    return Connected(rider_id, athlete_id, scope, reconnected)


def disconnect(runtime: Runtime, identity: RiderIdentity) -> dict[str, Any]:
    """Revoke the grant at Strava (best effort) and delete the rider's tokens and data."""
    with runtime.db.connection() as conn:
        rider_id = models.riders.rider_id_for_user(conn, auth_user_id=identity.auth_user_id)
    if rider_id is None:
        return {"disconnected": False, "deauthorized": False, "activities_deleted": 0}
    deauthorized, note = _deauthorize(runtime, rider_id)
    with runtime.db.connection() as conn:
        had_connection, deleted = models.riders.delete_strava_data(conn, rider_id=rider_id)
    log.info(
        "rider disconnected Strava",
        extra={"rider_id": rider_id, "deauthorized": deauthorized, "activities_deleted": deleted},
    )
    answer: dict[str, Any] = {
        "disconnected": had_connection,
        "deauthorized": deauthorized,
        "activities_deleted": deleted,
        "tokens_deleted": had_connection,
    }
    if note:
        answer["note"] = note
    return answer


def _deauthorize(runtime: Runtime, rider_id: int) -> tuple[bool, str | None]:
    """Revoke at Strava; a grant already dead is fine, and Strava being down does not stop
    the deletion (the rider is told to revoke on Strava's side)."""
    call = Call(runtime, kind="disconnect")
    try:
        call.tokens.call(rider_id, call.strava.deauthorize)
        return True, None
    except NotConnected:
        return False, None
    except (NeedsReauth, TokenRejected):
        return False, "Strava had already withdrawn this service's access."
    except (StravaError, DeadlineReached):
        return False, (
            "Strava could not be reached to revoke access; your data here is deleted. "
            "You can also remove the app at strava.com/settings/apps."
        )
    finally:
        call.close()


def return_url(base: str, **params: str) -> str:
    """APP_RETURN_URL with the result flags added to any query it already has."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))
