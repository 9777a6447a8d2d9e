"""What every bounded call shares: its deadline, budget, Strava client, a small worker
pool, the per-item outcome and the contract's answer, and the run log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

import models
from config import Settings
from services.budget import RateBudget, headroom, reserve_size, resets_at, roll_windows
from services.clock import Clock, Timer, monotonic, utcnow
from services.errors import NotConnected
from services.idle import Idle, Waiting, idle_reason, took_nothing
from services.schedule import WorkClass
from services.sealing import Sealer
from services.strava import (
    ApplicationBlocked,
    ApplicationInactive,
    DeadlineReached,
    RateLimited,
    StravaClient,
    StravaError,
    TokenRejected,
)
from services.tokens import NeedsReauth, TokenKeeper

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

# Time kept back from the budget for writing back and answering.
_WRITE_BACK_S = 0.25

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"

# Runs are kept this long: ample for the status's 24-hour figures and run history, and
# each holds its items, so an unpruned log would grow by hundreds of MB a year.
RUN_LOG_DAYS = 30


# The kind of work each call's Strava requests are counted as (services/schedule.py):
# a rider's own press (and disconnecting) draws on Sync now's share; enrich counts each
# race as recent or old (enrichment.enrich_race).
CALL_CLASSES: dict[str, WorkClass] = {
    "sync-now": WorkClass.SYNC_NOW,
    "disconnect": WorkClass.SYNC_NOW,
    "sync-strava": WorkClass.INCREMENTAL,
    # Webhook events keep riders fresh in place of polls: the same class as sync.
    "events": WorkClass.INCREMENTAL,
    "webhook": WorkClass.INCREMENTAL,
    "discover": WorkClass.DISCOVER,
    "enrich": WorkClass.ENRICH_OLD,
}

# The calls about one rider (a press, a disconnect, an event in the callback) reserve
# their requests a few at a time: a larger block would hold what other riders' presses
# need until the call ends.
ONE_RIDER_CALLS = frozenset({"sync-now", "disconnect", "webhook"})
SMALL_BLOCK = 2

# Request counts per window are kept this long: the status's 24-hour chart, and a week
# of history for the rate plan.
REQUEST_WINDOW_DAYS = 8


class LeaseLost(Exception):
    """Another call holds this work now; ours must not write."""


@dataclass(frozen=True)
class Runtime:
    """What the app builds once: settings, the database, the token sealer, a clock and a
    timer.

    The clock is the service's only "now" (every decision, in Python and in SQL); the
    timer (monotonic seconds) only measures time budgets within a call. A simulation
    replaces both, e.g. `dataclasses.replace(runtime, clock=v.now, timer=v.monotonic)`.
    """

    settings: Settings
    db: Database
    sealer: Sealer
    clock: Clock = utcnow
    timer: Timer = monotonic


@dataclass
class Outcome:
    """One rider or race taken by a call."""

    key: str  # "rider_id" or "activity_id"
    id: int
    status: str  # succeeded, failed, skipped
    detail: str | None = None  # why skipped or failed, as a short machine word
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def as_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {self.key: self.id, "status": self.status, **self.counts}
        if self.detail:
            item["reason"] = self.detail
        if self.error:
            item["error"] = self.error
        return item


def outcome_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """The contract's counts of a call's items: processed, succeeded, failed, skipped."""
    return {
        "processed": len(outcomes),
        "succeeded": sum(o.status == SUCCEEDED for o in outcomes),
        "failed": sum(o.status == FAILED for o in outcomes),
        "skipped": sum(o.status == SKIPPED for o in outcomes),
    }


class Call:
    """One bounded call: deadline, lease token, budget, Strava client, tokens."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        kind: str,
        budget_s: float | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.kind = kind
        self.started = runtime.timer()
        self.started_at = runtime.clock()  # the instant "due" is judged at
        budget_s = settings.cron_time_budget_s if budget_s is None else budget_s
        self.deadline = self.started + max(0.05, budget_s - min(_WRITE_BACK_S, budget_s * 0.1))
        self.lease_token: UUID = uuid4()
        self.budget = RateBudget(
            runtime.db,
            reserve_fraction=settings.sync_now_reserve,
            work_class=CALL_CLASSES[kind],
            clock=runtime.clock,
            settings=settings,
            block_size=SMALL_BLOCK if kind in ONE_RIDER_CALLS else settings.sync_workers,
        )
        self.strava = StravaClient(
            api_url=settings.strava_api_url,
            oauth_url=settings.strava_oauth_url,
            client_id=settings.strava_client_id,
            client_secret=settings.strava_client_secret,
            rate_gate=self.budget,
            deadline=self.deadline,
            timeout_s=settings.strava_timeout_s,
            pool_size=max(4, settings.sync_workers * 2),
            clock=runtime.clock,
            timer=runtime.timer,
        )
        self.tokens = TokenKeeper(runtime.db, self.strava, runtime.clock, runtime.sealer)
        self.stopped_by: StravaError | None = None
        self._stop = threading.Event()

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def db(self) -> Database:
        return self.runtime.db

    def now(self) -> datetime:
        """The runtime's clock: the instant of a write or check made now."""
        return self.runtime.clock()

    def time_left(self) -> float:
        return self.deadline - self.runtime.timer()

    def should_stop(self) -> bool:
        """No new work once the budget of time or of Strava requests is spent."""
        return self._stop.is_set() or self.time_left() <= 0 or self.budget.refusal is not None

    def stop(self, reason: StravaError) -> None:
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()

    def close(self) -> None:
        self.strava.close()
        try:
            self.budget.release()
        except Exception:  # what is not given back stays counted: never more than a block
            log.warning("could not give back the call's unused requests", exc_info=True)

    def elapsed_ms(self) -> int:
        return int((self.runtime.timer() - self.started) * 1000)

    def run(
        self, items: Sequence[T], work: Callable[[T], Outcome], not_started: Callable[[T], Outcome]
    ) -> list[Outcome]:
        """Work through items on a small pool; items reached after a stop are not started."""

        def one(item: T) -> Outcome:
            if self.should_stop():
                return not_started(item)
            return work(item)

        if not items:
            return []
        workers = max(1, min(self.settings.sync_workers, len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=self.kind) as pool:
            return list(pool.map(one, items))

    def failure(self, key: str, item_id: int, exc: BaseException) -> tuple[Outcome, str | None]:
        """Classify an exception from one item's work; returns the outcome and, for an
        item-level failure that should back off, its error class."""
        if isinstance(exc, RateLimited):
            self.stop(exc)
            return Outcome(key, item_id, SKIPPED, "rate_limited"), None
        if isinstance(exc, DeadlineReached):
            return Outcome(key, item_id, SKIPPED, "time_budget"), None
        if isinstance(exc, LeaseLost):
            return Outcome(key, item_id, SKIPPED, "lease_lost"), None
        if isinstance(exc, ApplicationBlocked):
            if isinstance(exc, ApplicationInactive):
                self.budget.pause_for_inactive_application()
            self.stop(exc)
            return Outcome(key, item_id, SKIPPED, exc.code, error=exc.message), None
        if isinstance(exc, NeedsReauth | TokenRejected):
            return Outcome(
                key, item_id, FAILED, "needs_reauth", error="rider must reconnect Strava"
            ), None
        if isinstance(exc, NotConnected):
            return Outcome(key, item_id, SKIPPED, "not_connected"), None
        if isinstance(exc, StravaError):
            return Outcome(key, item_id, FAILED, exc.code, error=exc.message), exc.code
        log.error("unexpected error", exc_info=exc, extra={"kind": self.kind, key: item_id})
        return Outcome(key, item_id, FAILED, "internal", error=type(exc).__name__), "internal"

    def settle_rider(self, lease: models.sync.RiderLease, exc: Exception) -> Outcome:
        """After a rider's work raised: back it off for a failure of its own, or hand it
        back untouched (rate limit, time budget, lost lease)."""
        outcome, error_class = self.failure("rider_id", lease.rider_id, exc)
        with self.db.connection() as conn:
            if error_class is not None:
                models.sync.record_rider_failure(
                    conn,
                    rider_id=lease.rider_id,
                    lease_token=lease.lease_token,
                    error_class=error_class,
                    message=outcome.error or error_class,
                    now=self.now(),
                )
            else:
                models.sync.release_lease(
                    conn, rider_id=lease.rider_id, lease_token=lease.lease_token
                )
        return outcome

    def hand_back_rider(self, lease: models.sync.RiderLease) -> str:
        """Release a rider claimed but not started; returns why it was not started."""
        with self.db.connection() as conn:
            models.sync.release_lease(conn, rider_id=lease.rider_id, lease_token=lease.lease_token)
        return self.stop_reason()

    def stop_reason(self) -> str:
        """Why the call stopped taking work, as an item's `reason`."""
        if self.stopped_by is not None:
            return self.stopped_by.code
        return "rate_limited" if self.budget.refusal is not None else "time_budget"

    def answer(self, outcomes: list[Outcome], *, remaining: int) -> dict[str, Any]:
        """The contract's JSON for this call."""
        rate_limited = isinstance(self.stopped_by, RateLimited) or self.budget.refusal is not None
        answer: dict[str, Any] = {
            **outcome_counts(outcomes),
            "remaining": remaining,
            "done": remaining == 0,
            "rate_limited": rate_limited,
            "rate_limit": self.budget.describe(),
            "strava_requests": self.strava.requests_made,
            "duration_ms": self.elapsed_ms(),
            "items": [o.as_item() for o in outcomes],
        }
        if self.stopped_by is not None:
            answer["stopped_by"] = self.stopped_by.code
        return answer


def why_idle(
    conn: models.Conn, call: Call, waiting: Callable[[models.Conn, Call], Waiting] | None
) -> Idle:
    """Why a call that took nothing took nothing (services/idle.py decides): the budget
    as it stands says whether a refusal was Strava's limit or only the class's share."""
    now = call.now()
    refusal = call.budget.refusal
    rate_until = share_until = None
    if refusal is not None:
        budget = roll_windows(models.budget.read_rate_budget(conn), now)
        held_back = reserve_size(budget, call.settings.sync_now_reserve)
        window, day = headroom(budget)
        if budget.blocked_until is not None or min(window, day) - 1 < held_back:
            rate_until = resets_at(budget, now, held_back=held_back)
        else:
            share_until = refusal.resets_at
    if isinstance(call.stopped_by, RateLimited):
        rate_until = rate_until or call.stopped_by.resets_at
    return idle_reason(
        now,
        waiting=waiting(conn, call) if waiting is not None else Waiting(),
        rate_limited_until=rate_until,
        share_spent_until=share_until,
    )


def bounded_call(
    runtime: Runtime,
    kind: str,
    *,
    claim: Callable[[models.Conn, Call], Sequence[T]],
    work: Callable[[Call, T], Outcome],
    hand_back: Callable[[Call, T], Outcome],
    remaining: Callable[[models.Conn, Call], int],
    wrap_up: Callable[[Call, list[Outcome]], None] | None = None,
    waiting: Callable[[models.Conn, Call], Waiting] | None = None,
    share_class: Callable[[models.Conn, Call], WorkClass] | None = None,
) -> dict[str, Any]:
    """One cron call, recorded in cron_runs: claim work with a lease (committed at once),
    do it on the pool, hand back what was not started, count what is still due of the
    work that was due when the call started, then wrap up (what the work changed, within
    the call's time). A call that took nothing says why (`idle_reason`, `next_due_at`;
    `waiting` reads what its kind of work has waiting). `share_class` names the class
    whose share decides whether the call claims anything (by default the call's own)."""

    def body() -> dict[str, Any]:
        call = Call(runtime, kind=kind)
        try:
            items: Sequence[T] = []
            if _share_left(call, share_class):  # a class whose share is spent claims nothing
                with runtime.db.connection() as conn:
                    items = claim(conn, call)
            outcomes = call.run(
                items, lambda item: work(call, item), lambda item: hand_back(call, item)
            )
            with runtime.db.connection() as conn:
                left = remaining(conn, call)
            if wrap_up is not None:
                wrap_up(call, outcomes)
            answer = call.answer(outcomes, remaining=left)
            if took_nothing(answer["items"]):
                with runtime.db.connection() as conn:
                    answer.update(why_idle(conn, call, waiting).as_dict())
            return answer
        finally:
            call.close()

    return recorded(runtime, kind, body)


def _share_left(call: Call, share_class: Callable[[models.Conn, Call], WorkClass] | None) -> bool:
    """Whether the call may claim work: its class's share of the window (or the share of
    the class `share_class` picks) is not spent."""
    if share_class is None:
        return call.budget.check_share()
    with call.db.connection() as conn:
        work_class = share_class(conn, call)
    with call.budget.working_as(work_class):
        return call.budget.check_share()


def recorded(runtime: Runtime, kind: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a call with a row in cron_runs: written at start, completed at the end."""
    with runtime.db.connection() as conn:
        now = runtime.clock()
        run_id = models.runs.start_run(conn, kind=kind, now=now)
        models.runs.prune_runs(conn, kind=kind, keep_days=RUN_LOG_DAYS, now=now)
        models.budget.prune_request_windows(conn, before=now - timedelta(days=REQUEST_WINDOW_DAYS))
    try:
        answer = body()
    except Exception as exc:
        with runtime.db.connection() as conn:
            models.runs.fail_run(
                conn, run_id=run_id, error_summary=type(exc).__name__, now=runtime.clock()
            )
        raise
    errors = sorted(
        {i["reason"] for i in answer["items"] if i["status"] == FAILED and "reason" in i}
    )
    with runtime.db.connection() as conn:
        models.runs.finish_run(
            conn,
            run_id=run_id,
            summary={**answer, "error_summary": ", ".join(errors) or None},
            now=runtime.clock(),
        )
    log.info(
        "call finished",
        extra={
            "kind": kind,
            **{k: answer[k] for k in ("processed", "succeeded", "failed", "skipped", "remaining")},
            "rate_limited": answer["rate_limited"],
            "duration_ms": answer["duration_ms"],
            "strava_requests": answer["strava_requests"],
            **({"idle_reason": answer["idle_reason"]} if answer.get("idle_reason") else {}),
        },
    )
    # Operator alerts, once the call's work is recorded (bounded; never raises). Imported
    # here: the alerts read the status, which builds on this module.
    from services.alerts import after_call

    after_call(runtime, kind, answer)
    return answer
