"""The shared budget a block at a time, on the real Postgres: calls reserve requests in
blocks under the row's lock and give back what they did not use; overlapping calls never
pass the limit; a 429 stops the calls beside the one that met it; headers that tell
nothing new cost no write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

import db as dbmod
from services.budget import RateBudget, window_start
from services.schedule import WorkClass
from services.strava import RateLimited, RateLimitSnapshot
from tests.factories import execute, query

NOW = datetime(2031, 3, 4, 12, 3, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def database_pool(database):
    pool = dbmod.Database(database, max_size=12)
    yield pool
    pool.close()


def budget_for(pool, clock, *, block: int = 8, work_class=WorkClass.SYNC_NOW) -> RateBudget:
    # Sync now's class has no share of its own: these tests are about the limits alone.
    return RateBudget(
        pool, reserve_fraction=0.1, work_class=work_class, clock=clock, block_size=block
    )


def set_limits(database, *, window: int, day: int = 10_000, used: int = 0) -> None:
    execute(
        database,
        "update strava_rate_budget set read_limit_15min = %s, read_limit_daily = %s,"
        " limit_15min = %s, limit_daily = %s, read_usage_15min = %s, usage_15min = %s,"
        " read_usage_daily = %s, usage_daily = %s, window_start = %s, day_start = %s",
        window,
        day,
        window * 2,
        day * 2,
        used,
        used,
        used,
        used,
        window_start(NOW),
        NOW.replace(hour=0, minute=0, second=0),
    )


def row(database):
    return query(
        database,
        "select read_usage_15min, usage_15min, read_usage_daily, updated_at, headers_seen_at,"
        " blocked_until from strava_rate_budget",
    )[0]


def class_count(database, work_class: str) -> int:
    rows = query(
        database,
        "select coalesce(sum(requests), 0) as n from strava_request_windows where work_class = %s",
        work_class,
    )
    return int(rows[0]["n"])


def take_all(gate: RateBudget, taken: list[int], index: int) -> None:
    while True:
        try:
            gate.reserve()
        except RateLimited:
            return
        taken[index] += 1


def test_overlapping_calls_never_pass_the_limit_and_give_back_what_they_did_not_send(
    database, database_pool
):
    set_limits(database, window=53)
    clock = Clock()
    gates = [budget_for(database_pool, clock, block=size) for size in (3, 5, 8, 13)]
    taken = [0] * len(gates)
    threads = [
        threading.Thread(target=take_all, args=(gate, taken, i)) for i, gate in enumerate(gates)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for gate in gates:
        gate.release()
    assert sum(taken) == 53  # every request of the window, and not one more
    assert row(database)["read_usage_15min"] == 53
    assert class_count(database, "sync_now") == 53


def test_a_block_not_used_is_given_back_at_the_calls_end(database, database_pool):
    set_limits(database, window=100, used=10)
    gate = budget_for(database_pool, Clock(), block=8, work_class=WorkClass.SYNC_NOW)
    for _ in range(3):
        gate.reserve()
    assert row(database)["read_usage_15min"] == 18  # the block is held while the call runs
    gate.release()
    assert row(database)["read_usage_15min"] == 13
    assert row(database)["read_usage_daily"] == 13
    assert class_count(database, "sync_now") == 3


def test_a_429_stops_the_calls_beside_it_and_the_next_call_sends_nothing(database, database_pool):
    set_limits(database, window=100)
    clock = Clock()
    met, beside = budget_for(database_pool, clock), budget_for(database_pool, clock)
    met.reserve()
    beside.reserve()  # both hold blocks
    snapshot = RateLimitSnapshot(200, 2000, 200, 300, 100, 1000, 100, 150)
    met.record(snapshot, status=429)
    with pytest.raises(RateLimited):
        met.reserve()
    with pytest.raises(RateLimited):
        beside.reserve()  # its block is left, yet it sends nothing more
    # another process (its own pool) stops at its next block, which the row refuses
    elsewhere = dbmod.Database(database, max_size=2)
    try:
        later = budget_for(elsewhere, clock)
        with pytest.raises(RateLimited):
            later.reserve()
    finally:
        elsewhere.close()
    assert row(database)["blocked_until"] is not None


def snapshot(used: int) -> RateLimitSnapshot:
    """Strava's headers for the limits set_limits(window=100) gives, `used` counted."""
    return RateLimitSnapshot(200, 20_000, used, used, 100, 10_000, used, used)


def test_headers_that_tell_nothing_new_are_not_written(database, database_pool):
    set_limits(database, window=100)
    clock = Clock()
    gate = budget_for(database_pool, clock, block=8)
    gate.reserve()
    drawn = row(database)["updated_at"]
    for sent in range(1, 8):  # Strava counting our own requests as they land
        clock.now += timedelta(seconds=1)
        gate.record(snapshot(sent), status=200)
        if sent < 7:
            gate.reserve()
    assert row(database)["updated_at"] == drawn  # nothing new: not written
    gate.release()  # the call's end: its unused request back, and when it read headers
    ended = row(database)
    assert ended["read_usage_15min"] == 7 and ended["headers_seen_at"] == clock.now


def test_another_clients_requests_are_news_written_with_the_calls_block(database, database_pool):
    set_limits(database, window=100)
    clock = Clock()
    gate = budget_for(database_pool, clock, block=8)
    gate.reserve()
    clock.now += timedelta(seconds=1)
    gate.record(snapshot(30), status=200)  # 29 of them are someone else's
    after = row(database)
    assert after["updated_at"] == clock.now
    assert after["read_usage_15min"] == 30  # our 1 and their 29; our 7 unsent given back
    for _ in range(3):
        gate.reserve()  # a new block, decided on the corrected row
    assert row(database)["read_usage_15min"] == 38
    gate.release()
    assert row(database)["read_usage_15min"] == 33
