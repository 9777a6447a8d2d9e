"""The club's Strava rate budget, shared by every call through one row in Postgres.

Strava's limits belong to the application, so overlapping calls must draw on one
budget. A call reserves its requests a small block at a time, atomically under the row's
lock, within its class's share of the window as the row stands at that moment, and gives
back what it did not use when it ends; between blocks it takes no lock. Strava's headers
correct the row when they tell something it does not know (limits differ between
applications: the headers are trusted, the documented defaults only stand in until the
first answer; another client of the application may use requests too): the call then
gives back its block, so its next one, and every other call's, is decided on the
corrected row. Cron work keeps a reserve free for riders' Sync now. Nothing ever sleeps
waiting for a window: a call that meets the limit stops and says when it resets; a 429
stops the call that met it at once, the other calls of its process before their next
request and any other call at its next block (or its own 429).
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from threading import Lock, RLock
from typing import TYPE_CHECKING, Any

import models
from config import Settings
from services import planning, schedule
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
        budget = replace(
            budget,
            usage_15min=0,
            read_usage_15min=0,
            external_usage_15min=0,
            external_read_usage_15min=0,
            window_start=current_window,
        )
    if budget.day_start < current_day:
        budget = replace(
            budget,
            usage_daily=0,
            read_usage_daily=0,
            external_usage_daily=0,
            external_read_usage_daily=0,
            day_start=current_day,
        )
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


def take_block(
    budget: models.budget.BudgetRow, now: datetime, *, held_back: int, wanted: int
) -> tuple[models.budget.BudgetRow, int, RateLimited | None]:
    """Take up to `wanted` requests at once (at least one), keeping `held_back` free in
    both windows; or say why not."""
    budget = roll_windows(budget, now)
    if budget.blocked_until is not None:
        reason = budget.blocked_reason or "blocked"
        return (
            budget,
            0,
            RateLimited(f"Strava calls paused ({reason})", resets_at=budget.blocked_until),
        )
    window, day = headroom(budget)
    if day - 1 < held_back:
        return (
            budget,
            0,
            RateLimited("daily Strava budget spent", resets_at=next_day_reset(now), window="daily"),
        )
    if window - 1 < held_back:
        return (
            budget,
            0,
            RateLimited("15-minute Strava budget spent", resets_at=next_window_reset(now)),
        )
    n = max(1, min(wanted, window - held_back, day - held_back))
    return (
        replace(
            budget,
            usage_15min=budget.usage_15min + n,
            usage_daily=budget.usage_daily + n,
            read_usage_15min=budget.read_usage_15min + n,
            read_usage_daily=budget.read_usage_daily + n,
        ),
        n,
        None,
    )


def try_reserve(
    budget: models.budget.BudgetRow, now: datetime, *, held_back: int
) -> tuple[models.budget.BudgetRow, RateLimited | None]:
    """Take one request, keeping `held_back` free in both windows; or say why not."""
    budget, _, refusal = take_block(budget, now, held_back=held_back, wanted=1)
    return budget, refusal


def give_back(
    budget: models.budget.BudgetRow,
    now: datetime,
    *,
    unused: int,
    window_start: datetime,
    day_start: datetime,
) -> models.budget.BudgetRow:
    """Return a block's `unused` requests, taken in the window and day starting at those
    instants (a window or day since rolled over has nothing to return them to). What
    other clients used stays counted."""
    budget = roll_windows(budget, now)
    if budget.window_start == window_start:
        budget = replace(
            budget,
            usage_15min=max(budget.external_usage_15min, budget.usage_15min - unused),
            read_usage_15min=max(
                budget.external_read_usage_15min, budget.read_usage_15min - unused
            ),
        )
    if budget.day_start == day_start:
        budget = replace(
            budget,
            usage_daily=max(budget.external_usage_daily, budget.usage_daily - unused),
            read_usage_daily=max(
                budget.external_read_usage_daily, budget.read_usage_daily - unused
            ),
        )
    return budget


_COUNTERS = (
    ("usage_15min", "external_usage_15min", "usage_15min"),
    ("usage_daily", "external_usage_daily", "usage_daily"),
    ("read_usage_15min", "external_read_usage_15min", "read_usage_15min"),
    ("read_usage_daily", "external_read_usage_daily", "read_usage_daily"),
)


def _external(
    budget: models.budget.BudgetRow, snapshot: RateLimitSnapshot, unsent: int
) -> dict[str, int]:
    """Each counter's usage by other clients, as an answer's headers show it: Strava has
    counted at most the requests reserved less the answering call's `unsent` ones, so
    whatever it counted beyond them is someone else's (never less than known before)."""
    external: dict[str, int] = {}
    for counter, column, header in _COUNTERS:
        seen = getattr(snapshot, header) or 0
        known = getattr(budget, column)
        reserved = getattr(budget, counter) - known
        external[column] = max(known, seen + unsent - reserved)
    return external


