"""sync-strava end to end: real Postgres, the fake Strava behind `responses`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import responses

from fake_strava import FakeStrava, make_activities
from services.tokens import seal_tokens
from tests.conftest import API_URL, CLIENT_ID, CLIENT_SECRET, OAUTH_URL, SEALER, cron_headers
from tests.factories import (
    connect_rider,
    execute,
    query,
    riders_held_or_backing_off,
    stored_tokens,
)

SYNC = "/api/cron/sync-strava"
LIST = "/athlete/activities"


def sync(client, **params):
    response = client.post(SYNC, query_string=params, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def stored(database, rider_id=None):
    if rider_id is None:
        return query(database, "select count(*) as n from activities")[0]["n"]
    return query(database, "select count(*) as n from activities where rider_id = %s", rider_id)[0][
        "n"
    ]


def test_nothing_new_costs_exactly_one_request(client, strava, database):
    rider = connect_rider(database, strava, 101, activities=12)
    body = sync(client)
    assert body["succeeded"] == 1 and body["done"] is True
    assert strava.count(path_contains=LIST) == 1
    assert stored(database, rider) == 12
    # a re-run within the interval does nothing; after it, one request and no duplicates
    assert sync(client)["processed"] == 0
    execute(
        database,
        "update strava_connections"
        " set last_synced_at = now() - interval '2 hours', next_poll_at = null",
    )
    strava.reset_log()
    again = sync(client)
    assert again["items"][0]["added"] == 0 and again["items"][0]["fetched"] == 12
    assert strava.count(path_contains=LIST) == 1
    assert stored(database, rider) == 12


def test_450_new_activities_cost_three_requests(client, strava, database):
    now = datetime.now(UTC)
    rider = connect_rider(
        database,
        strava,
        102,
        activities=450,
        start=now - timedelta(days=40),
        end=now - timedelta(hours=1),
        sync_cursor=now - timedelta(days=45),
    )
    body = sync(client)
    assert body["items"][0]["added"] == 450
    assert strava.count(path_contains=LIST) == 3
    assert stored(database, rider) == 450
    cursor = query(database, "select sync_cursor from strava_connections")[0]["sync_cursor"]
    newest = query(database, "select max(start_date) as m from activities")[0]["m"]
    assert cursor == newest


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "shuffled"])
def test_without_read_all_short_pages_do_not_end_the_listing(database, make_app, order):
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, order=order, seed=3)
    now = datetime.now(UTC)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        rider = connect_rider(
            database,
            fake,
            103,
            activities=700,
            start=now - timedelta(days=60),
            end=now - timedelta(hours=1),
            sync_cursor=now - timedelta(days=61),
            scope="read,activity:read",
            private_fraction=0.2,
        )
        public = [a for a in fake.activities_of(103) if not a["private"]]
        body = sync(make_app().test_client())
    assert body["succeeded"] == 1
    # every page came back short (private ones filtered after paging), yet all were read
    assert stored(database, rider) == len(public)
    assert {r["strava_id"] for r in query(database, "select strava_id from activities")} == {
        a["id"] for a in public
    }
    assert fake.count(path_contains=LIST) == 5  # four pages with data, then an empty one


def test_races_are_classified_and_marked_pending(client, strava, database):
    now = datetime.now(UTC)
    rider = connect_rider(database, strava, 104, activities=0)
    strava.add_activities(
        104,
        make_activities(
            104,
            40,
            start=now - timedelta(days=5),
            end=now - timedelta(hours=1),
            seed=9,
            race_fraction=0.3,
        ),
    )
    sync(client)
    rows = query(
        database,
        "select strava_id, is_race, enrichment_status from activities where rider_id = %s",
        rider,
    )
    expected = {
        a["id"]
        for a in strava.activities_of(104)
        if (a["sport_type"] in ("Run", "TrailRun") and a["workout_type"] == 1)
        or (a["sport_type"] in ("Ride", "GravelRide", "VirtualRide") and a["workout_type"] == 11)
        or (
            a["sport_type"] in ("Ride", "GravelRide")
            and not a["trainer"]
            and a["distance"] >= 200_000
        )
    }
    assert expected, "the generated activities should include races"
    assert {r["strava_id"] for r in rows if r["is_race"]} == expected
    assert all(r["enrichment_status"] == ("pending" if r["is_race"] else None) for r in rows)


def test_expired_token_is_refreshed_once_and_rotated_token_stored(client, strava, database):
    rider = connect_rider(database, strava, 105, activities=3, expires_in=60)
    old_refresh = stored_tokens(database)["refresh_token"]
    assert sync(client)["succeeded"] == 1
    assert strava.refresh_count(105) == 1
    row = stored_tokens(database, rider)
    assert row["refresh_token"] == strava.current_refresh_token(105) != old_refresh
    sealed = query(database, "select access_token, refresh_token from strava_connections")[0]
    assert all(v.startswith("enc1:test:") for v in sealed.values())  # stored sealed
    assert row["expires_at"] > datetime.now(UTC) + timedelta(hours=5)


def test_a_401_triggers_one_refresh_then_the_request_again(client, strava, database):
    connect_rider(database, strava, 106, activities=3)
    strava.fail_next(1, status=401, path_contains=LIST)
    body = sync(client)
    assert body["succeeded"] == 1 and body["items"][0]["added"] == 3
    assert strava.refresh_count(106) == 1


def test_a_refused_token_whose_renewal_failed_is_renewed_before_it_is_sent_again(
    client, strava, database
):
    connect_rider(database, strava, 111, activities=3, expires_in=3600)
    # Strava revokes the access token early (the listing answers 401), and the renewal
    # that follows answers 503: the rider fails this time, with a backoff.
    strava.inject_faults(0.99, seed=2, mix={"expiry": 1.0})
    strava.fail_next(1, status=503, path_contains="/oauth/token")
    body = sync(client)
    strava.inject_faults(0)
    assert body["failed"] == 1
    assert [(r.path, r.status) for r in strava.requests] == [
        ("/api/v3" + LIST, 401),
        ("/oauth/token", 503),
    ]
    # its backoff over and its poll due again
    execute(
        database,
        "update strava_connections set next_attempt_at = null, last_synced_at = null,"
        " next_poll_at = null, last_sync_attempt_at = null",
    )
    strava.reset_log()
    body = sync(client)
    assert body["succeeded"] == 1 and body["items"][0]["added"] == 3
    # the next call renews the refused token first: it is never sent again
    assert [(r.path, r.status) for r in strava.requests] == [
        ("/oauth/token", 200),
        ("/api/v3" + LIST, 200),
    ]


def test_two_calls_refreshing_one_rider_end_with_one_refresh(make_app, strava, database):
    """Sync and another call (enrich, Sync now) both find the token expiring."""
    from services.calls import Call

    rider = connect_rider(database, strava, 107, activities=1, expires_in=30)
    runtime = make_app().extensions["strava_sync"]
    tokens, errors = [], []
    barrier = threading.Barrier(4)

    def refresh():
        call = Call(runtime, kind="sync-strava")
        try:
            barrier.wait()
            tokens.append(call.tokens.access_token(rider))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            call.close()

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert strava.refresh_count(107) == 1
    assert len(set(tokens)) == 1
    assert tokens[0] == stored_tokens(database)["access_token"]
    assert sync(make_app().test_client())["succeeded"] == 1  # and the token works


def test_invalid_grant_marks_needs_reauth_and_others_go_on(client, strava, database):
    bad = connect_rider(database, strava, 108, activities=2, expires_in=10)
    good = connect_rider(database, strava, 109, activities=4)
    strava.revoke_athlete(108)
    body = sync(client)
    by_rider = {i["rider_id"]: i for i in body["items"]}
    assert by_rider[bad]["status"] == "failed" and by_rider[bad]["reason"] == "needs_reauth"
    assert by_rider[good]["status"] == "succeeded"
    row = query(
        database, "select status, last_error from strava_connections where rider_id = %s", bad
    )[0]
    assert row["status"] == "needs_reauth" and "reconnect" in row["last_error"]
    assert stored(database, good) == 4
    # skipped until reconnected: not due, not counted as remaining
    execute(database, "update strava_connections set last_synced_at = null, next_poll_at = null")
    again = sync(client)
    assert bad not in {i["rider_id"] for i in again["items"]}


def test_invalid_grant_after_a_rotation_elsewhere_rereads_the_row(client, strava, database):
    """Another process refreshed (and rotated) the token; our stale refresh is rejected."""
    rider = connect_rider(database, strava, 110, activities=2, expires_in=10)
    # another process refreshes first and stores the new tokens, without our lock
    import requests as http

    old = stored_tokens(database)["refresh_token"]
    fresh = http.post(
        f"{OAUTH_URL}/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": old,
        },
    ).json()
    assert strava.current_refresh_token(110) != old

    from services.calls import Call

    runtime = client.application.extensions["strava_sync"]
    call = Call(runtime, kind="sync-strava")
    # the row is updated by the other process just after our read of the old token
    access, refresh = seal_tokens(SEALER, rider, fresh["access_token"], fresh["refresh_token"])
    execute(
        database,
        "update strava_connections set refresh_token = %s, access_token = %s,"
        " expires_at = to_timestamp(%s) where rider_id = %s",
        refresh,
        access,
        fresh["expires_at"],
        rider,
    )
    execute(database, "update strava_connections set expires_at = now() where rider_id = %s", rider)
    try:
        token = call.tokens.access_token(rider)
    finally:
        call.close()
    # our refresh used the stored (rotated) token, so it worked: still active
    assert query(database, "select status from strava_connections")[0]["status"] == "active"
    assert token == stored_tokens(database)["access_token"]


def test_a_429_stops_the_call_and_the_next_call_sends_nothing(make_app, database):
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    # the third listing meets a 429, as when the club's budget is also spent elsewhere
    fake.fail_next(1, status=429, path_contains=LIST, after=2)
    client = make_app(sync_workers=1).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        riders = [connect_rider(database, fake, 120 + i, activities=3) for i in range(5)]
        body = sync(client)
        assert body["rate_limited"] is True
        assert body["rate_limit"]["resets_at"].endswith("Z")
        assert body["rate_limit"]["blocked_until"] == body["rate_limit"]["resets_at"]
        statuses = [i["status"] for i in body["items"]]
        assert statuses == ["succeeded", "succeeded", "skipped", "skipped", "skipped"]
        assert fake.count() == 3  # nothing after the 429
        assert body["done"] is False and body["remaining"] == 3
        assert stored(database) == 6  # the partial result is kept
        # a 429 is not the riders' fault: nobody is backed off
        assert riders_held_or_backing_off(database) == 0
        fake.reset_log()
        second = sync(client)
        assert second["rate_limited"] is True and second["processed"] == 3
        assert fake.count() == 0
        assert all(i["reason"] == "rate_limited" for i in second["items"])
    assert len(riders) == 5


def test_the_budget_stops_cron_before_strava_says_no(make_app, strava, database):
    """Our own shared budget (with its Sync-now reserve) stops the call first."""
    client = make_app(sync_workers=1).test_client()
    for i in range(3):
        connect_rider(database, strava, 140 + i, activities=2)
    # 89 of 100 read requests used in this window: cron may take one more (10 reserved)
    execute(
        database,
        "update strava_rate_budget set read_usage_15min = 89, usage_15min = 89,"
        " window_start = date_bin('15 minutes', now(), '2000-01-01'),"
        " day_start = date_trunc('day', now() at time zone 'utc') at time zone 'utc'",
    )
    body = sync(client)
    assert body["rate_limited"] is True
    assert strava.count() == 1
    assert body["succeeded"] == 1 and body["remaining"] == 2


def test_5xx_is_retried_within_the_call(client, strava, database):
    rider = connect_rider(database, strava, 150, activities=5)
    strava.fail_next(2, status=503, path_contains=LIST)
    body = sync(client)
    assert body["succeeded"] == 1
    assert stored(database, rider) == 5
    assert strava.count(path_contains=LIST) == 3


def test_persistent_5xx_fails_one_rider_with_backoff_while_others_succeed(
    make_app, strava, database
):
    client = make_app(sync_workers=1).test_client()
    broken = connect_rider(database, strava, 151, activities=2)
    fine = [connect_rider(database, strava, 152 + i, activities=3) for i in range(3)]
    strava.fail_next(
        3, status=500, path_contains=LIST
    )  # the first rider's request and its 2 retries
    body = sync(client)
    by_rider = {i["rider_id"]: i for i in body["items"]}
    assert by_rider[broken]["status"] == "failed"
    assert by_rider[broken]["reason"] == "strava_unavailable"
    assert all(by_rider[r]["status"] == "succeeded" for r in fine)
    row = query(
        database,
        "select failure_count, next_attempt_at, error_class, last_error"
        " from strava_connections where rider_id = %s",
        broken,
    )[0]
    assert row["failure_count"] == 1 and row["error_class"] == "strava_unavailable"
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=50)
    assert body["done"] is True  # backing off is not due now
    # a second failure doubles the backoff
    execute(
        database,
        "update strava_connections set next_attempt_at = now() where rider_id = %s",
        broken,
    )
    strava.fail_next(3, status=500, path_contains=LIST)
    sync(client)
    again = query(
        database,
        "select failure_count, next_attempt_at - now() as wait"
        " from strava_connections where rider_id = %s",
        broken,
    )[0]
    assert again["failure_count"] == 2 and again["wait"] > timedelta(seconds=110)


def test_bad_payload_fails_the_rider_not_the_call(client, strava, database):
    connect_rider(database, strava, 160, activities=2)
    strava.fail_next(1, status=200, path_contains=LIST, body={"not": "a list"})
    body = sync(client)
    assert body["failed"] == 1 and body["items"][0]["reason"] == "bad_payload"


def test_inactive_application_stops_all_calls(make_app, strava, database):
    client = make_app(sync_workers=1).test_client()
    for i in range(3):
        connect_rider(database, strava, 170 + i, activities=1)
    strava.application_inactive = True
    body = sync(client)
    assert body["stopped_by"] == "application_inactive"
    assert strava.count() == 1
    assert body["failed"] == 0
    blocked = query(database, "select blocked_reason, blocked_until from strava_rate_budget")[0]
    assert blocked["blocked_reason"] == "application_inactive"
    strava.reset_log()
    sync(client)
    assert strava.count() == 0


def test_lease_expired_rider_is_taken_by_the_next_call(client, strava, database):
    rider = connect_rider(database, strava, 180, activities=2)
    # a call that claimed the rider and died: its lease has run out
    execute(
        database,
        "update strava_connections set lease_token = gen_random_uuid(),"
        " lease_kind = 'sync', lease_expires_at = now() - interval '1 second'",
    )
    body = sync(client)
    assert [i["rider_id"] for i in body["items"]] == [rider]
    assert body["succeeded"] == 1


def test_a_live_lease_is_left_alone(client, strava, database):
    connect_rider(database, strava, 181, activities=2)
    execute(
        database,
        "update strava_connections set lease_token = gen_random_uuid(),"
        " lease_kind = 'discover', lease_expires_at = now() + interval '1 minute'",
    )
    body = sync(client)
    assert body["processed"] == 0 and body["remaining"] == 0
    assert strava.count() == 0


def test_write_back_after_losing_the_lease_changes_nothing(make_app, strava, database):
    """A call whose lease was taken over must not overwrite the newer holder's work."""
    import models
    from services.calls import Call

    connect_rider(database, strava, 182, activities=4)
    runtime = make_app().extensions["strava_sync"]
    call = Call(runtime, kind="sync-strava")
    with runtime.db.connection() as conn:
        (lease,) = models.sync.claim_riders_for_sync(
            conn,
            lease_token=call.lease_token,
            limit=1,
            lease_ttl_s=60,
            min_interval_s=0,
            now=call.started_at,
        )
    execute(database, "update strava_connections set lease_token = gen_random_uuid()")
    try:
        outcome = sync_rider_outcome(call, lease)
    finally:
        call.close()
    assert outcome.status == "skipped" and outcome.detail == "lease_lost"
    assert stored(database) == 0
    assert (
        query(database, "select last_synced_at from strava_connections")[0]["last_synced_at"]
        is None
    )


