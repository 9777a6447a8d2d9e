"""The rate plan's I/O: what the pure policy (services/schedule.py) needs, read from the
database, and what it decides, written back. A call costs what is due, not what the club
is: nothing here reads every rider on a call's path.

Two decisions are made here with the policy:
- how many requests a class may take in this window: `class_needs` (once per call) gives
  the classes' needs; the rate budget (services/budget.py) decides each block of
  requests on them and the budget row as it stands at that moment, so shares follow
  Strava's headers from the answer they arrive in;
- when each rider is polled next: a call plans the riders it synced (`plan_riders`); the
  whole club is re-planned (`continue_replan`) only when the plan itself changes (its
  kind, or, polling by need, the incremental share) or, polling by need, once it is
  REPLAN_EVERY old, at most once a window, a slice of riders at a time inside the
  calls' time budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import models
from config import Settings
from services import schedule, suspicion, webhooks
from services.clock import Timer
from services.schedule import DAY, WorkClass
from services.strava import next_day_reset, next_window_reset

if TYPE_CHECKING:
    from db import Database

# An incomplete history's pages, for the backlog's size: a median history (about 1,000
# activities) at 200 a page, and the empty page that ends it.
TYPICAL_HISTORY_PAGES = 6
# Riders a slice of a whole-club re-plan reads (its survey, or its plans).
REPLAN_SLICE = 250
# Polling by need, the club is re-planned this long after its last plan even when the
# share stands: the level was set for the riders' rates as they were, and rates change
# (a history walked in the backfill's first days turns newcomers into riders of known,
# higher rates; a season starts). A level kept from a club of newcomers gave each rider
# several polls a day once their histories were in: the incremental class spent 2.5x
# its share and the backfill waited.
REPLAN_EVERY = timedelta(hours=1)
BY_NEED, SAFETY_NET = "by_need", "safety_net"


def _window_start(now: datetime) -> datetime:
    return next_window_reset(now) - timedelta(minutes=15)


def _day_start(now: datetime) -> datetime:
    return next_day_reset(now) - DAY


def _day_limit(budget: models.budget.BudgetRow) -> int:
    return min(budget.limit_daily, budget.read_limit_daily)


# --- the classes' needs ---------------------------------------------------------------


def class_needs(
    conn: models.Conn,
    budget: models.budget.BudgetRow,
    settings: Settings,
    now: datetime,
    *,
    for_class: WorkClass | None = None,
) -> tuple[schedule.Needs, dict[str, int]]:
    """Every class's expected need at `now`, and the backfill's backlog; from counts kept
    as riders change (the fleet's planned polls), the riders due in this window (an
    index of planned polls), and backlogs counted up to a day's whole budget. With
    `for_class`, the needs that class's allowance depends on: the window's polls are
    counted only as far as they can change its requests."""
    day_left = (next_day_reset(now) - now) / DAY
    sync_now_per_day = math.ceil(
        models.budget.class_requests_per_day(
            conn, work_class=WorkClass.SYNC_NOW.value, day_start=_day_start(now)
        )
    )
    fleet = models.planning.fleet_counts(conn)
    polls_cap = None
    if for_class is not None:
        window_limit = min(budget.limit_15min, budget.read_limit_15min)
        polls_cap = schedule.window_polls_that_matter(for_class, window_limit)
    polls_window = models.planning.riders_polled_before(
        conn, until=next_window_reset(now), cap=polls_cap
    )
    backlog = models.planning.backfill_backlog(
        conn,
        max_attempts=settings.enrich_max_attempts,
        recent_since=now - timedelta(days=schedule.RECENT_RACE_DAYS),
        cap=_day_limit(budget) + 1,
    )
    # Discovery's pages are not known ahead: an unwalked history counts as a typical one.
    discover_pages = backlog["histories"] * TYPICAL_HISTORY_PAGES
    needs = schedule.Needs(
        # The backfill classes hold nothing of each other's window: their calls run in
        # different windows (the workflows' minutes), so a window held for a class whose
        # call is not coming would only idle; their order is kept by the day's holds.
        window={WorkClass.INCREMENTAL: polls_window},
        day={
            WorkClass.SYNC_NOW: math.ceil(sync_now_per_day * day_left),
            # the fleet's planned polls over what is left of the day (and at least this
            # window's)
            WorkClass.INCREMENTAL: max(polls_window, math.ceil(fleet["polls_per_day"] * day_left)),
            WorkClass.ENRICH_RECENT: backlog["recent_races"],
            WorkClass.DISCOVER: discover_pages,
            WorkClass.ENRICH_OLD: backlog["old_races"],
        },
        per_day={
            WorkClass.SYNC_NOW: sync_now_per_day,
            WorkClass.INCREMENTAL: fleet["polls_per_day"],
        },
        backlog=backlog["recent_races"] + discover_pages + backlog["old_races"],
    )
    return needs, backlog


@dataclass(frozen=True)
class Situation:
    """The budget's state and every class's expected need, at one instant."""

    state: schedule.BudgetState
    needs: schedule.Needs
    backlog: dict[str, int]


def situation(
    conn: models.Conn, budget: models.budget.BudgetRow, settings: Settings, now: datetime
) -> Situation:
    """The state and needs the policy decides on. `budget` is the rolled budget row."""
    used = models.budget.class_requests(
        conn, window_start=_window_start(now), day_start=_day_start(now)
    )
    state = schedule.BudgetState.from_row(
        budget,
        window_used_by={WorkClass(c): int(r["window"]) for c, r in used.items()},
        day_used_by={WorkClass(c): int(r["today"]) for c, r in used.items()},
        sync_now_reserve=settings.sync_now_reserve,
    )
    needs, backlog = class_needs(conn, budget, settings, now)
    return Situation(state, needs, backlog)


def class_cap(
    conn: models.Conn,
    budget: models.budget.BudgetRow,
    settings: Settings,
    work_class: WorkClass,
    now: datetime,
) -> int:
    """The most requests `work_class` may have reserved in this window, counting what it
    has already: what it has used plus what the policy allows it now."""
    here = situation(conn, budget, settings, now)
    allowed = schedule.allowance(work_class, here.state, here.needs, now)
    return here.state.window_used_by.get(work_class, 0) + allowed.requests


def incremental_share(
    conn: models.Conn, budget: models.budget.BudgetRow, settings: Settings
) -> int:
    """The fleet's polls a day: the incremental class's daily share of the limit."""
    now_row = schedule.BudgetState.from_row(budget)
    fleet = models.planning.fleet_counts(conn)["riders"]
    waiting = models.planning.backfill_backlog(
        conn, max_attempts=settings.enrich_max_attempts, recent_since=budget.day_start, cap=1
    )
    return schedule.incremental_share_per_day(
        now_row.day_limit,
        fleet,
        sync_now_per_day=now_row.reserve,
        backfill_per_day=now_row.day_limit if any(waiting.values()) else 0,
    )


def backfill_waiting(conn: models.Conn, settings: Settings, now: datetime) -> bool:
    """Whether a backfill has work waiting: a history to walk, or a race of a history to
    detail (a race of the last day is a new ride's, detailed as it comes); one look each,
    counting stops at the first."""
    waiting = models.planning.backfill_backlog(
        conn, max_attempts=settings.enrich_max_attempts, recent_since=now - DAY, cap=1
    )
    return bool(waiting["histories"] or waiting["old_races"])


# --- webhooks decide the kind of plan ---------------------------------------------------


def stored_subscription(conn: models.Conn) -> webhooks.Subscription | None:
    row = models.webhooks.read_push_subscription(conn)
    return webhooks.Subscription(**row) if row else None


def webhook_health(conn: models.Conn, settings: Settings, now: datetime) -> webhooks.Health:
    """Whether Strava's events can be trusted to bring changes (polling steps back)."""
    subscription = stored_subscription(conn)
    last_event = models.webhooks.last_event_received_at(conn)
    return webhooks.health(
        subscription,
        last_event,
        now,
        silence_s=settings.webhook_silence_s,
        uploaded_since_created=subscription is not None
        and last_event is None
        and models.webhooks.any_activity_started_since(conn, since=subscription.created_at),
    )


# --- each rider's next poll -------------------------------------------------------------


def habits(rows: list[dict[str, Any]]) -> list[schedule.RiderHabit]:
    """The policy's view of each rider from models.planning.poll_habits rows."""
    return [
        schedule.RiderHabit(
            rider_id=int(row["rider_id"]),
            uploads=tuple(row["ends"] or ()),
            utc_offset_s=int(row["offset_s"] or 0),
            last_poll_at=row["last_synced_at"],
            last_poll_found=bool(row["last_found"]),
            last_upload_at=row["newest"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class PlanTarget:
    """The plan the riders' polls should follow now: its kind (by need, or the safety
    net while webhooks bring each change) and the incremental share."""

    kind: str
    share_per_day: int
    why: str  # the safety net's reason, in words
    # A backfill has work waiting: the safety net's polls keep to one a rider a day.
    backfill: bool = False


def plan_target(
    conn: models.Conn, budget: models.budget.BudgetRow, settings: Settings, now: datetime
) -> PlanTarget:
    events = webhook_health(conn, settings, now)
    share = incremental_share(conn, budget, settings)
    return PlanTarget(SAFETY_NET if events.healthy else BY_NEED, share, events.reason)


def _changed(decision: schedule.PollDecision, row: dict[str, Any], now: datetime) -> bool:
    """Whether a decision changes the rider's stored plan (a rider due stays due: its
    poll moved to `now` is the same plan)."""
    stored = row["next_poll_at"]
    same_time = stored == decision.next_poll_at or (
        stored is not None and stored <= now and decision.next_poll_at <= now
    )
    return not (
        same_time
        and row["polls_per_day"] == decision.polls_per_day
        and row["poll_reason"] == decision.reason
    )


def _save(
    conn: models.Conn, rows: list[dict[str, Any]], decisions: dict[int, Any], now: datetime
) -> int:
    changed = [
        {
            "rider_id": d.rider_id,
            "next_poll_at": d.next_poll_at.isoformat(),
            "polls_per_day": d.polls_per_day,
            "reason": d.reason,
        }
        for row in rows
        if _changed(d := decisions[int(row["rider_id"])], row, now)
    ]
    return models.planning.save_poll_plan(conn, decisions=changed)


def _decide(
    rows: list[dict[str, Any]],
    target: PlanTarget,
    level: schedule.FleetLevel,
    floor_s: int,
    now: datetime,
) -> dict[int, schedule.PollDecision]:
    if target.kind == SAFETY_NET:
        return {
            r.rider_id: suspicion.suspicion_decision(
                r, floor_s, now, target.why, backfill=target.backfill
            )
            for r in habits(rows)
        }
    return {r.rider_id: schedule.poll_decision(r, level, floor_s, now) for r in habits(rows)}


def _level(state: models.planning.PlanState | None, floor_s: int) -> schedule.FleetLevel:
    """The fleet's level as last planned (once a day each until a plan sets one)."""
    if state is None or state.level is None:
        return schedule.FleetLevel(
            level=0.0,
            typical=schedule.NEWCOMER_RATE,
            cap=schedule.floor_cap(floor_s),
            riders=0,
            share_per_day=0,
            expected_per_day=0.0,
            fits=True,
        )
    return schedule.FleetLevel(
        level=state.level,
        typical=state.typical_rate or schedule.NEWCOMER_RATE,
        cap=schedule.floor_cap(floor_s),
        riders=0,
        share_per_day=state.share_per_day or 0,
        expected_per_day=state.expected_per_day or 0.0,
        fits=bool(state.fits),
    )


def plan_riders(conn: models.Conn, rider_ids: list[int], settings: Settings, now: datetime) -> int:
    """Plan these riders' next polls (after their sync) in the club's current plan (its
    level as last planned; the kind webhooks allow now); returns the rows written (a
    plan that did not change is not)."""
    if not rider_ids:
        return 0
    events = webhook_health(conn, settings, now)
    kind = SAFETY_NET if events.healthy else BY_NEED
    target = PlanTarget(
        kind, 0, events.reason, kind == SAFETY_NET and backfill_waiting(conn, settings, now)
    )
    state = models.planning.read_plan_state(conn)
    rows = models.planning.poll_habits(
        conn, since=now - timedelta(days=schedule.HABIT_DAYS), rider_ids=sorted(rider_ids)
    )
    floor_s = settings.sync_min_interval_s
    decisions = _decide(rows, target, _level(state, floor_s), floor_s, now)
    return _save(conn, rows, decisions, now)


# --- the whole club, when the plan changes ------------------------------------------------


def replan_due(state: models.planning.PlanState | None, target: PlanTarget, now: datetime) -> bool:
    """Whether to start a whole-club re-plan: none was made, its kind changed, or (by
    need) its share, or (by need) it is REPLAN_EVERY old; and none started in this
    window."""
    if state is None or state.kind is None:
        changed = True
    elif state.replan_phase is not None:
        changed = (state.replan_kind, state.replan_share) != (target.kind, target.share_per_day)
        changed = changed and not (target.kind == SAFETY_NET == state.replan_kind)
    else:
        changed = state.kind != target.kind or (
            target.kind == BY_NEED
            and (
                state.share_per_day != target.share_per_day
                or state.planned_at is None
                or now - state.planned_at >= REPLAN_EVERY
            )
        )
    if not changed:
        return False
    started = None if state is None else state.replan_started_at
    return started is None or started < _window_start(now)


@dataclass(frozen=True)
class ReplanProgress:
    """What a call did of the whole-club plan."""

    slices: int = 0
    riders: int = 0
    written: int = 0
    complete: bool = False


def continue_replan(
    database: Database,
    settings: Settings,
    clock: Callable[[], datetime],
    timer: Timer,
    deadline: float,
) -> ReplanProgress:
    """Start the whole club's re-plan if the plan changed, and take it on a slice at a time
    (each its own transaction) while a slice still fits before `deadline` (the timer's).
    Overlapping calls never take the same slice: a slice locks the plan's row, and a call
    that finds it held leaves the re-plan to the other."""
    progress = ReplanProgress()
    slowest = 0.0
    while True:
        began = timer()
        if deadline - began <= max(2 * slowest, 0.05):
            return progress
        with database.connection() as conn:
            now = clock()
            step = _replan_step(conn, settings, now)
        if step is None:
            return progress
        riders, written, complete = step
        progress = ReplanProgress(
            progress.slices + 1, progress.riders + riders, progress.written + written, complete
        )
        if complete:
            return progress
        slowest = max(slowest, timer() - began)


def _replan_step(
    conn: models.Conn, settings: Settings, now: datetime
) -> tuple[int, int, bool] | None:
    """One slice of the re-plan (starting it if due): (riders, rows written, complete), or
    None when there is nothing to do or another call holds the plan."""
    # (the share needs the day's limit, which no window roll changes)
    target = plan_target(conn, models.budget.read_rate_budget(conn), settings, now)
    seen = models.planning.read_plan_state(conn)
    if seen is not None and seen.replan_phase is None and not replan_due(seen, target, now):
        return None  # the usual case: nothing to re-plan, and no lock taken
    models.planning.save_plan_state_if_missing(conn)
    state = models.planning.read_plan_state(conn, lock=True)
    if state is None:
        return None
    if replan_due(state, target, now):
        phase = "survey" if target.kind == BY_NEED else "plan"
        state = replace(
            state,
            replan_kind=target.kind,
            replan_share=target.share_per_day,
            replan_started_at=now,
            replan_phase=phase,
            replan_after=0,
            replan_survey=None,
            replan_riders=0,
        )
        if phase == "plan":  # the safety net needs no survey: it is the plan at once
            state = _adopt(state, target, None, settings.sync_min_interval_s)
    if state.replan_phase is None:
        return None
    floor_s = settings.sync_min_interval_s
    since = now - timedelta(days=schedule.HABIT_DAYS)
    if state.replan_phase == "survey":
        rows = models.planning.survey_uploads(
            conn, since=since, now=now, after=state.replan_after, limit=REPLAN_SLICE
        )
        surveyed = schedule.FleetSurvey.from_json(state.replan_survey).plus(
            schedule.FleetSurvey.of(
                (int(r["rider_id"]), int(r["uploads"]) if r["known"] else None) for r in rows
            )
        )
        state = replace(
            state,
            replan_survey=surveyed.as_json(),
            replan_after=int(rows[-1]["rider_id"]) if rows else state.replan_after,
            replan_riders=state.replan_riders + len(rows),
        )
        if len(rows) < REPLAN_SLICE:  # surveyed: the level is set, the plans follow
            level = schedule.fleet_level(surveyed, state.replan_share or 0, floor_s)
            state = _adopt(
                replace(state, replan_phase="plan", replan_after=0, replan_riders=0),
                target,
                level,
                floor_s,
            )
        models.planning.save_plan_state(conn, state)
        return len(rows), 0, False
    rows = models.planning.poll_habits(
        conn, since=since, after=state.replan_after, limit=REPLAN_SLICE
    )
    kind = state.kind or target.kind
    backfill = kind == SAFETY_NET and backfill_waiting(conn, settings, now)
    plan_as = PlanTarget(kind, state.share_per_day or 0, target.why, backfill)
    decisions = _decide(rows, plan_as, _level(state, floor_s), floor_s, now)
    written = _save(conn, rows, decisions, now)
    complete = len(rows) < REPLAN_SLICE
    state = replace(
        state,
        replan_after=int(rows[-1]["rider_id"]) if rows else state.replan_after,
        replan_riders=state.replan_riders + len(rows),
        replan_phase=None if complete else "plan",
        planned_at=now if complete else state.planned_at,
    )
    models.planning.save_plan_state(conn, state)
    return len(rows), written, complete


def _adopt(
    state: models.planning.PlanState,
    target: PlanTarget,
    level: schedule.FleetLevel | None,
    floor_s: int,
) -> models.planning.PlanState:
    """The re-plan's plan becomes the club's: riders planned from now on (each call's own
    too) follow it."""
    if level is None:
        return replace(
            state,
            kind=state.replan_kind,
            share_per_day=state.replan_share,
            level=None,
            typical_rate=None,
            expected_per_day=None,
            fits=None,
            note=target.why,
        )
    return replace(
        state,
        kind=state.replan_kind,
        share_per_day=state.replan_share,
        level=level.level,
        typical_rate=level.typical,
        expected_per_day=level.expected_per_day,
        fits=level.fits,
        note=level.note,
    )


def replan_status(conn: models.Conn) -> dict[str, Any]:
    """The status's view of the plan: its kind and note, and a re-plan under way."""
    state = models.planning.read_plan_state(conn)
    if state is None:
        return {"kind": None, "note": None, "planned_at": None, "replan": {"pending": True}}
    return {
        "kind": state.kind,
        "note": state.note,
        "planned_at": state.planned_at,
        "replan": {
            "pending": state.kind is None or state.replan_phase is not None,
            "phase": state.replan_phase,
            "riders_done": state.replan_riders if state.replan_phase else None,
            "started_at": state.replan_started_at,
        },
    }
