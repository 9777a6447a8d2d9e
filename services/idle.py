"""Why a cron call took nothing, as one word and a time: the decision without I/O.

A call that did no work (nothing succeeded or failed) says why in its answer
(`idle_reason`) and when work is next due (`next_due_at`, None when nothing is
planned), so that "Run workflow" answering `processed: 0` is never a mystery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.clock import iso

NONE_DUE = "none_due"
HELD = "held_by_another_call"
BACKING_OFF = "backing_off"
BUDGET_SHARE = "budget_share"
RATE_LIMITED = "rate_limited"
SOURCE_DOWN = "source_down"  # the weather source's breaker is open

REASONS = (NONE_DUE, HELD, BACKING_OFF, BUDGET_SHARE, RATE_LIMITED, SOURCE_DOWN)

# In plain words, for the dashboard and the docs.
EXPLAINED = {
    NONE_DUE: "nothing was due",
    HELD: "what is due is held by another call (a manual run, a rider's Sync now)",
    BACKING_OFF: "what is due is backing off after failures",
    BUDGET_SHARE: "this kind of work has used its share of the Strava budget for now",
    RATE_LIMITED: "Strava's rate limit is reached",
    SOURCE_DOWN: "the weather source is failing; calls to it are paused",
}


@dataclass(frozen=True)
class Waiting:
    """What a call's kind of work has waiting, read for an idle call: the earliest time
    each kind of blocked work frees up, and the earliest planned work."""

    held_until: datetime | None = None  # the earliest lease of otherwise due work ends
    backing_off_until: datetime | None = None  # the earliest retry of failed work
    next_planned_at: datetime | None = None  # the earliest planned work (None: none)


@dataclass(frozen=True)
class Idle:
    reason: str
    next_due_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"idle_reason": self.reason, "next_due_at": iso(self.next_due_at)}


def idle_reason(
    now: datetime,
    *,
    waiting: Waiting,
    rate_limited_until: datetime | None = None,
    share_spent_until: datetime | None = None,
    source_down_until: datetime | None = None,
) -> Idle:
    """Why a call took nothing, first cause first: the Strava (or weather) limit, then
    the class's share, then work held by another call, then work backing off; else
    nothing was due. `next_due_at` is when that cause lifts (or the next planned work),
    never in the past."""

    def due(at: datetime | None) -> datetime | None:
        return None if at is None else max(at, now)

    if source_down_until is not None:
        return Idle(SOURCE_DOWN, due(source_down_until))
    if rate_limited_until is not None:
        return Idle(RATE_LIMITED, due(rate_limited_until))
    if share_spent_until is not None:
        return Idle(BUDGET_SHARE, due(share_spent_until))
    if waiting.held_until is not None:
        return Idle(HELD, due(waiting.held_until))
    if waiting.backing_off_until is not None:
        return Idle(BACKING_OFF, due(waiting.backing_off_until))
    return Idle(NONE_DUE, due(waiting.next_planned_at))


def took_nothing(items: list[dict[str, Any]]) -> bool:
    """A call took nothing when no item was worked (succeeded or failed): it claimed
    none, or handed back all it claimed."""
    return not any(i.get("status") in ("succeeded", "failed") for i in items)
