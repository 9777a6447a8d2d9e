"""Strava's push subscription callback: the validation GET and the events' POSTs.

No authentication is possible (events carry no signature): an event is only a hint,
looked at again with Strava before anything is written or deleted (services/events.py).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from routes.errors import ApiError
from routes.guards import runtime
from services.events import receive
from services.webhooks import validation_answer

bp = Blueprint("webhook", __name__, url_prefix="/api/strava")


@bp.get("/webhook")
def validate():  # type: ignore[no-untyped-def]
    status, body = validation_answer(
        request.args.to_dict(), runtime().settings.strava_webhook_verify_token
    )
    if status == 503:
        raise ApiError(503, "not_configured", "STRAVA_WEBHOOK_VERIFY_TOKEN is not set")
    if status == 403:
        raise ApiError(403, "forbidden", "hub.mode, hub.verify_token or hub.challenge is wrong")
    return jsonify(body)


@bp.post("/webhook")
def event():  # type: ignore[no-untyped-def]
    # Any body is answered 200 unless it could not be stored: Strava retries only then.
    body = request.get_json(silent=True, force=True)
    return jsonify(receive(runtime(), body).as_dict())
