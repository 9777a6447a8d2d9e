"""discover end to end: real Postgres, the fake Strava behind `responses`."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
import responses

from bench.fleet_clock import VirtualClock
from fake_strava import FakeStrava, make_activities, make_activity
from services.clock import monotonic
from tests.clocked_strava import install_on_clock
from tests.conftest import (
    API_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    OAUTH_URL,
    cron_headers,
    standing_timer,
)
from tests.factories import connect_rider, execute, query, riders_held_or_backing_off

# Fixtures for the rider's view of a walk: keys, issuer, web, auth_settings.
pytest_plugins = ["tests.jwks_fixture"]

DISCOVER = "/api/cron/discover"
LIST = "/athlete/activities"
NOW = datetime.now(UTC)


@pytest.fixture
def make_app(make_app):
    """Apps on a standing timer (conftest.standing_timer) unless a test gives its own:
    Strava answers at once here, so a walk's pages take no time on the service's own
    clock, whatever this machine's load."""

    def build(*, timer=standing_timer, **overrides):
        return make_app(timer=timer, **overrides)

    return build


def discover(client, **params):
    response = client.post(DISCOVER, query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def discover_until_complete(client, *, max_calls=30, between=None):
    """Call discover until nothing is due; `between(n)` runs after each call."""
    bodies = []
    for _ in range(max_calls):
        bodies.append(discover(client))
        if between is not None:
            between(len(bodies))
        if bodies[-1]["done"]:
            return bodies
    raise AssertionError(f"discover not done after {max_calls} calls: {bodies[-1]}")


def walk(database, rider):
    return query(
        database,
        "select history_complete_at, history_walk_started_at, history_cursor, history_pages,"
        " history_activities, history_races, full_refresh_requested_at, lease_token,"
        " failure_count, next_attempt_at, error_class, last_error"
        " from strava_connections where rider_id = %s",
        rider,
    )[0]


def stored_ids(database, rider):
    rows = query(database, "select strava_id from activities where rider_id = %s", rider)
    return [r["strava_id"] for r in rows]


def listings(fake, status=200):
    return [r for r in fake.requests if r.path.endswith(LIST) and r.status == status]


def allow_requests(database, n):
    """Leave discover exactly n requests in this 15-minute window (10 of 100 are Sync
    now's; no rider's poll falls in the window, so incremental sync holds none)."""
    used = 90 - n
    execute(database, "update strava_connections set next_poll_at = now() + interval '1 day'")
    execute(
        database,
        "update strava_rate_budget set limit_15min = 200, read_limit_15min = 100,"
        " usage_15min = %s, read_usage_15min = %s,"
        " window_start = date_bin('15 minutes', now(), '2000-01-01'),"
        " day_start = date_trunc('day', now() at time zone 'utc') at time zone 'utc'",
        used,
        used,
    )


def history(fake, athlete_id, *, private=True):
    return {a["id"] for a in fake.activities_of(athlete_id) if private or not a["private"]}


def parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def epoch(moment):
    return int(moment.timestamp())


@pytest.fixture
def installed():
    """Install a FakeStrava of the test's own making (order, seed) behind `responses`."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:

        def install(fake):
            fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
            return fake

        yield install


def new_fake(**options):
    return FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **options)


# --- the walk ------------------------------------------------------------------------


def test_1050_activities_are_walked_over_several_calls_in_six_list_requests(
    make_app, strava, database
):
    rider = connect_rider(
        database,
        strava,
        301,
        activities=1050,
        start=NOW - timedelta(days=3 * 365),
        end=NOW - timedelta(days=1),
        history_complete=False,
    )
    # each page takes 0.2 s: a 0.8 s budget holds two or three of them, so several calls
    strava.latency_s = 0.2
    client = make_app(cron_time_budget_s=0.8, timer=monotonic).test_client()
    marks = []  # after each call: the stored cursor, and the listings made by then

    def mark(_):
        marks.append((walk(database, rider)["history_cursor"], len(listings(strava))))

    bodies = discover_until_complete(client, between=mark)
    assert len(bodies) >= 2
    pages = listings(strava)
    assert len(pages) == 6 and strava.count(path_contains=LIST) == 6  # 5 full + 1 short
    assert all("page" not in r.query and r.query["per_page"] == "200" for r in pages)
    # each call after the first resumed from the cursor the previous one stored
    for cursor, made in marks[:-1]:
        assert int(pages[made].query["before"]) == epoch(cursor) + 1
    assert sorted(stored_ids(database, rider)) == sorted(history(strava, 301))
    state = walk(database, rider)
    assert state["history_complete_at"] is not None and state["history_pages"] == 6
    assert state["history_activities"] == 1050
    races = query(database, "select count(*) as n from activities where is_race")[0]["n"]
    assert races > 0 and state["history_races"] == races
    assert state["history_walk_started_at"] is None and state["history_cursor"] is None
    assert state["lease_token"] is None
    last = bodies[-1]
    assert last["done"] is True and last["remaining"] == 0
    assert last["items"][0]["complete"] is True
    oldest = min(a["start_date"] for a in strava.activities_of(301))
    assert last["items"][0]["oldest"] == oldest
    assert sum(i["added"] for b in bodies for i in b["items"]) == 1050
    # five full pages and a short one (each page after the first re-sees its boundary row)
    assert sum(i["fetched"] for b in bodies for i in b["items"]) == 5 * 200 + 55


@pytest.mark.parametrize("order", ["strava", "newest_first", "shuffled"])
def test_the_order_within_a_page_does_not_matter(make_app, database, installed, order):
    fake = installed(new_fake(order=order, seed=7))
    rider = connect_rider(
        database,
        fake,
        302,
        activities=1050,
        start=NOW - timedelta(days=900),
        end=NOW - timedelta(days=1),
        history_complete=False,
    )
    body = discover(make_app().test_client())
    assert body["items"][0]["complete"] is True and body["items"][0]["pages"] == 6
    assert fake.count(path_contains=LIST) == 6
    assert sorted(stored_ids(database, rider)) == sorted(history(fake, 302))


@pytest.mark.parametrize("order", ["strava", "newest_first", "shuffled"])
def test_without_read_all_short_pages_do_not_end_the_walk(make_app, database, installed, order):
    fake = installed(new_fake(order=order, seed=5))
    rider = connect_rider(
        database,
        fake,
        303,
        activities=700,
        start=NOW - timedelta(days=400),
        end=NOW - timedelta(days=1),
        scope="read,activity:read",
        private_fraction=0.25,
        history_complete=False,
    )
    body = discover(make_app().test_client())
    assert body["items"][0]["complete"] is True
    public = history(fake, 303, private=False)
    assert len(public) < 700
    assert sorted(stored_ids(database, rider)) == sorted(public)
    # pages came back short (private ones dropped after paging), yet the walk went on
    item = body["items"][0]
    assert item["pages"] == fake.count(path_contains=LIST) >= 4
    assert item["fetched"] < 200 * (item["pages"] - 1)


def test_activities_sharing_a_start_second_across_a_page_boundary_are_both_kept(
    make_app, strava, database
):
    rider = connect_rider(database, strava, 304, history_complete=False)
    base = NOW - timedelta(days=300)
    activities = [
        make_activity(900_000 + i, athlete_id=304, start_date=base + timedelta(hours=i))
        for i in range(400)
    ]
    # the 200th and 201st newest share a second (two devices recording one ride)
    twin_second = activities[199]["start_date"]
    activities[200] = make_activity(
        900_000 + 200, athlete_id=304, start_date=base + timedelta(hours=199)
    )
    assert activities[200]["start_date"] == twin_second
    strava.add_activities(304, activities)
    body = discover(make_app().test_client())
    assert body["items"][0]["complete"] is True
    assert sorted(stored_ids(database, rider)) == sorted(a["id"] for a in activities)
    assert walk(database, rider)["history_activities"] == 400


def test_races_are_flagged_and_set_pending_and_counted(client, strava, database):
    rider = connect_rider(database, strava, 305, history_complete=False)
    strava.add_activities(
        305,
        make_activities(
            305,
            300,
            start=NOW - timedelta(days=200),
            end=NOW - timedelta(days=1),
            seed=4,
            race_fraction=0.1,
        ),
    )
    body = discover(client)
    rows = query(database, "select is_race, enrichment_status from activities")
    races = sum(r["is_race"] for r in rows)
    assert races >= 30
    assert all(r["enrichment_status"] == ("pending" if r["is_race"] else None) for r in rows)
    assert body["items"][0]["races"] == races == walk(database, rider)["history_races"]


def test_progress_is_readable_during_and_after_the_walk(make_app, strava, database):
    import models

    rider = connect_rider(
        database,
        strava,
        306,
        activities=650,
        start=NOW - timedelta(days=500),
        end=NOW - timedelta(days=1),
        history_complete=False,
    )
    app = make_app()
    runtime, client = app.extensions["strava_sync"], app.test_client()
    with runtime.db.connection() as conn:
        before = models.discovery.discovery_progress(conn, rider_id=rider)
    assert before.pages == 0 and not before.complete and before.oldest_reached is None
    allow_requests(database, 2)
    body = discover(client)
    assert body["rate_limited"] is True and body["items"][0]["pages"] == 2
    assert body["items"][0]["complete"] is False
    with runtime.db.connection() as conn:
        midway = models.discovery.discovery_progress(conn, rider_id=rider)
    assert midway.pages == 2 and midway.activities == 399 and not midway.complete
    assert midway.walk_started_at is not None
    assert midway.oldest_reached == walk(database, rider)["history_cursor"]
    assert parse(body["items"][0]["oldest"]) == midway.oldest_reached
    allow_requests(database, 10)
    discover(client)
    with runtime.db.connection() as conn:
        done = models.discovery.discovery_progress(conn, rider_id=rider)
    assert done.complete and done.pages == 4 and done.activities == 650
    assert done.oldest_reached == min(
        r["start_date"] for r in query(database, "select start_date from activities")
    )


# --- failures, resumption and leases -------------------------------------------------


def failing_listing(nth: int, status: int = 500) -> FakeStrava:
    """The fake Strava, failing the Nth activity listing (and, for a 5xx, its two
    retries) with `status`."""
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    fake.fail_next(3 if status >= 500 else 1, status=status, path_contains=LIST, after=nth - 1)
    return fake


def seed_650(database, fake, athlete_id):
    return connect_rider(
        database,
        fake,
        athlete_id,
        activities=650,
        start=NOW - timedelta(days=700),
        end=NOW - timedelta(days=1),
        history_complete=False,
    )


def resume(client, database, rider):
    """Clear the rider's backoff, as time would, and walk to the end."""
    execute(database, "update strava_connections set next_attempt_at = null")
    return discover_until_complete(client)


@pytest.mark.parametrize("page", [1, 2, 3])
def test_a_failure_after_a_committed_page_resumes_from_the_cursor(
    make_app, database, installed, page
):
    fake = installed(failing_listing(page + 1))
    rider = seed_650(database, fake, 310)
    client = make_app().test_client()
    body = discover(client)
    item = body["items"][0]
    assert item["status"] == "failed" and item["reason"] == "strava_unavailable"
    assert item["pages"] == page
    state = walk(database, rider)
    assert state["history_pages"] == page and state["failure_count"] == 1
    assert state["next_attempt_at"] > datetime.now(UTC)
    assert state["lease_token"] is None
    committed = len(stored_ids(database, rider))
    assert committed == 200 + 199 * (page - 1)
    # backing off: not due, so not remaining
    assert discover(client)["processed"] == 0
    resume(client, database, rider)
    ok = listings(fake)
    assert len(ok) == 4  # no page was fetched twice
    assert int(ok[page].query["before"]) == epoch(state["history_cursor"]) + 1
    assert sorted(stored_ids(database, rider)) == sorted(history(fake, 310))
    assert walk(database, rider)["history_activities"] == 650


@pytest.mark.parametrize("page", [1, 2, 3, 4])
def test_a_failure_before_a_page_commits_loses_and_repeats_nothing(
    make_app, strava, database, page
):
    """The page's rows, cursor and progress are one transaction: all or nothing."""
    rider = seed_650(database, strava, 311)
    execute(
        database,
        f"""
        create or replace function test_fail_page() returns trigger language plpgsql as $$
        begin
          if old.history_pages = {page - 1} and new.history_pages = {page} then
            raise exception 'injected failure before commit of page {page}';
          end if;
          return new;
        end $$;
        create trigger test_fail_page before update on strava_connections
          for each row execute function test_fail_page();
        """,
    )
    client = make_app().test_client()
    try:
        body = discover(client)
    finally:
        execute(
            database,
            "drop trigger test_fail_page on strava_connections; drop function test_fail_page()",
        )
    assert body["items"][0]["status"] == "failed" and body["items"][0]["reason"] == "internal"
    state = walk(database, rider)
    assert state["history_pages"] == page - 1
    assert len(stored_ids(database, rider)) == (0 if page == 1 else 200 + 199 * (page - 2))
    resume(client, database, rider)
    ok = listings(strava)
    assert len(ok) == 5  # four pages, one of them fetched again after its rollback
    if page > 1:
        # the page rolled back is asked again from the cursor stored before it
        before = epoch(state["history_cursor"]) + 1
        assert int(ok[page - 1].query["before"]) == int(ok[page].query["before"]) == before
    assert sorted(stored_ids(database, rider)) == sorted(history(strava, 311))
    final = walk(database, rider)
    assert final["history_activities"] == 650 and final["history_pages"] == 4


def test_a_call_that_died_holding_a_rider_is_resumed_once_its_lease_expires(
    make_app, strava, database
):
    rider = seed_650(database, strava, 312)
    client = make_app().test_client()
    allow_requests(database, 2)
    discover(client)
    cursor = walk(database, rider)["history_cursor"]
    # a call that claimed the rider and died: its lease is still live
    execute(
        database,
        "update strava_connections set lease_token = gen_random_uuid(),"
        " lease_kind = 'discover', lease_expires_at = now() + interval '1 minute'",
    )
    allow_requests(database, 10)
    strava.reset_log()
    body = discover(client)
    assert body["processed"] == 0 and body["remaining"] == 0 and strava.count() == 0
    execute(database, "update strava_connections set lease_expires_at = now() - interval '1 s'")
    body = discover(client)
    assert body["items"][0]["complete"] is True
    assert int(listings(strava)[0].query["before"]) == epoch(cursor) + 1
    assert sorted(stored_ids(database, rider)) == sorted(history(strava, 312))


def test_a_rider_held_by_sync_is_left_alone_and_limit_and_order_hold(client, strava, database):
    busy = connect_rider(database, strava, 313, activities=5, history_complete=False)
    riders = [
        connect_rider(database, strava, 314 + i, activities=5, history_complete=False)
        for i in range(3)
    ]
    execute(
        database,
        "update strava_connections set lease_token = gen_random_uuid(), lease_kind = 'sync',"
        " lease_expires_at = now() + interval '1 minute' where rider_id = %s",
        busy,
    )
    # least progress first: the rider with pages walked already goes last
    execute(
        database,
        "update strava_connections set history_pages = 3 where rider_id = %s",
        riders[0],
    )
    body = discover(client, limit=2)
    assert sorted(i["rider_id"] for i in body["items"]) == sorted(riders[1:])
    assert body["remaining"] == 1 and body["done"] is False
    assert stored_ids(database, busy) == []
    assert (
        query(database, "select lease_kind from strava_connections where rider_id = %s", busy)[0][
            "lease_kind"
        ]
        == "sync"
    )


def test_two_calls_at_once_never_walk_the_same_rider(make_app, strava, database):
    riders = [
        connect_rider(database, strava, 320 + i, activities=20, history_complete=False)
        for i in range(6)
    ]
    strava.latency_s = 0.05
    app = make_app()
    bodies, barrier = [], threading.Barrier(2)

    def call():
        client = app.test_client()
        barrier.wait()
        bodies.append(discover(client, limit=4))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [i["rider_id"] for b in bodies for i in b["items"]]
    assert len(taken) == len(set(taken))
    by_athlete = {}
    for r in listings(strava):
        by_athlete[r.athlete_id] = by_athlete.get(r.athlete_id, 0) + 1
    assert all(n == 1 for n in by_athlete.values())
    assert sorted(taken) == sorted(riders)  # limit 4 each: one call took 4, the other 2


def test_a_429_stops_every_request_until_the_reset(make_app, database, installed):
    fake = installed(failing_listing(2, status=429))
    riders = [
        seed_650(database, fake, 330),
        connect_rider(database, fake, 331, activities=10, history_complete=False),
    ]
    client = make_app(sync_workers=1).test_client()
    body = discover(client)
    assert body["rate_limited"] is True and body["done"] is False
    assert body["rate_limit"]["blocked_until"] == body["rate_limit"]["resets_at"]
    assert fake.count() == 2  # nothing after the 429
    first, second = body["items"]
    assert first["status"] == "skipped" and first["reason"] == "rate_limited"
    assert first["pages"] == 1  # the page before the 429 is kept
    assert second["status"] == "skipped" and second["reason"] == "rate_limited"
    assert riders_held_or_backing_off(database) == 0
    fake.reset_log()
    again = discover(client)
    assert again["rate_limited"] is True and fake.count() == 0
    assert walk(database, riders[0])["history_pages"] == 1
    # once the window has reset, the walks go on from where they stopped
    execute(database, "update strava_rate_budget set blocked_until = now() - interval '1 s'")
    discover_until_complete(client)
    assert sorted(stored_ids(database, riders[0])) == sorted(history(fake, 330))
    assert sorted(stored_ids(database, riders[1])) == sorted(history(fake, 331))


# --- uploads and deletions during a walk, full refresh, reconciliation ----------------


def refresh(client, rider):
    return client.post(f"/api/admin/riders/{rider}/full-refresh", headers=cron_headers())


def test_an_upload_and_a_deletion_during_a_first_walk_end_up_right(make_app, strava, database):
    rider = seed_650(database, strava, 340)
    app = make_app()
    client = app.test_client()
    allow_requests(database, 2)
    discover(client)
    cursor = walk(database, rider)["history_cursor"]
    unwalked = [a for a in strava.activities_of(340) if parse(a["start_date"]) < cursor]
    older = sorted(unwalked, key=lambda a: a["start_date"])
    deleted = older[len(older) // 2]["id"]
    strava.delete_activity(deleted)
    late_old = make_activity(1, athlete_id=340, start_date=cursor - timedelta(days=3))
    brand_new = make_activity(
        2, athlete_id=340, start_date=datetime.now(UTC) - timedelta(minutes=1)
    )
    strava.add_activities(340, [late_old, brand_new])
    allow_requests(database, 10)
    discover_until_complete(client)
    ids = set(stored_ids(database, rider))
    assert deleted not in ids and 1 in ids
    assert 2 not in ids  # newer than the walk's start: sync-strava's job
    execute(database, "update strava_connections set last_synced_at = null, next_poll_at = null")
    response = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert response.status_code == 200
    assert sorted(stored_ids(database, rider)) == sorted(history(strava, 340))


def test_full_refresh_reconciles_only_once_the_walk_completes(make_app, strava, database):
    rider = seed_650(database, strava, 341)
    client = make_app().test_client()
    discover_until_complete(client)
    assert len(stored_ids(database, rider)) == 650
    everything = sorted(strava.activities_of(341), key=lambda a: a["start_date"])
    gone_old, gone_new = everything[10]["id"], everything[-10]["id"]
    gone_during = everything[20]["id"]
    renamed = everything[100]["id"]
    strava.delete_activity(gone_old)
    strava.delete_activity(gone_new)
    strava.update_activity(renamed, name="Renamed on Strava")

    response = refresh(client, rider)
    assert response.status_code == 202
    state = response.get_json()
    assert state["rider_id"] == rider and state["complete"] is False
    assert state["pages"] == 0 and state["full_refresh_requested_at"].endswith("Z")
    assert walk(database, rider)["history_complete_at"] is None

    calls = 0
    while True:
        allow_requests(database, 1)  # one page a call, so the walk is seen midway
        body = discover(client)
        calls += 1
        if body["done"]:
            break
        # mid-walk every row is still there, the ones deleted on Strava included
        assert walk(database, rider)["history_pages"] == calls
        assert len(stored_ids(database, rider)) == 650
        if calls == 1:  # deleted during the walk, in the part not walked yet
            strava.delete_activity(gone_during)
    assert calls == 4
    ids = set(stored_ids(database, rider))
    assert not {gone_old, gone_new, gone_during} & ids and len(ids) == 647
    assert (
        query(database, "select name from activities where strava_id = %s", renamed)[0]["name"]
        == "Renamed on Strava"
    )
    final = walk(database, rider)
    assert final["history_complete_at"] is not None
    assert final["full_refresh_requested_at"] is None and final["history_activities"] == 647
    assert body["items"][0]["removed"] == 3


def test_an_empty_listing_glitch_does_not_wipe_a_rider(make_app, strava, database, caplog):
    rider = connect_rider(
        database,
        strava,
        342,
        activities=100,
        history_complete=False,
        start=NOW - timedelta(days=90),
        end=NOW - timedelta(days=1),
    )
    client = make_app().test_client()
    discover(client)
    assert len(stored_ids(database, rider)) == 100
    assert refresh(client, rider).status_code == 202
    strava.fail_next(1, status=200, path_contains=LIST, body=[])  # a glitch: nothing listed
    with caplog.at_level(logging.WARNING, logger="services.discovery"):
        body = discover(client)
    item = body["items"][0]
    assert item["complete"] is True and item["removed"] == 0
    assert item["status"] == "succeeded" and item["reason"] == "reconcile_refused"
    assert len(stored_ids(database, rider)) == 100
    state = walk(database, rider)
    assert state["history_complete_at"] is not None
    assert state["error_class"] == "reconcile_refused" and "100 of 100" in state["last_error"]
    assert any("reconciliation refused" in r.getMessage() for r in caplog.records)


def test_a_full_refresh_during_a_walk_stops_the_old_walk_writing(make_app, strava, database):
    import models
    from services.calls import Call
    from services.discovery import _walk_or_record_failure

    rider = seed_650(database, strava, 343)
    app = make_app()
    client = app.test_client()
    allow_requests(database, 2)
    discover(client)
    allow_requests(database, 10)
    runtime = app.extensions["strava_sync"]
    call = Call(runtime, kind="discover")
    try:
        with runtime.db.connection() as conn:
            (lease,) = models.discovery.claim_riders_for_discovery(
                conn, lease_token=call.lease_token, limit=1, lease_ttl_s=60, now=call.started_at
            )
        assert refresh(client, rider).status_code == 202  # while the call holds the rider
        outcome = _walk_or_record_failure(call, lease)
    finally:
        call.close()
    assert outcome.status == "skipped" and outcome.detail == "lease_lost"
    state = walk(database, rider)
    assert state["history_walk_started_at"] is None and state["history_pages"] == 0
    assert state["lease_token"] is None
    discover_until_complete(client)
    assert sorted(stored_ids(database, rider)) == sorted(history(strava, 343))
    assert walk(database, rider)["history_pages"] == 4


def test_full_refresh_errors(client, strava, database):
    rider = connect_rider(database, strava, 344, activities=1)
    assert client.post(f"/api/admin/riders/{rider}/full-refresh").status_code == 401
    missing = refresh(client, 999_999)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "rider_not_found"
    execute(database, "update strava_connections set status = 'needs_reauth'")
    conflict = refresh(client, rider)
    assert conflict.status_code == 409 and conflict.get_json()["error"]["code"] == "not_connected"
    assert walk(database, rider)["history_complete_at"] is not None  # untouched


# --- the endpoint --------------------------------------------------------------------


def test_discover_needs_the_bearer_and_a_valid_limit(client, strava, database):
    assert client.post(DISCOVER).status_code == 401
    assert client.post(DISCOVER, headers=cron_headers("wrong")).status_code == 401
    for bad in ("0", "501", "x", "2.5"):
        response = client.post(DISCOVER, query_string={"limit": bad}, headers=cron_headers())
        assert response.status_code == 400
        assert response.get_json()["error"]["field"] == "limit"
    assert client.get(DISCOVER, headers=cron_headers()).status_code == 200  # Vercel Cron
    assert strava.count() == 0


def test_default_limit_is_five_and_the_answer_has_the_contract_fields(client, strava, database):
    for i in range(7):
        connect_rider(database, strava, 350 + i, activities=3, history_complete=False)
    body = discover(client)
    assert body["processed"] == 5 and body["remaining"] == 2 and body["done"] is False
    for key in ("succeeded", "failed", "skipped", "rate_limited", "rate_limit", "duration_ms"):
        assert key in body
    item = body["items"][0]
    assert set(item) >= {
        "rider_id",
        "status",
        "pages",
        "fetched",
        "added",
        "races",
        "complete",
        "oldest",
    }
    run = query(database, "select kind, finished_at, processed from cron_runs")[0]
    assert run["kind"] == "discover" and run["finished_at"] is not None and run["processed"] == 5


# --- the estimated completion day ------------------------------------------------------


def test_the_completion_day_follows_the_backfill_plan():
    from datetime import date

    from services.discovery import completion_day
    from services.planning import Situation
    from services.schedule import BudgetState, Needs

    now = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
    state = BudgetState(window_limit=100, window_used=0, day_limit=1000, day_used=400)

    def plan(histories: int, recent_races: int = 0) -> Situation:
        needs = Needs(backlog=histories * 6 + recent_races)
        backlog = {"histories": histories, "recent_races": recent_races, "old_races": 0}
        return Situation(state, needs, backlog)

    # Today's pool (what is left of the day less Sync now's reserve) holds a short walk.
    assert completion_day(3, plan(1), now) == date(2031, 3, 4)
    # A long one alone: today's pool, then a whole day's share for each day after.
    long_walk = completion_day(3000, plan(1), now)
    assert long_walk is not None and long_walk > date(2031, 3, 5)
    # Other walks taking turns, and recent races ahead, push it later, never sooner.
    crowded = completion_day(3000, plan(40, recent_races=500), now)
    assert crowded is not None and crowded > long_walk
    # A budget with nothing for the backfill gives no day.
    spent = Situation(
        BudgetState(window_limit=100, window_used=100, day_limit=10, day_used=10),
        Needs(),
        {"histories": 1, "recent_races": 0, "old_races": 0},
    )
    assert completion_day(3000, spent, now) is None


def test_a_walk_in_progress_tells_the_rider_when_it_should_complete(
    make_app, fake, issuer, auth_settings, database
):
    import uuid

    rider = connect_rider(
        database,
        fake,
        341,
        activities=1050,
        start=NOW - timedelta(days=5 * 365),
        end=NOW - timedelta(days=1),
        history_complete=False,
    )
    user = uuid.uuid4()
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    # The walk is cut by its 0.5 s budget on the service's own timer, which each of
    # Strava's pages moves on by 0.2 s (tests/clocked_strava.py): two pages a call of six,
    # however long this machine takes.
    clock = VirtualClock(NOW)
    rsps = responses.RequestsMock(assert_all_requests_are_fired=False)
    install_on_clock(fake, clock, rsps, latency_s=0.2)
    issuer.install(rsps)
    with rsps:
        app = make_app(cron_time_budget_s=0.5, timer=clock.monotonic, **auth_settings)
        client = app.test_client()
        headers = issuer.headers(issuer.es256(user))
        before = client.get("/api/riders/me/sync", headers=headers).get_json()["history"]
        assert before["started"] is False and before["estimated_complete_on"] is None
        body = discover(client)
        assert body["items"][0]["complete"] is False
        during = client.get("/api/riders/me/sync", headers=headers).get_json()["history"]
        assert during["started"] is True and 0 < during["percent"] < 100
        day = datetime.fromisoformat(during["estimated_complete_on"]).date()
        assert day >= NOW.date()
        stored = query(
            database,
            "select history_estimated_complete_on from strava_connections where rider_id = %s",
            rider,
        )
        assert stored[0]["history_estimated_complete_on"] == day
        discover_until_complete(app.test_client())
        after = client.get("/api/riders/me/sync", headers=headers).get_json()["history"]
        assert after["complete"] is True and after["estimated_complete_on"] is None
