"""Sync now and its state: real Postgres, the fake Strava over HTTP, riders' own tokens."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fake_strava import FakeStrava, make_activities, serve
from services.status import history_percent
from services.sync_now import plain_error, retry_after, rider_state
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings, rider_app,
# rider_client.
pytest_plugins = ["tests.jwks_fixture"]

SYNC = "/api/riders/me/sync"
LIST = "/athlete/activities"


def link(database, fake, athlete_id, **options):
    """A connected rider owned by a new Supabase user; returns (rider_id, user)."""
    user = uuid.uuid4()
    rider = connect_rider(database, fake, athlete_id, **options)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    return rider, user


def post(client, issuer, user):
    return client.post(SYNC, headers=issuer.headers(issuer.es256(user)))


def connection(database, rider):
    return query(database, "select * from strava_connections where rider_id = %s", rider)[0]


def test_sync_now_adds_new_activities_and_details_new_races(rider_client, web, issuer, database):
    now = datetime.now(UTC)
    rider, user = link(database, web, 9001)
    web.add_activities(
        9001,
        make_activities(
            9001,
            12,
            start=now - timedelta(days=4),
            end=now - timedelta(hours=1),
            seed=5,
            race_fraction=0.3,
        ),
    )
    races = [a for a in web.activities_of(9001) if a["workout_type"] in (1, 11)]
    assert 0 < len(races) <= 10
    response = post(rider_client, issuer, user)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "synced" and body["added"] == 12 and body["updated"] == 0
    expected_races = query(
        database, "select count(*) as n from activities where rider_id = %s and is_race", rider
    )[0]["n"]
    assert body["races_found"] == expected_races >= len(races)
    assert body["races_enriched"] == expected_races
    assert body["rate_limited"] is False
    assert body["sync"]["last_sync"] == {"added": 12, "updated": 0}
    assert body["sync"]["in_progress"] is False and body["sync"]["sync_now_available"] is False
    assert body["sync"]["races"]["waiting_for_details"] == 0
    assert web.count(path_contains=LIST) == 1
    assert web.count(path_contains="/activities/") == expected_races
    statuses = query(database, "select distinct enrichment_status from activities where is_race")
    assert statuses == [{"enrichment_status": "done"}]
    row = connection(database, rider)
    assert row["lease_token"] is None and row["last_sync_now_at"] is not None
    assert row["last_synced_at"] is not None and row["last_sync_added"] == 12
    eddington = query(database, "select eddington_km from riders where id = %s", rider)[0]
    assert eddington["eddington_km"] is not None and eddington["eddington_km"] > 0
    run = query(database, "select * from cron_runs")
    assert len(run) == 1 and run[0]["kind"] == "sync-now" and run[0]["finished_at"] is not None
    assert run[0]["items"][0]["rider_id"] == rider and run[0]["items"][0]["added"] == 12
    assert {i["activity_id"] for i in run[0]["items"][1:]} == set(
        r["strava_id"] for r in query(database, "select strava_id from activities where is_race")
    )


def test_cooldown_answers_429_with_retry_after(rider_client, web, issuer, database):
    rider, user = link(database, web, 9002, activities=3)
    assert post(rider_client, issuer, user).status_code == 200
    requests_before = len(web.requests)
    again = post(rider_client, issuer, user)
    assert again.status_code == 429
    assert again.get_json()["error"]["code"] == "cooldown"
    assert 290 <= int(again.headers["Retry-After"]) <= 300
    assert again.get_json()["error"]["retry_after_s"] == int(again.headers["Retry-After"])
    assert len(web.requests) == requests_before  # no Strava request
    state = rider_client.get(SYNC, headers=issuer.headers(issuer.es256(user))).get_json()
    assert state["sync_now_available"] is False and state["sync_now_available_at"]
    execute(
        database,
        "update strava_connections set last_sync_now_at = now() - interval '301 seconds'"
        " where rider_id = %s",
        rider,
    )
    assert post(rider_client, issuer, user).status_code == 200


def test_a_shorter_cooldown_setting_applies(make_app, auth_settings, web, issuer, database):
    client = make_app(**auth_settings, sync_now_cooldown_s=1).test_client()
    _, user = link(database, web, 9003, activities=1)
    assert post(client, issuer, user).status_code == 200
    time.sleep(1.1)
    assert post(client, issuer, user).status_code == 200


def test_rider_held_by_a_cron_call_gets_202_and_no_second_sync(rider_client, web, issuer, database):
    rider, user = link(database, web, 9004, activities=3)
    cron_token = uuid.uuid4()
    execute(
        database,
        "update strava_connections set lease_token = %s, lease_kind = 'sync',"
        " lease_expires_at = now() + interval '1 minute' where rider_id = %s",
        cron_token,
        rider,
    )
    response = post(rider_client, issuer, user)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "in_progress" and body["sync"]["in_progress"] is True
    assert web.requests == []
    row = connection(database, rider)
    assert row["lease_token"] == cron_token and row["last_sync_now_at"] is None
    assert query(database, "select count(*) as n from cron_runs")[0]["n"] == 0
    # A lease whose holder died is taken over.
    execute(
        database,
        "update strava_connections set lease_expires_at = now() - interval '1 second'"
        " where rider_id = %s",
        rider,
    )
    assert post(rider_client, issuer, user).status_code == 200


def test_overlap_with_a_running_cron_call(make_app, auth_settings, issuer, database):
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, latency_s=0.6)
    with serve(fake) as served:
        app = make_app(
            **auth_settings, strava_api_url=served.api_url, strava_oauth_url=served.oauth_url
        )
        rider, user = link(database, fake, 9005, activities=4)
        cron_answer = {}

        def cron() -> None:
            response = app.test_client().post("/api/cron/sync-strava", headers=cron_headers())
            cron_answer.update(response.get_json())

        thread = threading.Thread(target=cron)
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and connection(database, rider)["lease_kind"] != "sync":
            time.sleep(0.02)
        response = app.test_client().post(SYNC, headers=issuer.headers(issuer.hs256(user)))
        thread.join()
    assert response.status_code == 202, response.get_data(as_text=True)
    assert cron_answer["succeeded"] == 1 and cron_answer["items"][0]["added"] == 4
    assert fake.count(path_contains=LIST) == 1  # one sync, not two
    assert query(database, "select count(*) as n from activities")[0]["n"] == 4


def test_no_connection_is_409(rider_client, web, issuer, database):
    response = post(rider_client, issuer, uuid.uuid4())  # a user who never connected
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "not_connected"
    user = uuid.uuid4()
    execute(database, "insert into riders (auth_user_id) values (%s)", user)
    assert post(rider_client, issuer, user).get_json()["error"]["code"] == "not_connected"
    state = rider_client.get(SYNC, headers=issuer.headers(issuer.es256(user))).get_json()
    assert state == {"connected": False, "in_progress": False, "sync_now_available": False}
    assert web.requests == []


def test_needs_reauth_is_a_clear_409(rider_client, web, issuer, database):
    rider, user = link(database, web, 9006, activities=2)
    execute(
        database, "update strava_connections set status = 'needs_reauth' where rider_id = %s", rider
    )
    response = post(rider_client, issuer, user)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "needs_reauth" and "Reconnect Strava" in error["message"]
    assert web.requests == []


def test_a_grant_revoked_at_strava_turns_into_needs_reauth(rider_client, web, issuer, database):
    rider, user = link(database, web, 9007, activities=2, expires_in=60)
    web.revoke_athlete(9007)  # the rider removed the app on Strava's side
    response = post(rider_client, issuer, user)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "needs_reauth"
    row = connection(database, rider)
    assert row["status"] == "needs_reauth" and row["lease_token"] is None
    state = rider_client.get(SYNC, headers=issuer.headers(issuer.es256(user))).get_json()
    assert state["needs_reconnect"] is True
    assert "Reconnect Strava" in state["last_error"]["message"]
    assert query(database, "select items from cron_runs")[0]["items"][0]["reason"] == "needs_reauth"


def _spend_budget(database, **columns):
    now = datetime.now(UTC)
    window = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sets = ", ".join(f"{k} = %s" for k in columns)
    execute(
        database,
        f"update strava_rate_budget set window_start = %s, day_start = %s, {sets}",
        window,
        day,
        *columns.values(),
    )
    return window + timedelta(minutes=15)


def test_rate_budget_exhausted_is_429_and_no_strava_call(rider_client, web, issuer, database):
    rider, user = link(database, web, 9008, activities=2)
    resets = _spend_budget(database, usage_15min=200, read_usage_15min=100)
    response = post(rider_client, issuer, user)
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "rate_limited"
    assert error["resets_at"] == resets.isoformat().replace("+00:00", "Z")
    assert 1 <= int(response.headers["Retry-After"]) <= 900
    assert web.requests == []
    row = connection(database, rider)
    assert row["lease_token"] is None and row["last_sync_now_at"] is None  # no cooldown spent
    # Blocked after a 429 from Strava: refused until the block's end.
    blocked = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=7)
    _spend_budget(database, usage_15min=0, read_usage_15min=0, blocked_until=blocked)
    response = post(rider_client, issuer, user)
    assert response.status_code == 429
    assert response.get_json()["error"]["resets_at"] == blocked.isoformat().replace("+00:00", "Z")
    assert web.requests == []


def test_sync_now_draws_on_the_reserve_the_cron_keeps(rider_client, client, web, issuer, database):
    _, user = link(database, web, 9009, activities=2)
    _spend_budget(database, read_usage_15min=95)  # 5 left: inside the cron's reserve of 10
    cron = client.post("/api/cron/sync-strava", headers=cron_headers()).get_json()
    # the share is spent: the call claims nobody and sends nothing
    assert cron["rate_limited"] is True and cron["processed"] == 0 and web.requests == []
    execute(
        database,
        "update strava_connections set lease_token = null, lease_kind = null,"
        " lease_expires_at = null",
    )
    response = post(rider_client, issuer, user)
    assert response.status_code == 200 and response.get_json()["added"] == 2


def test_races_wait_when_the_budget_runs_out_after_the_sync(rider_client, web, issuer, database):
    now = datetime.now(UTC)
    rider, user = link(database, web, 9010)
    web.add_activities(
        9010,
        make_activities(
            9010,
            10,
            start=now - timedelta(days=3),
            end=now - timedelta(hours=1),
            seed=8,
            race_fraction=0.5,
        ),
    )
    _spend_budget(database, read_usage_15min=99)  # exactly one request left
    response = post(rider_client, issuer, user)
    assert response.status_code == 200
    body = response.get_json()
    assert body["added"] == 10 and body["races_found"] > 0
    assert body["races_enriched"] == 0 and body["rate_limited"] is True
    assert body["sync"]["races"]["waiting_for_details"] == body["races_found"]
    assert web.count(path_contains="/activities/") == 0
    leased = query(
        database,
        "select count(*) as n from activities where rider_id = %s"
        " and enrichment_lease_token is not null",
        rider,
    )
    assert leased[0]["n"] == 0  # races handed back for the enrich cron


def test_stravas_own_429_is_reported_and_costs_no_cooldown(rider_client, web, issuer, database):
    rider, user = link(database, web, 9011, activities=2)
    web.set_usage(read_usage_15min=100)
    response = post(rider_client, issuer, user)
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert web.count(path_contains=LIST) == 1  # one request, then nothing more
    row = connection(database, rider)
    assert row["last_sync_now_at"] is None and row["lease_token"] is None
    assert row["failure_count"] == 0  # a rate limit is not the rider's failure


def test_sync_state_for_the_button(rider_client, web, issuer, database):
    now = datetime.now(UTC)
    rider, user = link(database, web, 9012, activities=5, history_complete=False)
    synced = post(rider_client, issuer, user).get_json()
    enriched = synced["races_enriched"]  # the generated rides hold a brevet or two
    assert enriched == synced["races_found"] >= 1
    execute(
        database,
        "update strava_connections set history_walk_started_at = %s, history_cursor = %s,"
        " athlete_created_at = %s, history_activities = 40, error_class = 'strava_unavailable',"
        " last_error = 'Strava answered 503', next_attempt_at = %s where rider_id = %s",
        now,
        now - timedelta(days=100),
        now - timedelta(days=400),
        now + timedelta(minutes=4),
        rider,
    )
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date, is_race,"
        " enrichment_status, enrichment_attempts) values"
        " (1, %s, 'Ride', now(), true, 'pending', 0), (2, %s, 'Ride', now(), true, 'failed', 1),"
        " (3, %s, 'Ride', now(), true, 'failed', 5), (4, %s, 'Ride', now(), true, 'done', 1)",
        rider,
        rider,
        rider,
        rider,
    )
    state = rider_client.get(SYNC, headers=issuer.headers(issuer.es256(user))).get_json()
    assert state["connected"] is True and state["in_progress"] is False
    assert state["last_synced_at"] and state["last_sync"] == {"added": 5, "updated": 0}
    assert state["history"]["complete"] is False and state["history"]["percent"] == 25
    assert state["history"]["activities_found"] == 40
    assert state["races"]["waiting_for_details"] == 2  # pending + failed with attempts left
    assert state["races"]["failed"] == 1 and state["races"]["detailed"] == 1 + enriched
    assert state["races"]["total"] == 4 + enriched
    assert (
        state["last_error"]["message"] == "Strava did not answer. We will try again automatically."
    )
    assert state["last_error"]["retry_at"]
    assert "503" not in str(state)  # plain words, not the technical message
    assert state["eddington"]["km"] is not None
    assert state["activities"] == 9


def test_pure_rules():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert history_percent(complete=True, walk_started_at=None, cursor=None, floor=None) == 100
    assert history_percent(complete=False, walk_started_at=None, cursor=None, floor=None) == 0
    assert (
        history_percent(
            complete=False,
            walk_started_at=t0,
            cursor=t0 - timedelta(days=10),
            floor=t0 - timedelta(days=40),
        )
        == 25
    )
    # Older than the account: 99 until the walk says it is complete.
    assert (
        history_percent(
            complete=False,
            walk_started_at=t0,
            cursor=t0 - timedelta(days=50),
            floor=t0 - timedelta(days=40),
        )
        == 99
    )
    # Unknown account age: measured back to Strava's start in 2009.
    assert (
        history_percent(
            complete=False, walk_started_at=t0, cursor=datetime(2017, 7, 2, tzinfo=UTC), floor=None
        )
        == 50
    )
    assert plain_error(None, "active") is None
    assert "press Reconnect Strava" in plain_error(None, "needs_reauth")
    # Revoked at Strava: said as such (the data is gone), and the same button named.
    revoked = plain_error(None, "revoked")
    assert "withdrew" in revoked and "deleted" in revoked and "Reconnect Strava" in revoked
    assert "automatically" in plain_error("something_new", "active")
    assert retry_after(t0 + timedelta(seconds=10.2), t0) == 11
    assert retry_after(t0 - timedelta(seconds=5), t0) == 1
    assert rider_state(None, cooldown_s=300)["connected"] is False


@pytest.mark.parametrize("method", ["get", "post"])
def test_sync_endpoints_need_a_rider_token(rider_client, web, method):
    response = getattr(rider_client, method)(SYNC)
    assert response.status_code == 401


def test_strava_failing_is_a_502_and_backs_the_rider_off(rider_client, web, issuer, database):
    rider, user = link(database, web, 9013, activities=2)
    web.fail_next(3, status=503, path_contains=LIST)  # the first try and both retries
    response = post(rider_client, issuer, user)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "sync_failed" and error["reason"] == "strava_unavailable"
    assert error["message"] == "Strava did not answer. We will try again automatically."
    row = connection(database, rider)
    assert row["failure_count"] == 1 and row["next_attempt_at"] is not None
    assert row["lease_token"] is None
    run = query(database, "select error_summary, finished_at from cron_runs")[0]
    assert run["error_summary"] == "strava_unavailable" and run["finished_at"] is not None


def test_an_inactive_strava_application_is_a_503(rider_client, web, issuer, database):
    rider, user = link(database, web, 9014, activities=2)
    web.application_inactive = True
    response = post(rider_client, issuer, user)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "strava_unavailable"
    assert connection(database, rider)["failure_count"] == 0  # not the rider's fault
