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


def test_the_state_comes_from_a_budget_row_each_limit_binding_the_other_way_round():
    """The window bound by the read usage, the day by the overall usage."""
    row = SimpleNamespace(
        limit_15min=200,
        limit_daily=3000,
        read_limit_15min=100,
        read_limit_daily=2000,
        usage_15min=10,
        usage_daily=2900,
        read_usage_15min=95,
        read_usage_daily=100,
    )
    state = BudgetState.from_row(row)
    assert (state.window_limit, state.window_used, state.window_headroom) == (100, 95, 5)
    assert (state.day_limit, state.day_used, state.day_headroom) == (2000, 1900, 100)
    assert state.window_used_by == {} and state.day_used_by == {} and state.reserve == 10


def test_the_state_from_a_budget_row_keeps_each_classs_use_and_the_reserve():
    row = SimpleNamespace(
        limit_15min=100,
        limit_daily=1000,
        read_limit_15min=100,
        read_limit_daily=1000,
        usage_15min=3,
        usage_daily=30,
        read_usage_15min=3,
        read_usage_daily=30,
    )
    state = BudgetState.from_row(
        row, window_used_by={W.DISCOVER: 3}, day_used_by={W.DISCOVER: 30}, sync_now_reserve=0.25
    )
    assert state.window_used_by == {W.DISCOVER: 3} and state.day_used_by == {W.DISCOVER: 30}
    assert state.reserve == 25


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


def test_the_backfill_takes_all_the_day_has_left_from_the_last_window_before_the_final_hour():
    state, needs = BudgetState(100, 0, 1000, 0), Needs()
    # 22:30-22:45: two windows left before the final hour share the day's rest.
    before = MIDNIGHT + timedelta(hours=22, minutes=44, seconds=59)
    assert schedule.backfill_pace(state, needs, before) == math.ceil(990 / 2)
    # 22:45 on: the last of them, then the final hour itself, take all of it.
    for late in (timedelta(hours=22, minutes=45), timedelta(hours=23), timedelta(hours=23.9)):
        assert schedule.backfill_pace(state, needs, MIDNIGHT + late) == 990


def test_a_backfill_class_leaves_a_higher_backfill_class_its_window_need_of_the_pace():
    state = BudgetState(100, 0, 1000, 0)
    needs = Needs(window={W.ENRICH_RECENT: 5}, day={W.ENRICH_RECENT: 5})
    noon = MIDNIGHT + timedelta(hours=12)
    pace = schedule.backfill_pace(state, needs, noon)
    assert pace == math.ceil(990 / 44) == 23
    discover = schedule.allowance(W.DISCOVER, state, needs, noon)
    assert (discover.requests, discover.binds) == (23 - 5, "backfill pace")
    assert discover.reason == "18 allowed: backfill pace binds"
    assert discover.cls is W.DISCOVER and discover.limits["backfill pace"] == 18
    recent = schedule.allowance(W.ENRICH_RECENT, state, needs, noon)
    assert (recent.requests, recent.binds) == (23, "backfill pace")


def test_a_backlog_todays_pool_can_finish_is_not_paced():
    state, noon = BudgetState(100, 0, 1000, 0), MIDNIGHT + timedelta(hours=12)
    assert schedule.backfill_pace(state, Needs(backlog=990), noon) == 990  # the whole pool
    assert schedule.backfill_pace(state, Needs(backlog=991), noon) == 23  # paced


def test_what_the_window_already_spent_is_counted_back_into_its_share():
    # 29,890 left to the backfill (30,000 less 50 spent, less Sync now's 60), 50 of them
    # spent in this window: the window's share is (29,890 + 50) / 92, less the 50.
    state = spend(BudgetState(600, 0, 30_000, 0), W.DISCOVER, 50)
    assert schedule.backfill_pool(state, Needs()) == 29_890
    assert schedule.backfill_pace(state, Needs(), MIDNIGHT) == math.ceil(29_940 / 92) - 50 == 276