def is_news(
    known: models.budget.BudgetRow,
    snapshot: RateLimitSnapshot | None,
    now: datetime,
    *,
    unsent: int = 0,
) -> bool:
    """Whether an answer's headers tell the budget something it does not know (`known`,
    its row as last read or written): other limits, or more used than its reservations
    account for (another client of the application). `unsent`: the answering call's
    reserved requests not sent yet."""
    if snapshot is None:
        return False
    known = roll_windows(known, now)
    limits = (snapshot.limit_15min, snapshot.limit_daily)
    if limits != (known.limit_15min, known.limit_daily):
        return True
    read_limits = (snapshot.read_limit_15min, snapshot.read_limit_daily)
    if None not in read_limits and read_limits != (known.read_limit_15min, known.read_limit_daily):
        return True
    external = _external(known, snapshot, unsent)
    return any(external[column] > getattr(known, column) for _, column, _ in _COUNTERS)


def apply_snapshot(
    budget: models.budget.BudgetRow,
    snapshot: RateLimitSnapshot | None,
    *,
    status: int,
    now: datetime,
    unsent: int = 0,
) -> models.budget.BudgetRow:
    """Correct the budget from what Strava's headers said; a 429 blocks until the reset.

    Limits are Strava's. Usage only ever goes up within a window: it is what the calls
    reserved (requests still in flight, which Strava's count lags, included) plus what
    the headers show other clients used (`unsent`: the answering call's reserved
    requests not sent yet, which Strava cannot have counted).
    """
    budget = roll_windows(budget, now)
    if snapshot is not None:
        external = _external(budget, snapshot, unsent)
        raised = {
            counter: getattr(budget, counter) + external[column] - getattr(budget, column)
            for counter, column, _ in _COUNTERS
        }
        budget = replace(
            budget,
            limit_15min=snapshot.limit_15min,
            limit_daily=snapshot.limit_daily,
            read_limit_15min=snapshot.read_limit_15min or budget.read_limit_15min,
            read_limit_daily=snapshot.read_limit_daily or budget.read_limit_daily,
            headers_seen_at=now,
        )
        for column, value in {**raised, **external}.items():
            setattr(budget, column, value)  # a copy (replace made it): the caller's is intact
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


@dataclass
class _Block:
    """Requests a call reserved at once for one class, in one window and day."""

    work_class: WorkClass
    window_start: datetime
    day_start: datetime
    left: int


# A 429 met by a call of this process, by database: the calls running beside the one that
# met it (those that began before it) stop before their next request. Calls begun after
# it read the block from the budget row like any other.
_STOPS: weakref.WeakKeyDictionary[Any, tuple[int, RateLimited]] = weakref.WeakKeyDictionary()
_STOPS_LOCK = Lock()
_CALLS = itertools.count()