def sync_rider_outcome(call, lease):
    from services.sync import _sync_or_record_failure

    return _sync_or_record_failure(call, lease, events_healthy=False)


def test_riders_are_taken_least_recently_synced_first_and_limit_holds(client, strava, database):
    riders = [connect_rider(database, strava, 190 + i, activities=1) for i in range(4)]
    execute(
        database,
        "update strava_connections set last_synced_at = now() - (rider_id || ' days')::interval",
    )
    body = sync(client, limit=2)
    assert sorted(i["rider_id"] for i in body["items"]) == sorted(riders[-2:])
    assert body["remaining"] == 2 and body["done"] is False


def test_paused_and_recent_riders_are_not_due(client, strava, database):
    paused = connect_rider(database, strava, 195, activities=1)
    recent = connect_rider(database, strava, 196, activities=1)
    execute(database, "update riders set auto_sync = false where id = %s", paused)
    execute(
        database, "update strava_connections set last_synced_at = now() where rider_id = %s", recent
    )
    body = sync(client)
    assert body["processed"] == 0 and body["done"] is True


def test_each_call_is_logged_in_cron_runs(client, strava, database):
    connect_rider(database, strava, 197, activities=1)
    sync(client)
    run = query(database, "select * from cron_runs")[0]
    assert run["kind"] == "sync-strava" and run["finished_at"] is not None
    assert run["succeeded"] == 1 and run["items"][0]["status"] == "succeeded"


