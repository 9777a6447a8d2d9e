"""The club's Strava rate budget, shared by every call through one row in Postgres.

Strava's limits belong to the application, so overlapping calls must draw on one
budget. Each request is reserved atomically before it is sent; Strava's headers then
correct the counts (limits differ between applications: the headers are trusted, the
documented defaults only stand in until the first answer). Cron work keeps a reserve
free for riders' Sync now. Nothing ever sleeps waiting for a window: a call that meets
the limit stops and says when it resets.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from threading import Lock
from typing import TYPE_CHECKING, Any

import models
from config import Settings
from services import planning
from services.clock import Clock, iso, utcnow
from services.schedule import WorkClass
from services.strava import (
    RateLimited,
    RateLimitSnapshot,
    next_day_reset,
    next_window_reset,
)

if TYPE_CHECKING:
    from db import Database

INACTIVE_APP_PAUSE = timedelta(hours=1)


# --- pure decisions ------------------------------------------------------------------


def window_start(now: datetime) -> datetime:
    """The start of the 15-minute window holding `now`."""
    return next_window_reset(now) - timedelta(minutes=15)


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day."""
    return next_day_reset(now) - timedelta(days=1)


def roll_windows(budget: models.budget.BudgetRow, now: datetime) -> models.budget.BudgetRow:
    """Zero the counts of windows that have reset since the row was written."""
    current_window, current_day = window_start(now), day_start(now)
    if budget.window_start < current_window:
        budget = replace(budget, usage_15min=0, read_usage_15min=0, window_start=current_window)
    if budget.day_start < current_day:
        budget = replace(budget, usage_daily=0, read_usage_daily=0, day_start=current_day)
    if budget.blocked_until is not None and budget.blocked_until <= now:
        budget = replace(budget, blocked_until=None, blocked_reason=None)
    return budget


def reserve_size(budget: models.budget.BudgetRow, fraction: float) -> int:
    """Requests held back for Sync now: a fraction of the 15-minute read window."""
    return math.ceil(fraction * min(budget.limit_15min, budget.read_limit_15min))


def headroom(budget: models.budget.BudgetRow) -> tuple[int, int]:
    """Requests left in the 15-minute and daily windows (overall and read, the lower)."""
    window = min(
        budget.limit_15min - budget.usage_15min, budget.read_limit_15min - budget.read_usage_15min
    )
    day = min(
        budget.limit_daily - budget.usage_daily, budget.read_limit_daily - budget.read_usage_daily
    )
    return window, day


def try_reserve(
    budget: models.budget.BudgetRow, now: datetime, *, held_back: int
) -> tuple[models.budget.BudgetRow, RateLimited | None]:
    """Take one request, keeping `held_back` free in both windows; or say why not."""
    budget = roll_windows(budget, now)
    if budget.blocked_until is not None:
        reason = budget.blocked_reason or "blocked"
        return budget, RateLimited(
            f"Strava calls paused ({reason})", resets_at=budget.blocked_until
        )
    window, day = headroom(budget)
    if day - 1 < held_back:
        return budget, RateLimited(
            "daily Strava budget spent", resets_at=next_day_reset(now), window="daily"
        )
    if window - 1 < held_back:
        return budget, RateLimited(
            "15-minute Strava budget spent", resets_at=next_window_reset(now)
        )
    return (
        replace(
            budget,
            usage_15min=budget.usage_15min + 1,
            usage_daily=budget.usage_daily + 1,
            read_usage_15min=budget.read_usage_15min + 1,
            read_usage_daily=budget.read_usage_daily + 1,
        ),
        None,
    )


