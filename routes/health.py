"""Uptime checks: no auth, no secrets."""

from __future__ import annotations

from flask import Blueprint, jsonify

from routes.guards import runtime
from services.health import database_ok

bp = Blueprint("health", __name__, url_prefix="/api")


@bp.get("/health")
def health():  # type: ignore[no-untyped-def]
    # A database that cannot be reached raises here: the 503 `database_unavailable` of
    # every endpoint, in the Error shape (routes/errors.py).
    ok = database_ok(runtime().db)
    return jsonify(
        {"status": "ok" if ok else "degraded", "database": "ok" if ok else "unreachable"}
    ), (200 if ok else 503)
