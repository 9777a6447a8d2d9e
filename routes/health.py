"""Uptime checks: no auth, no secrets."""

from __future__ import annotations

from flask import Blueprint, jsonify

from routes.guards import runtime
from services.health import database_ok

bp = Blueprint("health", __name__, url_prefix="/api")


@bp.get("/health")
def health():  # type: ignore[no-untyped-def]
    ok = database_ok(runtime().db)
    return jsonify(
        {"status": "ok" if ok else "degraded", "database": "ok" if ok else "unreachable"}
    ), (200 if ok else 503)
