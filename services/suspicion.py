"""Polls on suspicion while webhooks bring each change (pure: given a rider's habit and
the time, when to poll next and why).

Strava loses some events. A lost event is found only by polling the rider, and a poll
finds it soon only if it comes soon after the upload. So each rider's polls are placed
just after the moments they usually upload (the ends of their rides over the last
HABIT_DAYS, plus the usual delay to the upload), one poll per busy stretch of their day,
weekdays and weekend days apart; the polls replace the daily safety net, and a floor
keeps any rider from going more than a day unpolled (the only poll of a rider without
a usual moment, as the safety net was).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.schedule import (
    DAY_S,
    HABIT_DAYS,
    HOUR_S,
    PollDecision,
    RiderHabit,
    safety_net_time,
)

# A ride's end to its upload: auto-upload from a bike computer or phone takes minutes;
# a poll aimed at the upload waits this much after the usual ride end.
UPLOAD_DELAY_S = 20 * 60
# A poll finds the uploads of the stretch before it: a stretch of WATCH_SPAN_S ending at
# the poll holds the uploads it aims at (the goal is a lost event found within 2 hours).
WATCH_SPAN_S = 2 * HOUR_S
# Where a poll may go: every quarter of an hour of the local day.
WATCH_STEP_S = 15 * 60
# A stretch earns a poll only if the rider uploaded in it on at least this share of the
# days of its kind over the last HABIT_DAYS (weekdays, weekend days): below it, polls on
# days nothing came cost more than the lost events they would find soon. At 200 riders
# of the fleet bench's habits this spends about what the safety net plus the idle part
# of the incremental share leave (see docs/figures.md).
WATCH_BAR = 0.12
# And at least this many uploads: one upload is not a habit.
WATCH_MIN_UPLOADS = 2
# At most this many stretches a day kind: a rider riding twice a day has two.
WATCH_MAX = 3
# No rider goes longer than this unpolled: the safety net under the polls on suspicion.
QUIET_MAX_S = DAY_S
# Days of each kind in HABIT_DAYS (four weeks).
WEEKDAYS_IN_HABIT = HABIT_DAYS * 5 // 7
WEEKEND_DAYS_IN_HABIT = HABIT_DAYS * 2 // 7


@dataclass(frozen=True)
class Watch:
    """One stretch of a rider's local day that earns a poll at its end."""

    at_s: int  # the poll, seconds after local midnight
    uploads: int  # uploads seen in the stretch before it over HABIT_DAYS
    days: int  # the days of its kind in HABIT_DAYS


@dataclass(frozen=True)
class WatchPlan:
    """A rider's polls on suspicion: weekdays' and weekend days' stretches."""

    weekdays: tuple[Watch, ...]
    weekend: tuple[Watch, ...]

    @property
    def polls_per_day(self) -> float:
        return (5 * len(self.weekdays) + 2 * len(self.weekend)) / 7


def _local_s(moment: datetime, offset_s: int) -> tuple[bool, int]:
    """(weekend, seconds after local midnight) of a moment in the rider's zone."""
    local = datetime.fromtimestamp(moment.timestamp() + offset_s, UTC)
    return local.weekday() >= 5, local.hour * HOUR_S + local.minute * 60 + local.second


def _in_span(upload_s: int, at_s: int) -> bool:
    """Whether an upload at `upload_s` local falls in the stretch ending at `at_s`
    (across midnight too)."""
    return 0 <= (at_s - upload_s) % DAY_S < WATCH_SPAN_S


def choose_watches(
    upload_times_s: Sequence[int], days: int, most: int = WATCH_MAX
) -> tuple[Watch, ...]:
    """The stretches of one day kind that earn a poll, busiest first, taken greedily:
    each holds uploads on at least WATCH_BAR of `days` (and WATCH_MIN_UPLOADS) not held
    by one chosen before. The busiest is always taken when any upload was seen: the day's
    one poll (the safety net's) is best spent where an upload is likeliest."""
    left = list(upload_times_s)
    chosen: list[Watch] = []
    while left and len(chosen) < most:
        best_at, best = 0, 0
        for at_s in range(0, DAY_S, WATCH_STEP_S):
            count = sum(_in_span(u, at_s) for u in left)
            if count > best:
                best_at, best = at_s, count
        if chosen and best < max(WATCH_MIN_UPLOADS, WATCH_BAR * days):
            break
        # The poll goes at the last upload of the stretch, not its end: the stretch is
        # as late as it can be while holding them, and no later.
        held = [u for u in left if _in_span(u, best_at)]
        at = max(held, key=lambda u: (u - best_at + WATCH_SPAN_S) % DAY_S)
        chosen.append(Watch(at, best, days))
        left = [u for u in left if not _in_span(u, best_at)]
    return tuple(sorted(chosen, key=lambda w: w.at_s))