def test_sync_nows_own_needs_above_its_reserve_are_held_from_the_others():
    state = BudgetState(100, 0, 1000, 0)
    window = Needs(window={W.SYNC_NOW: 30})
    assert schedule.allowance(W.INCREMENTAL, state, window, NOW).requests == 70
    assert schedule.backfill_pool(state, Needs(day={W.SYNC_NOW: 50})) == 950
    # A window need counts for the day too, when the day's is smaller or not given.
    assert schedule.backfill_pool(state, Needs(window={W.INCREMENTAL: 30})) == 960


def test_the_day_headroom_binds_when_the_day_is_nearly_spent():
    state = BudgetState(100, 0, 1000, 995)
    allowed = schedule.allowance(W.SYNC_NOW, state, Needs(), NOW)
    assert (allowed.requests, allowed.binds) == (5, "day headroom")


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


def test_the_plan_hand_worked_class_by_class():
    state = BudgetState(
        100, 20, 1000, 200, window_used_by={W.INCREMENTAL: 20}, day_used_by={W.INCREMENTAL: 200}
    )
    needs = Needs(
        window={W.SYNC_NOW: 2, W.INCREMENTAL: 6, W.ENRICH_RECENT: 30, W.DISCOVER: 40},
        day={W.SYNC_NOW: 5, W.INCREMENTAL: 100, W.ENRICH_RECENT: 60, W.DISCOVER: 5000,
             W.ENRICH_OLD: 300},
    )  # fmt: skip
    got = schedule.plan(state, needs, NOW).as_dict()
    assert got["at"] == "2026-11-24T10:07:30Z"
    assert got["window"] == {"limit": 100, "used": 20}
    assert got["day"] == {"limit": 1000, "used": 200}
    assert got["sync_now_reserve"] == 10 and got["windows_left_today"] == 56
    # The day's 800 left, less Sync now's reserve and incremental's 100, over 52 windows.
    assert got["backfill_day_pool"] == 690
    assert got["backfill_window_pace"] == math.ceil(690 / 52) == 14
    classes = got["classes"]

    def shares(cls: WorkClass) -> tuple[int, int, int, int, int, str]:
        c = classes[cls.value]
        window, today = c["window"], c["today"]
        return (window["share"], window["used"], today["share"], today["used"],
                c["allowed_now"], c["binds"])  # fmt: skip

    assert shares(W.SYNC_NOW) == (10, 0, 10, 0, 80, "window headroom")
    assert shares(W.INCREMENTAL) == (26, 20, 300, 200, 70, "window left by higher classes")
    assert shares(W.ENRICH_RECENT) == (14, 0, 60, 0, 14, "backfill pace")  # paced below 30
    assert shares(W.DISCOVER) == (0, 0, 630, 0, 0, "backfill pace")
    assert shares(W.ENRICH_OLD) == (0, 0, 0, 0, 0, "day left by higher classes")


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


def test_a_future_day_gives_the_backfill_the_limit_less_the_higher_classes_daily_needs():
    state = BudgetState(100, 0, 1000, 0)
    per_day = {W.SYNC_NOW: 50, W.INCREMENTAL: 290}
    assert schedule.backfill_per_day(state, Needs(per_day=per_day)) == 1000 - 50 - 290
    assert schedule.backfill_per_day(state, Needs(per_day={W.SYNC_NOW: 50})) == 950
    assert schedule.backfill_per_day(state, Needs()) == 990  # Sync now's reserve at least


def test_a_backlog_completes_even_at_one_request_a_day():
    state = BudgetState(100, 0, 1000, 1000)  # today spent
    needs = Needs(per_day={W.INCREMENTAL: 989})  # a future day leaves the backfill 1
    assert schedule.backfill_per_day(state, needs) == 1
    assert schedule.projected_completion(3, state, needs, MIDNIGHT) == date(2026, 11, 27)


