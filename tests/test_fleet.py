"""bench/fleet.py kept working: short simulations (a few riders, a day or two, small
histories; a little larger under the slow mark) through the real service, with the
figures checked against the fake's own state and log. Not a timed test."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bench.fleet import CLASSES, START, FleetConfig, Simulation, render, write
from bench.fleet_clock import VirtualClock
from tests.conftest import sizes

# Each simulation runs at a small size by default and at its full size (the one these
# checks were written at) under the slow mark, which CI runs too (`-m slow`).
FULL = FleetConfig(riders=4, days=2, seed=11, history_median=80, label="test-fleet")
SMALL = replace(FULL, riders=3, days=1, history_median=40, label="test-fleet-small")
# Limits small enough for the cron to meet them within the run.
TIGHT_FULL = FleetConfig(
    riders=4,
    days=1,
    seed=5,
    history_median=400,
    limits=(40, 400, 20, 120),
    label="test-fleet-tight",
)
TIGHT_SMALL = replace(TIGHT_FULL, riders=2, label="test-fleet-tight-small")
# A world with Strava's events, a fifth of them lost and 30% repeated (at full size eight
# riders upload about a dozen rides in three days: enough losses to mean something).
HOOKED_FULL = replace(
    FULL,
    riders=8,
    days=3,
    webhooks=True,
    event_loss=0.2,
    event_duplicate=0.3,
    label="test-fleet-webhooks",
)
HOOKED_SMALL = replace(HOOKED_FULL, days=2, label="test-fleet-webhooks-small")
SECTIONS = {
    "config",
    "fleet",
    "schedule",
    "backfill",
    "freshness",
    "sync_now",
    "requests",
    "webhooks",
    "integrity",
    "wall_time",
}


def run(config: FleetConfig, server_url: str) -> tuple[Simulation, dict[str, Any]]:
    simulation = Simulation(config, server_url=server_url)
    return simulation, simulation.run()


@pytest.fixture(scope="module", params=sizes(SMALL, FULL))
def fleet(request, server_url) -> tuple[Simulation, dict[str, Any]]:
    return run(request.param, server_url)


@pytest.fixture(scope="module", params=sizes(HOOKED_SMALL, HOOKED_FULL))
def hooked(request, server_url) -> tuple[Simulation, dict[str, Any]]:
    return run(request.param, server_url)


def figures(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "wall_time"}


def test_the_report_has_every_section_and_prints(fleet, tmp_path, monkeypatch):
    simulation, report = fleet
    assert set(report) == SECTIONS
    assert {"done", "lower_bound_days", "how", "requests_needed"} <= set(report["backfill"])
    freshness = report["freshness"]
    assert len(freshness["per_day"]) == simulation.config.days
    assert {"during_backfill", "after_backfill", "missing_at_end"} <= set(freshness)
    assert {"presses", "answered_with_new_rides", "refused"} <= set(report["sync_now"])
    assert set(report["requests"]["by_class"]) >= set(CLASSES)
    assert len(report["requests"]["per_day"]) == simulation.config.days
    # without webhooks the events workflow has nothing to take: left out
    assert {s["endpoint"] for s in report["schedule"]} == {"sync-strava", "discover", "enrich"}
    assert report["webhooks"] == {"enabled": False}
    text = render(report)
    for heading in ("Backfill", "Freshness", "Sync now", "Strava requests", "Wall time"):
        assert heading in text
    monkeypatch.setattr("bench.fleet.RESULTS", tmp_path)
    assert json.loads(write(report).read_text()) == report


def test_every_activity_uploaded_before_the_last_sync_is_stored_once(fleet):
    simulation, report = fleet
    integrity = report["integrity"]
    assert report["backfill"]["done"]  # small histories: the backfill ends on day one
    assert integrity["history_missing"] == 0
    assert integrity["uploads_missed_before_last_sync"] == 0
    assert integrity["stored_twice"] == 0 and integrity["stored_not_on_strava"] == 0
    assert integrity["rows_stamped_after_the_simulation"] == {}  # one clock, the virtual one
    visible = sum(
        1
        for rider in simulation.riders
        for activity in simulation.fake.activities_of(rider.athlete_id)
        if rider.visible(activity)
    )
    missing = report["freshness"]["missing_at_end"]
    not_stored = missing["new_rides"] + missing["manual_entries_dated_back"]
    assert integrity["rows"] == visible - not_stored
    assert report["fleet"]["new_rides_uploaded"] > 0


def test_requests_per_class_add_up_to_the_fake_log(fleet):
    simulation, report = fleet
    requests = report["requests"]
    log = simulation.fake.requests
    assert requests["total"] == sum(requests["by_class"].values()) == len(log)
    assert requests["by_class"]["other"] == 0
    tokens = sum(1 for r in log if r.path == "/oauth/token")
    assert requests["by_class"]["token"] == tokens > 0
    assert sum(day["total"] for day in requests["per_day"]) == len(log)
    assert sum(day["429"] for day in requests["per_day"]) == requests["status_429"]
    # what each kind of call answered it made is what the fake saw during it
    for kind, counts in report["integrity"]["requests_by_call"].items():
        assert counts["fake_log"] == counts["answers"], kind


def test_no_429_at_the_default_limits(fleet):
    _, report = fleet
    assert report["requests"]["status_429"] == 0


@pytest.mark.parametrize("config", sizes(TIGHT_SMALL, TIGHT_FULL))
def test_a_tight_budget_stops_the_cron_without_429s(config, server_url):
    _, report = run(config, server_url)
    outcomes = [o for s in report["schedule"] for o in s["outcomes"]]
    assert "rate_limited" in outcomes
    assert report["requests"]["status_429"] == 0


def test_the_same_seed_gives_the_same_figures(fleet, server_url):
    simulation, report = fleet
    _, again = run(simulation.config, server_url)
    assert figures(again) == figures(report)


def test_the_virtual_clock_overlaps_a_pools_requests_and_never_goes_back():
    clock = VirtualClock(START)
    t0 = clock.time()
    clock.advance(0.5)  # the driving thread's own request
    ends: list[float] = []

    def worker() -> None:
        clock.advance(0.15)
        clock.advance(0.15)
        ends.append(clock.time())

    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            pool.submit(worker)
    assert ends == [pytest.approx(t0 + 0.8)] * 3  # side by side, from where it stood
    assert clock.time() == pytest.approx(t0 + 0.8)  # the driver sees the latest
    assert clock.settle() == pytest.approx(t0 + 0.8)
    assert clock.set(t0) == pytest.approx(t0 + 0.8)  # an event in the past runs late
    assert clock.set(t0 + 60) == t0 + 60
    assert clock.now() == START + timedelta(seconds=60)


def test_with_webhooks_events_bring_the_rides_and_lost_ones_wait_for_the_safety_net(hooked):
    simulation, report = hooked
    hooks = report["webhooks"]
    sender = hooks["sender"]
    assert "events" in {s["endpoint"] for s in report["schedule"]}
    # an event for every upload (private ones too: Strava sends them; the service looks)
    assert sender["emitted"] == len(simulation.uploads)
    assert sender["lost"] > 0 and sender["duplicated"] > 0
    # every delivery answered 200 in time (inside the POST or left pending), none retried
    assert sender["answers"] == {200: sender["attempts"]}
    assert sender["delivered"] == sender["emitted"] - sender["lost"] + sender["duplicated"]
    arrived, lost = hooks["freshness_event_arrived"], hooks["freshness_event_lost"]
    assert arrived["n"] > 0 and lost["n"] > 0
    # an arrived event's ride is in within the delivery delay and its one fetch
    assert arrived["p50_s"] <= 60
    # a lost event's ride waits for the daily safety-net poll, not for the next event
    assert lost["p50_s"] > arrived["p95_s"]
    assert lost["max_s"] <= 26 * 3600
    assert hooks["status"]["healthy"] is True
    assert hooks["status"]["events_24h"]["processed"] > 0
    integrity = report["integrity"]
    assert integrity["uploads_missed_before_last_sync"] == 0
    assert integrity["stored_twice"] == 0 and integrity["stored_not_on_strava"] == 0
    assert integrity["rows_stamped_after_the_simulation"] == {}
    text = render(report)
    assert "Webhooks (20% of events lost, 30% duplicated)" in text


def test_with_webhooks_requests_add_up_and_polling_costs_less(hooked, server_url):
    simulation, report = hooked
    requests = report["requests"]
    log = simulation.fake.requests
    assert requests["total"] == sum(requests["by_class"].values()) == len(log)
    # outside any call: only strava-webhook create's two (is there one? then create); the
    # events calls' checks that Strava still lists it (every 6 hours) are theirs
    subscribing = [r.method for r in log if r.path.endswith("/push_subscriptions")]
    assert requests["by_class"]["other"] == 2 and subscribing[:2] == ["GET", "POST"]
    checks = simulation.config.days * 4
    assert set(subscribing[2:]) == {"GET"} and checks - 1 <= len(subscribing[2:]) <= checks + 1
    events = sum(day["events"] for day in requests["per_day"])
    assert 0 < events <= sum(day["incremental"] for day in requests["per_day"])
    for kind, counts in report["integrity"]["requests_by_call"].items():
        assert counts["fake_log"] == counts["answers"], kind
    assert requests["status_429"] == 0
    # the same world by polling alone asks Strava more for its incremental work
    polling_world = replace(simulation.config, webhooks=False, label="test-fleet-polling")
    _, polling = run(polling_world, server_url)
    assert polling["fleet"] == report["fleet"]
    by_polling = polling["requests"]["incremental_per_day"]["all_days"]
    assert requests["incremental_per_day"]["all_days"] < by_polling


def test_the_backfill_bound_counts_every_read_but_the_backfills_own_as_other_work(fleet):
    check_backfill_bound(*fleet)


def test_with_webhooks_the_backfill_bound_counts_the_events_reads_as_other_work(hooked):
    check_backfill_bound(*hooked)


def check_backfill_bound(simulation: Simulation, report: dict[str, Any]) -> None:
    backfill = report["backfill"]
    assert backfill["done"]
    done = simulation.backfill_done_at
    own = other = 0
    for record, tag in zip(simulation.fake.requests, simulation.tags, strict=True):
        # read requests (API GETs) before the end of the backfill, to the second
        if record.method != "GET" or not record.path.startswith("/api/v3/") or record.at >= done:
            continue
        detail = record.path.startswith("/api/v3/activities/")
        if tag.context == "discover" or (
            detail and int(record.path.rsplit("/", 1)[1]) in simulation.history_race_ids
        ):
            own += 1
        else:
            other += 1
    assert backfill["backfill_requests"] == own > 0
    days = (done - START.timestamp()) / 86400
    by_kind = backfill["other_work_per_day_by_kind"]
    assert sum(by_kind.values()) == pytest.approx(backfill["other_work_per_day"], abs=0.5)
    assert backfill["other_work_per_day"] * days == pytest.approx(other, rel=0.05, abs=3)
    bound = backfill["requests_needed"] / (1000 - backfill["other_work_per_day"])
    assert backfill["lower_bound_days"] == pytest.approx(bound, abs=0.01)
    assert backfill["against_bound"] == pytest.approx(days / bound, rel=0.01)
    # each day's unspent read budget is the limit less that day's reads
    for day in report["requests"]["per_day"]:
        assert day["unspent"] == max(0, 1000 - day["read"])
