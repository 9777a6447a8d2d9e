"""Pure rules of the budget scheduler (services/schedule.py), over many seeded budgets,
days and fleets: no database, no clock."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from services import schedule
from services.schedule import (
    BACKFILL,
    PRIORITY,
    BudgetState,
    Needs,
    RiderHabit,
    WorkClass,
)

W = WorkClass
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)
HOUR = 3600
CASES = 300


def random_now(rng: random.Random) -> datetime:
    return MIDNIGHT + timedelta(seconds=rng.randrange(86_400))


def random_split(rng: random.Random, total: int, classes=PRIORITY) -> dict[WorkClass, int]:
    """`total` split at random over the classes."""
    cuts = sorted(rng.randint(0, total) for _ in range(len(classes) - 1))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    return dict(zip(classes, parts, strict=True))


def random_state(rng: random.Random) -> BudgetState:
    window_limit = rng.choice([20, 100, 100, 200, 600])
    day_limit = rng.choice([300, 1000, 1000, 2000, 30_000])
    window_used = rng.randint(0, window_limit + 5)  # Strava's count may run past the limit
    day_used = rng.randint(window_used, max(window_used, day_limit + 5))
    return BudgetState(
        window_limit=window_limit,
        window_used=window_used,
        day_limit=day_limit,
        day_used=day_used,
        window_used_by=random_split(rng, window_used),
        day_used_by=random_split(rng, day_used),
        sync_now_reserve=rng.choice([0.0, 0.05, 0.10, 0.10, 0.25]),
    )


def random_needs(rng: random.Random, state: BudgetState) -> Needs:
    def some(scale: int) -> dict[WorkClass, int]:
        return {c: rng.choice([0, 0, rng.randint(0, scale)]) for c in PRIORITY}

    window = some(state.window_limit)
    day = {c: n + rng.randint(0, state.day_limit) for c, n in some(state.day_limit).items()}
    return Needs(window=window, day=day, per_day=some(state.day_limit))


def allowances(state: BudgetState, needs: Needs, now: datetime) -> dict[WorkClass, int]:
    return {c: schedule.allowance(c, state, needs, now).requests for c in PRIORITY}


def spend(state: BudgetState, cls: WorkClass, n: int) -> BudgetState:
    """The state after `cls` sent `n` requests."""
    by_w, by_d = dict(state.window_used_by), dict(state.day_used_by)
    by_w[cls] = by_w.get(cls, 0) + n
    by_d[cls] = by_d.get(cls, 0) + n
    return BudgetState(
        state.window_limit,
        state.window_used + n,
        state.day_limit,
        state.day_used + n,
        by_w,
        by_d,
        state.sync_now_reserve,
    )


# --- allowances -----------------------------------------------------------------------


def test_no_class_is_allowed_more_than_the_window_or_the_day_has_left():
    rng = random.Random(8_001)
    for _ in range(CASES):
        state, now = random_state(rng), random_now(rng)
        needs = random_needs(rng, state)
        for cls, allowed in allowances(state, needs, now).items():
            assert 0 <= allowed <= min(state.window_headroom, state.day_headroom), cls
        shares = schedule.plan(state, needs, now).classes.values()
        assert sum(p.window_share - p.window_used for p in shares) <= state.window_headroom
        assert sum(p.day_share - p.day_used for p in shares) <= state.day_headroom


def test_requests_taken_one_by_one_in_any_order_never_pass_a_limit():
    """Every class sending while its allowance lasts, in any order: no 429 can follow."""
    rng = random.Random(8_002)
    for _ in range(CASES):
        state, now = random_state(rng), random_now(rng)
        needs = random_needs(rng, state)
        room, sent = min(state.window_headroom, state.day_headroom), 0
        for _ in range(400):
            cls = rng.choice(PRIORITY)
            if schedule.allowance(cls, state, needs, now).requests >= 1:
                state, sent = spend(state, cls, 1), sent + 1
        assert sent <= room
        assert state.window_used <= max(state.window_limit, state.window_used - sent)
        assert state.day_used <= max(state.day_limit, state.day_used - sent)


def test_counting_the_windows_polls_up_to_what_matters_changes_no_allowance():
    """The incremental class's polls in this window counted only up to
    window_polls_that_matter (as a call counts them; the count also floors today's
    need): every class is allowed the same requests as with the whole count, for clubs
    whose window holds many times the limit."""
    rng = random.Random(8_010)
    for _ in range(CASES):
        state, now = random_state(rng), random_now(rng)
        base = random_needs(rng, state)
        polls = rng.choice([0, rng.randint(0, 3 * state.window_limit), 40 * state.window_limit])
        day_polls = rng.randint(0, state.day_limit)

        def needs_counting(count: int, base: Needs = base, day_polls: int = day_polls) -> Needs:
            return replace(
                base,
                window={**base.window, W.INCREMENTAL: count},
                day={**base.day, W.INCREMENTAL: max(count, day_polls)},
            )

        whole = needs_counting(polls)
        for cls in PRIORITY:
            cap = schedule.window_polls_that_matter(cls, state.window_limit)
            counted = needs_counting(min(polls, cap))
            assert (
                schedule.allowance(cls, state, counted, now).requests
                == schedule.allowance(cls, state, whole, now).requests
            ), (cls, polls, cap)
        assert schedule.window_polls_that_matter(W.INCREMENTAL, state.window_limit) == 0
        assert schedule.window_polls_that_matter(W.DISCOVER, state.window_limit) > 0


def test_lower_classes_spending_all_they_may_leave_the_higher_classes_their_needs():
    rng = random.Random(8_003)
    for _ in range(CASES):
        state, now = random_state(rng), random_now(rng)
        needs = random_needs(rng, state)
        for cls in reversed(PRIORITY[1:]):  # the lowest first, each as greedy as allowed
            state = spend(state, cls, schedule.allowance(cls, state, needs, now).requests)
        # Sync now still finds its reserve (or its need) in the window, bounded by the day.
        sync_now = schedule.allowance(W.SYNC_NOW, state, needs, now).requests
        held = max(state.reserve, needs.in_window(W.SYNC_NOW))
        assert sync_now >= min(held, state.window_headroom, state.day_headroom)


def test_a_higher_need_that_exhausts_the_headroom_leaves_the_lower_classes_nothing():
    rng = random.Random(8_004)
    for _ in range(CASES):
        state = BudgetState(
            window_limit=rng.choice([100, 200, 600]),
            window_used=0,
            day_limit=rng.choice([1000, 2000, 30_000]),
            day_used=0,
        )
        state = spend(state, W.INCREMENTAL, rng.randint(0, state.window_limit // 2))
        now = random_now(rng)
        higher = rng.choice(PRIORITY[1:-1])
        lower = PRIORITY[PRIORITY.index(higher) + 1 :]
        # The window: Sync now's reserve plus the higher class's need is the headroom.
        window_need = state.window_headroom - state.reserve
        needs = Needs(window={higher: window_need})
        for cls in lower:
            assert schedule.allowance(cls, state, needs, now).requests == 0, (higher, cls)
        if higher not in BACKFILL:  # a backfill class is paced below its need
            assert schedule.allowance(higher, state, needs, now).requests == window_need
        # The day: Sync now's reserve plus the higher class's need for today is the rest.
        needs = Needs(day={higher: state.day_headroom - state.reserve})
        for cls in lower:
            assert schedule.allowance(cls, state, needs, now).requests == 0, (higher, cls)
        assert schedule.allowance(higher, state, needs, now).requests > 0


def test_a_higher_class_takes_what_the_lower_ones_leave():
    rng = random.Random(8_005)
    for _ in range(CASES):
        state, now = random_state(rng), random_now(rng)
        free = min(state.window_headroom, state.day_headroom)
        after_reserve = max(
            0, min(state.window_headroom - state.reserve, state.day_headroom - state.reserve)
        )
        # Lower classes' needs, however large, take nothing from a higher class.
        lowers = {c: rng.randint(0, 10 * state.day_limit) for c in BACKFILL}
        for needs in (Needs(), Needs(window=lowers, day=lowers)):
            got = allowances(state, needs, now)
            assert got[W.SYNC_NOW] == free
            assert got[W.INCREMENTAL] == after_reserve
        # With no needs anywhere, every backfill class may take the whole paced share.
        got = allowances(state, Needs(), now)
        pace = schedule.backfill_pace(state, Needs(), now)
        for cls in BACKFILL:
            assert got[cls] == min(after_reserve, pace)
        if schedule.windows_left(now) <= schedule.FINAL_WINDOWS:
            assert got[W.ENRICH_OLD] == after_reserve  # the day's end: all that is left


def test_the_sync_now_reserve_is_a_tenth_of_the_window_and_at_least_one():
    assert BudgetState(100, 0, 1000, 0).reserve == 10
    assert BudgetState(600, 0, 30_000, 0).reserve == 60
    assert BudgetState(5, 0, 100, 0, sync_now_reserve=0.1).reserve == 1
    assert BudgetState(100, 0, 1000, 0, sync_now_reserve=0.0).reserve == 1
    state = BudgetState(100, 91, 1000, 500)  # 9 left, fewer than the reserve
    assert schedule.allowance(W.INCREMENTAL, state, Needs(), NOW).requests == 0
    assert schedule.allowance(W.SYNC_NOW, state, Needs(), NOW).requests == 9


def test_the_state_comes_from_a_budget_row_with_the_tighter_of_overall_and_read():
    row = SimpleNamespace(
        limit_15min=200,
        limit_daily=2000,
        read_limit_15min=100,
        read_limit_daily=1000,
        usage_15min=150,
        usage_daily=400,
        read_usage_15min=30,
        read_usage_daily=300,
    )
    state = BudgetState.from_row(row)
    assert (state.window_headroom, state.day_headroom) == (50, 700)
    assert (state.window_limit, state.day_limit) == (100, 1000)


@pytest.mark.parametrize(
    ("now", "left"),
    [
        (MIDNIGHT, 96),
        (MIDNIGHT + timedelta(minutes=14, seconds=59), 96),
        (MIDNIGHT + timedelta(minutes=15), 95),
        (MIDNIGHT + timedelta(hours=23, minutes=44, seconds=59), 2),
        (MIDNIGHT + timedelta(hours=23, minutes=45), 1),
    ],
)
def test_windows_left_today_count_the_current_one(now, left):
    assert schedule.windows_left(now) == left


# --- pacing: a whole day, window by window --------------------------------------------


def simulate_day(rng: random.Random, state: BudgetState, backfill_odds: float):
    """One UTC day: Sync now clicks, incremental polls as planned, backfill calls (at
    the cron's minutes, some windows none) each spending what it is allowed. Returns the
    per-window totals, the backfill's spend and what the day left it."""
    polls_per_day = rng.randint(0, state.day_limit // 2)
    polls = [0] * 96
    for _ in range(polls_per_day):
        polls[rng.randrange(96)] += 1
    polls = [min(p, state.window_limit // 2) for p in polls]
    window_totals, backfill_by_window, sync_now_used = [], [], 0
    first_pace = None
    for w in range(96):
        start = MIDNIGHT + timedelta(minutes=15 * w)
        state = BudgetState(
            state.window_limit,
            0,
            state.day_limit,
            state.day_used,
            {},
            state.day_used_by,
            state.sync_now_reserve,
        )
        needs = Needs(
            window={W.INCREMENTAL: polls[w]},
            day={W.INCREMENTAL: sum(polls[w:])},
            per_day={W.INCREMENTAL: sum(polls)},
        )
        pace_at_start = schedule.backfill_pace(state, needs, start)
        if first_pace is None:
            first_pace = pace_at_start
        backfill = 0
        # Events at random minutes of the window, in random order.
        events = ["incremental"] + ["sync_now"] * rng.randint(0, 2)
        events += [rng.choice(sorted(BACKFILL)) for _ in range(rng.randint(1, 3))]
        rng.shuffle(events)
        for event in events:
            now = start + timedelta(seconds=rng.randrange(900))
            if event == "incremental":
                take = min(polls[w], schedule.allowance(W.INCREMENTAL, state, needs, now).requests)
                state = spend(state, W.INCREMENTAL, take)
                needs = Needs(
                    window={W.INCREMENTAL: polls[w] - take},
                    day={W.INCREMENTAL: sum(polls[w:]) - take},
                    per_day=needs.per_day,
                )
            elif event == "sync_now":
                take = min(
                    rng.randint(1, 3), schedule.allowance(W.SYNC_NOW, state, needs, now).requests
                )
                state = spend(state, W.SYNC_NOW, take)
                sync_now_used += take
            elif rng.random() < backfill_odds:
                cls = WorkClass(event)
                take = schedule.allowance(cls, state, needs, now).requests
                state = spend(state, cls, take)
                backfill += take
        assert backfill <= max(pace_at_start, 0), (w, backfill, pace_at_start)
        window_totals.append(state.window_used)
        backfill_by_window.append(backfill)
    higher = state.day_used - sum(backfill_by_window)
    return state, window_totals, backfill_by_window, higher, first_pace


def test_pacing_spends_the_days_remainder_by_midnight_and_never_passes_a_limit():
    rng = random.Random(8_006)
    for _ in range(120):
        window_limit = rng.choice([100, 100, 200, 600])
        odds = rng.choice([1.0, 0.7, 0.5])
        # Days the windows the backfill gets a call in can drain (else the window binds).
        day_limit = rng.choice([1000, 1000, 2000, 5000, 30_000])
        day_limit = min(day_limit, int(odds * 0.6 * 96 * window_limit))
        start = BudgetState(window_limit, 0, day_limit, 0)
        state, windows, backfill, higher, first_pace = simulate_day(rng, start, backfill_odds=odds)
        assert max(windows) <= window_limit
        assert state.day_used <= day_limit
        # What the day left the backfill; Sync now's reserve stays free until midnight.
        remainder = day_limit - higher - start.reserve
        assert sum(backfill) >= 0.95 * remainder, (day_limit, remainder, sum(backfill))
        # Paced, not all at once after midnight: the first window takes about 1/92.
        assert first_pace is not None and first_pace <= math.ceil(day_limit / 92)
        assert backfill[0] <= first_pace


def test_what_a_window_leaves_flows_to_the_next_ones():
    state = BudgetState(100, 0, 1000, 0)
    needs = Needs()
    first = schedule.backfill_pace(state, needs, MIDNIGHT)
    # The day less Sync now's reserve, over the 92 windows before the final hour.
    assert first == math.ceil(990 / 92)
    # No backfill ran in the first window: the next ones share its part.
    later = MIDNIGHT + timedelta(minutes=15)
    assert schedule.backfill_pace(state, needs, later) == math.ceil(990 / 91)
    # Half the day gone unspent: the rest of the day about doubles each window's part.
    noon = MIDNIGHT + timedelta(hours=12)
    assert schedule.backfill_pace(state, needs, noon) == math.ceil(990 / 44)
    # Spent within the window counts: the window's part less what it already took.
    spent = spend(state, W.DISCOVER, 5)
    assert schedule.backfill_pace(spent, needs, MIDNIGHT) == first - 5
    # The final windows may take all the day has left (the window still caps it).
    late = MIDNIGHT + timedelta(hours=23, minutes=1)
    assert schedule.backfill_pace(state, needs, late) == 990
    assert schedule.allowance(W.DISCOVER, state, needs, late).requests == 90


# --- the plan and the projection ------------------------------------------------------


def test_the_plan_shows_each_classs_share_and_use_now_and_today():
    state = spend(spend(BudgetState(100, 0, 1000, 300), W.INCREMENTAL, 4), W.DISCOVER, 3)
    needs = Needs(
        window={W.INCREMENTAL: 5, W.ENRICH_RECENT: 2, W.DISCOVER: 50},
        day={W.INCREMENTAL: 170, W.ENRICH_RECENT: 20, W.DISCOVER: 5000},
    )
    got = schedule.plan(state, needs, NOW).as_dict()
    assert got["sync_now_reserve"] == 10
    assert got["windows_left_today"] == 56
    assert got["backfill_day_pool"] == 693 - 10 - 170
    classes = got["classes"]
    assert classes["sync_now"]["window"] == {"share": 10, "used": 0}
    assert classes["incremental"]["window"] == {"share": 9, "used": 4}
    assert classes["incremental"]["today"] == {"share": 174, "used": 4}
    assert classes["enrich_recent"]["today"]["share"] == 20
    assert classes["discover"]["today"] == {"share": 3 + 513 - 20, "used": 3}
    assert classes["enrich_old"]["today"]["share"] == 0
    assert classes["discover"]["binds"] == "backfill pace"
    assert list(classes) == [c.value for c in PRIORITY]


def test_projected_completion_hand_worked():
    # 14,000 requests, 1,000 a day, 300 a day for the higher classes: 700 a day, 20 days.
    state = BudgetState(100, 0, 1000, 0)
    needs = Needs(day={W.INCREMENTAL: 290}, per_day={W.INCREMENTAL: 290})  # + reserve 10
    assert schedule.backfill_pool(state, needs) == 700
    assert schedule.backfill_per_day(state, needs) == 700
    assert schedule.projected_completion(14_000, state, needs, MIDNIGHT) == date(2026, 12, 13)
    assert (date(2026, 12, 13) - MIDNIGHT.date()).days + 1 == 20
    # Half today spent on other things: today gives 200, then 700 a day.
    noon = MIDNIGHT + timedelta(hours=12)
    half = BudgetState(100, 0, 1000, 500)
    assert schedule.projected_completion(200, half, needs, noon) == MIDNIGHT.date()
    assert schedule.projected_completion(900, half, needs, noon) == date(2026, 11, 25)
    assert schedule.projected_completion(901, half, needs, noon) == date(2026, 11, 26)
    # Nothing left for the backfill on any day: never.
    full = Needs(per_day={W.INCREMENTAL: 990}, day={W.INCREMENTAL: 990})
    assert schedule.projected_completion(1, state, full, MIDNIGHT) is None
    assert schedule.projected_completion(0, state, full, MIDNIGHT) == MIDNIGHT.date()


def test_incremental_share_follows_the_limits_and_the_fleet():
    backlog = {"backfill_per_day": 5000}
    assert schedule.incremental_share_per_day(1000, 200, **backlog) == 300
    assert schedule.incremental_share_per_day(1000, 500, **backlog) == 500
    assert schedule.incremental_share_per_day(1000, 1500, **backlog) == 1000  # does not fit
    assert schedule.incremental_share_per_day(30_000, 200, **backlog) == 18_000
    # Backfill nearly done: what it leaves, up to 60% of the day.
    assert schedule.incremental_share_per_day(1000, 200, backfill_per_day=20) == 600
    assert schedule.incremental_share_per_day(1000, 200, backfill_per_day=500) == 500


def test_race_recency_decides_the_enrichment_class():
    assert schedule.race_class(NOW - timedelta(days=30), NOW) is W.ENRICH_RECENT
    assert schedule.race_class(NOW - timedelta(days=30, seconds=1), NOW) is W.ENRICH_OLD


# --- polling by need ------------------------------------------------------------------


def habit(
    rider_id: int,
    *,
    per_day: float,
    local_hour: float,
    offset_h: float,
    rng: random.Random,
    now: datetime = NOW,
    spread_h: float = 1.0,
    last_poll_ago_h: float | None = 3.0,
    found: bool = False,
) -> RiderHabit:
    """A rider uploading ~per_day a day around local_hour, at UTC offset_h."""
    offset = int(offset_h * HOUR)
    uploads = []
    for day in range(schedule.HABIT_DAYS):
        count = int(per_day) + (rng.random() < per_day - int(per_day))
        local_midnight = (now - timedelta(days=day + 1)).replace(hour=0, minute=0, second=0)
        for _ in range(count):
            hour = (local_hour + rng.gauss(0, spread_h)) % 24
            moment = local_midnight + timedelta(hours=hour) - timedelta(seconds=offset)
            if now - timedelta(days=schedule.HABIT_DAYS) <= moment <= now:
                uploads.append(moment)
    last_poll = None if last_poll_ago_h is None else now - timedelta(hours=last_poll_ago_h)
    return RiderHabit(rider_id, tuple(uploads), offset, last_poll, found)


def random_fleet(rng: random.Random, size: int, now: datetime) -> list[RiderHabit]:
    return [
        habit(
            i,
            per_day=rng.choice([0, 0, 0.1, 0.3, 0.5, 0.5, 1, 2, 4]),
            local_hour=rng.uniform(5, 21),
            offset_h=rng.choice([-8, -5, 0, 1, 2, 5.5, 10, 12]),
            rng=rng,
            now=now,
            last_poll_ago_h=rng.choice([None, rng.uniform(0, 30)]),
            found=rng.random() < 0.3,
        )
        for i in range(size)
    ]


def walk(decision, days: float = 2.0) -> list[datetime]:
    """The planned polls of one rider from its next one, over `days`."""
    moments, moment = [], decision.next_poll_at
    end = moment + timedelta(days=days)
    while moment < end:
        moments.append(moment)
        moment = schedule.poll_after(
            decision.local_times_s, decision.utc_offset_s, max(1, decision.floor_s), moment
        )
    return moments


def test_poll_plan_every_rider_daily_never_under_the_floor_the_fleet_within_its_share():
    rng = random.Random(8_007)
    for _ in range(150):
        now = random_now(rng)
        fleet = random_fleet(rng, rng.randint(1, 60), now)
        floor = rng.choice([900, 1800, 3600, 3600, 7200, 4 * 3600])
        share = rng.randint(len(fleet), 8 * len(fleet))
        polls = schedule.poll_plan(fleet, share, floor, now)
        assert set(polls.decisions) == {r.rider_id for r in fleet}
        planned = sum(d.polls_per_day for d in polls.decisions.values())
        found = sum(d.found_per_day for d in polls.decisions.values())
        assert polls.expected_per_day == pytest.approx(planned + found)
        if polls.fits:
            assert polls.expected_per_day <= share
        for rider in fleet:
            d = polls.decisions[rider.rider_id]
            assert 1 <= d.polls_per_day <= max(1, 86_400 // floor)
            assert len(d.local_times_s) == d.polls_per_day
            assert d.next_poll_at >= now
            if rider.last_poll_at is not None:
                assert d.next_poll_at >= rider.last_poll_at + timedelta(seconds=floor)
                assert d.next_poll_at <= max(now, rider.last_poll_at + timedelta(days=1))
                assert d.interval_s == int((d.next_poll_at - rider.last_poll_at).total_seconds())
            else:
                assert d.next_poll_at == now
            moments = walk(d)
            gaps = [(b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False)]
            assert all(floor <= g <= 86_400 for g in gaps), (floor, gaps)
            assert d.reason


def test_a_share_below_one_poll_a_rider_polls_once_a_day_and_says_it_does_not_fit():
    rng = random.Random(8_008)
    fleet = random_fleet(rng, 50, NOW)
    polls = schedule.poll_plan(fleet, 30, 3600, NOW)
    assert not polls.fits
    assert "does not fit" in polls.note
    assert all(d.polls_per_day == 1 for d in polls.decisions.values())
    assert all("too small" in d.reason for d in polls.decisions.values())


def test_frequent_uploaders_are_polled_more_often_than_rare_and_idle_ones():
    rng = random.Random(8_009)
    for _ in range(60):
        now = random_now(rng)
        fleet = random_fleet(rng, rng.randint(5, 60), now)
        polls = schedule.poll_plan(fleet, rng.randint(2, 6) * len(fleet), 1800, now)
        known = [r for r in fleet if r.uploads]
        for a in known:
            for b in known:
                # Never fewer polls for more uploads.
                if schedule.upload_rate(a, now) < schedule.upload_rate(b, now):
                    count_a = polls.decisions[a.rider_id].polls_per_day
                    assert count_a <= polls.decisions[b.rider_id].polls_per_day
    fleet = [
        habit(1, per_day=3, local_hour=18, offset_h=0, rng=rng),
        habit(2, per_day=0.2, local_hour=18, offset_h=0, rng=rng),
        RiderHabit(3, (), 0, NOW - timedelta(hours=3), False, NOW - timedelta(days=40)),
    ]
    polls = schedule.poll_plan(fleet, 20, 1800, NOW).decisions
    assert polls[1].polls_per_day > polls[2].polls_per_day >= polls[3].polls_per_day == 1
    assert polls[3].reason == "idle 40 days: once a day"
    assert polls[1].reason.startswith("uploads ~3.")
    assert "local:" in polls[1].reason


def test_a_new_rider_with_no_uploads_yet_is_not_starved_when_there_is_room():
    rng = random.Random(8_010)
    fleet = [RiderHabit(1, (), 0, NOW - timedelta(hours=3), False)]
    fleet += [habit(i, per_day=1, local_hour=18, offset_h=0, rng=rng) for i in range(2, 12)]
    polls = schedule.poll_plan(fleet, 80, 1800, NOW).decisions
    typical = sorted(polls[i].polls_per_day for i in range(2, 12))[5]
    assert polls[1].polls_per_day >= typical - 1 >= 2
    assert polls[1].reason.startswith("no uploads known yet")


def test_polls_are_placed_in_the_riders_usual_hours():
    rng = random.Random(8_011)
    for offset_h in (-8, 0, 5.5, 10):
        # A rider at 17:05 local, last polled 16:05 local, uploading ~2 a day 18-19 local.
        offset = int(offset_h * HOUR)
        local_now = datetime(2026, 11, 24, 17, 5, tzinfo=UTC)
        now = local_now - timedelta(seconds=offset)
        rider = habit(
            1,
            per_day=2,
            local_hour=18.5,
            offset_h=offset_h,
            rng=rng,
            now=now,
            spread_h=0.5,
            last_poll_ago_h=1.0,
        )
        d = schedule.poll_plan([rider], 9, 1800, now).decisions[1]
        assert d.polls_per_day >= 5
        inside = [t for t in d.local_times_s if 17 * HOUR <= t <= 20 * HOUR]
        assert len(inside) >= d.polls_per_day - 2, d.local_times_s
        local_next = d.next_poll_at + timedelta(seconds=offset)
        assert 17 <= local_next.hour < 20, local_next
        assert "mostly 1" in d.reason


def test_a_single_daily_poll_comes_just_after_the_usual_uploads():
    rng = random.Random(8_016)
    for local_hour in (0.5, 6, 12, 18, 23):
        rider = habit(1, per_day=1, local_hour=local_hour, offset_h=-5, rng=rng, spread_h=0.7)
        d = schedule.poll_plan([rider], 1, 3600, NOW).decisions[1]
        assert len(d.local_times_s) == 1
        after_h = ((d.local_times_s[0] / HOUR) - local_hour) % 24
        assert 1 <= after_h <= 4, (local_hour, d.local_times_s)


def test_a_poll_that_found_something_brings_the_next_one_forward():
    rng = random.Random(8_012)
    for _ in range(CASES):
        now = random_now(rng)
        rider = habit(
            1,
            per_day=rng.choice([0.2, 0.5, 1, 2]),
            local_hour=rng.uniform(0, 24),
            offset_h=rng.choice([-8, 0, 10]),
            rng=rng,
            now=now,
            last_poll_ago_h=rng.uniform(0, 0.9),
        )
        found = RiderHabit(
            *(rider.rider_id, rider.uploads, rider.utc_offset_s), rider.last_poll_at, True
        )
        floor = rng.choice([900, 1800, 3600])
        share = rng.randint(1, 6)
        plain = schedule.poll_plan([rider], share, floor, now).decisions[1]
        sooner = schedule.poll_plan([found], share, floor, now).decisions[1]
        assert rider.last_poll_at is not None
        follow_up = rider.last_poll_at + timedelta(seconds=max(floor, schedule.FOUND_FOLLOW_UP_S))
        assert sooner.next_poll_at == max(now, min(plain.next_poll_at, follow_up))
        if plain.next_poll_at > follow_up:
            assert sooner.next_poll_at < plain.next_poll_at
            assert sooner.reason.startswith("last poll found new activities")


def test_the_same_habit_in_two_time_zones_polls_18_hours_apart_in_utc():
    rng = random.Random(5)
    local = [  # the same local times (as if UTC), a few days back
        MIDNIGHT - timedelta(days=rng.randint(2, 20), hours=-rng.gauss(18, 1)) for _ in range(40)
    ]
    west = RiderHabit(1, tuple(t + timedelta(hours=8) for t in local), -8 * HOUR, NOW, False)
    east = RiderHabit(2, tuple(t - timedelta(hours=10) for t in local), 10 * HOUR, NOW, False)
    polls = {
        **schedule.poll_plan([west], 5, 3600, NOW).decisions,
        **schedule.poll_plan([east], 5, 3600, NOW).decisions,
    }
    assert polls[1].local_times_s == polls[2].local_times_s
    assert polls[1].polls_per_day == polls[2].polls_per_day >= 3
    for t in polls[1].local_times_s:
        utc_west, utc_east = (t + 8 * HOUR) % 86_400, (t - 10 * HOUR) % 86_400
        assert (utc_west - utc_east) % 86_400 == 18 * HOUR
    # From the same local moment, each one's next poll: 18 h apart in UTC.
    local_moment = NOW + timedelta(days=1)
    west_next = schedule.next_planned(
        polls[1].local_times_s, -8 * HOUR, local_moment + timedelta(hours=8)
    )
    east_next = schedule.next_planned(
        polls[2].local_times_s, 10 * HOUR, local_moment - timedelta(hours=10)
    )
    assert west_next - east_next == timedelta(hours=18)


def test_the_incremental_need_counts_the_polls_in_the_window_and_today():
    rng = random.Random(8_013)
    for _ in range(60):
        now = random_now(rng)
        fleet = random_fleet(rng, rng.randint(1, 40), now)
        polls = schedule.poll_plan(fleet, 3 * len(fleet), 3600, now)
        window, day, per_day = schedule.incremental_needs(polls, now)
        end = now.replace(minute=now.minute - now.minute % 15, second=0) + timedelta(minutes=15)
        assert window == sum(1 for d in polls.decisions.values() if d.next_poll_at < end)
        assert window <= day
        assert per_day == math.ceil(polls.expected_per_day)
        midnight = MIDNIGHT + timedelta(days=1)
        planned_today = sum(
            sum(1 for m in walk(d) if m < midnight) for d in polls.decisions.values()
        )
        assert planned_today <= day <= planned_today + math.ceil(polls.expected_per_day)


def realistic_fleet(rng: random.Random, size: int) -> list[RiderHabit]:
    """A club: a fifth idle, half riding a few times a week, a quarter daily, a few
    commuters twice a day; evening and morning habits; Europe, the Americas, Australia."""
    fleet = []
    for i in range(size):
        per_day = rng.choices([0, 0.4, 1, 2.2], weights=[20, 50, 25, 5])[0]
        fleet.append(
            habit(
                i,
                per_day=per_day,
                local_hour=rng.choice([7.5, 12, 18, 19]),
                offset_h=rng.choice([0, 1, 1, 2, -5, -8, 10]),
                rng=rng,
                last_poll_ago_h=rng.uniform(0, 24),
                found=rng.random() < 0.3,
            )
        )
    return fleet


def test_a_realistic_fleet_at_the_default_limits():
    """200 riders, 1,000 a day, a backlog: the share is 300, in budget."""
    rng = random.Random(8_014)
    fleet = realistic_fleet(rng, 200)
    share = schedule.incremental_share_per_day(1000, len(fleet), backfill_per_day=5000)
    polls = schedule.poll_plan(fleet, share, 3600, NOW)
    assert share == 300 and polls.fits, polls.note
    assert 290 <= polls.expected_per_day <= 300
    counts = [d.polls_per_day for d in polls.decisions.values()]
    assert min(counts) == 1 and max(counts) >= 2


# --- fair shares ----------------------------------------------------------------------


def test_enrichment_goes_round_robin_over_riders_newest_first():
    day = timedelta(days=1)
    races = [(1, NOW - k * day, 100 + k) for k in range(100)]  # one rider's hundred races
    races += [(2, NOW - 50 * day, 7), (3, NOW - 400 * day, 8), (3, NOW - 500 * day, 9)]
    order = schedule.enrich_order(races)
    assert order[:3] == [100, 7, 8]  # every rider's newest, newest first
    assert order[3:5] == [101, 9]
    assert order[5:] == list(range(102, 200))


def test_enrich_order_is_fair_stable_and_deterministic():
    rng = random.Random(8_015)
    for _ in range(200):
        races = []
        for race_id in rng.sample(range(1, 10_000), rng.randint(0, 120)):
            start = NOW - timedelta(days=rng.randint(0, 3000), seconds=rng.choice([0, 0, 7]))
            races.append((rng.randint(1, 8), start, race_id))
        order = schedule.enrich_order(races)
        assert sorted(order) == sorted(r[2] for r in races)
        shuffled = races[:]
        rng.shuffle(shuffled)
        assert schedule.enrich_order(shuffled) == order
        owner = {r[2]: r for r in races}
        taken: dict[int, int] = {}
        total = {rider: sum(1 for r in races if r[0] == rider) for rider, _, _ in races}
        seen_by_rider: dict[int, list[tuple[datetime, int]]] = {}
        for race_id in order:
            rider, start, _ = owner[race_id]
            seen_by_rider.setdefault(rider, []).append((start, race_id))
            taken[rider] = taken.get(rider, 0) + 1
            # Round robin: no rider is two races ahead of one who still has races waiting.
            for other, n in total.items():
                if taken.get(other, 0) < n:
                    assert taken[rider] <= taken.get(other, 0) + 1
        for own in seen_by_rider.values():
            assert own == sorted(own, reverse=True)  # each rider's newest first


def test_discovery_walks_fewest_pages_first():
    assert schedule.discover_order([(1, 50), (2, 0), (3, 3), (4, 0)]) == [2, 4, 3, 1]


def test_surveys_of_slices_add_up_to_the_whole_and_survive_storage():
    rng = random.Random(8_017)
    for _ in range(60):
        now = random_now(rng)
        fleet = random_fleet(rng, rng.randint(1, 80), now)
        whole = schedule.survey(fleet, now)
        cut = sorted(rng.sample(range(len(fleet) + 1), 2))
        parts = [fleet[: cut[0]], fleet[cut[0] : cut[1]], fleet[cut[1] :]]
        summed = schedule.FleetSurvey()
        for part in parts:
            stored = schedule.survey(part, now).as_json()
            summed = summed.plus(schedule.FleetSurvey.from_json(stored))
        assert summed == whole and summed.riders == len(fleet)


def test_the_fleet_level_is_the_largest_that_fits_and_a_rider_alone_gets_the_same():
    rng = random.Random(8_018)
    for _ in range(60):
        now = random_now(rng)
        fleet = random_fleet(rng, rng.randint(1, 60), now)
        floor = rng.choice([900, 1800, 3600, 7200])
        share = rng.randint(len(fleet), 8 * len(fleet))
        level = schedule.fleet_level(schedule.survey(fleet, now), share, floor)
        plan = schedule.poll_plan(fleet, share, floor, now)
        assert level.expected_per_day == pytest.approx(plan.expected_per_day)
        rates = {}
        for rider in fleet:
            uploads = schedule.rider_uploads(rider, now)
            rates[rider.rider_id] = (
                level.typical if uploads is None else uploads / schedule.HABIT_DAYS
            )
        # The next level at which any rider gets one more poll a day no longer fits.
        steps = [
            (d.polls_per_day / schedule._weight(rates[r], schedule.tie_step(r)))
            for r, d in plan.decisions.items()
            if d.polls_per_day <= level.cap
        ]
        if level.fits and steps:
            higher = replace(level, level=min(steps) + 1e-9)
            expected = 0.0
            for rider_id, rate in rates.items():
                polls = higher.polls(rate, schedule.tie_step(rider_id))
                expected += polls + schedule._found_per_day(rate, polls)
            assert expected > share
        for rider in fleet:  # planned alone, in the fleet's level: the same decision
            assert (
                schedule.poll_decision(rider, level, floor, now) == plan.decisions[rider.rider_id]
            )
