"""Strava's JSON error bodies ("Fault" in the swagger): a message and a list of errors."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


def fault(message: str, resource: str, field: str, code: str) -> dict[str, Any]:
    """Return a Strava Fault body with a single error."""
    return {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]}


def invalid_token() -> dict[str, Any]:
    """401 for a missing, unknown, expired or revoked access token."""
    return fault("Authorization Error", "Athlete", "access_token", "invalid")


def missing_scope(scope: str) -> dict[str, Any]:
    """401 for a valid token lacking a scope, e.g. activity:read."""
    return fault("Authorization Error", "AccessToken", f"{scope}_permission", "missing")


def not_found(resource: str, field: str) -> dict[str, Any]:
    """404 for a missing record ("Activity", "id") or an unknown route ("resource", "path")."""
    return fault("Record Not Found", resource, field, "invalid")


def bad_request(resource: str, field: str) -> dict[str, Any]:
    """400 for an invalid parameter, refresh token or authorization code."""
    return fault("Bad Request", resource, field, "invalid")


def rate_limited() -> dict[str, Any]:
    """429 when a request would exceed a rate limit."""
    return fault("Rate Limit Exceeded", "Application", "rate limit", "exceeded")


def application_inactive() -> dict[str, Any]:
    """403 on every call once the application's developer-program status has lapsed."""
    return fault("Forbidden", "Application", "", "inactive")


def for_status(status: int) -> dict[str, Any]:
    """A plausible default body for an injected fault of the given status."""
    if status == 401:
        return invalid_token()
    if status == 429:
        return rate_limited()
    try:
        message = HTTPStatus(status).phrase
    except ValueError:
        message = "Error"
    return {"message": message, "errors": []}


class ConnectionDropped(Exception):
    """An injected fault that drops the connection without an answer (a reset)."""
