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


def _body_fields() -> dict[str, Any]:
    """The request body's fields: a JSON object, or a form; {} when there is none."""
    if request.is_json and request.get_data(cache=True):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "the request body must be a JSON object")
        return body
    return dict(request.form)


def parse_limit(default: int) -> int:
    """`limit` from the query string or the body: an integer from 1 to 500.

    In a JSON body only a number will do ("5", 5.0, true and null are refused); in a
    query string or a form, only digits. The query string's wins, but a body is checked
    even then: a request with a bad body is refused, never half read.
    """
    fields = _body_fields()
    from_body = (
        _limit_value(fields["limit"], json_number=request.is_json) if "limit" in fields else None
    )
    if "limit" in request.args:
        return _limit_value(request.args["limit"], json_number=False)
    return default if from_body is None else from_body


def _limit_value(raw: Any, *, json_number: bool) -> int:
    """One `limit` as given: digits (a query string, a form) or a JSON integer."""
    problem = f"limit must be an integer from {LIMIT_MIN} to {LIMIT_MAX}"
    if isinstance(raw, str) and not json_number:
        text = raw.strip(" \t")  # spaces and tabs, as openapi.yaml says
        if not text.isascii() or not text.isdigit() or len(text) > 3:
            raise ApiError(400, "invalid_parameter", problem, field="limit")
        value = int(text)
    elif isinstance(raw, int) and not isinstance(raw, bool) and json_number:
        value = raw
    else:
        raise ApiError(400, "invalid_parameter", problem, field="limit")
    if not LIMIT_MIN <= value <= LIMIT_MAX:
        raise ApiError(400, "invalid_parameter", problem, field="limit")
    return value


def parse_flag(name: str) -> bool:
    """A true/false switch (`all`) from the query string or a form (exactly `true` or
    `false`) or the JSON body (a boolean); absent: false. The query string's wins; a
    bad body is refused even then, as for `limit`."""
    problem = f"{name} must be true or false"
    fields = _body_fields()
    from_body: bool | None = None
    if name in fields:
        raw = fields[name]
        if request.is_json:
            if not isinstance(raw, bool):
                raise ApiError(400, "invalid_parameter", problem, field=name)
            from_body = raw
        else:
            from_body = _flag_text(raw, name, problem)
    if name in request.args:
        return _flag_text(request.args[name], name, problem)
    return bool(from_body)


def _flag_text(raw: Any, name: str, problem: str) -> bool:
    if raw not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", problem, field=name)
    return bool(raw == "true")
