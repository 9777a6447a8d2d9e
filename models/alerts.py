"""Operator alerts: the open ones (one per kind and subject), what is left to send, the
club-wide evaluation turn and the daily digest, and what the alerts read (riders who
must reconnect)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.base import Conn


@dataclass(frozen=True)
class StoredAlert:
    """An alert as stored: open (cleared_at null) or cleared."""

    id: int
    kind: str
    subject: str
    title: str
    detail: str
    opened_at: datetime
    sent_at: datetime | None
    cleared_at: datetime | None
    clear_sent_at: datetime | None
    attempts: int


_COLUMNS = (
    "id, kind, subject, title, detail, opened_at, sent_at, cleared_at, clear_sent_at, attempts"
)


def take_evaluation_turn(conn: Conn, *, every_s: int, now: datetime) -> bool:
    """Whether this call evaluates the alerts now: the first `every_s` after the last,
    decided in one statement (the row stays locked until this evaluation commits), so
    overlapping calls never both do."""
    row = conn.execute(
        """
        insert into alert_checks as a (id, checked_at) values (1, %(now)s)
        on conflict (id) do update set checked_at = excluded.checked_at
         where a.checked_at is null
               or a.checked_at <= %(now)s - make_interval(secs => %(every)s)
        returning 1 as taken
        """,
        {"now": now, "every": every_s},
    ).fetchone()
    return row is not None


def open_alerts(conn: Conn) -> list[StoredAlert]:
    """Every open alert, oldest first."""
    rows = conn.execute(
        f"select {_COLUMNS} from operator_alerts where cleared_at is null order by opened_at, id"
    ).fetchall()
    return [StoredAlert(**row) for row in rows]


def open_alert(
    conn: Conn, *, kind: str, subject: str, title: str, detail: str, now: datetime
) -> None:
    """Open an alert unless one of this kind and subject is open (its text is updated)."""
    conn.execute(
        """
        insert into operator_alerts (kind, subject, title, detail, opened_at)
        values (%s, %s, %s, %s, %s)
        on conflict (kind, subject) where cleared_at is null
        do update set title = excluded.title, detail = excluded.detail
        """,
        (kind, subject, title, detail, now),
    )


def clear_alert(conn: Conn, *, alert_id: int, now: datetime) -> None:
    """The condition is gone. An alert never sent needs no "cleared" message."""
    conn.execute(
        """
        update operator_alerts
           set cleared_at = %(now)s,
               clear_sent_at = case when sent_at is null then %(now)s end
         where id = %(id)s and cleared_at is null
        """,
        {"now": now, "id": alert_id},
    )


def unsent(conn: Conn, *, limit: int) -> list[StoredAlert]:
    """Openings and clearings not yet delivered, oldest first."""
    rows = conn.execute(
        f"""
        select {_COLUMNS} from operator_alerts
         where (sent_at is null and cleared_at is null)
            or (cleared_at is not null and clear_sent_at is null)
         order by opened_at, id limit %s
        """,
        (limit,),
    ).fetchall()
    return [StoredAlert(**row) for row in rows]


def mark_sent(conn: Conn, *, alert_ids: list[int], cleared: bool, now: datetime) -> None:
    """Record the delivery of these alerts' opening (or their clearing)."""
    column = "clear_sent_at" if cleared else "sent_at"
    conn.execute(f"update operator_alerts set {column} = %s where id = any(%s)", (now, alert_ids))


def count_attempt(conn: Conn, *, alert_ids: list[int]) -> None:
    """A delivery failed: it is tried again at the next evaluation."""
    conn.execute(
        "update operator_alerts set attempts = attempts + 1 where id = any(%s)", (alert_ids,)
    )


def prune_cleared(conn: Conn, *, before: datetime) -> None:
    """Forget alerts cleared (and said so) long ago."""
    conn.execute(
        "delete from operator_alerts where cleared_at < %s and clear_sent_at is not null",
        (before,),
    )


def digest_sent_at(conn: Conn) -> datetime | None:
    row = conn.execute("select digest_sent_at from alert_checks where id = 1").fetchone()
    return row["digest_sent_at"] if row else None


def record_digest(conn: Conn, *, now: datetime) -> None:
    conn.execute(
        "insert into alert_checks as a (id, digest_sent_at) values (1, %(now)s)"
        " on conflict (id) do update set digest_sent_at = excluded.digest_sent_at",
        {"now": now},
    )


def riders_to_reconnect(conn: Conn, *, limit: int) -> list[dict[str, Any]]:
    """Riders whose Strava access was withdrawn or expired for good (needs_reauth), by
    their partial index: never every rider."""
    return conn.execute(
        """
        select c.rider_id, r.name from strava_connections c join riders r on r.id = c.rider_id
         where c.status = 'needs_reauth' order by c.rider_id limit %s
        """,
        (limit,),
    ).fetchall()
