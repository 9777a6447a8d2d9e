"""Is the service able to work?"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import models

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)


def database_ok(db: Database) -> bool:
    """True when the database answers (and its migrations are applied)."""
    try:
        with db.connection() as conn:
            models.ping(conn)
        return True
    except Exception as exc:  # a health check reports, it does not raise
        log.warning("database check failed", extra={"error": type(exc).__name__})
        return False
