"""Pure decisions of the shared rate budget and Strava's rate-limit headers."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

import models
from services import budget
from services.strava import RateLimitSnapshot, next_day_reset, next_window_reset

NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)


def fresh(**changes) -> models.budget.BudgetRow:
    row = models.budget.BudgetRow(
        limit_15min=200,
        limit_daily=2000,
        read_limit_15min=100,
        read_limit_daily=1000,
        usage_15min=0,
        usage_daily=0,
        read_usage_15min=0,
        read_usage_daily=0,
        window_start=budget.window_start(NOW),
        day_start=budget.day_start(NOW),
        blocked_until=None,
        blocked_reason=None,
        headers_seen_at=None,
    )
    for key, value in changes.items():
        setattr(row, key, value)
    return row


@pytest.mark.parametrize(
    ("now", "window", "day"),
    [
        (datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC), "10:15", "2026-11-25"),
        (datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC), "10:30", "2026-11-25"),
        (datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC), "00:00", "2026-11-25"),
        (datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC), "00:15", "2026-11-25"),
    ],
)
def test_windows_reset_on_quarter_hours_and_midnight_utc(now, window, day):
    assert next_window_reset(now).strftime("%H:%M") == window
    assert next_day_reset(now).date().isoformat() == day


def test_headers_are_parsed_and_bad_ones_ignored():
    snap = RateLimitSnapshot.from_headers(
        {
            "X-RateLimit-Limit": "600,30000",
            "X-RateLimit-Usage": "37,512",
            "X-ReadRateLimit-Limit": "300,15000",
            "X-ReadRateLimit-Usage": "30,400",
        }
    )
    assert snap == RateLimitSnapshot(600, 30000, 37, 512, 300, 15000, 30, 400)
    assert (
        RateLimitSnapshot.from_headers({"X-RateLimit-Limit": "600", "X-RateLimit-Usage": "1,2"})
        is None
    )
    assert RateLimitSnapshot.from_headers({}) is None
    partial = RateLimitSnapshot.from_headers(
        {"X-RateLimit-Limit": "1,2", "X-RateLimit-Usage": "0,0"}
    )
    assert partial is not None and partial.read_limit_15min is None


def test_reserve_counts_every_window_and_keeps_the_sync_now_reserve():
    row, refusal = budget.try_reserve(fresh(), NOW, held_back=10)
    assert refusal is None
    assert (row.usage_15min, row.usage_daily, row.read_usage_15min, row.read_usage_daily) == (
        1,
        1,
        1,
        1,
    )
    # 89 read requests used: the 90th leaves exactly the reserve of 10
    row, refusal = budget.try_reserve(fresh(read_usage_15min=89, usage_15min=89), NOW, held_back=10)
    assert refusal is None and row.read_usage_15min == 90
    _, refusal = budget.try_reserve(fresh(read_usage_15min=90, usage_15min=90), NOW, held_back=10)
    assert refusal is not None and refusal.resets_at == next_window_reset(NOW)
    # Sync now may use the reserve
    _, refusal = budget.try_reserve(fresh(read_usage_15min=90, usage_15min=90), NOW, held_back=0)
    assert refusal is None


def test_daily_limit_refuses_until_midnight():
    _, refusal = budget.try_reserve(fresh(read_usage_daily=995), NOW, held_back=10)
    assert refusal is not None
    assert refusal.window == "daily" and refusal.resets_at == next_day_reset(NOW)


def test_a_new_window_zeroes_the_counts():
    old = fresh(
        usage_15min=200,
        read_usage_15min=100,
        usage_daily=500,
        read_usage_daily=400,
        window_start=datetime(2026, 11, 24, 9, 45, tzinfo=UTC),
    )
    row = budget.roll_windows(old, NOW)
    assert (row.usage_15min, row.read_usage_15min) == (0, 0)
    assert (row.usage_daily, row.read_usage_daily) == (500, 400)
    next_day = budget.roll_windows(old, datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC))
    assert next_day.usage_daily == 0


def test_headers_win_for_limits_and_usage_never_goes_down():
    snap = RateLimitSnapshot(600, 30000, 5, 50, 300, 15000, 5, 50)
    row = budget.apply_snapshot(fresh(usage_15min=9, read_usage_15min=9), snap, status=200, now=NOW)
    assert (row.limit_15min, row.read_limit_15min, row.read_limit_daily) == (600, 300, 15000)
    assert row.usage_15min == 9  # our in-flight reservations are newer than Strava's count
    assert row.usage_daily == 50


def test_a_429_blocks_until_the_binding_reset():
    snap = RateLimitSnapshot(200, 2000, 201, 700, 100, 1000, 101, 650)
    row = budget.apply_snapshot(fresh(), snap, status=429, now=NOW)
    assert row.blocked_until == next_window_reset(NOW)
    _, refusal = budget.try_reserve(row, NOW, held_back=0)
    assert refusal is not None and refusal.resets_at == next_window_reset(NOW)
    # after the reset the block lifts by itself
    later = next_window_reset(NOW)
    row2, refusal = budget.try_reserve(row, later, held_back=0)
    assert refusal is None and row2.blocked_until is None
    daily = RateLimitSnapshot(200, 2000, 50, 2000, 100, 1000, 50, 1000)
    assert budget.apply_snapshot(
        fresh(), daily, status=429, now=NOW
    ).blocked_until == next_day_reset(NOW)


def test_describe_names_the_binding_window():
    assert budget.describe(fresh(), NOW)["resets_at"] == "2026-11-24T10:15:00Z"
    spent_day = fresh(read_usage_daily=1000)
    assert budget.describe(spent_day, NOW)["resets_at"] == "2026-11-25T00:00:00Z"


# --- blocks of requests, and what the headers say of other clients ----------------------


def snapshot_of(row: models.budget.BudgetRow, counted: int) -> RateLimitSnapshot:
    """Strava's headers when it has counted `counted` requests in the window and day."""
    return RateLimitSnapshot(
        row.limit_15min,
        row.limit_daily,
        counted,
        counted,
        row.read_limit_15min,
        row.read_limit_daily,
        counted,
        counted,
    )


