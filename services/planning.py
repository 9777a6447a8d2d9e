"""The rate plan's I/O: what the pure policy (services/schedule.py) needs, read from the
database, and what it decides, written back.

Two decisions are made here with the policy: how many requests a call's class may take
in this window (`class_cap`, once per call: the rate budget then enforces it request by
request under its row lock), and when each rider is polled next (`replan_polls`, at the
end of every sync-strava call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import models
from config import Settings
from services import schedule, suspicion, webhooks
from services.schedule import DAY, WorkClass
from services.strava import next_day_reset, next_window_reset

# An incomplete history's pages, for the backlog's size: a median history (about 1,000
# activities) at 200 a page, and the empty page that ends it.
TYPICAL_HISTORY_PAGES = 6


def _window_start(now: datetime) -> datetime:
    return next_window_reset(now) - timedelta(minutes=15)


def _day_start(now: datetime) -> datetime:
    return next_day_reset(now) - DAY


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
    window, day = _window_start(now), _day_start(now)
    used = models.budget.class_requests(conn, window_start=window, day_start=day)
    state = schedule.BudgetState.from_row(
        budget,
        window_used_by={WorkClass(c): int(r["window"]) for c, r in used.items()},
        day_used_by={WorkClass(c): int(r["today"]) for c, r in used.items()},
        sync_now_reserve=settings.sync_now_reserve,
    )
    day_left = (next_day_reset(now) - now) / DAY
    sync_now_per_day = math.ceil(float(used.get("sync_now", {}).get("per_day", 0)))
    polls_window = models.planning.incremental_polls_before(
        conn, until=next_window_reset(now), now=now
    )
    polls_day = models.planning.incremental_polls_before(conn, until=next_day_reset(now), now=now)
    backlog = models.planning.backfill_backlog(
        conn,
        max_attempts=settings.enrich_max_attempts,
        recent_since=now - timedelta(days=schedule.RECENT_RACE_DAYS),
    )
    # Discovery's pages are not known ahead: an unwalked history counts as a typical one.
    discover_pages = backlog["histories"] * TYPICAL_HISTORY_PAGES
    needs = schedule.Needs(
        # The backfill classes hold nothing of each other's window: their calls run in
        # different windows (the workflows' minutes), so a window held for a class whose
        # call is not coming would only idle; their order is kept by the day's holds.
        window={WorkClass.INCREMENTAL: polls_window["riders"]},
        day={
            WorkClass.SYNC_NOW: math.ceil(sync_now_per_day * day_left),
            WorkClass.INCREMENTAL: max(
                polls_day["riders"], math.ceil(polls_day["polls_per_day"] * day_left)
            ),
            WorkClass.ENRICH_RECENT: backlog["recent_races"],
            WorkClass.DISCOVER: discover_pages,
            WorkClass.ENRICH_OLD: backlog["old_races"],
        },
        per_day={
            WorkClass.SYNC_NOW: sync_now_per_day,
            WorkClass.INCREMENTAL: polls_day["polls_per_day"],
        },
        backlog=backlog["recent_races"] + discover_pages + backlog["old_races"],
    )
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
    fleet = models.status.count_auto_sync_riders(conn)
    backlog = models.planning.backfill_backlog(
        conn, max_attempts=settings.enrich_max_attempts, recent_since=budget.day_start
    )
    wants_all = backlog["histories"] or backlog["recent_races"] or backlog["old_races"]
    return schedule.incremental_share_per_day(
        now_row.day_limit,
        fleet,
        sync_now_per_day=now_row.reserve,
        backfill_per_day=now_row.day_limit if wants_all else 0,
    )


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


def replan_polls(
    conn: models.Conn, budget: models.budget.BudgetRow, settings: Settings, now: datetime
) -> schedule.PollPlan:
    """Plan every rider's next poll and store it."""
    rows = models.planning.poll_habits(conn, since=now - timedelta(days=schedule.HABIT_DAYS))
    share = incremental_share(conn, budget, settings)
    events = webhook_health(conn, settings, now)
    if events.healthy:
        polls = schedule.safety_net_plan(
            habits(rows), share, settings.sync_min_interval_s, now, events.reason
        )
        polls = suspicion.add_suspicions(
            conn, rows, polls, floor_s=settings.sync_min_interval_s, now=now
        )
    else:
        polls = schedule.poll_plan(habits(rows), share, settings.sync_min_interval_s, now)
    models.planning.save_poll_plan(
        conn,
        decisions=[
            {
                "rider_id": d.rider_id,
                "next_poll_at": d.next_poll_at.isoformat(),
                "polls_per_day": d.polls_per_day,
                "reason": d.reason,
            }
            for d in polls.decisions.values()
        ],
    )
    return polls
