"""Operator endpoints, protected by the cron bearer: status and actions on riders.

Unknown riders answer 404 and riders without a connection 409 (routes/errors.py).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from routes.errors import ApiError
from routes.guards import require_cron_secret, runtime
from services.discovery import request_full_refresh
from services.status import admin_status, reset_rider, rider_detail, set_auto_sync

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
bp.before_request(require_cron_secret)


@bp.get("/status")
def status():  # type: ignore[no-untyped-def]
    """The fleet's state for an operator; `?rider_id=` narrows to one rider in full."""
    raw = request.args.get("rider_id")
    if raw is None:
        return jsonify(admin_status(runtime()))
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ApiError(400, "invalid_parameter", "rider_id must be a rider's id", field="rider_id")
    detail = rider_detail(runtime(), int(text))
    if detail is None:
        raise ApiError(404, "rider_not_found", f"no rider with id {text}")
    return jsonify(detail)


@bp.post("/riders/<int:rider_id>/full-refresh")
def full_refresh(rider_id: int):  # type: ignore[no-untyped-def]
    """Queue a new walk of the rider's whole history (rows stay readable throughout)."""
    return jsonify(request_full_refresh(runtime(), rider_id)), 202


@bp.post("/riders/<int:rider_id>/reset")
def reset(rider_id: int):  # type: ignore[no-untyped-def]
    """Clear the rider's backoff and failure count and release its lease."""
    return jsonify(reset_rider(runtime(), rider_id))


@bp.post("/riders/<int:rider_id>/pause")
def pause(rider_id: int):  # type: ignore[no-untyped-def]
    """Stop the scheduled sync for this rider (Sync now still works)."""
    return jsonify(set_auto_sync(runtime(), rider_id, enabled=False))


@bp.post("/riders/<int:rider_id>/resume")
def resume(rider_id: int):  # type: ignore[no-untyped-def]
    """Resume the scheduled sync for this rider."""
    return jsonify(set_auto_sync(runtime(), rider_id, enabled=True))
