"""A rider's own endpoints (Supabase access token): Sync now and its state."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("riders", __name__, url_prefix="/api/riders")
