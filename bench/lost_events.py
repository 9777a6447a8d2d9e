"""How soon can polls find a ride whose webhook event was lost, for a given number of
polls a day? The fleet bench's world (bench/fleet_world.py: its riders, habits and
upload times) without the service: a quick model to judge the polls on suspicion
against what any placement of polls could do.

- The bound: an oracle that knows the world's own upload-time shape (weekdays and
  weekend days, in each rider's local time) and each rider's rate places each day's
  polls where they find the most rides soon, the riders' polls shared out greedily by
  rides found, at the workflow's hourly sync-strava runs (17 past, 0 to 15 minutes late,
  as GitHub runs them). For each budget of polls a rider a day: the share of rides a
  poll finds within 2 hours, and within 15 minutes, of the upload.
- The rule: services/suspicion.py on the same world, each rider planned after each
  poll from their four weeks of rides, polls served at the next run, events lost at
  --loss: polls a day, and how soon the rides whose event was lost were found.

Run: .venv/bin/python -m bench.lost_events [--riders 200] [--seed 1] [--loss 0.05]
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from bench.fleet_world import Upload, build_riders, build_uploads
from services import suspicion
from services.schedule import RiderHabit

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, as the fleet bench's
RUN_MINUTE = 17  # .github/workflows/sync-strava.yml: "17 * * * *"
RUN_LATE_MAX_S = 15 * 60
SPANS = (2 * 3600, 15 * 60)  # found within 2 hours, within 15 minutes
BUDGETS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)  # polls a rider a day


def ride_end(upload: Upload) -> datetime:
    summary = upload.summary
    started = datetime.fromisoformat(summary["start_date"].replace("Z", "+00:00"))
    return started + timedelta(seconds=summary["elapsed_time"])


def run_after(moment: datetime, rng: random.Random) -> datetime:
    """The first sync-strava run at or after `moment` (as it starts: late by GitHub)."""
    run = moment.replace(minute=RUN_MINUTE, second=0, microsecond=0)
    if run < moment:
        run += timedelta(hours=1)
    return run + timedelta(seconds=rng.uniform(0, RUN_LATE_MAX_S) + 25)


def _finds(run_minute: int, upload_minute: int, span_s: int) -> bool:
    """Whether a poll at a run finds an upload within `span_s` (minutes of the day)."""
    return (run_minute - upload_minute) % 1440 <= span_s // 60


def oracle(riders: list, uploads: list[Upload], days: int) -> None:
    """The bound: the best hours for each day kind from the world's own shape, shared
    out over the riders by their rates."""
    local: dict[bool, list[int]] = {False: [], True: []}  # minute of the local day
    for upload in uploads:
        at = datetime.fromtimestamp(upload.at + riders[upload.rider].utc_offset_h * 3600, UTC)
        local[at.weekday() >= 5].append(at.hour * 60 + at.minute)
    runs = [h * 60 + RUN_MINUTE + 8 for h in range(24)]  # a run's middle
    print(f"The bound ({len(uploads)} rides over {days} days, {len(riders)} riders):")
    for span in SPANS:
        gains: dict[bool, list[float]] = {}
        for weekend, minutes in local.items():
            chosen: list[int] = []
            left, total = list(minutes), len(minutes)
            gains[weekend] = []
            for _ in range(8):
                best = max(runs, key=lambda p: sum(_finds(p, m, span) for m in left))
                held = sum(_finds(best, m, span) for m in left)
                gains[weekend].append(held / total)
                left = [m for m in left if not _finds(best, m, span)]
                chosen.append(best)
        # Each poll: (rides it finds a day, its share of a day's polls)
        items = []
        for rider in riders:
            for weekend, share, boost in ((False, 5 / 7, 0.85), (True, 2 / 7, 1.6)):
                rides_a_day = min(0.95, rider.rides_per_week / 7 * boost)
                items += [(rides_a_day * g, share) for g in gains[weekend]]
        items.sort(reverse=True)
        rides = sum(
            min(0.95, r.rides_per_week / 7 * 0.85) * 5 / 7
            + min(0.95, r.rides_per_week / 7 * 1.6) * 2 / 7
            for r in riders
        )
        line = []
        for budget in BUDGETS:
            spent = found = 0.0
            for value, share in items:
                if spent + share > budget * len(riders):
                    break
                spent += share
                found += value * share
            line.append(f"{budget:g}/rider: {found / rides:.0%}")
        print(f"  found within {span // 60} min: " + ", ".join(line))


def _plan(
    rider_id: int,
    known: list[datetime],
    offset_s: int,
    now: datetime,
    last: datetime,
    late: random.Random,
) -> datetime:
    """The run that serves the rider's next poll as the service plans it at `now`."""
    habit = RiderHabit(rider_id, tuple(known), offset_s, last, False)
    return run_after(suspicion.suspicion_decision(habit, 1800, now, "").next_poll_at, late)


def rule(riders: list, uploads: list[Upload], *, loss: float, seed: int) -> None:
    """services/suspicion.py over the last two weeks, its habits from the weeks before."""
    begin = START + timedelta(days=28)
    end = begin + timedelta(days=14)
    lost_rng, late = random.Random(seed + 6), random.Random(seed + 2)
    by_rider: dict[int, list[Upload]] = defaultdict(list)
    for upload in uploads:
        by_rider[upload.rider].append(upload)
    polls, delays = 0, []
    for rider in riders:
        mine = by_rider.get(rider.index, [])
        known = [ride_end(u) for u in mine if u.at < begin.timestamp()]
        coming = [
            (u.at, ride_end(u), lost_rng.random() < loss)
            for u in mine
            if begin.timestamp() <= u.at < end.timestamp()
        ]
        last = begin - timedelta(hours=late.uniform(0, 24))
        offset = rider.utc_offset_h * 3600
        poll_at = _plan(rider.index, known, offset, begin, last, late)
        waiting: list[tuple[float, datetime]] = []
        for at, ended, lost in coming:
            while poll_at.timestamp() <= at:
                polls += 1
                delays += [poll_at.timestamp() - t for t, _ in waiting]
                known.extend(e for _, e in waiting)
                waiting, last = [], poll_at
                poll_at = _plan(rider.index, known, offset, poll_at, last, late)
            if lost:
                waiting.append((at, ended))
            else:
                known.append(ended)  # its event came: stored within seconds
        while poll_at < end:
            polls += 1
            delays += [poll_at.timestamp() - t for t, _ in waiting]
            waiting, last = [], poll_at
            poll_at = _plan(rider.index, known, offset, poll_at, last, late)
    delays.sort()
    n = len(delays)
    within = ", ".join(f"{sum(d <= s for d in delays) / n:.0%} within {s // 60} min" for s in SPANS)
    print(
        f"The rule (services/suspicion.py), 14 days, {loss:.0%} of events lost:"
        f" {polls / 14:.0f} polls a day ({polls / 14 / len(riders):.2f} a rider);"
        f" {n} rides whose event was lost: {within};"
        f" p50 {delays[n // 2] / 3600:.1f} h, p95 {delays[int(n * 0.95)] / 3600:.1f} h"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", type=float, default=0.05)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    riders = build_riders(rng, args.riders, start=START, history_median=10)
    uploads = [
        u for u in build_uploads(rng, riders, start=START, days=42) if not u.manual_backdated
    ]
    oracle(riders, uploads, 42)
    rule(riders, uploads, loss=args.loss, seed=args.seed)


if __name__ == "__main__":
    main()