class RateBudget:
    """The RateGate one call hands its StravaClient.

    Requests are reserved a block at a time (as many as the call has workers, within its
    class's share and the limits); a request taken from the block costs no database
    work. Once the budget refuses, the call remembers it and stops asking: every thread
    of the call then stops before its next request.
    """

    def __init__(
        self,
        db: Database,
        *,
        reserve_fraction: float,
        work_class: WorkClass,
        clock: Clock = utcnow,
        settings: Settings | None = None,
        block_size: int = 8,
    ) -> None:
        self._db = db
        self._reserve_fraction = reserve_fraction
        self._for_sync_now = work_class is WorkClass.SYNC_NOW
        self._work_class = work_class
        self._clock = clock
        # With settings, each class keeps to its share of the window (services/planning).
        self._settings = settings
        self._block_size = max(1, block_size)
        # The classes' needs, as each class's allowance depends on them, for one window.
        self._needs: tuple[datetime, dict[WorkClass, schedule.Needs]] | None = None
        self._blocks: dict[WorkClass, _Block] = {}
        self._known: models.budget.BudgetRow | None = None  # the row as last read or written
        self._lock = RLock()
        self._thread = threading.local()  # a worker's class while it works as another
        self._begun = next(_CALLS)
        # When an answer's headers were last read, and that instant as last written: the
        # row says when headers were last seen without a write for each answer.
        self._seen_at: datetime | None = None
        self._stamped: datetime | None = None
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

    def _class_needs(
        self,
        budget: models.budget.BudgetRow,
        now: datetime,
        work_class: WorkClass,
        conn: models.Conn | None = None,
    ) -> schedule.Needs:
        """The classes' needs as `work_class`'s allowance depends on them, read once a
        window per call and class (outside the row's lock)."""
        assert self._settings is not None
        window = window_start(now)
        if self._needs is None or self._needs[0] != window:
            self._needs = (window, {})
        known = self._needs[1]
        if work_class not in known:
            if conn is None:
                with self._db.connection() as own:
                    needs, _ = planning.class_needs(
                        own, budget, self._settings, now, for_class=work_class
                    )
            else:
                needs, _ = planning.class_needs(
                    conn, budget, self._settings, now, for_class=work_class
                )
            known[work_class] = needs
        return known[work_class]

    def _room(
        self,
        conn: models.Conn,
        budget: models.budget.BudgetRow,
        needs: schedule.Needs | None,
        work_class: WorkClass,
        now: datetime,
    ) -> int | None:
        """Requests `work_class` may still reserve in this window as the (rolled) row
        stands; None for a class without a share (Sync now, or no settings)."""
        if needs is None or work_class is WorkClass.SYNC_NOW:
            return None
        used = models.budget.window_class_requests(conn, window_start=budget.window_start)
        state = schedule.BudgetState.from_row(
            budget,
            window_used_by={WorkClass(c): n for c, n in used.items()},
            sync_now_reserve=self._reserve_fraction,
        )
        return schedule.allowance(work_class, state, needs, now).requests

    def _share_spent(self, work_class: WorkClass, now: datetime) -> RateLimited:
        return RateLimited(
            f"the {work_class.value} share of this window is spent",
            resets_at=next_window_reset(now),
        )

    def _refuse(self, refusal: RateLimited) -> RateLimited:
        with self._lock:
            self.refusal = self.refusal or refusal
            return self.refusal

    def _stopped_beside(self) -> RateLimited | None:
        """A 429 another call of this process met while this one was running."""
        with _STOPS_LOCK:
            stop = _STOPS.get(self._db)
        if stop is None or stop[0] < self._begun:
            return None
        return stop[1]

    def check_share(self) -> bool:
        """Whether the call's class may send a request now (refusing it if not): a call
        whose share is spent claims no work. A read, without the row's lock."""
        if self.refusal is not None:
            return False
        if self.share_left(self.work_class):
            return True
        self._refuse(self._share_spent(self.work_class, self._clock()))
        return False

    def share_left(self, work_class: WorkClass) -> bool:
        """Whether `work_class` may send a request now, without refusing the call: for a
        call whose items are of several classes, to claim only those that may go."""
        now = self._clock()
        if self._settings is None or work_class is WorkClass.SYNC_NOW:
            return True
        with self._db.connection() as conn:
            budget = roll_windows(models.budget.read_rate_budget(conn), now)
            needs = self._class_needs(budget, now, work_class, conn)
            room = self._room(conn, budget, needs, work_class, now)
        self._known = budget
        return room is None or room > 0

    def reserve(self) -> None:
        """Take one request: from the call's block, or a new block from the shared
        budget; or raise RateLimited."""
        now = self._clock()
        work_class = self.work_class
        with self._lock:
            if self.refusal is None and (stop := self._stopped_beside()) is not None:
                self.refusal = stop
            if self.refusal is not None:
                raise self.refusal
            block = self._blocks.get(work_class)
            if block is not None and block.left > 0 and block.window_start == window_start(now):
                block.left -= 1
                return
            self._draw(work_class, now)
            if self.refusal is not None:
                raise self.refusal

    def _draw(self, work_class: WorkClass, now: datetime) -> None:
        """Give back what is left of the class's block (its window may have passed) and
        reserve a new one under the row's lock (the caller holds the call's lock)."""
        needs = None
        if self._settings is not None and work_class is not WorkClass.SYNC_NOW:
            needs = self._class_needs(self._known or self._read(), now, work_class)
        with self._db.connection() as conn:
            budget = models.budget.read_rate_budget(conn, for_update=True)
            budget = self._return_blocks(conn, budget, now, only=work_class)
            budget = roll_windows(budget, now)
            room = self._room(conn, budget, needs, work_class, now)
            refusal: RateLimited | None = None
            granted = 0
            if room is not None and room <= 0:
                refusal = self._share_spent(work_class, now)
            else:
                wanted = self._block_size if room is None else min(self._block_size, room)
                budget, granted, refusal = take_block(
                    budget, now, held_back=self._held_back(budget), wanted=wanted
                )
            budget = self._stamp(budget)
            models.budget.save_rate_budget(conn, budget, now=now)
            if granted:
                models.budget.count_request(
                    conn,
                    window_start=budget.window_start,
                    work_class=work_class.value,
                    requests=granted,
                )
        self._known = budget
        if refusal is not None:
            self.refusal = self.refusal or refusal
            return
        self._blocks[work_class] = _Block(
            work_class, budget.window_start, budget.day_start, granted - 1
        )

    def _stamp(self, budget: models.budget.BudgetRow) -> models.budget.BudgetRow:
        """The row with the last headers' instant this call has seen (if later)."""
        seen = self._seen_at
        self._stamped = seen
        if seen is None or (budget.headers_seen_at is not None and budget.headers_seen_at >= seen):
            return budget
        return replace(budget, headers_seen_at=seen)

    def _read(self) -> models.budget.BudgetRow:
        with self._db.connection() as conn:
            return models.budget.read_rate_budget(conn)

    def _return_blocks(
        self,
        conn: models.Conn,
        budget: models.budget.BudgetRow,
        now: datetime,
        *,
        only: WorkClass | None = None,
    ) -> models.budget.BudgetRow:
        """Give back the unused part of the call's blocks (of one class, or all), in the
        transaction that holds the row (`budget`, as read under its lock)."""
        for work_class, block in list(self._blocks.items()):
            if only is not None and work_class is not only:
                continue
            del self._blocks[work_class]
            if block.left <= 0:
                continue
            budget = give_back(
                budget,
                now,
                unused=block.left,
                window_start=block.window_start,
                day_start=block.day_start,
            )
            models.budget.count_request(
                conn,
                window_start=block.window_start,
                work_class=work_class.value,
                requests=-block.left,
            )
        return budget

    def record(self, snapshot: RateLimitSnapshot | None, *, status: int) -> None:
        """Fold an answer's headers (and a 429) into the shared budget, when they tell it
        something new; then the call's blocks are given back, so its next requests are
        decided on what the headers said."""
        now = self._clock()
        with self._lock:
            if snapshot is not None:
                self._seen_at = now
            unsent = sum(block.left for block in self._blocks.values())
            known = self._known
            if (
                status != 429
                and known is not None
                and not is_news(known, snapshot, now, unsent=unsent)
            ):
                return
            with self._db.connection() as conn:
                budget = models.budget.read_rate_budget(conn, for_update=True)
                budget = apply_snapshot(budget, snapshot, status=status, now=now, unsent=unsent)
                budget = self._stamp(self._return_blocks(conn, budget, now))
                models.budget.save_rate_budget(conn, budget, now=now)
            self._known = budget
            if status == 429:
                refusal = RateLimited(
                    "Strava rate limit reached",
                    resets_at=budget.blocked_until or next_window_reset(now),
                )
                self.refusal = self.refusal or refusal
                with _STOPS_LOCK:
                    _STOPS[self._db] = (next(_CALLS), refusal)

    def release(self) -> None:
        """Give back what the call's blocks did not use, and say when headers were last
        seen (at the call's end)."""
        with self._lock:
            unused = any(block.left > 0 for block in self._blocks.values())
            if not unused and self._seen_at == self._stamped:
                self._blocks.clear()
                return
            now = self._clock()
            with self._db.connection() as conn:
                budget = models.budget.read_rate_budget(conn, for_update=True)
                budget = self._stamp(self._return_blocks(conn, budget, now))
                models.budget.save_rate_budget(conn, budget, now=now)
            self._known = budget

    def pause_for_inactive_application(self) -> None:
        """Strava called the application inactive: stop everyone, probe again in an hour."""
        now = self._clock()
        with self._lock, self._db.connection() as conn:
            budget = roll_windows(models.budget.read_rate_budget(conn, for_update=True), now)
            budget = self._return_blocks(conn, budget, now)
            budget = replace(
                budget,
                blocked_until=now + INACTIVE_APP_PAUSE,
                blocked_reason="application_inactive",
            )
            models.budget.save_rate_budget(conn, budget, now=now)
            self._known = budget

    def describe(self) -> dict[str, Any]:
        """The contract's `rate_limit` object as the budget stands now."""
        with self._db.connection() as conn:
            budget = models.budget.read_rate_budget(conn)
        return describe(budget, self._clock(), held_back=self._held_back(budget))