def test_incremental_share_leaves_sync_now_its_reserve_as_production_passes_it():
    reserve = BudgetState(100, 0, 1000, 0).reserve  # 10 a window, held all day
    share = schedule.incremental_share_per_day
    # What the backfill leaves, less the reserve, between 30% and 60% of the day.
    assert share(1000, 200, sync_now_per_day=reserve, backfill_per_day=500) == 490
    # A fleet larger than the day gets the day less the reserve, no more.
    assert share(1000, 995, sync_now_per_day=reserve, backfill_per_day=1000) == 990
    assert share(1000, 200, sync_now_per_day=reserve, backfill_per_day=1000) == 300
    assert share(1000, 200, sync_now_per_day=reserve, backfill_per_day=0) == 600
    # Sync now's daily need comes off what the backfill leaves, and off the whole day.
    assert share(1000, 200, sync_now_per_day=500) == 500
    assert share(100, 5, sync_now_per_day=100) == 0


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
    for _ in range(50):
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
    for _ in range(20):
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


def idle(rider_id: int) -> RiderHabit:
    """A rider last seen uploading 40 days ago, last polled 3 hours ago."""
    return RiderHabit(rider_id, (), 0, NOW - timedelta(hours=3), False, NOW - timedelta(days=40))


def daily(rider_id: int, hours: tuple[float, ...], offset_h: float = 0) -> RiderHabit:
    """A rider uploading every day of the habit at these local hours, polled 3 hours ago."""
    offset = timedelta(hours=offset_h)
    uploads = tuple(
        MIDNIGHT - timedelta(days=day) + timedelta(hours=h) - offset
        for day in range(1, schedule.HABIT_DAYS + 1)
        for h in hours
    )
    return RiderHabit(rider_id, uploads, int(offset_h * HOUR), NOW - timedelta(hours=3), False)


def test_riders_alike_share_the_polls_evenly_the_remainder_by_their_tie_step():
    # The spare poll goes to the highest tie step (rider id modulo TIE_STEPS), not to
    # whoever is listed first, so a rider planned alone gets the same decision.
    assert [schedule.tie_step(i) for i in (2, 3, 4)] == [2, 3, 4]
    polls = schedule.poll_plan([idle(2), idle(3), idle(4)], 10, 3600, NOW)
    assert {i: d.polls_per_day for i, d in polls.decisions.items()} == {2: 3, 3: 3, 4: 4}
    assert polls.fits and polls.expected_per_day == 10
    assert polls.note == "10 polls a day expected of a share of 10"
    assert polls.decisions[4].reason == "idle 40 days: 4 polls a day"
    assert polls.decisions[2].reason == "idle 40 days: 3 polls a day"
    listed_otherwise = schedule.poll_plan([idle(4), idle(2), idle(3)], 10, 3600, NOW)
    assert listed_otherwise.decisions == polls.decisions
    one_spare = schedule.poll_plan([idle(2), idle(3), idle(4)], 4, 3600, NOW).decisions
    assert [d.polls_per_day for d in one_spare.values()] == [1, 1, 2]
    # Twelve hours between polls: two a day at most, however large the share.
    twice = schedule.poll_plan([idle(2), idle(3)], 10, 12 * HOUR, NOW)
    assert [d.polls_per_day for d in twice.decisions.values()] == [2, 2]
    assert (
        twice.decisions[2].reason == "idle 40 days: 2 polls a day (the floor: 12 h between polls)"
    )
    assert twice.share_per_day == 10
    # Seven hours between polls: three a day (24 h holds three sevens, not four).
    thrice = schedule.poll_plan([idle(2), idle(3), idle(4)], 20, 7 * HOUR, NOW).decisions
    assert [d.polls_per_day for d in thrice.values()] == [3, 3, 3]
    assert thrice[2].reason == "idle 40 days: 3 polls a day (the floor: 7 h between polls)"
    # A day between polls: once a day, and nothing to say about the floor.
    daily_floor = schedule.poll_plan([idle(2), idle(3)], 10, 86_400, NOW).decisions
    assert [d.polls_per_day for d in daily_floor.values()] == [1, 1]
    assert daily_floor[2].reason == "idle 40 days: once a day"
    assert daily_floor[2].rider_id == 2