def test_blocks_taken_given_back_and_answered_in_any_order_never_pass_a_limit():
    """Calls draw blocks, send from them, hear Strava's headers (which count another
    client's requests too, and lag the requests in flight) and give back what is left,
    interleaved at random: no block passes the limit (less the reserve) once what the
    others used is seen, the row never counts more of the others than they used, and it
    holds exactly the calls' reservations when there are no others."""
    rng = random.Random(9_301)
    for _ in range(400):
        window_limit = rng.randint(3, 120)
        row = fresh(
            limit_15min=window_limit * 2,
            limit_daily=window_limit * 40,
            read_limit_15min=window_limit,
            read_limit_daily=window_limit * 20,
        )
        held_back = rng.randint(0, min(5, window_limit - 1))
        others = rng.choice([0, 0, rng.randint(0, window_limit // 2)])  # another client
        blocks = [0] * rng.randint(1, 4)  # each call's requests reserved, not sent
        sent: list[int] = []  # requests sent, by call, in order; Strava counts them as they land
        landed = 0
        for _ in range(rng.randint(1, 150)):
            call = rng.randrange(len(blocks))
            action = rng.random()
            if action < 0.35 and blocks[call]:
                blocks[call] -= 1
                sent.append(call)
            elif action < 0.6:
                known = row.external_read_usage_15min == others
                row, granted, refusal = budget.take_block(
                    row, NOW, held_back=held_back, wanted=rng.randint(1, 9)
                )
                assert (granted == 0) == (refusal is not None)
                blocks[call] += granted
                if known and granted:  # with the others seen, a block never passes the limit
                    assert len(sent) + sum(blocks) + others <= window_limit - held_back
            elif action < 0.8:
                landed = rng.randint(landed, len(sent))  # Strava has received these
                row = budget.apply_snapshot(
                    row,
                    snapshot_of(row, landed + others),
                    status=200,
                    now=NOW,
                    unsent=blocks[call],
                )
            else:
                row = budget.give_back(
                    row,
                    NOW,
                    unused=blocks[call],
                    window_start=row.window_start,
                    day_start=row.day_start,
                )
                blocks[call] = 0
            reserved = len(sent) + sum(blocks)
            assert row.external_read_usage_15min <= others  # a lower bound, never more
            assert row.read_usage_15min == reserved + row.external_read_usage_15min
            if others == 0:
                assert row.read_usage_15min == reserved
        # every request landed and a call with nothing unsent hears it: all is known
        row = budget.give_back(
            row, NOW, unused=sum(blocks), window_start=row.window_start, day_start=row.day_start
        )
        row = budget.apply_snapshot(
            row, snapshot_of(row, len(sent) + others), status=200, now=NOW, unsent=0
        )
        assert row.external_read_usage_15min == others
        assert row.read_usage_15min == len(sent) + others


def test_a_block_is_at_most_what_is_left_above_the_reserve():
    row, granted, refusal = budget.take_block(
        fresh(read_usage_15min=85, usage_15min=85), NOW, held_back=10, wanted=8
    )
    assert refusal is None and granted == 5 and row.read_usage_15min == 90
    _, granted, refusal = budget.take_block(row, NOW, held_back=10, wanted=8)
    assert granted == 0 and refusal is not None


def test_a_block_given_back_after_its_window_changes_nothing_of_the_new_one():
    row, _, _ = budget.take_block(fresh(), NOW, held_back=0, wanted=8)
    later = next_window_reset(NOW)
    back = budget.give_back(
        row, later, unused=5, window_start=row.window_start, day_start=row.day_start
    )
    assert back.read_usage_15min == 0  # the new window
    assert back.read_usage_daily == 3  # the same day: the 3 sent stay


def test_headers_are_news_only_when_they_say_something_the_row_does_not():
    row, _, _ = budget.take_block(fresh(), NOW, held_back=0, wanted=8)
    # our own requests, as Strava counts them: nothing new, whatever has landed
    for landed in range(9):
        assert not budget.is_news(row, snapshot_of(row, landed), NOW, unsent=8 - landed)
    assert budget.is_news(row, snapshot_of(row, 9), NOW, unsent=0)  # someone else's
    lower = RateLimitSnapshot(200, 2000, 1, 1, 60, 1000, 1, 1)
    assert budget.is_news(row, lower, NOW, unsent=7)  # another read limit
    assert not budget.is_news(row, None, NOW)
