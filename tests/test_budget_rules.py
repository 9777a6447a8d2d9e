"""Pure decisions of the shared rate budget and Strava's rate-limit headers."""

from __future__ import annotations

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