@pytest.mark.parametrize("order", ["strava", "newest_first", "oldest_first", "shuffled"])
def test_an_interrupted_listing_resumes_at_its_next_page(database, make_app, order):
    """A listing that a call could not finish is not started over: a rider with more new
    activities than one call can list still gets through them."""
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, order=order, seed=5)
    now = datetime.now(UTC)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        rider = connect_rider(
            database,
            fake,
            210,
            activities=650,
            start=now - timedelta(days=300),
            end=now - timedelta(hours=1),
            sync_cursor=now - timedelta(days=301),
        )
        client = make_app().test_client()
        # page 3 fails, with both retries: two pages are stored, the rider backs off
        fake.fail_next(3, status=502, path_contains=LIST, after=2)
        first = sync(client)
        assert first["items"][0]["status"] == "failed"
        assert stored(database, rider) == 400
        state = query(
            database,
            "select sync_cursor, sync_listing_page, sync_listing_after from strava_connections",
        )[0]
        assert state["sync_listing_page"] == 3
        assert state["sync_cursor"] < now - timedelta(days=300)  # not moved: incomplete
        execute(database, "update strava_connections set next_attempt_at = null")
        fake.reset_log()
        second = sync(client)
    assert second["items"][0]["status"] == "succeeded"
    assert fake.count(path_contains=LIST) == 2  # pages 3 and 4, not 1 and 2 again
    assert stored(database, rider) == 650
    assert {q.query["after"] for q in fake.requests} == {
        str(int(state["sync_listing_after"].timestamp()))
    }
    row = query(
        database,
        "select sync_cursor, sync_listing_page, sync_listing_after from strava_connections",
    )[0]
    newest = query(database, "select max(start_date) as m from activities")[0]["m"]
    assert row == {"sync_cursor": newest, "sync_listing_page": None, "sync_listing_after": None}


