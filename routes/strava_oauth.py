"""Connecting a rider's Strava account: connect, callback, disconnect."""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, request

from routes.errors import ApiError
from routes.guards import runtime
from routes.riders import rider_identity
from services.connect import (
    ConnectError,
    disconnect,
    finish_connect,
    return_url,
    start_connect,
)

bp = Blueprint("strava_oauth", __name__, url_prefix="/api/strava")


@bp.post("/connect")
def connect():  # type: ignore[no-untyped-def]
    identity = rider_identity()
    base = runtime().settings.public_base_url or request.url_root.rstrip("/")
    try:
        url = start_connect(runtime(), identity, redirect_uri=f"{base}/api/strava/callback")
    except ConnectError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    return jsonify({"authorize_url": url})


@bp.get("/callback")
def callback():  # type: ignore[no-untyped-def]
    # The code arrives in this URL by OAuth's design: it is exchanged at once, never logged.
    back = runtime().settings.app_return_url
    try:
        connected = finish_connect(
            runtime(),
            state=request.args.get("state"),
            code=request.args.get("code"),
            scope=request.args.get("scope"),
            error=request.args.get("error"),
        )
    except ConnectError as exc:
        if back:
            return _no_referrer(redirect(return_url(back, strava="error", reason=exc.code)))
        raise ApiError(exc.status, exc.code, exc.message) from None
    if back:
        return _no_referrer(redirect(return_url(back, strava="connected")))
    return jsonify(
        {
            "connected": True,
            "rider_id": connected.rider_id,
            "athlete_id": connected.athlete_id,
            "scope": connected.scope,
            "reconnected": connected.reconnected,
        }
    )


@bp.post("/disconnect")
def disconnect_strava():  # type: ignore[no-untyped-def]
    identity = rider_identity()
    return jsonify(disconnect(runtime(), identity))


def _no_referrer(response):  # type: ignore[no-untyped-def]
    # The page we send the rider to never learns the callback URL (it held the code).
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
