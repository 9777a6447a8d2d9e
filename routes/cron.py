"""The cron endpoints: bearer, `limit`, one service call, the contract's JSON."""

from __future__ import annotations

from flask import Blueprint, jsonify

from routes.guards import parse_flag, parse_limit, require_cron_secret, runtime
from services.discovery import run_discover
from services.enrichment import run_enrich
from services.events import run_events
from services.sync import run_sync
from services.weather import run_weather

bp = Blueprint("cron", __name__, url_prefix="/api/cron")

# GET is for Vercel Cron, which can only send GET with the bearer header.
CRON_METHODS = ["GET", "POST"]


@bp.route("/sync-strava", methods=CRON_METHODS)
def sync_strava():  # type: ignore[no-untyped-def]
    require_cron_secret()
    limit = parse_limit(default=50)
    everyone = parse_flag("all")  # the operator's "everyone now"
    return jsonify(run_sync(runtime(), limit=limit, everyone=everyone))


@bp.route("/discover", methods=CRON_METHODS)
def discover():  # type: ignore[no-untyped-def]
    require_cron_secret()
    limit = parse_limit(default=5)
    return jsonify(run_discover(runtime(), limit=limit))


@bp.route("/enrich", methods=CRON_METHODS)
def enrich():  # type: ignore[no-untyped-def]
    require_cron_secret()
    limit = parse_limit(default=15)
    return jsonify(run_enrich(runtime(), limit=limit))


@bp.route("/weather", methods=CRON_METHODS)
def weather():  # type: ignore[no-untyped-def]
    require_cron_secret()
    limit = parse_limit(default=50)
    return jsonify(run_weather(runtime(), limit=limit))


@bp.route("/events", methods=CRON_METHODS)
def events():  # type: ignore[no-untyped-def]
    require_cron_secret()
    limit = parse_limit(default=50)
    return jsonify(run_events(runtime(), limit=limit))
