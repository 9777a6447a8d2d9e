"""Crash safety, black-box: a real gunicorn serving `api.index:app` (configured by its
environment alone) on the test database, a fake Strava served on loopback with a fleet of
riders (histories to walk, new rides to sync, races to detail) answering slowly so that
requests are in flight, and the three cron endpoints called side by side the way the
schedules and a manual dispatch overlap.

The whole process group is killed with SIGKILL at seeded random moments, some of them
while a Strava request is in flight, and started again, several times. Then the service
runs undisturbed until it has converged, and the database must equal the fake Strava's
state: every activity stored once with Strava's values, nothing the fake does not hold,
every history complete, every race detailed (or failed with a reason), and no lease left
on any rider or race once the dead calls' leases ran out.

CRASH_SEED=<n> replays another sequence of kills (the seed is in every failure message).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from fake_strava import FakeStrava
from services.activities import is_race
from tests.conftest import CLIENT_ID, CLIENT_SECRET, CRON_SECRET, TOKEN_KEY, cron_headers, sizes
from tests.factories import connect_rider, query, unlimited_fake
from tests.served_service import Gunicorn, InFlight, serve_counted

SEED = int(os.environ.get("CRASH_SEED") or 20261202)
LATENCY_S = 0.12  # each Strava answer: requests are in flight most of a call's time
LEASE_TTL_S = 30  # the least LEASE_TTL_S may be
BUDGET_S = 3.0  # CRON_TIME_BUDGET_S: short calls, so kills land in every phase of one
RACE_KM = 200.0
# Small calls between kills, so that one dead call holds a few riders or races (until
# its leases run out), not all of them, and work goes on in the next run.
LIMITS = {"sync-strava": 3, "discover": 2, "enrich": 6}
ENDPOINTS = tuple(LIMITS)
IDLE_S = 0.3  # between a driver's call answered `done` and its next


@dataclass
class Driver:
    """Calls one cron endpoint in a loop until told to stop or the service is gone."""

    base_url: str
    endpoint: str
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    in_call: bool = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.in_call = True
            try:
                response = requests.post(
                    f"{self.base_url}/api/cron/{self.endpoint}",
                    params={"limit": LIMITS[self.endpoint]},
                    headers=cron_headers(),
                    timeout=BUDGET_S + 20,
                )
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                return  # killed under us: what a scheduler would see, a dropped connection
            finally:
                self.in_call = False
            self.statuses.append(response.status_code)
            if response.status_code != 200:
                self.errors.append(f"{self.endpoint} {response.status_code}: {response.text}")
                return
            if response.json()["done"]:
                stop.wait(IDLE_S)  # a scheduler stops at done; the next schedule comes later


def environment(database: str, api_url: str, oauth_url: str) -> dict[str, str]:
    """Everything the service is told, as on a host: its environment, within the ranges
    config.py allows (no override a test alone could give)."""
    return {
        "DATABASE_URL": database,
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY.text(),  # the key the seeded tokens are sealed with
        "CRON_SECRET": CRON_SECRET,
        "STRAVA_CLIENT_ID": CLIENT_ID,
        "STRAVA_CLIENT_SECRET": CLIENT_SECRET,
        "STRAVA_API_URL": api_url,
        "STRAVA_OAUTH_URL": oauth_url,
        "CRON_TIME_BUDGET_S": str(BUDGET_S),
        "LEASE_TTL_S": str(LEASE_TTL_S),
        "SYNC_MIN_INTERVAL_S": "0",
        "SYNC_WORKERS": "3",
        "STRAVA_TIMEOUT_S": "5",
        "RACE_MIN_DISTANCE_KM": str(int(RACE_KM)),
    }


def seed_fleet(database: str, fake: FakeStrava, rng: random.Random, count: int) -> dict[int, int]:
    """Riders with histories to walk and new rides to sync; rider id -> athlete id."""
    now = fake.now()
    riders = {}
    for number in range(count):
        athlete = 91_000 + number
        walk = number % 4 != 3  # most have a history to walk, some only new rides
        riders[
            connect_rider(
                database,
                fake,
                athlete,
                activities=rng.randint(60, 260) if walk else rng.randint(10, 40),
                start=now - timedelta(days=rng.randint(200, 900) if walk else 6),
                end=now - timedelta(minutes=5),
                race_fraction=0.08,
                history_complete=not walk,
                seed=SEED + number,
            )
        ] = athlete
    return riders


def differences(database: str, fake: FakeStrava, riders: dict[int, int]) -> list[str]:
    """How the database differs from the fake Strava's state (empty when it equals it)."""
    found: list[str] = []
    for rider_id, athlete in riders.items():
        on_strava = {a["id"]: a for a in fake.activities_of(athlete)}
        rows = query(
            database,
            "select strava_id, name, distance_m, start_date, is_race, enrichment_status,"
            " enrichment_error, details is not null as detailed from activities"
            " where rider_id = %s",
            rider_id,
        )
        stored = {r["strava_id"]: r for r in rows}
        if len(stored) != len(rows):
            found.append(f"rider {rider_id}: {len(rows) - len(stored)} activities stored twice")
        missing = on_strava.keys() - stored.keys()
        extra = stored.keys() - on_strava.keys()
        if missing:
            found.append(f"rider {rider_id}: {len(missing)} of {len(on_strava)} not stored")
        if extra:
            found.append(f"rider {rider_id}: {len(extra)} stored that Strava does not hold")
        for strava_id in on_strava.keys() & stored.keys():
            summary, row = on_strava[strava_id], stored[strava_id]
            same = (
                row["name"] == summary["name"]
                and row["distance_m"] == pytest.approx(summary["distance"])
                and row["start_date"].isoformat().replace("+00:00", "Z") == summary["start_date"]
            )
            if not same:
                found.append(f"activity {strava_id}: stored {row} differs from {summary}")
            race = is_race(
                sport_type=summary["sport_type"],
                workout_type=summary.get("workout_type"),
                distance_m=summary["distance"],
                trainer=summary.get("trainer", False),
                min_distance_km=RACE_KM,
            )
            if row["is_race"] != race:
                found.append(f"activity {strava_id}: is_race {row['is_race']}, should be {race}")
            elif race and not (
                (row["enrichment_status"] == "done" and row["detailed"])
                or (row["enrichment_status"] == "failed" and row["enrichment_error"])
            ):
                found.append(
                    f"race {strava_id}: {row['enrichment_status']}"
                    f" (error {row['enrichment_error']!r}), neither detailed nor failed"
                )
    (counts,) = query(
        database,
        "select count(*) - count(distinct strava_id) as twice,"
        " count(*) filter (where rider_id <> all(%s)) as strangers,"
        " count(*) filter (where enrichment_lease_token is not null) as race_leases"
        " from activities",
        list(riders),
    )
    if counts["twice"] or counts["strangers"]:
        found.append(f"activities stored twice or for no rider: {counts}")
    if counts["race_leases"]:
        found.append(f"{counts['race_leases']} races still leased")
    for row in query(
        database,
        "select rider_id, status, lease_kind, lease_expires_at, history_complete_at,"
        " last_error from strava_connections where lease_token is not null"
        " or history_complete_at is null or status <> 'active' order by rider_id",
    ):
        found.append(f"rider {row['rider_id']} unfinished or held: {row}")
    return found


