"""Connecting a rider's Strava account: connect, callback, disconnect."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("strava_oauth", __name__, url_prefix="/api/strava")