def apply_snapshot(
    budget: models.budget.BudgetRow,
    snapshot: RateLimitSnapshot | None,
    *,
    status: int,
    now: datetime,
) -> models.budget.BudgetRow:
    """Correct the budget from what Strava's headers said; a 429 blocks until the reset.

    Usage only ever goes up within a window: requests reserved by other calls may still be
    in flight, and Strava's count lags them.
    """
    budget = roll_windows(budget, now)
    if snapshot is not None:
        read_limit_15 = snapshot.read_limit_15min or budget.read_limit_15min
        read_limit_day = snapshot.read_limit_daily or budget.read_limit_daily
        budget = replace(
            budget,
            limit_15min=snapshot.limit_15min,
            limit_daily=snapshot.limit_daily,
            read_limit_15min=read_limit_15,
            read_limit_daily=read_limit_day,
            usage_15min=max(budget.usage_15min, snapshot.usage_15min),
            usage_daily=max(budget.usage_daily, snapshot.usage_daily),
            read_usage_15min=max(budget.read_usage_15min, snapshot.read_usage_15min or 0),
            read_usage_daily=max(budget.read_usage_daily, snapshot.read_usage_daily or 0),
            headers_seen_at=now,
        )
    if status == 429:
        daily = snapshot is not None and snapshot.daily_exhausted()
        budget = replace(
            budget,
            blocked_until=next_day_reset(now) if daily else next_window_reset(now),
            blocked_reason="strava_429_daily" if daily else "strava_429",
        )
    return budget


def resets_at(budget: models.budget.BudgetRow, now: datetime, *, held_back: int = 0) -> datetime:
    """When the binding window resets: a block's end, midnight if the day is spent, else
    the next quarter hour."""
    budget = roll_windows(budget, now)
    if budget.blocked_until is not None:
        return budget.blocked_until
    if headroom(budget)[1] <= held_back:
        return next_day_reset(now)
    return next_window_reset(now)


def describe(
    budget: models.budget.BudgetRow, now: datetime, *, held_back: int = 0
) -> dict[str, Any]:
    """The contract's `rate_limit` object."""
    budget = roll_windows(budget, now)
    return {
        "usage_15min": budget.usage_15min,
        "limit_15min": budget.limit_15min,
        "usage_daily": budget.usage_daily,
        "limit_daily": budget.limit_daily,
        "read_usage_15min": budget.read_usage_15min,
        "read_limit_15min": budget.read_limit_15min,
        "read_usage_daily": budget.read_usage_daily,
        "read_limit_daily": budget.read_limit_daily,
        "resets_at": iso(resets_at(budget, now, held_back=held_back)),
        "window_resets_at": iso(next_window_reset(now)),
        "daily_resets_at": iso(next_day_reset(now)),
        "blocked_until": iso(budget.blocked_until) if budget.blocked_until else None,
        "blocked_reason": budget.blocked_reason,
        "sync_now_reserve": held_back,
    }


# --- the Postgres-backed gate --------------------------------------------------------


