"""The application factory: settings, logging, database, blueprints, error handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from commands import register_commands
from config import load_settings
from db import Database, database_password, resolve_database_url
from logging_setup import configure_logging
from routes import register_blueprints
from routes.errors import register_error_handlers
from services.calls import Runtime
from services.rider_auth import TokenVerifier
from services.sealing import sealer_for
from services.sharing import club_settings_writer

log = logging.getLogger(__name__)

# The service takes tiny JSON bodies (`{"limit": 50}`); anything larger is refused with 413
# `payload_too_large` before a route runs.
MAX_CONTENT_LENGTH = 16 * 1024

# The rider endpoints the club's site calls from its own origin (CORS). The cron and
# admin endpoints are never opened to other origins.
CORS_PREFIXES = ("/api/riders/me/",)
CORS_PATHS = frozenset({"/api/strava/connect", "/api/strava/disconnect"})
CORS_REQUEST_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = 600


def create_app(
    overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> Flask:
    """Build the app from defaults, then `.env` and the environment, then `overrides`."""
    settings = load_settings(environ, overrides)
    secrets = [
        settings.cron_secret,
        settings.strava_client_secret,
        settings.supabase_jwt_secret,
        settings.strava_webhook_verify_token,
        settings.alert_webhook_url,
        database_password(settings.database_url),
    ]
    configure_logging(secrets=secrets)
    for warning in settings.config_warnings:
        log.warning(warning)
    database_url = resolve_database_url(settings)  # first: on Vercel it names DATABASE_URL
    sealer, made_key = sealer_for(settings)
    configure_logging(secrets=[*secrets, *sealer.secret_texts()])  # the keys, local one too
    if made_key is not None:
        log.info("made a token key for local runs", extra={"path": str(made_key.resolve())})
    app = Flask(__name__, static_folder=None)  # web/ is served by routes/web.py alone
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.before_request(_bounded_body)
    db = Database(
        database_url,
        max_size=settings.sync_workers + 4,
        after_migrate=club_settings_writer(settings),
    )
    app.extensions["strava_sync"] = Runtime(settings=settings, db=db, sealer=sealer)
    # One verifier per app, so the JWKS cache lives across requests.
    app.extensions["rider_tokens"] = TokenVerifier.from_settings(settings)
    register_blueprints(app)
    register_error_handlers(app)
    register_cors(app, settings.allowed_origins)
    register_commands(app)
    return app


def is_cors_path(path: str) -> bool:
    return path in CORS_PATHS or path.startswith(CORS_PREFIXES)


def register_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS for the rider endpoints: exact origins from ALLOWED_ORIGINS, no credentials
    (the rider's token travels in the Authorization header, not in a cookie).

    A listed origin's preflight gets 204 with the route's methods and the Authorization
    header; every answer of these endpoints (errors included) carries Vary: Origin and,
    for a listed origin, Access-Control-Allow-Origin. An unlisted origin gets no CORS
    header at all (its preflight is Flask's plain OPTIONS answer), so the browser blocks it.
    """
    allowed = frozenset(origins)

    def listed_origin() -> str | None:
        origin = request.headers.get("Origin", "").lower()
        return origin if origin in allowed and is_cors_path(request.path) else None

    def preflight() -> Response | None:
        if request.method != "OPTIONS" or request.url_rule is None or listed_origin() is None:
            return None
        if "Access-Control-Request-Method" not in request.headers:
            return None  # a plain OPTIONS request, not a preflight
        adapter = app.create_url_adapter(request)
        allowed = adapter.allowed_methods() if adapter is not None else []
        methods = sorted(set(allowed) - {"HEAD", "OPTIONS"})
        response = Response(status=204)
        del response.headers["Content-Type"]
        response.headers["Access-Control-Allow-Methods"] = ", ".join([*methods, "OPTIONS"])
        response.headers["Access-Control-Allow-Headers"] = CORS_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        return response

    def cors_headers(response: Response) -> Response:
        if not is_cors_path(request.path):
            return response
        response.vary.add("Origin")
        origin = listed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        return response

    app.before_request(preflight)
    app.after_request(cors_headers)


def _bounded_body() -> None:
    """Read the body before any route (and its database work) runs, so a body over
    MAX_CONTENT_LENGTH is refused even by a route that would never read it.

    Werkzeug raises 413 for a declared Content-Length over the limit, but a streamed
    (chunked) body is only cut off at the limit, silently: one that reaches it is
    refused here (a chunked body of exactly the limit with it).
    """
    data = request.get_data(cache=True)
    if request.content_length is None and len(data) >= MAX_CONTENT_LENGTH:
        raise RequestEntityTooLarge()
