"""Request guards shared by the blueprints: the cron bearer and the `limit` parameter."""

from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, request

from routes.errors import ApiError
from services.calls import Runtime

LIMIT_MIN, LIMIT_MAX = 1, 500


def runtime() -> Runtime:
    return current_app.extensions["strava_sync"]  # type: ignore[no-any-return]


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_cron_secret() -> None:
    """401 unless the bearer is CRON_SECRET (compared in constant time); 503 if unset."""
    secret = runtime().settings.cron_secret
    if not secret:
        raise ApiError(503, "not_configured", "CRON_SECRET is not set on the server")
    token = bearer_token()
    if token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _json_body() -> dict[str, Any]:
    if not request.get_data(cache=True):
        return {}
    if not request.is_json:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    return body


def parse_limit(default: int) -> int:
    """`limit` from the query string or JSON body: an integer from 1 to 500."""
    problem = f"limit must be an integer from {LIMIT_MIN} to {LIMIT_MAX}"
    raw: Any = request.args.get("limit")
    if raw is None:
        raw = _json_body().get("limit")
        if raw is None:
            return default
        # In JSON only a number will do: "5", 5.0 and true are refused.
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ApiError(400, "invalid_parameter", problem, field="limit")
        value = raw
    else:
        text = raw.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 3:
            raise ApiError(400, "invalid_parameter", problem, field="limit")
        value = int(text)
    if not LIMIT_MIN <= value <= LIMIT_MAX:
        raise ApiError(400, "invalid_parameter", problem, field="limit")
    return value