def test_a_busy_rider_is_held_to_the_floor_and_the_others_share_the_rest():
    busy = RiderHabit(1, tuple(NOW - timedelta(hours=12 * k) for k in range(56)), 0, None, False)
    polls = schedule.poll_plan([busy, idle(2), idle(3)], 10, 6 * HOUR, NOW)
    # 2 uploads a day: four polls at most with six hours between them, each finding
    # something with the odds of a Poisson process; the idle two take what is left.
    assert {i: d.polls_per_day for i, d in polls.decisions.items()} == {1: 4, 2: 2, 3: 2}
    found = 4 * (1 - math.exp(-2 / 4))
    assert polls.decisions[1].found_per_day == pytest.approx(found)
    assert polls.decisions[2].found_per_day == 0
    assert polls.expected_per_day == pytest.approx(8 + found) and polls.fits
    rider = daily(1, (18.5,))
    assert schedule.upload_rate(rider, NOW) == 1
    one_a_day = schedule.poll_plan([rider], 3, 3600, NOW).decisions[1]
    count = one_a_day.polls_per_day
    assert one_a_day.found_per_day == pytest.approx(count * (1 - math.exp(-1 / count)))


def test_a_newcomer_is_polled_like_the_fleets_median_rider():
    newcomer = RiderHabit(1, (), 0, None, False)
    every_other_day = RiderHabit(
        5, tuple(NOW - timedelta(days=2 * k + 1) for k in range(14)), 0, NOW, False
    )
    # Known rates 0, 0.5, 1 and 3 a day: the median rider uploads once a day.
    fleet = [newcomer, daily(2, (9.5,)), daily(3, (1, 9, 17)), idle(4), every_other_day]
    decisions = schedule.poll_plan(fleet, 40, 3600, NOW).decisions
    assert decisions[1].reason.startswith(
        "no uploads known yet: polled like a typical rider (~1.0 a day): "
    )
    assert decisions[1].polls_per_day == decisions[2].polls_per_day  # as the 1-a-day rider
    alone = schedule.poll_plan([newcomer], 3, 3600, NOW)
    assert alone.decisions[1].reason == (
        "no uploads known yet: polled like a typical rider (~0.5 a day): 2 polls a day"
    )
    squeezed = schedule.poll_plan([newcomer], 1, 3600, NOW)
    assert not squeezed.fits
    assert squeezed.decisions[1].reason == (
        "no uploads known yet: polled like a typical rider (~0.5 a day): once a day;"
        " the budget's share is too small for more"
    )


def test_the_reason_names_the_habit_the_cadence_and_the_floor():
    four = daily(1, (8.5, 11.5, 14.5, 17.5))  # 60% of the uploads fall in 08:00-15:00
    habit_words = "uploads ~4.0 a day, mostly 08:00-15:00 local"
    reason = schedule.poll_plan([four], 12, 3600, NOW).decisions[1].reason
    assert reason == f"{habit_words}: 8 polls a day, every ~1.4 h then"  # 5 of them in 7 h
    fewer = schedule.poll_plan([four], 8, 3600, NOW).decisions[1].reason
    assert fewer == f"{habit_words}: 5 polls a day, every ~2.3 h then"  # 3 of them in 7 h
    floored = schedule.poll_plan([four], 12, 4 * HOUR, NOW).decisions[1]
    assert floored.polls_per_day == 6 == 86_400 // (4 * HOUR)
    assert floored.reason.startswith(f"{habit_words}: 6 polls a day")
    assert floored.reason.endswith(" (the floor: 4 h between polls)")
    few = RiderHabit(5, (NOW - timedelta(days=3), NOW - timedelta(days=9)), 0, NOW, False)
    assert schedule.poll_plan([few], 5, 3600, NOW).decisions[5].reason == (
        "uploads ~0.1 a day: 4 polls a day"  # two uploads make no usual hours
    )