class RateBudget:
    """The RateGate one call hands its StravaClient.

    Once the budget refuses, the call remembers it and stops asking the database: every
    thread of the call then stops before its next request.
    """

    def __init__(
        self,
        db: Database,
        *,
        reserve_fraction: float,
        work_class: WorkClass,
        clock: Clock = utcnow,
        settings: Settings | None = None,
    ) -> None:
        self._db = db
        self._reserve_fraction = reserve_fraction
        self._for_sync_now = work_class is WorkClass.SYNC_NOW
        self._work_class = work_class
        self._clock = clock
        # With settings, each class keeps to its share of the window (services/planning).
        self._settings = settings
        self._caps: dict[tuple[WorkClass, datetime], int] = {}
        self._lock = Lock()
        self._thread = threading.local()  # a worker's class while it works as another
        self.refusal: RateLimited | None = None

    @contextmanager
    def working_as(self, work_class: WorkClass) -> Iterator[None]:
        """Count this thread's requests as `work_class` (an enrich call's recent races)."""
        previous = getattr(self._thread, "work_class", None)
        self._thread.work_class = work_class
        try:
            yield
        finally:
            self._thread.work_class = previous

    @property
    def work_class(self) -> WorkClass:
        """The class this thread's next request is counted as."""
        return getattr(self._thread, "work_class", None) or self._work_class

    def _held_back(self, budget: models.budget.BudgetRow) -> int:
        return 0 if self._for_sync_now else reserve_size(budget, self._reserve_fraction)

    def _share_refusal(
        self,
        conn: models.Conn,
        budget: models.budget.BudgetRow,
        work_class: WorkClass,
        now: datetime,
    ) -> RateLimited | None:
        """A refusal when `work_class` has used its share of this window (rolled `budget`,
        read under its lock, so overlapping calls of one class never overdraw it)."""
        if self._settings is None or work_class is WorkClass.SYNC_NOW:
            return None
        key = (work_class, budget.window_start)
        with self._lock:
            cap = self._caps.get(key)
        if cap is None:
            cap = planning.class_cap(conn, budget, self._settings, work_class, now)
            with self._lock:
                self._caps[key] = cap
        used = models.budget.class_requests_now(
            conn, window_start=budget.window_start, work_class=work_class.value
        )
        if used < cap:
            return None
        return RateLimited(
            f"the {work_class.value} share of this window is spent",
            resets_at=next_window_reset(now),
        )

    def check_share(self) -> bool:
        """Whether the call's class may send a request now (refusing it if not): a call
        whose share is spent claims no work."""
        if self.refusal is not None:
            return False
        now = self._clock()
        with self._db.connection() as conn:
            budget = roll_windows(models.budget.read_rate_budget(conn, for_update=True), now)
            refusal = self._share_refusal(conn, budget, self.work_class, now)
        if refusal is None:
            return True
        with self._lock:
            self.refusal = self.refusal or refusal
        return False

    def reserve(self) -> None:
        """Take one request from the shared budget, or raise RateLimited."""
        if self.refusal is not None:
            raise self.refusal
        now = self._clock()
        work_class = self.work_class
        with self._db.connection() as conn:
            budget = models.budget.read_rate_budget(conn, for_update=True)
            refusal = self._share_refusal(conn, roll_windows(budget, now), work_class, now)
            if refusal is None:
                budget, refusal = try_reserve(budget, now, held_back=self._held_back(budget))
                models.budget.save_rate_budget(conn, budget, now=now)
            if refusal is None:
                models.budget.count_request(
                    conn, window_start=budget.window_start, work_class=work_class.value
                )
        if refusal is not None:
            with self._lock:
                self.refusal = self.refusal or refusal
            raise refusal

    def record(self, snapshot: RateLimitSnapshot | None, *, status: int) -> None:
        """Fold an answer's headers (and a 429) into the shared budget."""
        now = self._clock()
        with self._db.connection() as conn:
            budget = models.budget.read_rate_budget(conn, for_update=True)
            budget = apply_snapshot(budget, snapshot, status=status, now=now)
            models.budget.save_rate_budget(conn, budget, now=now)
        if status == 429:
            with self._lock:
                self.refusal = self.refusal or RateLimited(
                    "Strava rate limit reached",
                    resets_at=budget.blocked_until or next_window_reset(now),
                )

    def pause_for_inactive_application(self) -> None:
        """Strava called the application inactive: stop everyone, probe again in an hour."""
        now = self._clock()
        with self._db.connection() as conn:
            budget = roll_windows(models.budget.read_rate_budget(conn, for_update=True), now)
            budget = replace(
                budget,
                blocked_until=now + INACTIVE_APP_PAUSE,
                blocked_reason="application_inactive",
            )
            models.budget.save_rate_budget(conn, budget, now=now)

    def describe(self) -> dict[str, Any]:
        """The contract's `rate_limit` object as the budget stands now."""
        with self._db.connection() as conn:
            budget = models.budget.read_rate_budget(conn)
        return describe(budget, self._clock(), held_back=self._held_back(budget))