def test_the_run_log_keeps_thirty_days(client, strava, database):
    execute(
        database,
        "insert into cron_runs (kind, started_at, finished_at) values"
        " ('sync-strava', now() - interval '31 days', now() - interval '31 days'),"
        " ('sync-strava', now() - interval '29 days', now() - interval '29 days'),"
        " ('enrich', now() - interval '40 days', now() - interval '40 days')",
    )
    sync(client)
    kept = query(
        database,
        "select kind, now() - started_at < interval '30 days' as recent"
        " from cron_runs order by started_at",
    )
    # the old sync run is pruned by this sync call; enrich's own calls prune enrich's
    assert kept == [
        {"kind": "enrich", "recent": False},
        {"kind": "sync-strava", "recent": True},
        {"kind": "sync-strava", "recent": True},
    ]


def _loop(client, *, max_calls=20, **params):
    """Call sync-strava while done is false, as the workflow does; the answers."""
    answers = []
    for _ in range(max_calls):
        answers.append(sync(client, **params))
        if answers[-1]["done"]:
            break
    return answers


def test_a_loop_with_no_interval_ends_and_lists_each_rider_once(make_app, strava, database):
    client = make_app(sync_min_interval_s=0).test_client()
    riders = {connect_rider(database, strava, 801 + i, activities=3): 801 + i for i in range(5)}
    answers = _loop(client, limit=2)
    assert [a["processed"] for a in answers] == [2, 2, 1]
    assert [a["remaining"] for a in answers] == [3, 1, 0]
    assert answers[-1]["done"] is True
    taken = [i["rider_id"] for a in answers for i in a["items"]]
    assert sorted(taken) == sorted(riders)  # every rider once, none twice
    listings = [r.athlete_id for r in strava.requests if LIST in r.path]
    assert sorted(listings) == sorted(riders.values())
    # the next loop (the next schedule) is a new round: riders whose poll is due again
    # (here all of them) are taken again
    execute(database, "update strava_connections set next_poll_at = null")
    strava.reset_log()
    again = _loop(client, limit=5)
    assert len(again) == 1 and again[0]["processed"] == 5 and again[0]["done"] is True
    assert strava.count(path_contains=LIST) == 5


