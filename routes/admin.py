"""Operator endpoints, protected by the cron bearer: status and actions on riders."""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("admin", __name__, url_prefix="/api/admin")


@bp.before_request
def _require_cron_secret() -> None:
    from routes.guards import require_cron_secret

    require_cron_secret()


# --- status (issue 4) ---


@bp.get("/status")
def status():  # type: ignore[no-untyped-def]
    """The fleet's state for an operator; `?rider_id=` narrows to one rider in full."""
    from flask import request

    from routes.errors import ApiError
    from routes.guards import runtime
    from services.status import admin_status, rider_detail

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


# --- rider actions ---


def _rider_action(rider_id: int, action):  # type: ignore[no-untyped-def]
    """Run an operator action; unknown riders are 404, riders without a connection 409."""
    from routes.errors import ApiError
    from routes.guards import runtime
    from services.status import NotConnected, UnknownRider

    try:
        return jsonify(action(runtime(), rider_id))
    except UnknownRider:
        raise ApiError(404, "rider_not_found", f"no rider with id {rider_id}") from None
    except NotConnected:
        raise ApiError(409, "not_connected", "the rider has no Strava connection") from None


@bp.post("/riders/<int:rider_id>/reset")
def reset(rider_id: int):  # type: ignore[no-untyped-def]
    """Clear the rider's backoff and failure count and release its lease."""
    from services.status import reset_rider

    return _rider_action(rider_id, reset_rider)


@bp.post("/riders/<int:rider_id>/pause")
def pause(rider_id: int):  # type: ignore[no-untyped-def]
    """Stop the scheduled sync for this rider (Sync now still works)."""
    from services.status import set_auto_sync

    return _rider_action(rider_id, lambda rt, rid: set_auto_sync(rt, rid, enabled=False))


@bp.post("/riders/<int:rider_id>/resume")
def resume(rider_id: int):  # type: ignore[no-untyped-def]
    """Resume the scheduled sync for this rider."""
    from services.status import set_auto_sync

    return _rider_action(rider_id, lambda rt, rid: set_auto_sync(rt, rid, enabled=True))


@bp.post("/riders/<int:rider_id>/full-refresh")
def full_refresh(rider_id: int):  # type: ignore[no-untyped-def]
    """Queue a new walk of the rider's whole history (rows stay readable throughout)."""
    from routes.errors import ApiError
    from routes.guards import runtime
    from services.discovery import NoActiveConnection, UnknownRider, request_full_refresh

    try:
        walk = request_full_refresh(runtime(), rider_id)
    except UnknownRider:
        raise ApiError(404, "rider_not_found", f"no rider with id {rider_id}") from None
    except NoActiveConnection:
        raise ApiError(
            409, "not_connected", "the rider has no active Strava connection to walk"
        ) from None
    return jsonify(walk), 202
