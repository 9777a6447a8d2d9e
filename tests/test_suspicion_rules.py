"""Pure rules of polls on suspicion and of the weekly look back (services/schedule.py):
seeded habits, offsets and moments; no database, no clock."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from services import schedule
from services.schedule import (
    SUSPICION_AFTER_S,
    PollDecision,
    PollPlan,
    Suspicion,
    UploadHabit,
)

HOUR = 3600
# A Monday, 00:00 UTC.
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
FLOOR_S = 1800


def local(offset_h: int, day: int, hour: float) -> datetime:
    """UTC instant of `hour` local time on day `day` of MONDAY's week in UTC+offset_h."""
    return MONDAY + timedelta(days=day, hours=hour - offset_h)


def tue_thu_rider(offset_h: int = 0, *, delay_s: float = 20 * 60, weeks: int = 4) -> UploadHabit:
    """Rides ending 18:00 local every Tuesday and Thursday of the last `weeks` weeks."""
    ends = tuple(local(offset_h, day - 7 * w, 18.0) for w in range(1, weeks + 1) for day in (1, 3))
    return UploadHabit(
        rider_id=7,
        ride_ends=ends,
        upload_delays_s=(delay_s,) * len(ends),
        utc_offset_s=offset_h * HOUR,
        last_heard_at=None,
    )


def heard(habit: UploadHabit, at: datetime) -> UploadHabit:
    return UploadHabit(
        habit.rider_id, habit.ride_ends, habit.upload_delays_s, habit.utc_offset_s, at
    )


BAR = schedule.SUSPICION_LIKELY


def test_a_usual_upload_unheard_of_is_polled_for_shortly_after_it_is_likely():
    rider = heard(tue_thu_rider(), local(0, 1, 8.0))  # heard from Tuesday 08:00
    now = local(0, 1, 9.0)
    found = schedule.suspicion(rider, BAR, FLOOR_S, now)
    assert found.poll_at is not None and found.likely_at is not None
    # Uploads come 18:20 (the ride's end and the rider's 20 minutes): likely that evening.
    assert local(0, 1, 17.0) < found.likely_at < local(0, 1, 20.0)
    assert found.poll_at == found.likely_at + timedelta(seconds=SUSPICION_AFTER_S)
    # The uploads the bar stands for are expected by then, exactly.
    profile = schedule.upload_profile(rider, now)
    expected = schedule.expected_uploads(profile, 0, local(0, 1, 8.0), found.likely_at)
    assert expected == pytest.approx(-math.log(1 - BAR))
    assert "on suspicion" in found.reason and "Tue/Thu" in found.reason
    assert "about 20 min after a ride" in found.reason


def test_an_upload_heard_of_moves_the_suspicion_to_the_next_usual_day():
    rider = heard(tue_thu_rider(), local(0, 1, 18.4))  # Tuesday's event came
    found = schedule.suspicion(rider, BAR, FLOOR_S, local(0, 1, 18.5))
    assert found.poll_at is not None
    # Not that evening again: once Wednesday's share of a weekday's uploads (the rider's
    # days are pooled with their like days) and Thursday's have piled up.
    assert local(0, 2, 19.0) < found.poll_at < local(0, 3, 20.5)


@pytest.mark.parametrize("offset_h", range(-12, 15))
def test_the_habit_is_the_riders_local_time_in_every_zone(offset_h):
    rider = heard(tue_thu_rider(offset_h), local(offset_h, 1, 8.0))
    found = schedule.suspicion(rider, BAR, FLOOR_S, local(offset_h, 1, 9.0))
    assert found.poll_at is not None
    assert local(offset_h, 1, 17.0) < found.poll_at < local(offset_h, 1, 20.5)


def test_the_upload_delay_is_the_median_of_the_riders_events_and_shifts_the_poll():
    late = heard(tue_thu_rider(delay_s=4 * HOUR), local(0, 1, 8.0))
    assert schedule.upload_delay_s(late) == 4 * HOUR
    found = schedule.suspicion(late, BAR, FLOOR_S, local(0, 1, 9.0))
    assert found.poll_at is not None and local(0, 1, 21.0) < found.poll_at < local(0, 1, 23.5)
    none = UploadHabit(1, (), (), 0, None)
    assert schedule.upload_delay_s(none) == schedule.DEFAULT_UPLOAD_DELAY_S
    mixed = UploadHabit(1, (), (600.0, 60.0, 7200.0, -5.0, 86_400.0 * 3), 0, None)
    assert schedule.upload_delay_s(mixed) == 600.0  # the median of the sane ones
    late = UploadHabit(1, (), (86_400.0 * 3,), 0, None)  # a history entered at once
    assert schedule.upload_delay_s(late) == schedule.DEFAULT_UPLOAD_DELAY_S


