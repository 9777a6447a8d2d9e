"""sync-strava against the fake Strava served over real HTTP on 127.0.0.1: overlap of
calls, the time budget, timeouts and retries. The budget itself is judged on the
service's own clock (virtual, Strava's latency spent on it), never the machine's."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import responses

from bench.fleet import START
from bench.fleet_clock import VirtualClock, on_clock
from fake_strava.serve import ServedFake, serve_app
from tests.clocked_strava import install_on_clock
from tests.conftest import cron_headers
from tests.factories import connect_rider, query, riders_held_or_backing_off, unlimited_fake
from tests.served_service import Held

SYNC = "/api/cron/sync-strava"
LIST = "/athlete/activities"
STRAVA_TIMEOUT_S = 20.0  # a request's own timeout, far past any budget here


@pytest.fixture
def held():
    """The fake Strava's answers to listings, which a test may hold back until released."""
    return Held(path_contains=LIST)


@pytest.fixture
def served(held):
    fake = unlimited_fake()
    with ServedFake(*serve_app(held.around(fake.wsgi_app), name="fake-strava")) as server:
        try:
            yield fake, server
        finally:
            held.release()


@pytest.fixture
def served_app(make_app, served):
    _, server = served

    def build(**overrides):
        return make_app(
            strava_api_url=server.api_url, strava_oauth_url=server.oauth_url, **overrides
        )

    return build


def post(client, **params):
    response = client.post(SYNC, query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_two_calls_at_once_process_each_rider_exactly_once(served, served_app, database):
    fake, _ = served
    fake.latency_s = 0.05
    riders = [connect_rider(database, fake, 300 + i, activities=5) for i in range(20)]
    app = served_app(sync_workers=4)
    answers = []
    barrier = threading.Barrier(2)

    def one_call():
        client = app.test_client()
        barrier.wait()
        answers.append(post(client, limit=20))

    threads = [threading.Thread(target=one_call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = Counter(i["rider_id"] for a in answers for i in a["items"])
    assert sorted(taken) == sorted(riders)
    assert set(taken.values()) == {1}
    assert all(i["status"] == "succeeded" for a in answers for i in a["items"])
    assert fake.count(path_contains="/athlete/activities") == 20
    assert query(database, "select count(*) as n from activities")[0]["n"] == 100


def test_a_call_never_runs_past_its_time_budget(make_app, database):
    """On the service's own clock, so that a loaded machine changes nothing: Strava takes
    0.4 s of it a request (tests/clocked_strava.py)."""
    clock = VirtualClock(START)
    fake = unlimited_fake(clock=clock.time)
    for i in range(12):
        connect_rider(database, fake, 400 + i, activities=3)
    app = make_app(cron_time_budget_s=1.5, sync_workers=2)
    app.extensions["strava_sync"] = on_clock(app.extensions["strava_sync"], clock)
    started = clock.monotonic()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        install_on_clock(fake, clock, rsps, latency_s=0.4)
        body = post(app.test_client())
    assert clock.monotonic() - started <= 1.5
    assert body["duration_ms"] <= 1500
    assert 0 < body["succeeded"] < 12
    assert body["failed"] == 0
    assert body["remaining"] == 12 - body["succeeded"] and body["done"] is False
    # riders not finished were handed back, not left leased or backed off
    assert riders_held_or_backing_off(database) == 0
    assert {i["reason"] for i in body["items"] if i["status"] == "skipped"} == {"time_budget"}


def test_a_request_cut_by_the_budget_is_handed_back_not_failed(served, served_app, held, database):
    fake, _ = served
    rider = connect_rider(database, fake, 450, activities=3)
    held.hold()  # Strava's answer to the listing comes only once the test has looked
    app = served_app(cron_time_budget_s=1.0, strava_timeout_s=STRAVA_TIMEOUT_S)
    body = post(app.test_client())
    assert held.waiting == 1  # the call answered without Strava's answer
    # cut at the call's time left (1 s at most), not at the request's own timeout
    assert body["duration_ms"] < STRAVA_TIMEOUT_S * 1000
    assert body["items"] == [{"rider_id": rider, "status": "skipped", "reason": "time_budget"}]
    row = query(database, "select failure_count, lease_token from strava_connections")[0]
    assert row == {"failure_count": 0, "lease_token": None}


def test_timeouts_are_retried_then_the_rider_backs_off(served, served_app, database):
    fake, _ = served
    slow = connect_rider(database, fake, 460, activities=2)
    # three slow answers: the first try and both retries time out
    fake.fail_next(3, status=200, path_contains="/athlete/activities", delay_s=0.8)
    others = [connect_rider(database, fake, 461 + i, activities=2) for i in range(3)]
    app = served_app(strava_timeout_s=0.3, sync_workers=1)
    body = post(app.test_client())
    by_rider = {i["rider_id"]: i for i in body["items"]}
    assert by_rider[slow]["status"] == "failed"
    assert by_rider[slow]["reason"] == "strava_unavailable"
    assert all(by_rider[r]["status"] == "succeeded" for r in others)
    assert fake.count(path_contains="/athlete/activities") == 3 + 3
    row = query(
        database,
        "select failure_count, next_attempt_at > now() as backing_off"
        " from strava_connections where rider_id = %s",
        slow,
    )[0]
    assert row == {"failure_count": 1, "backing_off": True}


def test_one_timeout_is_retried_and_succeeds(served, served_app, database):
    fake, _ = served
    rider = connect_rider(database, fake, 470, activities=4)
    fake.fail_next(1, status=200, path_contains="/athlete/activities", delay_s=0.8)
    body = post(served_app(strava_timeout_s=0.3).test_client())
    assert body["items"][0]["status"] == "succeeded" and body["items"][0]["added"] == 4
    assert (
        query(database, "select count(*) as n from activities where rider_id = %s", rider)[0]["n"]
        == 4
    )


def test_more_new_activities_than_one_call_can_list_get_through(served, served_app, database):
    """Each call stops at its time budget; the next resumes where it stopped."""
    from datetime import UTC, datetime, timedelta

    fake, _ = served
    fake.latency_s = 0.3
    now = datetime.now(UTC)
    rider = connect_rider(
        database,
        fake,
        490,
        activities=1000,
        start=now - timedelta(days=900),
        end=now - timedelta(hours=1),
        sync_cursor=now - timedelta(days=901),
    )
    client = served_app(cron_time_budget_s=1.0).test_client()
    calls = 0
    while True:
        calls += 1
        body = post(client)
        if body["done"]:
            break
        assert calls < 10, "the listing makes no progress"
    assert calls >= 3  # one call cannot list six pages at 0.3 s each
    assert body["items"][0]["status"] == "succeeded"
    assert (
        query(database, "select count(*) as n from activities where rider_id = %s", rider)[0]["n"]
        == 1000
    )
