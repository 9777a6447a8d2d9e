"""A rider's own endpoints (Supabase access token): Sync now and its state, and sharing
with the club."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from routes.errors import ApiError
from routes.guards import bearer_token, runtime
from services.rider_auth import (
    RiderAuthError,
    RiderAuthUnavailable,
    RiderIdentity,
    TokenVerifier,
)
from services.sharing import set_sharing
from services.sync_now import SyncNowRefused, sync_now, sync_state

bp = Blueprint("riders", __name__, url_prefix="/api/riders")


def rider_identity() -> RiderIdentity:
    """The signed-in rider of this request: 401 for a bad token, 503 when unconfigured."""
    verifier: TokenVerifier = current_app.extensions["rider_tokens"]
    try:
        return verifier.verify(bearer_token())
    except RiderAuthError as exc:
        raise ApiError(
            401, exc.code, exc.message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
    except RiderAuthUnavailable as exc:
        raise ApiError(503, exc.code, exc.message) from None


@bp.post("/me/sync")
def post_sync():  # type: ignore[no-untyped-def]
    identity = rider_identity()
    try:
        result = sync_now(runtime(), identity)
    except SyncNowRefused as exc:
        headers, extra = {}, dict(exc.extra)
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
            extra["retry_after_s"] = exc.retry_after_s
        raise ApiError(exc.status, exc.code, exc.message, headers=headers, extra=extra) from None
    return jsonify(result.body), result.status


@bp.get("/me/sync")
def get_sync():  # type: ignore[no-untyped-def]
    return jsonify(sync_state(runtime(), rider_identity()))


@bp.put("/me/sharing")
def put_sharing():  # type: ignore[no-untyped-def]
    identity = rider_identity()
    return jsonify(set_sharing(runtime(), identity, share=_share_field()))


def _share_field() -> bool:
    """The body `{"share": true}` or `{"share": false}`, and nothing else."""
    problem = 'the body must be the JSON object {"share": true} or {"share": false}'
    if not request.is_json:
        raise ApiError(400, "invalid_body", problem + " (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", problem)
    unknown = sorted(set(body) - {"share"})
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown field: {unknown[0]}", field=unknown[0])
    share = body.get("share")
    if not isinstance(share, bool):
        raise ApiError(400, "invalid_parameter", "share must be true or false", field="share")
    return share
