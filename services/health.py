"""The health check behind `GET /api/health`: does the database answer, migrations applied?"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

import models

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)


def database_ok(db: Database) -> bool:
    """True when the database answers (and its migrations are applied); False when the
    check fails otherwise (the database answering with an error, a broken migration).

    A database that cannot be reached in time (psycopg.OperationalError: refused, timed
    out, the pool's checkout) is not caught here: it is the 503 `database_unavailable`
    every endpoint answers (routes/errors.py).
    """
    try:
        with db.connection() as conn:
            models.base.ping(conn)
        return True
    except psycopg.OperationalError:
        raise
    except Exception as exc:  # a health check reports, it does not raise
        log.warning("database check failed", extra={"error": type(exc).__name__})
        return False
