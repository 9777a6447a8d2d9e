"""The fleet simulation's world: the riders (histories, habits, uploads, Sync now
presses) and the schedule read from the workflow files.

Everything is drawn from one random.Random in a fixed order, so a seed gives one world.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter

from fake_strava import make_activities
from fake_strava.data import make_activity

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CALLER = WORKFLOWS / "cron-call.yml"

# History sizes: lognormal around the median; sigma 1.0 puts about 1% of riders past
# 10x the median (a few riders of 10,000 in 200 at the default median of 1,000).
HISTORY_SIGMA = 1.0
HISTORY_CAP_FACTOR = 15
# 3% races as the service counts them: make_activities makes 2% of a history brevets
# (rides of 200 km or more, races by RACE_MIN_DISTANCE_KM) on top of its workout_type
# races, so 1% of those; new rides are 2% workout_type races and 1% brevets.
HISTORY_WORKOUT_RACES = 0.01
NEW_WORKOUT_RACES = 0.02
NEW_BREVETS = 0.01
READ_ONLY_SHARE = 0.25
# Riding habits: rides a week, and the share of riders with it ("stopped": no ride).
HABITS: tuple[tuple[str, float, float], ...] = (
    ("daily", 7.0, 0.05),
    ("5/week", 5.0, 0.10),
    ("3/week", 3.0, 0.28),
    ("2/week", 2.0, 0.20),
    ("weekly", 1.0, 0.15),
    ("2/month", 0.5, 0.08),
    ("monthly", 0.23, 0.06),
    ("stopped", 0.0, 0.08),
)
MANUAL_PER_WEEK = 0.03  # a rider's chance a week of a manual entry dated weeks back
MANUAL_BACK_DAYS = (10.0, 45.0)
UPLOAD_DELAY_MEDIAN_S = 15 * 60.0  # ride end to upload; lognormal, long tail
UPLOAD_DELAY_SIGMA = 1.2
UPLOAD_DELAY_MAX_S = 2 * 86400.0
# Sync now: a rider's habit of pressing after an upload, and how soon after.
PRESS_HABITS = ((0.0, 0.55), (0.25, 0.30), (0.8, 0.15))
PRESS_DELAY_MEDIAN_S = 4 * 60.0
# GitHub's scheduler: runs start 0 to 15 minutes late, a few are dropped, and a job
# takes a while to start (runner, checkout).
RUN_DELAY_MAX_S = 15 * 60.0
RUN_DROP_PROBABILITY = 0.03
JOB_STARTUP_S = 20.0
CALL_PAUSE_S = 1.0  # call-cron.sh's CRON_PAUSE_S between calls


@dataclass
class Rider:
    index: int
    athlete_id: int
    utc_offset_h: int
    habit: str
    rides_per_week: float
    read_all: bool
    private_fraction: float
    press_probability: float
    history_size: int
    # make_activities' arguments for the rider's history (drawn in order, generated later)
    history_spec: dict[str, Any] | None = field(default=None, repr=False)
    rider_id: int | None = None

    @property
    def zone(self) -> str:
        # Etc/GMT zones have the POSIX sign: Etc/GMT+8 is UTC-8.
        if self.utc_offset_h == 0:
            return "Etc/UTC"
        return f"Etc/GMT{-self.utc_offset_h:+d}"

    def visible(self, summary: dict[str, Any]) -> bool:
        """Whether the service can see this activity (private needs activity:read_all)."""
        return self.read_all or not summary.get("private")


@dataclass(frozen=True)
class Upload:
    """A new activity appearing on Strava at `at` (epoch seconds)."""

    at: float
    rider: int  # index
    summary: dict[str, Any]
    manual_backdated: bool
    press_at: float | None  # the rider presses Sync now then, if at all


def _pick(rng: random.Random, options: tuple[tuple[Any, float], ...]) -> Any:
    values, weights = zip(*options, strict=True)
    return rng.choices(values, weights=weights)[0]


def build_riders(
    rng: random.Random, count: int, *, start: datetime, history_median: int
) -> list[Rider]:
    """The fleet with its histories (every rider connected at `start`)."""
    riders = []
    cap = history_median * HISTORY_CAP_FACTOR
    for i in range(count):
        size = min(cap, max(0, round(rng.lognormvariate(math.log(history_median), HISTORY_SIGMA))))
        habit = _pick(rng, tuple((h, w) for h, _, w in HABITS))
        rate = next(r for h, r, _ in HABITS if h == habit)
        read_all = rng.random() >= READ_ONLY_SHARE
        private = rng.choice((0.0, 0.0, 0.02, 0.05, 0.15))
        rider = Rider(
            index=i,
            athlete_id=3_000_000 + i,
            utc_offset_h=rng.randint(-8, 10),
            habit=habit,
            rides_per_week=rate,
            read_all=read_all,
            private_fraction=private,
            press_probability=_pick(rng, PRESS_HABITS),
            history_size=size,
        )
        years = rng.uniform(1.0, 12.0)
        history_end = start - timedelta(hours=rng.uniform(1.0, 72.0))
        if size:
            rider.history_spec = {
                "athlete_id": rider.athlete_id,
                "n": size,
                "start": history_end - timedelta(days=365 * years),
                "end": history_end,
                "seed": rng.randrange(2**31),
                "race_fraction": HISTORY_WORKOUT_RACES,
                "private_fraction": private,
                "first_id": first_id(i),
            }
        riders.append(rider)
    return riders


def _history(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    return make_activities(**spec) if spec else []


def histories(riders: list[Rider], *, processes: int = 2) -> Iterator[list[dict[str, Any]]]:
    """Each rider's history, in the riders' order; generated on `processes` processes
    when the fleet is large (the same histories either way: each is seeded)."""
    specs = [rider.history_spec for rider in riders]
    if processes <= 1 or sum(s["n"] for s in specs if s) < 20_000:
        yield from map(_history, specs)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        yield from pool.map(_history, specs)


def first_id(index: int) -> int:
    """Activity ids of rider `index`: a range of its own, history first, new ones above."""
    return (index + 1) * 10**12


def _ride_start(rng: random.Random, day_local: datetime) -> datetime:
    weekend = day_local.weekday() >= 5
    if weekend:
        hour = rng.uniform(7.0, 11.0)
    elif rng.random() < 0.6:
        hour = rng.uniform(5.5, 8.5)
    else:
        hour = rng.uniform(16.5, 19.5)
    return day_local + timedelta(hours=hour)


def build_uploads(
    rng: random.Random, riders: list[Rider], *, start: datetime, days: int
) -> list[Upload]:
    """Every new activity of the simulated days: rides ending and uploaded after a delay,
    now and then a manual entry dated weeks back, and the Sync now presses after them."""
    uploads: list[Upload] = []
    end = start + timedelta(days=days)
    for rider in riders:
        serial = first_id(rider.index) + 5 * 10**11
        for day in range(-1, days):
            # the rider's local midnight of that day, in UTC
            midnight = start + timedelta(days=day) - timedelta(hours=rider.utc_offset_h)
            weekend_boost = 1.6 if (start + timedelta(days=day)).weekday() >= 5 else 0.85
            if rng.random() < min(0.95, rider.rides_per_week / 7 * weekend_boost):
                ride_start = _ride_start(rng, midnight)
                race = rng.random() < NEW_WORKOUT_RACES
                km = rng.lognormvariate(math.log(45.0), 0.5)
                if rng.random() < NEW_BREVETS:
                    km = rng.choice((200, 300, 400)) * rng.uniform(1.0, 1.05)
                serial += 1
                summary = make_activity(
                    serial,
                    athlete_id=rider.athlete_id,
                    start_date=ride_start,
                    sport_type="Ride",
                    distance_m=km * 1000,
                    workout_type=11 if race else 10,
                    private=rng.random() < rider.private_fraction,
                    zone=rider.zone,
                )
                delay = min(
                    UPLOAD_DELAY_MAX_S,
                    rng.lognormvariate(math.log(UPLOAD_DELAY_MEDIAN_S), UPLOAD_DELAY_SIGMA),
                )
                at = ride_start.timestamp() + summary["elapsed_time"] + delay
                press = None
                if rng.random() < rider.press_probability:
                    press = at + rng.lognormvariate(math.log(PRESS_DELAY_MEDIAN_S), 0.8)
                uploads.append(Upload(at, rider.index, summary, False, press))
            if rider.rides_per_week and rng.random() < MANUAL_PER_WEEK / 7:
                at = midnight.timestamp() + rng.uniform(18, 23) * 3600
                back = rng.uniform(*MANUAL_BACK_DAYS) * 86400
                serial += 1
                summary = make_activity(
                    serial,
                    athlete_id=rider.athlete_id,
                    start_date=datetime.fromtimestamp(at - back, UTC),
                    sport_type="Ride",
                    distance_m=rng.uniform(20, 80) * 1000,
                    manual=True,
                    zone=rider.zone,
                )
                uploads.append(Upload(at, rider.index, summary, True, None))
    return sorted(
        (u for u in uploads if start.timestamp() <= u.at < end.timestamp()),
        key=lambda u: (u.at, u.summary["id"]),
    )


# --- the schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workflow:
    """A scheduled workflow: its endpoint, cron times, concurrency group, max_calls."""

    file: str
    name: str
    endpoint: str
    crons: tuple[str, ...]
    group: str
    max_calls: int


def _on(document: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on` key as True.
    on = document.get("on", document.get(True))
    return on if isinstance(on, dict) else {}


def _caller_default_max_calls() -> int:
    caller = yaml.safe_load(CALLER.read_text())
    return int(_on(caller)["workflow_call"]["inputs"]["max_calls"]["default"])


STRAVA_ENDPOINTS = ("sync-strava", "discover", "enrich", "events")


def read_workflows(directory: Path = WORKFLOWS) -> list[Workflow]:
    """The scheduled workflows: each calls cron-call.yml with an endpoint; on a schedule
    max_calls is the `fromJSON(inputs.max_calls || 'N')` fallback (or the caller's
    default)."""
    workflows = []
    default_max = _caller_default_max_calls()
    for path in sorted(directory.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        schedule = _on(document).get("schedule") or []
        if not schedule:
            continue
        for job in document.get("jobs", {}).values():
            given = job.get("with", {})
            # The weather phase spends no Strava request: the fleet measures Strava's budget.
            if given.get("endpoint") not in STRAVA_ENDPOINTS:
                continue
            max_calls = default_max
            fallback = re.search(r"\|\|\s*'(\d+)'", str(given.get("max_calls", "")))
            if fallback:
                max_calls = int(fallback.group(1))
            elif isinstance(given.get("max_calls"), int):
                max_calls = given["max_calls"]
            group = (document.get("concurrency") or {}).get("group") or path.stem
            workflows.append(
                Workflow(
                    file=path.name,
                    name=str(document.get("name", path.stem)),
                    endpoint=str(given["endpoint"]),
                    crons=tuple(str(entry["cron"]) for entry in schedule),
                    group=str(group),
                    max_calls=max_calls,
                )
            )
    return workflows


@dataclass(frozen=True)
class ScheduledRun:
    workflow: Workflow
    due: float  # the cron time
    starts: float  # when GitHub actually starts it
    dropped: bool


def schedule_runs(
    rng: random.Random, workflows: list[Workflow], *, start: datetime, days: int
) -> list[ScheduledRun]:
    """Every cron time of every workflow in the simulated days, with GitHub's habits."""
    end = start + timedelta(days=days)
    runs = []
    for workflow in workflows:
        times: set[datetime] = set()
        for expression in workflow.crons:
            it = croniter(expression, start - timedelta(seconds=1))
            while (moment := it.get_next(datetime)) < end:
                times.add(moment)
        for moment in sorted(times):
            due = moment.timestamp()
            dropped = rng.random() < RUN_DROP_PROBABILITY
            starts = due + rng.uniform(0.0, RUN_DELAY_MAX_S) + JOB_STARTUP_S
            runs.append(ScheduledRun(workflow, due, starts, dropped))
    return runs
