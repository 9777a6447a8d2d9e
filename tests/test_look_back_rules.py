"""Pure rules of the weekly look back (services/schedule.py): each rider's weekly moment,
when the next listing is the look back, and where it starts; no database, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services import schedule

# A Monday, 00:00 UTC.
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)


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
