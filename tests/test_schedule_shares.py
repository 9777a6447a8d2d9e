"""The plan's day shares when the incremental class needs most of the day: only the
backfill is held to the pool that Sync now and incremental leave (services/schedule.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from services import schedule
from services.schedule import BudgetState, Needs, WorkClass

W = WorkClass
NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)


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