def test_usual_hours_are_the_fewest_holding_six_tenths_of_the_uploads():
    evening = (NOW - timedelta(days=d, hours=-8) for d in (1, 2, 3))  # 18:07
    morning = (NOW - timedelta(days=d, hours=4) for d in (4, 5))  # 06:07
    three_of_five = RiderHabit(1, (*evening, *morning), 0, NOW, False)
    words = schedule.poll_plan([three_of_five], 3, 900, NOW).decisions[1].reason
    assert words.startswith("uploads ~0.2 a day, mostly 18:00-19:00 local: ")
    # Three uploads make usual hours, counted from the habit's first instant to now.
    since = NOW - timedelta(days=schedule.HABIT_DAYS)
    edges = RiderHabit(2, (since, NOW - timedelta(days=1), NOW), 0, NOW, False)
    words = schedule.poll_plan([edges], 2, 3600, NOW).decisions[2].reason
    assert words.startswith("uploads ~0.1 a day, mostly 10:00-11:00 local: ")
    late = schedule.poll_plan([daily(3, (23.5,))], 3, 900, NOW).decisions[3].reason
    assert late.startswith("uploads ~1.0 a day, mostly 23:00-00:00 local: ")


def test_every_few_hours_counts_the_polls_in_the_usual_hours_and_the_hour_after():
    evening = daily(1, (18.5,))

    def reason(share: int) -> tuple[tuple[float, ...], str]:
        d = schedule.poll_plan([evening], share, 900, NOW).decisions[1]
        return tuple(round(t / HOUR, 2) for t in d.local_times_s), d.reason

    words = "uploads ~1.0 a day, mostly 18:00-19:00 local"
    # Two polls in 18:00-19:00: every half hour then.
    assert reason(4) == ((18.12, 18.81, 20.0), f"{words}: 3 polls a day, every ~0.5 h then")
    # Three, the one at 19:11 counted with them.
    times, said = reason(6)
    assert times == (17.7, 18.26, 18.68, 19.18, 20.0)
    assert said == f"{words}: 5 polls a day, every ~0.3 h then"
    # One alone says nothing of a rhythm.
    assert reason(3) == ((18.47, 20.0), f"{words}: 2 polls a day")


def test_a_rider_never_polled_is_polled_now_and_no_find_is_claimed():
    fresh = RiderHabit(1, (NOW - timedelta(days=1),) * 3, 0, None, False)
    d = schedule.poll_plan([fresh], 2, 3600, NOW).decisions[1]
    assert (d.next_poll_at, d.interval_s) == (NOW, 0)
    assert d.reason == "uploads ~0.1 a day, mostly 10:00-11:00 local: once a day"


def test_an_idle_riders_polls_are_spread_evenly_over_the_day_from_midnight():
    for share, every_minutes in ((5, 288), (4, 360)):
        d = schedule.poll_plan([idle(2)], share, 3600, NOW).decisions[2]
        minutes = [round(t / 60) for t in d.local_times_s]
        assert minutes == [every_minutes * k for k in range(share)]


def test_a_single_daily_poll_is_at_the_hour_that_keeps_uploads_waiting_least():
    # Uploads at 18:30 local (UTC+2), smoothed over 17:00-20:00: a poll at 20:00 keeps
    # them waiting 1.5 hours, one at 19:00 or 21:00 longer on the whole.
    rider = daily(1, (18.5,), offset_h=2)
    d = schedule.poll_plan([rider], 1, 3600, NOW).decisions[1]
    assert d.local_times_s == (20 * HOUR,)
    assert d.next_poll_at == datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    assert d.reason == (
        "uploads ~1.0 a day, mostly 18:00-19:00 local: once a day;"
        " the budget's share is too small for more"
    )


