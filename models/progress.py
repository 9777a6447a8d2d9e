"""A rider's live progress: one message on Supabase Realtime Broadcast, sent from the
database (public.send_rider_progress, which calls realtime.send where Supabase's
`realtime` schema exists), at most once a second per rider whichever process sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from models.base import Conn


def send_progress(
    conn: Conn,
    *,
    rider_id: int,
    payload: dict[str, Any],
    finished: bool,
    min_interval_ms: int,
    now: datetime,
) -> bool:
    """Broadcast `payload` on the rider's private channel in this transaction (it goes
    out when the transaction commits), unless one went out less than `min_interval_ms`
    before `now`; a finished run's last message always goes. True if it was due."""
    row = conn.execute(
        "select public.send_rider_progress(%s, %s, %s, %s, %s) as due",
        (rider_id, Jsonb(payload), finished, now, min_interval_ms),
    ).fetchone()
    return bool(row and row["due"])


def forget_rider_progress(conn: Conn, *, rider_id: int) -> int:
    """Delete the progress messages Realtime still keeps for a rider (Supabase keeps
    them three days); none where there is no `realtime` schema."""
    found = conn.execute(
        "select to_regclass('realtime.messages') is not null as realtime,"
        " (select auth_user_id from riders where id = %s) as auth_user_id",
        (rider_id,),
    ).fetchone()
    if not found or not found["realtime"] or found["auth_user_id"] is None:
        return 0
    return conn.execute(
        "delete from realtime.messages where topic = %s and event = 'progress'",
        (f"rider:{found['auth_user_id']}",),
    ).rowcount