def call(base_url: str, endpoint: str) -> dict[str, Any]:
    response = requests.post(
        f"{base_url}/api/cron/{endpoint}", headers=cron_headers(), timeout=BUDGET_S + 20
    )
    assert response.status_code == 200, f"seed {SEED}: {endpoint}: {response.text}"
    return response.json()  # type: ignore[no-any-return]


def wait_for_a_strava_request(counted: InFlight, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while counted.now == 0 and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_at_random(
    service: Gunicorn, counted: InFlight, drivers: list[Driver], rng: random.Random, aim: bool
) -> bool:
    """Wait for a seeded moment, then kill -9 the service; True if a Strava request was
    in flight at the kill."""
    if aim:  # at a Strava request: a seeded while into the call, then the next request
        time.sleep(rng.uniform(0, BUDGET_S / 2))
        # (when all the work left is held by calls killed before, it comes back as
        # their leases run out)
        wait_for_a_strava_request(counted, within_s=LEASE_TTL_S + 5)
    else:  # any moment of a call: claiming, listing, writing back, answering
        time.sleep(rng.uniform(0.05, BUDGET_S))
    in_flight = counted.now > 0 and any(d.in_call for d in drivers)
    service.kill()
    return in_flight


# Under a minute or two; the timeout (sizes') only stops a run that would never converge.
@pytest.mark.parametrize(
    ("kills", "aimed", "riders_count"),
    # aimed: of the kills, those at a Strava request in flight; the others at any moment
    sizes((3, 2, 4), (8, 5, 12)),
)
def test_kill_minus_nine_at_random_moments_loses_and_duplicates_nothing(
    database: str, tmp_path: Path, kills: int, aimed: int, riders_count: int
) -> None:
    rng = random.Random(SEED)
    fake = unlimited_fake(latency_s=LATENCY_S, seed=SEED)
    riders = seed_fleet(database, fake, rng, riders_count)
    served, counted = serve_counted(fake)
    service = Gunicorn(
        environment(database, served.api_url, served.oauth_url), tmp_path / "gunicorn.log"
    )
    try:
        kills_in_flight = 0
        answered: list[int] = []
        started = time.monotonic()
        # The aimed kills first, while every kind of work is still there to be had (later,
        # much of what is left is held by the leases of the calls killed before).
        aims = [True] * aimed + [False] * (kills - aimed)
        for aim in aims:
            service.start()
            drivers = [Driver(service.url, endpoint) for endpoint in ENDPOINTS]
            stop = threading.Event()
            threads = [threading.Thread(target=d.run, args=(stop,)) for d in drivers]
            for thread in threads:
                thread.start()
            kills_in_flight += kill_at_random(service, counted, drivers, rng, aim)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for driver in drivers:
                assert not driver.errors, f"seed {SEED}: {driver.errors}"
                answered += driver.statuses
        chaos_s = time.monotonic() - started
        unfinished = differences(database, fake, riders)
        assert unfinished, "the kills came after all the work"
        # kills with a Strava request in flight (the other kills land anywhere)
        assert kills_in_flight >= aimed - 1, f"seed {SEED}: {kills_in_flight} kills mid-request"

        service.start()  # and now left alone: the dead calls' leases run out, work resumes
        converging = time.monotonic()
        # Until it has converged, however long a loaded machine takes (the test's timeout
        # is for a run that never would); what is left is printed as it shrinks.
        left: list[str] = ["not started"]
        while True:
            answers = [call(service.url, endpoint) for endpoint in ENDPOINTS]
            now_left = differences(database, fake, riders)
            if not now_left and all(a["done"] for a in answers):
                break
            if len(now_left) != len(left):
                print(f"seed {SEED}: after {kills} kills, {len(now_left)} left: {now_left[:3]}")
            left = now_left
            time.sleep(0.5)
    finally:
        service.kill()
        served.stop()
    print(
        f"\ncrash safety (seed {SEED}): {kills} kills, {kills_in_flight} mid Strava request,"
        f" {len(answered)} calls answered between kills in {chaos_s:.1f} s, leaving"
        f" {len(unfinished)} differences; converged in {time.monotonic() - converging:.1f} s;"
        f" {len(fake.requests)} Strava requests"
    )
