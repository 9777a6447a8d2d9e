"""The shared Strava rate budget: the one row of what Strava's headers said, and requests
counted by class and window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.base import Conn


@dataclass
class BudgetRow:
    limit_15min: int
    limit_daily: int
    read_limit_15min: int
    read_limit_daily: int
    usage_15min: int
    usage_daily: int
    read_usage_15min: int
    read_usage_daily: int
    window_start: datetime
    day_start: datetime
    blocked_until: datetime | None
    blocked_reason: str | None
    headers_seen_at: datetime | None
    # Of the usage, what other clients of the application used (the rest is reserved).
    external_usage_15min: int = 0
    external_usage_daily: int = 0
    external_read_usage_15min: int = 0
    external_read_usage_daily: int = 0


_BUDGET_FIELDS = list(BudgetRow.__dataclass_fields__)


def read_rate_budget(conn: Conn, *, for_update: bool = False) -> BudgetRow:
    """The application's budget row (locked with for_update, so reservations are atomic)."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        f"select {', '.join(_BUDGET_FIELDS)} from strava_rate_budget where id = 1{lock}"
    ).fetchone()
    if row is None:  # the migration inserts it; recreate if someone deleted it
        # (its windows start at the epoch, so the first reservation rolls them to the clock)
        conn.execute("insert into strava_rate_budget (id) values (1) on conflict do nothing")
        return read_rate_budget(conn, for_update=for_update)
    return BudgetRow(**row)


def count_request(
    conn: Conn, *, window_start: datetime, work_class: str, requests: int = 1
) -> None:
    """Strava requests reserved by `work_class` in the window starting `window_start`
    (a negative count gives back a block's unused part)."""
    conn.execute(
        """
        insert into strava_request_windows as w (window_start, work_class, requests)
        values (%(window)s, %(class)s, greatest(0, %(n)s))
        on conflict (window_start, work_class)
        do update set requests = greatest(0, w.requests + %(n)s)
        """,
        {"window": window_start, "class": work_class, "n": requests},
    )


def window_class_requests(conn: Conn, *, window_start: datetime) -> dict[str, int]:
    """Requests each class has reserved in the window (read under the budget's lock)."""
    rows = conn.execute(
        "select work_class, requests from strava_request_windows where window_start = %s",
        (window_start,),
    ).fetchall()
    return {r["work_class"]: int(r["requests"]) for r in rows}


def class_requests_per_day(conn: Conn, *, work_class: str, day_start: datetime) -> float:
    """The class's requests a day, on average over the seven days before `day_start`."""
    row = conn.execute(
        """
        select coalesce(sum(requests), 0) / 7.0 as per_day from strava_request_windows
         where window_start >= %(day)s - interval '7 days' and window_start < %(day)s
           and work_class = %(class)s
        """,
        {"day": day_start, "class": work_class},
    ).fetchone()
    return float(row["per_day"]) if row else 0.0


def requests_by_class(conn: Conn, *, since: datetime) -> list[dict[str, Any]]:
    """Requests per window and class from `since` on, oldest window first."""
    return conn.execute(
        """
        select window_start, work_class, requests from strava_request_windows
         where window_start >= %s order by window_start, work_class
        """,
        (since,),
    ).fetchall()


def prune_request_windows(conn: Conn, *, before: datetime) -> int:
    """Forget the request counts of windows that started before `before`."""
    return conn.execute(
        "delete from strava_request_windows where window_start < %s", (before,)
    ).rowcount


def save_rate_budget(conn: Conn, budget: BudgetRow, *, now: datetime) -> None:
    """Write the budget row back at `now` (the caller holds its lock)."""
    conn.execute(
        f"""
        update strava_rate_budget
           set {", ".join(f"{f} = %({f})s" for f in _BUDGET_FIELDS)}, updated_at = %(now)s
         where id = 1
        """,
        {**budget.__dict__, "now": now},
    )


def class_requests(conn: Conn, *, window_start: datetime, day_start: datetime) -> dict[str, Any]:
    """Requests each class sent in the window starting `window_start` and since
    `day_start`, and its average a day over the seven days before `day_start`."""
    rows = conn.execute(
        """
        select work_class,
               coalesce(sum(requests) filter (where window_start = %(window)s), 0) as window,
               coalesce(sum(requests) filter (where window_start >= %(day)s), 0) as today,
               coalesce(sum(requests) filter (where window_start < %(day)s), 0) / 7.0
                   as per_day
          from strava_request_windows
         where window_start >= %(day)s - interval '7 days'
         group by work_class
        """,
        {"window": window_start, "day": day_start},
    ).fetchall()
    return {r["work_class"]: r for r in rows}