def test_never_before_the_floor_after_the_last_poll_nor_in_the_past():
    rider = tue_thu_rider()
    # Heard from just before the usual upload: the floor holds the poll back.
    just = local(0, 1, 18.3)
    found = schedule.suspicion(heard(rider, just), 0.01, FLOOR_S, just)
    assert found.poll_at is not None
    assert found.poll_at >= just + timedelta(seconds=FLOOR_S)
    # Planned late (the moment has passed): poll now.
    late_now = local(0, 2, 6.0)
    found = schedule.suspicion(heard(rider, local(0, 1, 8.0)), BAR, FLOOR_S, late_now)
    assert found.poll_at == late_now


def test_a_quiet_rider_or_one_never_polled_gets_no_suspicion():
    quiet = UploadHabit(3, (), (), 0, MONDAY)
    found = schedule.suspicion(quiet, BAR, FLOOR_S, MONDAY + timedelta(hours=1))
    assert found.poll_at is None and "no upload likely within a week" in found.reason
    new = tue_thu_rider()
    found = schedule.suspicion(new, BAR, FLOOR_S, MONDAY)
    assert found.poll_at is None and "never polled" in found.reason


def test_no_idle_budget_no_suspicion_and_a_small_one_raises_the_bar():
    rates = [1.0] * 100  # a hundred riders uploading once a day
    assert schedule.suspicion_bar(rates, 0) == 1.0
    assert schedule.suspicion_bar(rates, 1000) == pytest.approx(schedule.SUSPICION_LIKELY)
    small = schedule.suspicion_bar(rates, 50)  # two expected uploads a poll
    assert small == pytest.approx(1 - math.exp(-2))
    # The polls that bar costs at most (uploads a day / expected uploads a poll) fit.
    for idle in (1, 10, 50, 144, 145, 300, 1000):
        bar = schedule.suspicion_bar(rates, idle)
        if bar >= 1.0:  # a hundred expected uploads a poll: none at all
            continue
        assert sum(rates) / -math.log(1 - bar) <= idle + 1e-9 or bar == pytest.approx(
            schedule.SUSPICION_LIKELY
        )
    rider = heard(tue_thu_rider(), local(0, 1, 8.0))
    found = schedule.suspicion(rider, 1.0, FLOOR_S, local(0, 1, 9.0))
    assert found.poll_at is None and "no idle budget" in found.reason
    # A higher bar waits for more of the habit's uploads.
    low = schedule.suspicion(rider, 0.5, FLOOR_S, local(0, 1, 9.0)).poll_at
    high = schedule.suspicion(rider, 0.8, FLOOR_S, local(0, 1, 9.0)).poll_at
    assert low is not None and high is not None and high > low
    assert schedule.suspicion_idle_per_day(300, 200, 65.5) == 34.5
    assert schedule.suspicion_idle_per_day(300, 290, 65.5) == 0.0


def test_expected_uploads_and_likely_by_agree_on_random_profiles():
    rng = random.Random(5)
    for _ in range(200):
        profile = [rng.random() ** 3 / 10 for _ in range(168)]
        offset = rng.randrange(-12, 15) * HOUR + rng.choice((0, 1800))
        since = MONDAY + timedelta(seconds=rng.randrange(14 * 86_400))
        target = rng.uniform(0.01, 3.0)
        at = schedule.likely_by(profile, offset, since, target, 30 * 86_400)
        assert at is not None and at > since
        assert schedule.expected_uploads(profile, offset, since, at) == pytest.approx(target)
        # Nothing short of it reaches the target.
        before = at - timedelta(minutes=1)
        assert before <= since or schedule.expected_uploads(profile, offset, since, before) < target
    # A week's whole profile, from any moment, is its sum.
    flat = [0.01] * 168
    assert schedule.expected_uploads(flat, 0, MONDAY, MONDAY + timedelta(days=7)) == (
        pytest.approx(1.68)
    )
    assert schedule.likely_by(flat, 0, MONDAY, 2.0, 7 * 86_400) is None


