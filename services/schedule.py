"""Pure policy for spending the club's Strava budget like a scheduler.

Decisions only: no I/O, no database, no clock. Every function takes `now` and the state.

Five classes of work share Strava's per-application limits, in priority order: Sync now,
incremental sync, enrichment of recent races, discovery of old history, enrichment of old
races. A class never takes what a higher class is expected to need in this window or
later today, and takes whatever the lower ones leave. The three backfill classes are
paced: what the day leaves them is spread over the windows left today, re-divided at
each window, so nothing is spent all at once after midnight nor left unspent at it.
Sync now keeps a reserve in every window that only it may use. No allowance ever
exceeds the window's or the day's headroom, which is what keeps Strava from answering
429.

Polling is by need: each rider gets at least one poll a day, the rest of the fleet's
share goes to riders in proportion to how often they upload, placed at the local hours
they usually upload; a poll that found something brings the next one forward.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from operator import mul
from typing import Any, Protocol

from services.strava import next_day_reset, next_window_reset

DAY = timedelta(days=1)
DAY_S = 86_400
HOUR_S = 3_600


class WorkClass(StrEnum):
    """The kinds of Strava work, declared in priority order (highest first)."""

    SYNC_NOW = "sync_now"
    INCREMENTAL = "incremental"
    ENRICH_RECENT = "enrich_recent"
    DISCOVER = "discover"
    ENRICH_OLD = "enrich_old"


PRIORITY: tuple[WorkClass, ...] = tuple(WorkClass)
BACKFILL = frozenset({WorkClass.ENRICH_RECENT, WorkClass.DISCOVER, WorkClass.ENRICH_OLD})

# A race is "recent" (enrich_recent, ahead of discovery) when it started this many days
# ago or less: riders look at last month's races, not at 2017's.
RECENT_RACE_DAYS = 30
# Only Sync now may use 10% of every 15-minute window (at least 1 request), so a rider's
# press finds budget even while the backfill spends the rest.
SYNC_NOW_RESERVE = 0.10
# The backfill's pool is paced to be spent an hour before midnight; in that final hour
# (these windows) it may take everything the day has left. The cron runs twice an hour,
# up to 15 minutes late, so a single last window could get no call at all.
FINAL_WINDOWS = 4
# The incremental class's daily share: at least this fraction of the day (and at least
# one poll a rider), at most the larger fraction when the backfill has little to do.
INCREMENTAL_MIN_FRACTION = 0.30
INCREMENTAL_MAX_FRACTION = 0.60


def race_class(start_date: datetime, now: datetime) -> WorkClass:
    """Which enrichment class a race belongs to: recent (RECENT_RACE_DAYS) or old."""
    recent = now - start_date <= timedelta(days=RECENT_RACE_DAYS)
    return WorkClass.ENRICH_RECENT if recent else WorkClass.ENRICH_OLD


# --- the budget's state and the classes' needs ----------------------------------------


class _BudgetRowLike(Protocol):
    limit_15min: int
    limit_daily: int
    read_limit_15min: int
    read_limit_daily: int
    usage_15min: int
    usage_daily: int
    read_usage_15min: int
    read_usage_daily: int


@dataclass(frozen=True)
class BudgetState:
    """Limits and usage of the current window and day (as Strava's headers give them),
    and what each class has used of them."""

    window_limit: int
    window_used: int
    day_limit: int
    day_used: int
    window_used_by: Mapping[WorkClass, int] = field(default_factory=dict)
    day_used_by: Mapping[WorkClass, int] = field(default_factory=dict)
    sync_now_reserve: float = SYNC_NOW_RESERVE

    @classmethod
    def from_row(
        cls,
        row: _BudgetRowLike,
        *,
        window_used_by: Mapping[WorkClass, int] | None = None,
        day_used_by: Mapping[WorkClass, int] | None = None,
        sync_now_reserve: float = SYNC_NOW_RESERVE,
    ) -> BudgetState:
        """From a (rolled) budget row: the overall and read limits folded into the tighter."""
        window_limit = min(row.limit_15min, row.read_limit_15min)
        day_limit = min(row.limit_daily, row.read_limit_daily)
        window_left = min(
            row.limit_15min - row.usage_15min, row.read_limit_15min - row.read_usage_15min
        )
        day_left = min(
            row.limit_daily - row.usage_daily, row.read_limit_daily - row.read_usage_daily
        )
        return cls(
            window_limit=window_limit,
            window_used=window_limit - window_left,
            day_limit=day_limit,
            day_used=day_limit - day_left,
            window_used_by=dict(window_used_by or {}),
            day_used_by=dict(day_used_by or {}),
            sync_now_reserve=sync_now_reserve,
        )

    @property
    def window_headroom(self) -> int:
        """Requests left in the current 15-minute window."""
        return max(0, self.window_limit - self.window_used)

    @property
    def day_headroom(self) -> int:
        """Requests left today (UTC)."""
        return max(0, self.day_limit - self.day_used)

    @property
    def reserve(self) -> int:
        """Requests of every window only Sync now may use (at least 1)."""
        return max(1, math.ceil(self.sync_now_reserve * self.window_limit))


@dataclass(frozen=True)
class Needs:
    """Each class's expected requests: for the rest of this window, the rest of today
    (this window included) and a whole day (to project beyond today)."""

    window: Mapping[WorkClass, int] = field(default_factory=dict)
    day: Mapping[WorkClass, int] = field(default_factory=dict)
    per_day: Mapping[WorkClass, int] = field(default_factory=dict)
    # The backfill's whole waiting work in requests, when known: a backlog today's pool
    # can finish is not paced (a small club gets its history at once).
    backlog: int | None = None

    def in_window(self, cls: WorkClass) -> int:
        """The class's need for the rest of this window."""
        return max(0, self.window.get(cls, 0))

    def in_day(self, cls: WorkClass) -> int:
        """The class's need for the rest of today, never below its window need."""
        return max(0, self.day.get(cls, 0), self.in_window(cls))


# --- allowances -----------------------------------------------------------------------


@dataclass(frozen=True)
class Allowance:
    """How many requests a class may start now, and which limit binds."""

    cls: WorkClass
    requests: int
    binds: str
    limits: Mapping[str, int]

    @property
    def reason(self) -> str:
        """The binding limit in plain words."""
        return f"{self.requests} allowed: {self.binds} binds"


def windows_left(now: datetime) -> int:
    """Windows left today, the current one included (96 at midnight, 1 at 23:45)."""
    now = now.astimezone(UTC)
    return 96 - (now.hour * 60 + now.minute) // 15


def _window_hold(cls: WorkClass, state: BudgetState, needs: Needs) -> int:
    """What a class keeps out of lower classes' reach in this window."""
    if cls is WorkClass.SYNC_NOW:
        # The reserve stays free for the whole window: a click must find it.
        return max(state.reserve, needs.in_window(cls))
    return needs.in_window(cls)


def _day_hold(cls: WorkClass, state: BudgetState, needs: Needs) -> int:
    """What a class keeps out of lower classes' reach for the rest of today."""
    if cls is WorkClass.SYNC_NOW:
        # A click must find a request until midnight, but no more than the reserve
        # plus what the caller expects: the rest flows to the backfill.
        return max(min(state.reserve, state.day_headroom), needs.in_day(cls))
    return needs.in_day(cls)


def backfill_pool(state: BudgetState, needs: Needs) -> int:
    """What today has left for the backfill after Sync now's and incremental's needs."""
    higher = _day_hold(WorkClass.SYNC_NOW, state, needs) + _day_hold(
        WorkClass.INCREMENTAL, state, needs
    )
    return max(0, state.day_headroom - higher)


def backfill_pace(state: BudgetState, needs: Needs, now: datetime) -> int:
    """The backfill's allowance left in this window: the day's pool re-divided over the
    windows left before the final hour (this one's own use counted back in); in the
    final hour, all of it."""
    pool = backfill_pool(state, needs)
    used = sum(state.window_used_by.get(c, 0) for c in BACKFILL)
    spread = windows_left(now) - FINAL_WINDOWS
    if spread <= 1 or (needs.backlog is not None and needs.backlog <= pool):
        return pool
    # The pool at this window's start was pool + used: its share, less what is spent.
    return max(0, min(pool, math.ceil((pool + used) / spread) - used))


def allowance(cls: WorkClass, state: BudgetState, needs: Needs, now: datetime) -> Allowance:
    """How many requests `cls` may start now, and which limit binds."""
    higher = PRIORITY[: PRIORITY.index(cls)]
    limits: dict[str, int] = {
        "window headroom": state.window_headroom,
        "day headroom": state.day_headroom,
    }
    if higher:
        limits["window left by higher classes"] = state.window_headroom - sum(
            _window_hold(h, state, needs) for h in higher
        )
        limits["day left by higher classes"] = state.day_headroom - sum(
            _day_hold(h, state, needs) for h in higher
        )
    if cls in BACKFILL:
        higher_backfill = [h for h in higher if h in BACKFILL]
        limits["backfill pace"] = backfill_pace(state, needs, now) - sum(
            needs.in_window(h) for h in higher_backfill
        )
    binds = min(limits, key=lambda k: limits[k])
    return Allowance(cls, max(0, limits[binds]), binds, limits)


def window_polls_that_matter(cls: WorkClass, window_limit: int) -> int:
    """How many of the incremental class's polls in this window the requests an
    allowance grants `cls` depend on, so counting them may stop there: none for the
    classes above the backfill (what incremental holds binds only the classes below
    it); for those, one more than the window's limit (a hold past the window's headroom
    leaves them nothing, however many more polls there are). Counting costs then what
    the limit is, not what the club is."""
    if WorkClass.INCREMENTAL not in PRIORITY[: PRIORITY.index(cls)]:
        return 0
    return max(0, window_limit) + 1


# --- the plan, for the status JSON ----------------------------------------------------


@dataclass(frozen=True)
class ClassPlan:
    """One class in the current window and today: set aside (used + expected) and used."""

    window_share: int
    window_used: int
    day_share: int
    day_used: int
    allowed_now: int
    binds: str


@dataclass(frozen=True)
class Plan:
    """Every class's share and use in the current window and today."""

    at: datetime
    window_limit: int
    window_used: int
    day_limit: int
    day_used: int
    sync_now_reserve: int
    windows_left: int
    backfill_day_pool: int
    backfill_window_pace: int
    classes: Mapping[WorkClass, ClassPlan]

    def as_dict(self) -> dict[str, Any]:
        """The status JSON's `plan` object."""
        return {
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "window": {"limit": self.window_limit, "used": self.window_used},
            "day": {"limit": self.day_limit, "used": self.day_used},
            "sync_now_reserve": self.sync_now_reserve,
            "windows_left_today": self.windows_left,
            "backfill_day_pool": self.backfill_day_pool,
            "backfill_window_pace": self.backfill_window_pace,
            "classes": {
                c.value: {
                    "window": {"share": p.window_share, "used": p.window_used},
                    "today": {"share": p.day_share, "used": p.day_used},
                    "allowed_now": p.allowed_now,
                    "binds": p.binds,
                }
                for c, p in self.classes.items()
            },
        }


def plan(state: BudgetState, needs: Needs, now: datetime) -> Plan:
    """Each class's share and use now. Shares are set aside in priority order, so they
    never add up to more than the headroom (plus what is already used)."""
    classes: dict[WorkClass, ClassPlan] = {}
    window_left, day_left = state.window_headroom, state.day_headroom
    pool_left = backfill_pool(state, needs)
    for cls in PRIORITY:
        allowed = allowance(cls, state, needs, now)
        if cls is WorkClass.SYNC_NOW:
            window_take = min(_window_hold(cls, state, needs), window_left)
            day_take = min(_day_hold(cls, state, needs), day_left)
        else:
            window_take = min(needs.in_window(cls), allowed.requests, window_left)
            day_take = min(needs.in_day(cls), day_left)
            if cls in BACKFILL:
                day_take = min(day_take, pool_left)
                pool_left -= day_take
        window_left -= window_take
        day_left -= day_take
        window_used = state.window_used_by.get(cls, 0)
        day_used = state.day_used_by.get(cls, 0)
        classes[cls] = ClassPlan(
            window_share=window_used + window_take,
            window_used=window_used,
            day_share=day_used + day_take,
            day_used=day_used,
            allowed_now=allowed.requests,
            binds=allowed.binds,
        )
    return Plan(
        at=now,
        window_limit=state.window_limit,
        window_used=state.window_used,
        day_limit=state.day_limit,
        day_used=state.day_used,
        sync_now_reserve=state.reserve,
        windows_left=windows_left(now),
        backfill_day_pool=backfill_pool(state, needs),
        backfill_window_pace=backfill_pace(state, needs, now),
        classes=classes,
    )


def backfill_per_day(state: BudgetState, needs: Needs) -> int:
    """What a whole future day gives the backfill: the daily limit less the higher
    classes' daily needs (Sync now's at least its reserve, as today's plan holds it)."""
    sync_now = max(state.reserve, needs.per_day.get(WorkClass.SYNC_NOW, 0))
    return max(0, state.day_limit - sync_now - needs.per_day.get(WorkClass.INCREMENTAL, 0))


def projected_completion(
    backlog_requests: int, state: BudgetState, needs: Needs, now: datetime
) -> date | None:
    """The UTC day the backlog completes on, if each future day gives the backfill what
    today's plan gives it; None if no day gives it anything."""
    today = now.astimezone(UTC).date()
    left = backlog_requests - backfill_pool(state, needs)
    if left <= 0:
        return today
    per_day = backfill_per_day(state, needs)
    if per_day <= 0:
        return None
    return today + timedelta(days=math.ceil(left / per_day))


def incremental_share_per_day(
    day_limit: int, fleet_size: int, *, sync_now_per_day: int = 0, backfill_per_day: int = 0
) -> int:
    """The fleet's polls a day: at least INCREMENTAL_MIN_FRACTION of the day and one poll
    a rider; more (up to INCREMENTAL_MAX_FRACTION) when the backfill needs less."""
    floor_share = max(fleet_size, math.ceil(INCREMENTAL_MIN_FRACTION * day_limit))
    spare = day_limit - sync_now_per_day - backfill_per_day
    ceiling = math.floor(INCREMENTAL_MAX_FRACTION * day_limit)
    return max(0, min(day_limit - sync_now_per_day, max(floor_share, min(spare, ceiling))))


# --- polling by need ------------------------------------------------------------------

# Uploads over this many days make a rider's habit.
HABIT_DAYS = 28
# A rider's weight for polls above one a day is their upload rate plus this prior, so an
# idle rider keeps a little chance. A newcomer (no uploads known, no last upload date)
# is weighted like the fleet's median rider until their uploads are stored;
# NEWCOMER_RATE stands in when no rider's habit is known.
PRIOR_UPLOADS_PER_DAY = 0.1
NEWCOMER_RATE = 0.5
# Hour-of-day histogram smoothing: neighbours' share, and a uniform pseudo-count (in
# uploads, spread over 24 hours) so a handful of uploads does not pin a rider to an hour.
NEIGHBOUR_WEIGHT = 0.25
UNIFORM_PSEUDO_UPLOADS = 1.0
# After a poll that found something, the next one comes at most this soon (or the floor):
# uploads come in bursts (a device's sync, a ride then its commute home).
FOUND_FOLLOW_UP_S = HOUR_S
# The span of hours holding this share of a rider's uploads is "when they upload".
PEAK_SHARE = 0.6


@dataclass(frozen=True)
class RiderHabit:
    """What polling needs to know about one rider."""

    rider_id: int
    uploads: tuple[datetime, ...]  # start (or upload) times over the last HABIT_DAYS
    utc_offset_s: int
    last_poll_at: datetime | None
    last_poll_found: bool
    last_upload_at: datetime | None = None  # if older than HABIT_DAYS, says how idle


@dataclass(frozen=True)
class PollDecision:
    """When to poll a rider next, and why."""

    rider_id: int
    next_poll_at: datetime
    interval_s: int  # from the last poll to the next (0: never polled, poll now)
    polls_per_day: int  # planned, follow-ups after a find not counted
    found_per_day: float  # expected polls a day that find something (each brings one more)
    local_times_s: tuple[int, ...]  # the daily plan: seconds after local midnight
    utc_offset_s: int
    floor_s: int
    reason: str


@dataclass(frozen=True)
class PollPlan:
    """The fleet's polls: each rider's decision, the expected total, whether it fits."""

    decisions: Mapping[int, PollDecision]
    share_per_day: int
    expected_per_day: float
    fits: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        """The status JSON's polling summary (rider detail shows its decision)."""
        return {
            "share_per_day": self.share_per_day,
            "expected_per_day": round(self.expected_per_day, 1),
            "fits": self.fits,
            "note": self.note,
        }


def upload_rate(rider: RiderHabit, now: datetime) -> float:
    """Uploads a day over the last HABIT_DAYS."""
    since = now - timedelta(days=HABIT_DAYS)
    return sum(1 for t in rider.uploads if since <= t <= now) / HABIT_DAYS


def _local_hour(moment: datetime, offset_s: int) -> int:
    return int(((moment.timestamp() + offset_s) % DAY_S) // HOUR_S)


def hour_histogram(rider: RiderHabit, now: datetime) -> list[float]:
    """Smoothed uploads by local hour of day (circular), summing to uploads + pseudo."""
    since = now - timedelta(days=HABIT_DAYS)
    raw = [0.0] * 24
    for t in rider.uploads:
        if since <= t <= now:
            raw[_local_hour(t, rider.utc_offset_s)] += 1
    centre = 1 - 2 * NEIGHBOUR_WEIGHT
    return [
        centre * raw[h]
        + NEIGHBOUR_WEIGHT * (raw[h - 1] + raw[(h + 1) % 24])
        + UNIFORM_PSEUDO_UPLOADS / 24
        for h in range(24)
    ]


# Hours an upload in hour k (at its middle) waits for a poll at the start of hour h:
# _WAITS[h][k], a table so that planning a club does not work it out for every rider.
_WAITS = tuple(tuple((h - k - 0.5) % 24 for k in range(24)) for h in range(24))


def poll_times(histogram: Sequence[float], polls: int) -> tuple[int, ...]:
    """`polls` local times (seconds after midnight) splitting the day into intervals that
    each carry an equal share of expected uploads; each poll closes its interval. The
    cycle starts where a single daily poll would keep uploads waiting least: just after
    the usual upload hours."""
    total = sum(histogram)
    start = min(range(24), key=lambda h: (sum(map(mul, histogram, _WAITS[h])), h))
    times: list[int] = []
    for k in range(1, polls + 1):
        target, acc = total * k / polls, 0.0
        for step in range(24):
            h = (start + step) % 24
            if acc + histogram[h] >= target - 1e-9 or step == 23:
                inside = (target - acc) / histogram[h] if histogram[h] > 0 else 1.0
                offset = (step + min(1.0, max(0.0, inside))) * HOUR_S
                times.append(int(start * HOUR_S + offset) % DAY_S)
                break
            acc += histogram[h]
    return tuple(sorted(set(times)))


def _found_per_day(rate: float, polls: int) -> float:
    """Expected polls a day that find something (uploads as a Poisson process)."""
    return polls * (1 - math.exp(-rate / polls)) if rate > 0 else 0.0


# --- the fleet's level: how many polls a day each rider gets ---------------------------
#
# Every rider gets one poll a day; the share's spare polls go in proportion to a weight
# (upload rate plus a prior), none above the floor's cap: rider i gets
# 1 + min(cap, floor(level x weight_i)) for the fleet's largest `level` whose expected
# total (polls and follow-ups after finds) fits the share. One number says it all, so a
# rider re-planned alone (after its own sync) gets what a whole-club plan would give it.
#
# Riders with the same habit would all step up at the same level, in lumps as large as
# the group; a rider's tie step (its id modulo TIE_STEPS) raises its weight by up to
# TIE_SPREAD, so they step up a few at a time. TIE_SPREAD stays far below the gap
# between two habits (one upload in HABIT_DAYS against ten a day: 1/280), so a rider who
# uploads more never gets fewer polls.
TIE_STEPS = 32
TIE_SPREAD = 1e-3


def tie_step(rider_id: int) -> int:
    """A rider's place among riders of the same habit (see TIE_STEPS)."""
    return rider_id % TIE_STEPS


def _weight(rate: float, step: int) -> float:
    return (rate + PRIOR_UPLOADS_PER_DAY) * (1 + TIE_SPREAD * step / TIE_STEPS)


def _polls_at(level: float, rate: float, step: int, cap: int) -> int:
    return 1 + min(cap, math.floor(level * _weight(rate, step) + 1e-9))


def floor_cap(floor_s: int) -> int:
    """Polls above one a day the floor leaves room for."""
    return max(1, DAY_S // max(1, floor_s)) - 1


@dataclass(frozen=True)
class FleetSurvey:
    """What the fleet's level depends on: riders counted by uploads over HABIT_DAYS and
    tie step, and newcomers (no upload known yet) by tie step. Surveys of parts of the
    fleet add up, so a whole-club plan can read the club a slice at a time."""

    known: Mapping[tuple[int, int], int] = field(default_factory=dict)
    newcomers: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, riders: Iterable[tuple[int, int | None]]) -> FleetSurvey:
        """From (rider_id, uploads over HABIT_DAYS, None for a newcomer) pairs."""
        known: dict[tuple[int, int], int] = defaultdict(int)
        newcomers: dict[int, int] = defaultdict(int)
        for rider_id, uploads in riders:
            if uploads is None:
                newcomers[tie_step(rider_id)] += 1
            else:
                known[(uploads, tie_step(rider_id))] += 1
        return cls(dict(known), dict(newcomers))

    def plus(self, other: FleetSurvey) -> FleetSurvey:
        known, newcomers = dict(self.known), dict(self.newcomers)
        for key, n in other.known.items():
            known[key] = known.get(key, 0) + n
        for step, n in other.newcomers.items():
            newcomers[step] = newcomers.get(step, 0) + n
        return FleetSurvey(known, newcomers)

    @property
    def riders(self) -> int:
        return sum(self.known.values()) + sum(self.newcomers.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "known": [[u, s, n] for (u, s), n in sorted(self.known.items())],
            "newcomers": [[s, n] for s, n in sorted(self.newcomers.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FleetSurvey:
        data = data or {}
        return cls(
            {(int(u), int(s)): int(n) for u, s, n in data.get("known", ())},
            {int(s): int(n) for s, n in data.get("newcomers", ())},
        )


@dataclass(frozen=True)
class FleetLevel:
    """The fleet's plan in numbers: the level, a newcomer's assumed rate, the floor's cap,
    and what the fleet is expected to take of its share."""

    level: float
    typical: float
    cap: int
    riders: int
    share_per_day: int
    expected_per_day: float
    fits: bool

    @property
    def note(self) -> str:
        if self.fits:
            return (
                f"{self.expected_per_day:.0f} polls a day expected of a share of "
                f"{self.share_per_day}"
            )
        return (
            f"does not fit: {self.riders} riders need {self.expected_per_day:.0f} polls a day"
            " (one each, plus follow-ups after finds), the share is"
            f" {self.share_per_day}; once a day anyway"
        )

    def polls(self, rate: float, step: int) -> int:
        """Planned polls a day of a rider uploading `rate` a day, at its tie step."""
        return _polls_at(self.level, rate, step, self.cap)


def fleet_level(survey: FleetSurvey, share_per_day: int, floor_s: int) -> FleetLevel:
    """The largest level whose expected polls (one a rider at least, follow-ups after
    finds counted) fit `share_per_day`; at a share below one a rider, level 0."""
    cap = floor_cap(floor_s)
    known = sorted((u / HABIT_DAYS, n) for (u, _), n in survey.known.items() if n)
    count = sum(n for _, n in known)
    typical, seen = NEWCOMER_RATE, 0
    for rate, n in known:  # the median known rate (the upper one of an even count)
        seen += n
        if seen > count // 2:
            typical = rate
            break
    cells = [(u / HABIT_DAYS, s, n) for (u, s), n in survey.known.items()]
    cells += [(typical, s, n) for s, n in survey.newcomers.items()]

    def expected(level: float) -> float:
        total = 0.0
        for rate, step, n in cells:
            polls = _polls_at(level, rate, step, cap)
            total += n * (polls + _found_per_day(rate, polls))
        return total

    low, high = 0.0, (cap + 1) / PRIOR_UPLOADS_PER_DAY
    if expected(high) <= share_per_day:
        low = high
    elif expected(low) <= share_per_day:
        for _ in range(64):  # the largest level that fits
            middle = (low + high) / 2
            if expected(middle) <= share_per_day:
                low = middle
            else:
                high = middle
    total = expected(low)
    return FleetLevel(
        level=low,
        typical=typical,
        cap=cap,
        riders=survey.riders,
        share_per_day=share_per_day,
        expected_per_day=total,
        fits=total <= share_per_day,
    )


def rider_uploads(rider: RiderHabit, now: datetime) -> int | None:
    """Uploads over the last HABIT_DAYS; None for a newcomer (none, and no upload known)."""
    since = now - timedelta(days=HABIT_DAYS)
    uploads = sum(1 for t in rider.uploads if since <= t <= now)
    return None if uploads == 0 and rider.last_upload_at is None else uploads


def survey(riders: Iterable[RiderHabit], now: datetime) -> FleetSurvey:
    return FleetSurvey.of((r.rider_id, rider_uploads(r, now)) for r in riders)


def _peak(histogram_raw: Sequence[float]) -> tuple[int, int] | None:
    """The shortest span of local hours (start, length) holding PEAK_SHARE of uploads."""
    total = sum(histogram_raw)
    if total < 3:
        return None
    twice = [*histogram_raw, *histogram_raw]  # a span may run past midnight
    for length in range(1, 25):
        held = sum(twice[:length])
        for start in range(24):
            if held >= PEAK_SHARE * total:
                return start, length
            held += twice[start + length] - twice[start]  # counts: exact in any order
    return None


def _hours(seconds: float) -> str:
    hours = seconds / HOUR_S
    return f"{hours:.0f} h" if abs(hours - round(hours)) < 0.05 else f"{hours:.1f} h"


def _next_poll(
    rider: RiderHabit, times: Sequence[int], floor_s: int, now: datetime
) -> tuple[datetime, bool]:
    """The first planned time after the floor; at most a day after the last poll (unless
    the floor says longer); a find brings it forward; never in the past. And whether the
    find did bring it forward."""
    if rider.last_poll_at is None:
        return now, False
    last = rider.last_poll_at
    planned = poll_after(times, rider.utc_offset_s, floor_s, last)
    nxt = planned
    if rider.last_poll_found:
        nxt = min(nxt, last + timedelta(seconds=max(floor_s, FOUND_FOLLOW_UP_S)))
    forward = nxt < planned and nxt > now
    return max(nxt, now), forward


def poll_after(times: Sequence[int], offset_s: int, floor_s: int, last: datetime) -> datetime:
    """The planned poll after one at `last`: the first daily time past the floor, at most
    a day later (unless the floor itself is longer)."""
    earliest = last + timedelta(seconds=floor_s)
    return max(earliest, min(next_planned(times, offset_s, earliest), last + DAY))


def next_planned(times: Sequence[int], offset_s: int, after: datetime) -> datetime:
    """The first of a rider's daily local times at or after `after` (a UTC instant)."""
    local = after.timestamp() + offset_s
    midnight = local - local % DAY_S
    for day in (0, 1):
        for t in sorted(times):
            candidate = midnight + day * DAY_S + t
            if candidate >= local:
                return datetime.fromtimestamp(candidate - offset_s, UTC)
    return after + DAY  # no times at all: not reached, poll_plan always plans one


def poll_decision(
    rider: RiderHabit, fleet: FleetLevel, floor_s: int, now: datetime
) -> PollDecision:
    """One rider's next poll in the fleet's plan: its polls a day from the fleet's level,
    placed at its usual local hours, never closer than `floor_s`, sooner after a poll
    that found something."""
    uploads = rider_uploads(rider, now)
    is_new = uploads is None
    rate = fleet.typical if uploads is None else uploads / HABIT_DAYS
    count = fleet.polls(rate, tie_step(rider.rider_id))
    times = poll_times(hour_histogram(rider, now), count)
    nxt, forward = _next_poll(rider, times, floor_s, now)
    interval = 0 if rider.last_poll_at is None else int((nxt - rider.last_poll_at).total_seconds())
    return PollDecision(
        rider_id=rider.rider_id,
        next_poll_at=nxt,
        interval_s=interval,
        polls_per_day=count,
        found_per_day=_found_per_day(rate, count),
        local_times_s=times,
        utc_offset_s=rider.utc_offset_s,
        floor_s=floor_s,
        reason=_newcomer_reason(fleet.typical, len(times), fleet.fits)
        if is_new
        else _reason(rider, upload_rate(rider, now), times, floor_s, fleet.fits, forward, now),
    )


def poll_plan(
    riders: Iterable[RiderHabit], share_per_day: int, floor_s: int, now: datetime
) -> PollPlan:
    """Each rider's next poll: at least once a day, the fleet within `share_per_day`,
    polls above one a day in proportion to upload rate, placed at the rider's usual
    local hours, never closer than `floor_s`, sooner after a poll that found something."""
    fleet = list(riders)
    level = fleet_level(survey(fleet, now), share_per_day, floor_s)
    decisions = {r.rider_id: poll_decision(r, level, floor_s, now) for r in fleet}
    expected = sum(d.polls_per_day + d.found_per_day for d in decisions.values())
    return PollPlan(decisions, share_per_day, expected, level.fits, level.note)


def safety_net_decision(rider: RiderHabit, floor_s: int, now: datetime, why: str) -> PollDecision:
    """One rider's daily safety-net poll (see safety_net_plan)."""
    times = (safety_net_time(rider.rider_id),)
    if rider.last_poll_at is None:
        nxt, interval = now, 0
    else:
        nxt = max(now, poll_after(times, 0, floor_s, rider.last_poll_at))
        interval = int((nxt - rider.last_poll_at).total_seconds())
    at = f"{times[0] // HOUR_S:02d}:{times[0] % HOUR_S // 60:02d} UTC"
    return PollDecision(
        rider_id=rider.rider_id,
        next_poll_at=nxt,
        interval_s=interval,
        polls_per_day=1,
        found_per_day=0.0,
        local_times_s=times,
        utc_offset_s=0,
        floor_s=floor_s,
        reason=f"{why}; this rider's daily poll at {at}",
    )


# Riders' safety-net polls are spread through the day by id (the golden ratio's steps
# fill a circle evenly), so a fleet's daily polls never come in one burst.
_SPREAD = (math.sqrt(5) - 1) / 2


def safety_net_time(rider_id: int) -> int:
    """A rider's safety-net poll, in seconds after UTC midnight."""
    return int((rider_id * _SPREAD) % 1 * DAY_S)


def safety_net_plan(
    riders: Iterable[RiderHabit], share_per_day: int, floor_s: int, now: datetime, why: str
) -> PollPlan:
    """While webhooks bring each change (services/webhooks.health): every rider polled
    once a day at a time of its own, listing after its cursor, since deliveries can be
    lost; no follow-up after a find (a find means one event was lost, not a busy day)."""
    fleet = list(riders)
    decisions = {r.rider_id: safety_net_decision(r, floor_s, now, why) for r in fleet}
    expected = float(len(fleet))
    note = f"{why}: {len(fleet)} polls a day (one per rider) of a share of {share_per_day}"
    return PollPlan(decisions, share_per_day, expected, expected <= share_per_day, note)


def _reason(
    rider: RiderHabit,
    rate: float,
    times: Sequence[int],
    floor_s: int,
    fits: bool,
    forward: bool,
    now: datetime,
) -> str:
    """A decision in plain words."""
    count = len(times)
    cadence = "once a day" if count == 1 else f"{count} polls a day"
    if rate == 0:
        last = rider.last_upload_at
        idle = f"idle {(now - last).days} days" if last else f"no uploads in {HABIT_DAYS} days"
        words = f"{idle}: {cadence}"
    else:
        raw = [0.0] * 24
        since = now - timedelta(days=HABIT_DAYS)
        for t in rider.uploads:
            if since <= t <= now:
                raw[_local_hour(t, rider.utc_offset_s)] += 1
        peak = _peak(raw)
        words = f"uploads ~{rate:.1f} a day"
        if peak is None:
            words += f": {cadence}"
        else:
            start, length = peak
            end = (start + length) % 24
            words += f", mostly {start:02d}:00-{end:02d}:00 local: {cadence}"
            inside = [t for t in times if (t // HOUR_S - start) % 24 < length or t // HOUR_S == end]
            if len(inside) >= 2:
                words += f", every ~{_hours(length * HOUR_S / len(inside))} then"
    if count > 1 and count >= DAY_S // max(1, floor_s):
        words += f" (the floor: {_hours(floor_s)} between polls)"
    if forward:
        follow_up = _hours(max(floor_s, FOUND_FOLLOW_UP_S))
        words = f"last poll found new activities: next in {follow_up}; {words}"
    if not fits:
        words += "; the budget's share is too small for more"
    return words


def _newcomer_reason(typical: float, count: int, fits: bool) -> str:
    """A newcomer's decision in plain words."""
    cadence = "once a day" if count == 1 else f"{count} polls a day"
    words = f"no uploads known yet: polled like a typical rider (~{typical:.1f} a day): {cadence}"
    return words + ("; the budget's share is too small for more" if not fits else "")


def polls_between(decision: PollDecision, start: datetime, end: datetime) -> int:
    """Planned polls of one rider in [start, end): the next one, then its daily times
    (each at least the floor after the previous)."""
    count, moment = 0, decision.next_poll_at
    while moment < end:
        if moment >= start:
            count += 1
        moment = poll_after(
            decision.local_times_s, decision.utc_offset_s, max(1, decision.floor_s), moment
        )
    return count


def incremental_needs(polls: PollPlan, now: datetime) -> tuple[int, int, int]:
    """The incremental class's need for the rest of this window, the rest of today and a
    whole day, from the poll plan (follow-ups after finds pro rata for today)."""
    window_end, day_end = next_window_reset(now), next_day_reset(now)
    decisions = polls.decisions.values()
    window = sum(1 for d in decisions if d.next_poll_at < window_end)
    day_fraction = (day_end - now) / DAY
    follow_ups = sum(d.found_per_day for d in decisions) * day_fraction
    day = sum(polls_between(d, now, day_end) for d in decisions) + math.ceil(follow_ups)
    return window, day, math.ceil(polls.expected_per_day)


# --- fair shares within a class -------------------------------------------------------


def discover_order(riders: Iterable[tuple[int, int]]) -> list[int]:
    """Discovery's order, (rider_id, pages walked) in: fewest pages first, then rider id.

    The SQL (models.discovery.claim_riders_for_discovery) already orders so, with full
    refreshes and older connections first among equals: a 10,000-activity history walks
    one page per turn like a newcomer's, so the newcomer is never held back behind it.
    """
    return [rider for rider, _ in sorted(riders, key=lambda r: (r[1], r[0]))]


def enrich_order(races: Iterable[tuple[int, datetime, int]]) -> list[int]:
    """Race ids, (rider_id, start_date, race_id) in, in a round-robin over riders: every
    rider's newest race, then every rider's second newest, and so on; within a round the
    newest first. One rider's hundred races do not hold back everyone else's."""
    by_rider: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for rider, start, race in races:
        by_rider[rider].append((start, race))
    ranked: list[tuple[int, float, int, int]] = []
    for rider, own in by_rider.items():
        own.sort(key=lambda r: (r[0], r[1]), reverse=True)
        for rank, (start, race) in enumerate(own):
            ranked.append((rank, -start.timestamp(), -race, rider))
    ranked.sort()
    return [-race for _, _, race, _ in ranked]


# --- the weekly look back --------------------------------------------------------------

# Once a week each rider's poll lists the last LOOK_BACK_DAYS whatever the cursor, and
# reads to an empty page even with activity:read_all (a short read_all page is trusted
# to end a listing everywhere else, to save a request; Strava warns it need not be the
# last): uploads dated back and edits whose events were lost are found within a week.
LOOK_BACK_DAYS = 60
LOOK_BACK_EVERY_S = 7 * DAY_S


def look_back_slot(rider_id: int, now: datetime) -> datetime:
    """The rider's latest weekly moment at or before `now`: each rider has an offset of
    its own into the week (golden-ratio steps by id), so the fleet's look backs spread
    over the week."""
    offset = int((rider_id * _SPREAD) % 1 * LOOK_BACK_EVERY_S)
    t = now.timestamp()
    return datetime.fromtimestamp(t - (t - offset) % LOOK_BACK_EVERY_S, UTC)


def look_back_due(
    rider_id: int,
    *,
    last_look_back_at: datetime | None,
    connected_at: datetime,
    last_synced_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether the rider's next listing is its look back: its weekly moment has passed
    since the last look back (or since the connection). Never the first listing (the
    history walk and the overlap cover what came before)."""
    if last_synced_at is None:
        return False
    since = last_look_back_at or connected_at
    return since < look_back_slot(rider_id, now)


def look_back_after(now: datetime) -> datetime:
    """Where a look back's listing starts."""
    return now - timedelta(days=LOOK_BACK_DAYS)


def lists_back(after: datetime, now: datetime) -> bool:
    """Whether a listing from `after` is a look back's (begun up to a day ago, as one
    resumed after a cut)."""
    return after <= look_back_after(now) + DAY
