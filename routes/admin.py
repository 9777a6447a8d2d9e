"""Operator endpoints, protected by the cron bearer: status and actions on riders.

Unknown riders answer 404 and riders without a connection 409 (routes/errors.py).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from routes.errors import ApiError
from routes.guards import require_cron_secret, runtime
from services.discovery import request_full_refresh
from services.duplicate_overrule import overrule
from services.duplicates import OverruleError
from services.status import (
    ITEM_PAGE,
    ITEM_PAGE_MAX,
    RIDER_PAGE,
    RIDER_PAGE_MAX,
    admin_status,
    clean_rider_name,
    rename_rider,
    reset_rider,
    rider_detail,
    set_auto_sync,
)

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
bp.before_request(require_cron_secret)


def _count(raw: str | None, field: str, low: int, high: int, default: int) -> int:
    """A whole number query parameter from `low` to `high`, or the default when absent."""
    if raw is None:
        return default
    text = raw.strip(" \t")  # spaces and tabs, as openapi.yaml says
    if not text.isascii() or not text.isdigit() or len(text) > 10 or not low <= int(text) <= high:
        raise ApiError(
            400, "invalid_parameter", f"{field} must be an integer from {low} to {high}",
            field=field,
        )  # fmt: skip
    return int(text)


@bp.get("/status")
def status():  # type: ignore[no-untyped-def]
    """The fleet's state for an operator; `?rider_id=` narrows to one rider in full."""
    # A rider's items, a page at a time (checked with or without rider_id).
    items = request.args.get("items")
    if items is not None and items.strip(" \t") != "all":
        raise ApiError(400, "invalid_parameter", "items must be all", field="items")
    item_offset = _count(request.args.get("items_offset"), "items_offset", 0, 10**9, 0)
    item_limit = _count(request.args.get("items_limit"), "items_limit", 1, ITEM_PAGE_MAX, ITEM_PAGE)
    raw = request.args.get("rider_id")
    if raw is None:
        offset = _count(request.args.get("riders_offset"), "riders_offset", 0, 10**9, 0)
        limit = _count(
            request.args.get("riders_limit"), "riders_limit", 1, RIDER_PAGE_MAX, RIDER_PAGE
        )
        return jsonify(admin_status(runtime(), riders_offset=offset, riders_limit=limit))
    text = raw.strip(" \t")  # spaces and tabs, as openapi.yaml says
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ApiError(400, "invalid_parameter", "rider_id must be a rider's id", field="rider_id")
    detail = rider_detail(
        runtime(), int(text), items_offset=item_offset if items else None, items_limit=item_limit
    )
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


@bp.put("/riders/<int:rider_id>/name")
def name(rider_id: int):  # type: ignore[no-untyped-def]
    """The operator's name for a rider: `{"name": "Anna B."}`; kept over Strava's."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "name" not in body:
        raise ApiError(400, "invalid_parameter", 'the body must be {"name": "..."}', field="name")
    try:
        given = clean_rider_name(body["name"])
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", str(exc), field="name") from None
    return jsonify(rename_rider(runtime(), rider_id, given))


@bp.post("/riders/<int:rider_id>/duplicates")
def duplicates(rider_id: int):  # type: ignore[no-untyped-def]
    """Overrule the duplicate rule for a pair of the rider's activities (Strava ids):
    `{"activity_ids": [a, b], "verdict": "distinct" | "duplicate" | "auto", "keep": a}`."""
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    ids, keep = body.get("activity_ids"), body.get("keep")
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise ApiError(
            400, "invalid_parameter", "activity_ids: two activity ids", field="activity_ids"
        )
    if keep is not None and type(keep) is not int:
        raise ApiError(400, "invalid_parameter", "keep: an activity id", field="keep")
    verdict = body.get("verdict")
    try:
        answer = overrule(runtime(), rider_id, activity_ids=ids, verdict=str(verdict), keep=keep)
    except OverruleError as exc:
        raise ApiError(400, "invalid_parameter", exc.message, field=exc.field) from None
    return jsonify(answer)
