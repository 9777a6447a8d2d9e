"""Rules of services/schedule.py at edges the main tests (test_schedule_rules.py) do not
reach: the plan's day shares when the incremental class needs most of the day, and usual
hours that run past midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services import schedule
from services.schedule import BudgetState, Needs, RiderHabit, WorkClass

W = WorkClass
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)
HOUR = 3600


def test_incremental_keeps_its_whole_day_need_and_the_backfill_gets_what_is_left():
    state = BudgetState(100, 0, 1000, 0)  # Sync now's reserve: 10
    needs = Needs(day={W.INCREMENTAL: 700, W.DISCOVER: 5000})
    plan = schedule.plan(state, needs, NOW)
    assert plan.backfill_day_pool == 1000 - 10 - 700
    today = {cls: share.day_share for cls, share in plan.classes.items()}
    assert today == {
        W.SYNC_NOW: 10,
        W.INCREMENTAL: 700,
        W.ENRICH_RECENT: 0,
        W.DISCOVER: 290,
        W.ENRICH_OLD: 0,
    }


def test_backfill_classes_share_one_pool_in_priority_order():
    state = BudgetState(100, 0, 1000, 0)
    needs = Needs(day={W.INCREMENTAL: 600, W.ENRICH_RECENT: 100, W.DISCOVER: 250, W.ENRICH_OLD: 80})
    plan = schedule.plan(state, needs, NOW)
    today = {cls: share.day_share for cls, share in plan.classes.items()}
    # 1000 less the reserve and incremental's 600: 390 for the backfill, taken in turn.
    assert today == {
        W.SYNC_NOW: 10,
        W.INCREMENTAL: 600,
        W.ENRICH_RECENT: 100,
        W.DISCOVER: 250,
        W.ENRICH_OLD: 40,
    }


def test_usual_hours_past_midnight_count_the_polls_on_both_sides_of_it():
    """Uploads every day at 23:30 and 00:30: the usual hours are 23:00-01:00, and a poll
    at 00:39 is inside them as much as one at 23:17."""
    uploads = tuple(
        MIDNIGHT - timedelta(days=day) + timedelta(hours=h)
        for day in range(1, schedule.HABIT_DAYS + 1)
        for h in (23.5, 0.5)
    )
    rider = RiderHabit(1, uploads, 0, NOW - timedelta(hours=3), False)
    words = "uploads ~2.0 a day, mostly 23:00-01:00 local"

    def said(share: int) -> tuple[tuple[float, ...], str]:
        decision = schedule.poll_plan([rider], share, 900, NOW).decisions[1]
        return tuple(round(t / HOUR, 2) for t in decision.local_times_s), decision.reason

    # 00:25 and 23:31 inside: two polls in two hours.
    assert said(5) == ((0.42, 2.0, 23.52), f"{words}: 3 polls a day, every ~1 h then")
    # 00:39, 23:17 and 23:58: three in two hours.
    assert said(6) == ((0.65, 2.0, 23.29, 23.97), f"{words}: 4 polls a day, every ~0.7 h then")