def test_a_rider_that_failed_in_the_loop_is_not_retried_in_it(make_app, strava, database):
    client = make_app(sync_min_interval_s=0, sync_workers=1).test_client()
    broken = connect_rider(database, strava, 811, activities=2)
    others = [connect_rider(database, strava, 812 + i, activities=2) for i in range(2)]
    strava.fail_next(3, status=500, path_contains=LIST)  # the first listing and its retries
    first = sync(client, limit=1)
    assert first["items"][0] == {**first["items"][0], "rider_id": broken, "status": "failed"}
    # its backoff runs out, but it was tried in this round: the loop goes on to the others
    execute(database, "update strava_connections set next_attempt_at = null")
    rest = _loop(client, limit=1)
    assert [i["rider_id"] for a in rest for i in a["items"]] == others
    assert rest[-1]["done"] is True and rest[-1]["remaining"] == 0


def test_riders_handed_back_stay_remaining_in_the_round(make_app, strava, database):
    client = make_app(sync_min_interval_s=0, sync_workers=1).test_client()
    riders = [connect_rider(database, strava, 821 + i, activities=2) for i in range(3)]
    # 89 of 100 read requests used in this window: one rider, then the reserve stops it
    execute(
        database,
        "update strava_rate_budget set read_usage_15min = 89, usage_15min = 89,"
        " window_start = date_bin('15 minutes', now(), '2000-01-01'),"
        " day_start = date_trunc('day', now() at time zone 'utc') at time zone 'utc'",
    )
    body = sync(client)
    assert body["rate_limited"] is True and body["succeeded"] == 1
    assert body["remaining"] == 2 and body["done"] is False
    assert riders_held_or_backing_off(database) == 0
    # the window resets: the same round goes on with the two handed back, not the first
    execute(database, "update strava_rate_budget set read_usage_15min = 0, usage_15min = 0")
    rest = _loop(client)
    assert sorted(i["rider_id"] for a in rest for i in a["items"]) == riders[1:]
    assert rest[-1]["done"] is True
