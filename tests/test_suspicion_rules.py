"""Pure rules of the polls on suspicion (services/suspicion.py): where a rider's polls go
from their habit, the floor under them, and the reason in words; seeded habits, offsets
and moments, no database, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services import suspicion
from services.schedule import HABIT_DAYS, RiderHabit, safety_net_time
from services.suspicion import (
    QUIET_MAX_S,
    UPLOAD_DELAY_S,
    WATCH_BAR,
    WATCH_MAX,
    WATCH_MIN_UPLOADS,
    WATCH_SPAN_S,
    Watch,
    choose_watches,
    next_watch,
    suspicion_decision,
    watch_plan,
)

HOUR = 3600
# A Monday, 00:00 UTC; the habits are the four weeks before NOW.
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
NOW = MONDAY + timedelta(days=28)
FLOOR_S = 1800
WHY = "events arriving: riders are polled after their usual uploads"


def local(offset_s: int, day: int, hour: float) -> datetime:
    """The UTC instant of `hour` local time on day `day` after MONDAY, at UTC+offset_s."""
    return MONDAY + timedelta(days=day, hours=hour) - timedelta(seconds=offset_s)


def rider(ends: list[datetime], offset_s: int = 0, *, last: datetime | None = NOW) -> RiderHabit:
    return RiderHabit(
        rider_id=7, uploads=tuple(ends), utc_offset_s=offset_s, last_poll_at=last,
        last_poll_found=False,
    )  # fmt: skip


def rides(
    offset_s: int, hour: float, days: range, *, weekend: bool | None = None
) -> list[datetime]:
    """Ride ends at `hour` local on these days after MONDAY (weekdays or weekend days
    only, if asked)."""
    return [local(offset_s, d, hour) for d in days if weekend is None or ((d % 7) >= 5) == weekend]


def hhmm(seconds: int) -> str:
    return f"{seconds // HOUR:02d}:{seconds % HOUR // 60:02d}"


@pytest.mark.parametrize("offset_s", [-8 * HOUR, -3 * HOUR - 1800, 0, 5 * HOUR + 1800, 10 * HOUR])
def test_a_commuter_is_polled_just_after_the_usual_upload_in_their_own_zone(offset_s):
    ends = rides(offset_s, 7.5, range(1, 28), weekend=False)  # 19 weekdays
    plan = watch_plan(rider(ends, offset_s), NOW)
    upload = int(7.5 * HOUR) + UPLOAD_DELAY_S
    assert plan.weekdays == (Watch(upload, 19, 20),)
    # No weekend rides: the weekend's one poll borrows the weekday's moment.
    assert plan.weekend == (Watch(upload, 0, 8),)
    assert plan.polls_per_day == 1.0
    # Polled Monday at 08:30 local: next Tuesday at 07:50 local.
    last = local(offset_s, 28, 8.5)
    decision = suspicion_decision(rider(ends, offset_s, last=last), FLOOR_S, last, WHY)
    assert decision.next_poll_at == local(offset_s, 29, 7.5) + timedelta(seconds=UPLOAD_DELAY_S)
    assert decision.polls_per_day == 1
    assert decision.reason.startswith(WHY + "; polls just after this rider's usual uploads")
    assert "weekdays 07:50 (19 of 20 days); weekends 07:50 (0 of 8 days)" in decision.reason
    assert "next Tue 07:50 local, after a usual upload (19 of 20 days)" in decision.reason


def test_two_rides_a_day_earn_two_polls_and_the_weekend_its_own():
    ends = (
        rides(0, 7.0, range(28), weekend=False)
        + rides(0, 18.0, range(28), weekend=False)
        + rides(0, 11.0, range(28), weekend=True)
    )
    plan = watch_plan(rider(ends), NOW)
    assert [w.at_s for w in plan.weekdays] == [7 * HOUR + 1200, 18 * HOUR + 1200]
    assert [w.at_s for w in plan.weekend] == [11 * HOUR + 1200]
    assert plan.polls_per_day == pytest.approx(12 / 7)
    # Friday evening's poll is followed by Saturday's weekend moment, then Sunday's, then
    # Monday's two.
    at = local(0, 32, 18.5)
    seen = []
    for _ in range(5):
        found = next_watch(plan, 0, at)
        assert found is not None
        at = found[0]
        seen.append(at)
    assert seen == [
        local(0, 33, 11 + 1 / 3), local(0, 34, 11 + 1 / 3),
        local(0, 35, 7 + 1 / 3), local(0, 35, 18 + 1 / 3), local(0, 36, 7 + 1 / 3),
    ]  # fmt: skip


def test_while_a_backfill_runs_a_rider_keeps_one_poll_a_day_at_the_busiest_stretch():
    ends = (
        rides(0, 7.0, range(28), weekend=False) * 2  # the busier
        + rides(0, 18.0, range(28), weekend=False)
        + rides(0, 11.0, range(28), weekend=True)
    )
    last = local(0, 28, 8.0)  # Monday, after the morning's poll
    calm = suspicion_decision(rider(ends, last=last), FLOOR_S, last, WHY)
    assert calm.next_poll_at == local(0, 28, 18 + 1 / 3) and calm.polls_per_day == 2
    busy = suspicion_decision(rider(ends, last=last), FLOOR_S, last, WHY, backfill=True)
    assert busy.next_poll_at == local(0, 29, 7 + 1 / 3) and busy.polls_per_day == 1
    assert busy.local_times_s == (7 * HOUR + 1200, 11 * HOUR + 1200)
    assert "; one a day while the backfill runs;" in busy.reason
    assert "one a day while the backfill runs" not in calm.reason


def test_a_rider_without_uploads_keeps_the_safety_nets_daily_time():
    own = (safety_net_time(7) + 2 * HOUR) % 86_400  # in local time, at UTC+2
    plan = watch_plan(rider([], 2 * HOUR), NOW)
    assert plan.weekdays == plan.weekend == (Watch(own, 0, 0),)
    decision = suspicion_decision(rider([], 2 * HOUR, last=NOW), FLOOR_S, NOW, WHY)
    assert decision.next_poll_at == NOW + timedelta(seconds=safety_net_time(7))
    assert decision.polls_per_day == 1
    # Uploads older than the habit's four weeks, or not yet made, count for nothing.
    stale = [NOW - timedelta(days=HABIT_DAYS, seconds=1), NOW + timedelta(hours=1)]
    assert watch_plan(rider(stale, 2 * HOUR), NOW) == plan


def test_a_stretch_earns_a_second_poll_only_at_the_bar():
    days = 20
    need = max(WATCH_MIN_UPLOADS, int(WATCH_BAR * days + 0.999))
    morning = [7 * HOUR] * 10  # the busiest: always taken
    at_bar = morning + [19 * HOUR] * need
    below = morning + [19 * HOUR] * (need - 1)
    assert [w.at_s for w in choose_watches(at_bar, days)] == [7 * HOUR, 19 * HOUR]
    assert [w.at_s for w in choose_watches(below, days)] == [7 * HOUR]
    # One upload is no habit, however few the days.
    assert [w.at_s for w in choose_watches(morning[:3] + [19 * HOUR], 2)] == [7 * HOUR]
    # At most WATCH_MAX stretches, each the busiest of what the others left.
    many = [h * 3 * HOUR for h in range(8) for _ in range(10 - h)]
    chosen = choose_watches(many, days)
    assert len(chosen) == WATCH_MAX
    assert sorted(w.uploads for w in chosen) == [8, 9, 10]
    assert choose_watches([], days) == ()


def test_the_poll_goes_at_the_last_upload_of_a_stretch_and_a_stretch_may_cross_midnight():
    # Uploads spread over 90 minutes: the poll at the latest, which finds them all.
    spread = [int(7 * HOUR + m * 60) for m in range(0, 91, 10)]
    [watch] = choose_watches(spread, 20)
    assert watch.at_s == 7 * HOUR + 90 * 60 and watch.uploads == len(spread)
    late = [23 * HOUR + 1800] * 3 + [1800] * 3  # 23:30 and 00:30: one stretch
    [watch] = choose_watches(late, 20)
    assert watch.at_s == 1800 and watch.uploads == 6
    # Uploads a whole stretch apart are not one stretch.
    apart = [7 * HOUR] * 4 + [7 * HOUR + WATCH_SPAN_S] * 3
    assert [(w.at_s, w.uploads) for w in choose_watches(apart, 20)] == [
        (7 * HOUR, 4), (7 * HOUR + WATCH_SPAN_S, 3),
    ]  # fmt: skip


def test_polls_never_come_before_the_floor_nor_in_the_past_nor_more_than_a_day_apart():
    rng = random.Random(5)
    for _ in range(1500):
        offset = rng.choice((-8, -5, 0, 1, 5, 9, 10)) * HOUR + rng.choice((0, 1800))
        ends = [
            NOW - timedelta(days=rng.uniform(0, HABIT_DAYS), hours=0)
            for _ in range(rng.randrange(0, 40))
        ]
        now = NOW + timedelta(seconds=rng.randrange(7 * 86_400))
        last = now - timedelta(seconds=rng.randrange(0, 3 * 86_400))
        floor_s = rng.choice((0, 60, FLOOR_S, 3 * HOUR))
        decision = suspicion_decision(rider(ends, offset, last=last), floor_s, now, WHY)
        nxt = decision.next_poll_at
        assert nxt >= now
        assert nxt >= last + timedelta(seconds=floor_s)
        assert nxt <= max(now, last + timedelta(seconds=max(QUIET_MAX_S, floor_s)))
        assert decision.interval_s == int((nxt - last).total_seconds())
        assert decision.polls_per_day >= 1
        assert "at most a day between polls" in decision.reason
        # When it is a usual upload's poll, it is one of the plan's moments.
        if "after a usual upload" in decision.reason and nxt > now:
            local_s = int(nxt.timestamp() + offset) % 86_400
            assert local_s in decision.local_times_s


def test_a_usual_moment_missed_is_polled_at_once_and_a_quiet_plan_a_day_after():
    ends = rides(0, 7.5, range(28), weekend=False)
    # Last polled Monday 06:00; now Monday 12:00: Monday's 07:50 passed unpolled.
    last, now = local(0, 28, 6.0), local(0, 28, 12.0)
    decision = suspicion_decision(rider(ends, last=last), FLOOR_S, now, WHY)
    assert decision.next_poll_at == now
    # Only Saturday rides: polled Saturday, Sunday borrows nothing (it has Saturday's
    # stretch), and the weekdays borrow it too: one poll a day at 10:20.
    sat = rides(0, 10.0, range(28), weekend=True)
    sat = [e for e in sat if e.weekday() == 5]
    plan = watch_plan(rider(sat), NOW)
    assert [w.at_s for w in plan.weekdays] == [w.at_s for w in plan.weekend] == [10 * HOUR + 1200]
    # The first listing is at once.
    first = suspicion_decision(rider(ends, last=None), FLOOR_S, NOW, WHY)
    assert first.next_poll_at == NOW and first.interval_s == 0
    assert first.reason == f"{WHY}; never polled: now"


def test_when_no_usual_moment_comes_within_a_day_the_floor_polls_a_day_after_the_last():
    # Weekday uploads at 01:00, weekend ones at 23:00: from Friday 01:00 the next usual
    # moment is Saturday 23:00, 46 hours on; the floor polls Saturday 01:00.
    ends = rides(0, 0.5, range(28), weekend=False) + rides(0, 22.5, range(28), weekend=True)
    friday = local(0, 32, 1.0) - timedelta(minutes=10)
    decision = suspicion_decision(rider(ends, last=friday), FLOOR_S, friday, WHY)
    assert decision.next_poll_at == friday + timedelta(seconds=QUIET_MAX_S)
    assert decision.reason.endswith("next a day after the last poll (no usual upload sooner)")
    # A floor longer than a day wins over it.
    longer = suspicion_decision(rider(ends, last=friday), 30 * HOUR, friday, WHY)
    assert longer.next_poll_at == friday + timedelta(hours=30)
    assert next_watch(suspicion.WatchPlan((), ()), 0, NOW) is None
