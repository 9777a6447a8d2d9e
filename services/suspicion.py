"""Polls on suspicion, the I/O around the pure decision (services/schedule.suspicion):
while events arrive, each rider's habit and what their events said, read; each rider
whose habit says an upload is likely by now and from whom nothing was heard gets one
poll shortly after that moment, ahead of the daily safety net."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import models
from services import schedule


def add_suspicions(
    conn: models.Conn,
    rows: list[dict[str, Any]],
    polls: schedule.PollPlan,
    *,
    floor_s: int,
    now: datetime,
) -> schedule.PollPlan:
    """The safety net's plan `polls` (of models.planning.poll_habits `rows`) with each
    rider's poll on suspicion, paid from the idle part of the incremental share (what
    the daily polls and the events' fetches leave of it)."""
    signals = models.suspicion.upload_signals(conn, since=now - timedelta(days=schedule.HABIT_DAYS))
    habits = []
    for row in rows:
        rider_id = int(row["rider_id"])
        seen = signals.get(rider_id, {})
        heard = [t for t in (row["last_synced_at"], seen.get("last_event_at")) if t is not None]
        habits.append(
            schedule.UploadHabit(
                rider_id=rider_id,
                ride_ends=tuple(row["ends"] or ()),
                upload_delays_s=tuple(seen.get("delays_s", ())),
                utc_offset_s=int(row["offset_s"] or 0),
                last_heard_at=max(heard) if heard else None,
            )
        )
    rates = [sum(schedule.upload_profile(h, now)) / 7 for h in habits]
    idle = schedule.suspicion_idle_per_day(
        polls.share_per_day, polls.expected_per_day, event_fetches_per_day=sum(rates)
    )
    bar = schedule.suspicion_bar(rates, idle)
    found = {h.rider_id: schedule.suspicion(h, bar, floor_s, now) for h in habits}
    return schedule.with_suspicions(polls, found, bar, now)