def test_the_next_poll_is_the_first_planned_time_past_the_floor_within_a_day():
    times = (8 * HOUR, 20 * HOUR)
    last = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    at = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert schedule.poll_after(times, 0, 3600, last) == at  # a planned time at the floor
    assert schedule.poll_after(times, 0, 3601, last) == at + timedelta(hours=12)
    # Local times: 08:00 at UTC+2 is 06:00 UTC.
    assert schedule.poll_after((8 * HOUR,), 2 * HOUR, 3600, last - timedelta(hours=2)) == (
        at - timedelta(hours=2)
    )
    # At most a day after the last poll; unless the floor itself is longer.
    half_past = last + timedelta(minutes=30)
    assert schedule.poll_after((8 * HOUR,), 0, 3600, half_past) == half_past + timedelta(days=1)
    assert schedule.poll_after(times, 0, 2 * 86_400, last) == last + timedelta(days=2)
    assert schedule.next_planned((), 0, last) == last + timedelta(days=1)
    # Today's times all past: tomorrow's first.
    evening = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    assert schedule.next_planned(times, 0, evening) == at + timedelta(days=1)


def test_a_find_brings_the_next_poll_to_the_follow_up_never_into_the_past():
    rider = daily(1, (18.5,), offset_h=2)  # planned daily at 20:00 local, 18:00 UTC

    def after(last_poll_ago: timedelta, floor: int) -> schedule.PollDecision:
        found = RiderHabit(1, rider.uploads, rider.utc_offset_s, NOW - last_poll_ago, True)
        return schedule.poll_plan([found], 1, floor, NOW).decisions[1]

    half_hour = after(timedelta(minutes=30), 1800)
    assert half_hour.next_poll_at == NOW + timedelta(minutes=30)  # an hour after the last
    assert half_hour.reason.startswith("last poll found new activities: next in 1 h; uploads")
    two_hours = after(timedelta(minutes=30), 2 * HOUR)
    assert two_hours.next_poll_at == NOW + timedelta(hours=1.5)  # the floor is longer
    assert two_hours.reason.startswith("last poll found new activities: next in 2 h; ")
    due = after(timedelta(hours=1), 1800)  # its follow-up is now: no sooner than planned
    assert due.next_poll_at == NOW
    assert due.reason.startswith("uploads ~1.0 a day")
    late = after(timedelta(hours=5), 1800)  # its follow-up is past: now, said plainly
    assert late.next_poll_at == NOW
    assert late.reason.startswith("uploads ~1.0 a day")


def test_the_incremental_need_hand_worked():
    def decision(rider_id: int, next_at: datetime, found: float) -> schedule.PollDecision:
        return schedule.PollDecision(
            rider_id, next_at, 0, 1, found, (12 * HOUR,), 0, 3600, "planned at noon"
        )

    in_window = decision(1, datetime(2026, 11, 24, 10, 14, 59, tzinfo=UTC), 0.5)
    next_window = decision(2, datetime(2026, 11, 24, 10, 15, tzinfo=UTC), 0.25)
    polls = schedule.PollPlan({1: in_window, 2: next_window}, 10, 2.75, True, "")
    window, day, per_day = schedule.incremental_needs(polls, NOW)
    assert window == 1
    # Today: the first at 10:14:59 and noon, the second at 10:15 and noon; plus the
    # finds' follow-ups for the 13 h 52 min 30 s left of the day, rounded up.
    left = timedelta(hours=13, minutes=52, seconds=30) / timedelta(days=1)
    assert day == 4 + math.ceil(0.75 * left) == 5
    assert per_day == 3


def test_uploads_count_from_exactly_the_habits_first_day_to_now():
    since = NOW - timedelta(days=schedule.HABIT_DAYS)
    edges = RiderHabit(1, (since, NOW), 0, None, False)
    assert schedule.upload_rate(edges, NOW) == 2 / schedule.HABIT_DAYS
    assert sum(schedule.hour_histogram(edges, NOW)) == pytest.approx(2 + 1)
    outside = RiderHabit(
        2, (since - timedelta(seconds=1), NOW + timedelta(seconds=1)), 0, None, False
    )
    assert schedule.upload_rate(outside, NOW) == 0
    assert sum(schedule.hour_histogram(outside, NOW)) == pytest.approx(1.0)  # the prior only