def test_the_profile_counts_the_last_four_weeks_pooled_with_like_days():
    rider = tue_thu_rider()
    now = local(0, 1, 0.0)
    profile = schedule.upload_profile(rider, now)
    weekly = 8 / 4 + schedule.SUSPICION_PRIOR_UPLOADS / 4  # 8 rides in 4 weeks, and the prior
    assert sum(profile) == pytest.approx(weekly)
    by_day = [sum(profile[d * 24 : d * 24 + 24]) for d in range(7)]
    assert by_day[1] == by_day[3] > by_day[0] == by_day[2] == by_day[4] > by_day[5]
    # A ride older than four weeks is not the habit.
    old = UploadHabit(1, (now - timedelta(days=40),), (), 0, None)
    assert sum(schedule.upload_profile(old, now)) == pytest.approx(
        schedule.SUSPICION_PRIOR_UPLOADS / 4
    )


def _decision(rider_id: int, at: datetime) -> PollDecision:
    return PollDecision(rider_id, at, 0, 1, 0.0, (0,), 0, FLOOR_S, "the daily poll")


def test_the_plan_takes_a_suspicion_only_when_it_comes_first_and_counts_it():
    now = MONDAY
    polls = PollPlan(
        {1: _decision(1, now + timedelta(hours=10)), 2: _decision(2, now + timedelta(hours=3))},
        300,
        2.0,
        True,
        "safety net",
    )
    suspicions = {
        1: Suspicion(1, now + timedelta(hours=5), now + timedelta(hours=4), 0.5, "why one"),
        2: Suspicion(2, now + timedelta(hours=5), now + timedelta(hours=4), 0.5, "why two"),
    }
    plan = schedule.with_suspicions(polls, suspicions, 0.5, now)
    one, two = plan.decisions[1], plan.decisions[2]
    assert one.next_poll_at == now + timedelta(hours=5) and one.polls_per_day == 2
    assert one.reason.startswith("poll on suspicion: why one; then the daily poll")
    assert two.next_poll_at == now + timedelta(hours=3) and two.polls_per_day == 1
    assert two.reason == "the daily poll; on suspicion: why two"
    assert plan.expected_per_day == 3.0 and "1 polls on suspicion" in plan.note


def test_the_look_back_comes_once_a_week_per_rider_spread_over_the_week():
    # Every rider's slot is the latest weekly moment at or before now.
    rng = random.Random(2)
    for _ in range(500):
        rider = rng.randrange(1, 100_000)
        now = MONDAY + timedelta(seconds=rng.randrange(60 * 86_400))
        slot = schedule.look_back_slot(rider, now)
        assert slot <= now < slot + timedelta(days=7)
        assert schedule.look_back_slot(rider, slot) == slot
        assert schedule.look_back_slot(rider, slot + timedelta(days=7)) == slot + timedelta(7)
    # 700 riders' slots fall on every day of the week, about a hundred a day.
    days = [schedule.look_back_slot(r, MONDAY).weekday() for r in range(1, 701)]
    assert all(80 <= days.count(d) <= 120 for d in range(7)), days


def test_the_look_back_is_due_after_the_riders_weekly_moment():
    rider, now = 11, MONDAY + timedelta(days=30)
    slot = schedule.look_back_slot(rider, now)
    connected = now - timedelta(days=20)

    def due(last: datetime | None, synced: datetime | None = now) -> bool:
        return schedule.look_back_due(
            rider, last_look_back_at=last, connected_at=connected, last_synced_at=synced, now=now
        )

    assert due(None)  # connected before the slot, never looked back
    assert due(slot - timedelta(seconds=1))
    assert not due(slot) and not due(slot + timedelta(hours=1))
    assert not due(None, synced=None)  # the first listing is never one
    fresh = schedule.look_back_due(
        rider, last_look_back_at=None, connected_at=slot + timedelta(minutes=1),
        last_synced_at=now, now=now,
    )  # fmt: skip
    assert not fresh  # connected since the slot: next week's
    assert schedule.look_back_after(now) == now - timedelta(days=60)
    # A listing resumed after a cut is a look back's only if it began 60 days back.
    assert schedule.lists_back(now - timedelta(days=60), now)
    assert schedule.lists_back(now - timedelta(days=59, hours=1), now)  # begun an hour ago
    assert not schedule.lists_back(now - timedelta(days=7), now)  # an ordinary overlap