def watch_plan(rider: RiderHabit, now: datetime, most: int = WATCH_MAX) -> WatchPlan:
    """The rider's stretches from their ride ends over the last HABIT_DAYS. A day kind
    without any upload borrows the other's busiest stretch; a rider without any upload
    gets the safety net's time of day of their own (spread over the fleet by id)."""
    since = now - timedelta(days=HABIT_DAYS)
    weekday: list[int] = []
    weekend: list[int] = []
    for end in rider.uploads:
        if since <= end <= now:
            is_weekend, at_s = _local_s(end + timedelta(seconds=UPLOAD_DELAY_S), rider.utc_offset_s)
            (weekend if is_weekend else weekday).append(at_s)
    weekdays = choose_watches(weekday, WEEKDAYS_IN_HABIT, most)
    weekends = choose_watches(weekend, WEEKEND_DAYS_IN_HABIT, most)
    if not weekdays and not weekends:
        daily = (safety_net_time(rider.rider_id) + rider.utc_offset_s) % DAY_S
        weekdays = weekends = (Watch(daily, 0, 0),)
    elif not weekends:
        weekends = (Watch(max(weekdays, key=lambda w: w.uploads).at_s, 0, WEEKEND_DAYS_IN_HABIT),)
    elif not weekdays:
        weekdays = (Watch(max(weekends, key=lambda w: w.uploads).at_s, 0, WEEKDAYS_IN_HABIT),)
    return WatchPlan(weekdays, weekends)


def next_watch(plan: WatchPlan, offset_s: int, after: datetime) -> tuple[datetime, Watch] | None:
    """The first of the plan's polls strictly after `after`, within a week."""
    local = datetime.fromtimestamp(after.timestamp() + offset_s, UTC)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(8):
        day_local = midnight + timedelta(days=day)
        watches = plan.weekend if day_local.weekday() >= 5 else plan.weekdays
        for watch in watches:
            at = day_local + timedelta(seconds=watch.at_s - offset_s)
            if at > after:
                return at, watch
    return None


def _hhmm(seconds: int) -> str:
    return f"{seconds // HOUR_S:02d}:{seconds % HOUR_S // 60:02d}"


def _kind_words(watches: Sequence[Watch], kind: str) -> str:
    if not watches:
        return f"{kind}: none"
    times = ", ".join(f"{_hhmm(w.at_s)} ({w.uploads} of {w.days} days)" for w in watches)
    return f"{kind} {times}"


def suspicion_decision(
    rider: RiderHabit, floor_s: int, now: datetime, why: str, *, backfill: bool = False
) -> PollDecision:
    """While events arrive: the rider's next poll is the first of their polls on
    suspicion (just after a usual upload) after the last poll and `floor_s`, or a day
    after the last poll if none comes sooner; never in the past. While a `backfill` runs,
    one poll a day (the busiest stretch): what the daily safety net spent, so the
    backfill's share pays for none of them.

    A stretch whose ride's event came is polled all the same: skipping it (a re-plan at
    each event) saved about 4% of the polls in a quick model of the fleet bench's world,
    and the floor brings most of them back."""
    plan = watch_plan(rider, now, 1 if backfill else WATCH_MAX)
    offset = rider.utc_offset_s
    habit = (
        "polls just after this rider's usual uploads, local time: "
        f"{_kind_words(plan.weekdays, 'weekdays')}; {_kind_words(plan.weekend, 'weekends')}"
        f" (uploads in the {WATCH_SPAN_S // HOUR_S} h before, over {HABIT_DAYS} days)"
    )
    if backfill:
        habit += "; one a day while the backfill runs"
    per_day = max(1, round(plan.polls_per_day))
    times = tuple(sorted({w.at_s for w in plan.weekdays + plan.weekend}))
    if rider.last_poll_at is None:
        return PollDecision(
            rider.rider_id, now, 0, per_day, 0.0, times, offset, floor_s,
            f"{why}; never polled: now",
        )  # fmt: skip
    earliest = rider.last_poll_at + timedelta(seconds=floor_s)
    quiet = rider.last_poll_at + timedelta(seconds=QUIET_MAX_S)
    found = next_watch(plan, offset, earliest - timedelta(microseconds=1))
    if found is not None and found[0] <= quiet:
        at, watch = found
        local = datetime.fromtimestamp(at.timestamp() + offset, UTC)
        next_words = (
            f"next {local:%a} {_hhmm(watch.at_s)} local, after a usual upload"
            f" ({watch.uploads} of {watch.days} days)"
        )
    else:
        at = max(quiet, earliest)
        next_words = "next a day after the last poll (no usual upload sooner)"
    nxt = max(now, at)
    interval = int((nxt - rider.last_poll_at).total_seconds())
    reason = f"{why}; {habit}; at most a day between polls; {next_words}"
    return PollDecision(
        rider.rider_id, nxt, interval, per_day, 0.0, times, offset, floor_s, reason
    )  # fmt: skip