def test_the_hour_histogram_smooths_each_upload_over_its_neighbour_hours():
    # Two uploads at 18:xx local (UTC+2) and one at 23:30 local, whose next hour is 00.
    offset = 2 * HOUR
    uploads = (
        datetime(2026, 11, 20, 16, 10, tzinfo=UTC),
        datetime(2026, 11, 21, 16, 50, tzinfo=UTC),
        datetime(2026, 11, 22, 21, 30, tzinfo=UTC),
    )
    histogram = schedule.hour_histogram(RiderHabit(1, uploads, offset, None, False), NOW)
    prior, side = 1 / 24, schedule.NEIGHBOUR_WEIGHT
    centre = 1 - 2 * side
    expected = [prior] * 24
    expected[17] += 2 * side
    expected[18] += 2 * centre
    expected[19] += 2 * side
    expected[22] += side
    expected[23] += centre
    expected[0] += side
    assert histogram == pytest.approx(expected)
    assert sum(histogram) == pytest.approx(3 + 1)  # the uploads and the prior's one


def test_a_safety_net_poll_is_at_the_riders_own_time_of_day_in_utc():
    riders = [RiderHabit(i, (), 3600, NOW - timedelta(hours=1), False) for i in range(1, 11)]
    riders.append(RiderHabit(11, (), 3600, None, False))
    plan = schedule.safety_net_plan(riders, 11, 3600, NOW, "events arriving")
    assert plan.fits and plan.share_per_day == 11 and plan.expected_per_day == 11
    assert plan.as_dict() == {
        "share_per_day": 11,
        "expected_per_day": 11.0,
        "fits": True,
        "note": "events arriving: 11 polls a day (one per rider) of a share of 11",
    }
    assert not schedule.safety_net_plan(riders, 10, 3600, NOW, "events arriving").fits
    for rider in riders:
        d = plan.decisions[rider.rider_id]
        assert d.rider_id == rider.rider_id and d.utc_offset_s == 0  # UTC times, whoever
        (at,) = d.local_times_s
        assert 0 <= at < 86_400
        assert d.reason.endswith(f"daily poll at {at // HOUR:02d}:{at % HOUR // 60:02d} UTC")
        if rider.last_poll_at is None:
            assert (d.next_poll_at, d.interval_s) == (NOW, 0)
            continue
        assert d.interval_s == (d.next_poll_at - rider.last_poll_at).total_seconds()
        midnight = d.next_poll_at.replace(hour=0, minute=0, second=0, microsecond=0)
        since_midnight = (d.next_poll_at - midnight).total_seconds()
        assert since_midnight == at or d.next_poll_at == rider.last_poll_at + timedelta(days=1)


def test_polls_between_count_the_start_and_not_the_end():
    plan = schedule.safety_net_plan([RiderHabit(7, (), 0, None, False)], 1, 3600, NOW, "x")
    decision = plan.decisions[7]  # next poll now, then daily at its own time
    assert schedule.polls_between(decision, NOW, NOW + timedelta(seconds=1)) == 1
    assert schedule.polls_between(decision, NOW - timedelta(hours=1), NOW) == 0


def test_the_poll_plans_summary_rounds_the_expected_polls_to_a_tenth():
    summary = schedule.PollPlan({}, 300, 291.26, True, "291 polls a day expected of 300")
    assert summary.as_dict() == {
        "share_per_day": 300,
        "expected_per_day": 291.3,
        "fits": True,
        "note": "291 polls a day expected of 300",
    }


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
    assert schedule.discover_order([(9, 2), (4, 2), (6, 2)]) == [4, 6, 9]  # then by rider


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
