"""The application factory: settings, logging, database, blueprints, error handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from config import load_settings
from db import Database, database_password, resolve_database_url
from logging_setup import configure_logging
from routes import register_blueprints
from routes.errors import register_error_handlers
from services.calls import Runtime
from services.rider_auth import TokenVerifier

# The service takes tiny JSON bodies (`{"limit": 50}`); anything larger is refused with 413
# `payload_too_large` before a route runs.
MAX_CONTENT_LENGTH = 16 * 1024


def create_app(
    overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> Flask:
    """Build the app from defaults, then `.env` and the environment, then `overrides`."""
    settings = load_settings(environ, overrides)
    configure_logging(
        secrets=[
            settings.cron_secret,
            settings.strava_client_secret,
            settings.supabase_jwt_secret,
            database_password(settings.database_url),
        ]
    )
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.before_request(_bounded_body)
    db = Database(resolve_database_url(settings), max_size=settings.sync_workers + 4)
    app.extensions["strava_sync"] = Runtime(settings=settings, db=db)
    # One verifier per app, so the JWKS cache lives across requests.
    app.extensions["rider_tokens"] = TokenVerifier.from_settings(settings)
    register_blueprints(app)
    register_error_handlers(app)
    return app


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
