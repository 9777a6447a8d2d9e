"""One JSON error shape for every failure: {"error": {"code", "message"[, "field"]}}."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.errors import NotConnected, UnknownRider

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client can act on, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(code: str, message: str, **more: Any) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            **{k: v for k, v in more.items() if v is not None},
        }
    }


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        response = jsonify(error_body(exc.code, exc.message, field=exc.field, **exc.extra))
        return response, exc.status, exc.headers

    @app.errorhandler(UnknownRider)
    def unknown_rider(exc: UnknownRider):  # type: ignore[no-untyped-def]
        return jsonify(error_body("rider_not_found", str(exc))), 404

    @app.errorhandler(NotConnected)
    def not_connected(exc: NotConnected):  # type: ignore[no-untyped-def]
        return jsonify(error_body("not_connected", str(exc))), 409

    @app.errorhandler(psycopg.OperationalError)
    def database_unavailable(exc: psycopg.OperationalError):  # type: ignore[no-untyped-def]
        # Unreachable, refused, too slow (connect or statement timeout, the pool's
        # checkout), or gone mid-request (psycopg_pool's PoolTimeout is one too). The
        # work of the request was rolled back. Logged without the message: a connection
        # error's text names the server, and the class and SQLSTATE say enough.
        log.warning(
            "database unavailable",
            extra={"error": type(exc).__name__, "sqlstate": exc.sqlstate},
        )
        message = "the database is unavailable or too slow right now; try again shortly"
        return jsonify(error_body("database_unavailable", message)), 503

    @app.errorhandler(RequestEntityTooLarge)
    def payload_too_large(exc: RequestEntityTooLarge):  # type: ignore[no-untyped-def]
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = "the request body is too large"
        if limit:
            message += f" (at most {limit} bytes)"
        return jsonify(error_body("payload_too_large", message)), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify(error_body(code, exc.description or exc.name or "error"))
        # The exception's own headers but its HTML Content-Type: a 405's `Allow` (RFC
        # 9110 requires it; werkzeug knows the rule's methods), a 401's WWW-Authenticate.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return response, exc.code or 500, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        # The database work of the request was rolled back by its connection block.
        log.error("unhandled error", exc_info=exc)
        return jsonify(error_body("internal_error", "internal error")), 500
