"""Rules of services/schedule.py at edges the main tests (test_schedule_rules.py) do not
reach: the plan's day shares when the incremental class needs most of the day, usual
hours that run past midnight, and the fleet's level (the one number a rider planned alone
is planned by, so it is stored between calls) at its edges."""

from __future__ import annotations

from dataclasses import replace
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


def idle(rider_id: int) -> RiderHabit:
    """A rider last seen uploading 40 days ago, last polled 3 hours ago."""
    return RiderHabit(rider_id, (), 0, NOW - timedelta(hours=3), False, NOW - timedelta(days=40))


def test_a_stored_level_means_one_poll_plus_level_times_upload_rate_and_prior():
    # A plan's level is stored and read back by later calls (and later deploys), which
    # plan riders alone by it: its scale must not drift. At level 10, a rider uploading
    # 0.9 a day (weight 0.9 + the 0.1 prior, tie step 0) gets 1 + 10 polls.
    level = schedule.FleetLevel(10.0, 0.5, 23, 1, 100, 0.0, True)
    assert level.polls(0.9, 0) == 11
    assert level.polls(0.0, 0) == 2  # an idle rider: 1 + 10 x 0.1
    assert level.polls(100.0, 0) == 24  # the floor's cap: 1 + 23


def test_the_floor_leaves_room_for_a_poll_every_second_at_a_floor_of_0_or_1_s():
    # SYNC_MIN_INTERVAL_S may be 0: the floor is then a second, not two.
    assert schedule.floor_cap(0) == schedule.floor_cap(1) == 86_399
    assert schedule.floor_cap(2) == 43_199
    assert schedule.floor_cap(3600) == 23


def test_a_share_of_exactly_one_poll_a_rider_sets_the_largest_level_that_fits():
    # Three idle riders, a share of 3: once a day each, and the level is the largest at
    # which that holds (the highest tie step is about to step up), not 0, so a rider who
    # starts uploading and is planned alone before the next re-plan gets more polls.
    fleet = [idle(2), idle(3), idle(4)]
    level = schedule.fleet_level(schedule.survey(fleet, NOW), 3, 3600)
    assert level.fits and level.expected_per_day == 3
    assert [level.polls(0.0, schedule.tie_step(r.rider_id)) for r in fleet] == [1, 1, 1]
    assert replace(level, level=level.level * 1.000001).polls(0.0, 4) == 2
    assert level.polls(1.0, 4) == 11  # uploading once a day, planned alone: 1 + ~10


def test_a_share_too_small_says_how_many_riders_need_how_many_polls():
    polls = schedule.poll_plan([idle(2), idle(3), idle(4)], 2, 3600, NOW)
    assert not polls.fits
    assert polls.note == (
        "does not fit: 3 riders need 3 polls a day (one each, plus follow-ups after finds),"
        " the share is 2; once a day anyway"
    )
    assert [d.polls_per_day for d in polls.decisions.values()] == [1, 1, 1]
    assert polls.decisions[2].reason == (
        "idle 40 days: once a day; the budget's share is too small for more"
    )


def test_an_upload_exactly_the_habit_days_old_still_counts():
    # The habit's window includes its first instant, as upload_rate's does: the rider is
    # known (one upload), not a newcomer planned like the median rider.
    oldest = NOW - timedelta(days=schedule.HABIT_DAYS)
    rider = RiderHabit(7, (oldest,), 0, NOW - timedelta(hours=3), False)
    assert schedule.rider_uploads(rider, NOW) == 1
    assert schedule.upload_rate(rider, NOW) == 1 / schedule.HABIT_DAYS
    assert schedule.survey([rider], NOW) == schedule.FleetSurvey({(1, 7): 1}, {})
    reason = schedule.poll_plan([rider], 10, 3600, NOW).decisions[7].reason
    assert reason.startswith("uploads ~0.0 a day")
    gone = RiderHabit(7, (oldest - timedelta(seconds=1),), 0, NOW - timedelta(hours=3), False)
    assert schedule.rider_uploads(gone, NOW) is None  # a second older: none known


def test_a_survey_starts_from_nothing_stored_and_reads_a_part_missing():
    # The first slice of a re-plan's survey has nothing stored yet (None); a stored
    # survey may hold only riders known, or only newcomers.
    first = schedule.FleetSurvey.of([(3, 5), (4, None)])
    assert schedule.FleetSurvey.from_json(None).plus(first) == first
    assert schedule.FleetSurvey.from_json({}) == schedule.FleetSurvey()
    assert schedule.FleetSurvey.from_json({"known": [[5, 3, 2]]}) == schedule.FleetSurvey(
        {(5, 3): 2}, {}
    )
    assert schedule.FleetSurvey.from_json({"newcomers": [[4, 1]]}) == schedule.FleetSurvey(
        {}, {4: 1}
    )
