"""Why a call took nothing, as a decision without I/O (services/idle.py): every cause,
their order, and a due time that is never in the past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from services.idle import (
    BACKING_OFF,
    BUDGET_SHARE,
    EXPLAINED,
    HELD,
    NONE_DUE,
    RATE_LIMITED,
    REASONS,
    SOURCE_DOWN,
    Waiting,
    idle_reason,
    took_nothing,
)

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=7)


def test_nothing_due_says_when_the_next_poll_is_planned():
    idle = idle_reason(NOW, waiting=Waiting(next_planned_at=NOW + timedelta(hours=3)))
    assert idle.as_dict() == {"idle_reason": NONE_DUE, "next_due_at": "2026-12-06T13:00:00Z"}
    nobody = idle_reason(NOW, waiting=Waiting())
    assert nobody.as_dict() == {"idle_reason": NONE_DUE, "next_due_at": None}


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"source_down_until": LATER}, SOURCE_DOWN),
        ({"rate_limited_until": LATER}, RATE_LIMITED),
        ({"share_spent_until": LATER}, BUDGET_SHARE),
        ({"waiting": Waiting(held_until=LATER)}, HELD),
        ({"waiting": Waiting(backing_off_until=LATER)}, BACKING_OFF),
        ({"waiting": Waiting(next_planned_at=LATER)}, NONE_DUE),
    ],
)
def test_each_cause_alone_names_itself_and_when_it_lifts(options, reason):
    options.setdefault("waiting", Waiting())
    idle = idle_reason(NOW, **options)
    assert idle.reason == reason and idle.next_due_at == LATER
    assert reason in EXPLAINED and reason in REASONS


def test_the_first_cause_wins_in_every_combination():
    order = [SOURCE_DOWN, RATE_LIMITED, BUDGET_SHARE, HELD, BACKING_OFF]
    for present in product([False, True], repeat=5):
        down, rate, share, held, backing = present
        idle = idle_reason(
            NOW,
            waiting=Waiting(
                held_until=LATER if held else None,
                backing_off_until=LATER if backing else None,
                next_planned_at=LATER,
            ),
            source_down_until=LATER if down else None,
            rate_limited_until=LATER if rate else None,
            share_spent_until=LATER if share else None,
        )
        expected = next((r for r, on in zip(order, present, strict=True) if on), NONE_DUE)
        assert idle.reason == expected, present


def test_a_due_time_in_the_past_is_now():
    past = NOW - timedelta(minutes=5)
    assert idle_reason(NOW, waiting=Waiting(held_until=past)).next_due_at == NOW
    assert idle_reason(NOW, waiting=Waiting(next_planned_at=past)).next_due_at == NOW


def test_a_call_took_nothing_when_no_item_was_worked():
    assert took_nothing([])
    assert took_nothing([{"status": "skipped", "reason": "rate_limited"}])
    assert not took_nothing([{"status": "skipped"}, {"status": "failed"}])
    assert not took_nothing([{"status": "succeeded"}])
