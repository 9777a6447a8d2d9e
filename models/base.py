"""The store's shared types: the connection every function takes, and a liveness check."""

from __future__ import annotations

import psycopg
from psycopg.rows import DictRow

# Every connection of the service returns rows as dicts (db.py sets the row factory).
Conn = psycopg.Connection[DictRow]


def ping(conn: Conn) -> None:
    """A trivial query: is the database there?"""
    conn.execute("select 1")
