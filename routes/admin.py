"""Operator endpoints, protected by the cron bearer: status and actions on riders."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/api/admin")


@bp.before_request
def _require_cron_secret() -> None:
    from routes.guards import require_cron_secret

    require_cron_secret()


# --- status (issue 4) ---

# --- rider actions ---
