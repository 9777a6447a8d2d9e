"""Strava's push events, end to end over real HTTP on loopback: the fake Strava served,
the service served, the subscription made through the CLI command (Strava's validation
GET reaching the service), and events delivered by the fake's sender.

Time budgets, and Strava's 2 seconds for an answer, are judged on the service's own
timer, which here stands still: the fake Strava answers at once (or, held back, not at
all), so any time a call spends is this machine's, never the service's. The sender waits
as long as an answer takes on the machine; a service waiting for Strava would not answer
until a hold ends, far later, and that counts as no answer."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config import ConfigError, load_settings
from fake_strava import FakeStrava
from fake_strava.data import make_activities
from fake_strava.push import ANSWER_WITHIN_S
from fake_strava.serve import ServedApp, ServedFake, serve_app
from tests.conftest import CLIENT_SECRET, CRON_SECRET, cron_headers, standing_timer
from tests.factories import connect_rider, execute, query, stored_tokens, unlimited_fake
from tests.served_service import HOLD_LIMIT_S, Held

VERIFY = "verify-token-3b9e1c"
HOOK = "/api/strava/webhook"


@pytest.fixture
def world(make_app, database):
    """The fake Strava and the service, each served on loopback, subscribed."""
    fake = unlimited_fake()
    held = Held(path_contains="/activities/")  # Strava's answers to a detail, held back
    with ServedFake(*serve_app(held.around(fake.wsgi_app), name="fake-strava")) as strava:
        holder: dict[str, Any] = {}

        def wsgi(environ, start_response):  # the app exists once the port is known
            return holder["app"].wsgi_app(environ, start_response)

        server, thread = serve_app(wsgi, name="service")
        served = ServedApp(server, thread)
        app = make_app(
            strava_api_url=strava.api_url,
            strava_oauth_url=strava.oauth_url,
            strava_webhook_verify_token=VERIFY,
            public_base_url=served.url,
            timer=standing_timer,
        )
        fake.push.timer = standing_timer
        fake.push.transport, fake.push.validator = patient_transport, patient_validator
        holder["app"] = app
        try:
            yield World(fake, app, served.url, database, held)
        finally:
            held.release()
            served.stop()


def patient_transport(url: str, event: dict[str, Any]) -> int:
    """The sender's POST, waiting for the answer up to half the longest hold."""
    request = urllib.request.Request(
        url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HOLD_LIMIT_S / 2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:  # no answer
        return 599


def patient_validator(url: str) -> tuple[int, Any]:
    """Strava's validation GET, waiting as long as the POSTs."""
    try:
        with urllib.request.urlopen(url, timeout=HOLD_LIMIT_S / 2) as answer:
            return int(answer.status), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return int(error.code), None
    except (OSError, ValueError):
        return 599, None


class World:
    def __init__(self, fake: FakeStrava, app: Any, url: str, database: str, held: Held) -> None:
        self.fake, self.app, self.url, self.database = fake, app, url, database
        self.strava_held = held
        self.client = app.test_client()

    def cli(self, action: str) -> Any:
        result = self.app.test_cli_runner().invoke(args=["strava-webhook", action])
        return result

    def subscribe(self) -> int:
        result = self.cli("create")
        assert result.exit_code == 0, result.output
        return int(
            query(self.database, "select subscription_id from strava_push_subscription")[0][
                "subscription_id"
            ]
        )

    def rider(self, athlete_id: int, **options: Any) -> int:
        rider_id = connect_rider(self.database, self.fake, athlete_id, **options)
        return rider_id

    def cron(self, kind: str, **params: Any) -> dict[str, Any]:
        response = self.client.post(
            f"/api/cron/{kind}", query_string=params, headers=cron_headers()
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def drain(self) -> None:
        """Deliver what the fake queued, then let the events cron take what is left."""
        self.fake.push.flush()
        while not self.cron("events")["done"]:
            pass

    def rows(self, rider_id: int) -> dict[int, dict[str, Any]]:
        return {
            r["strava_id"]: r
            for r in query(
                self.database,
                "select strava_id, name, sport_type, private, enrichment_status, description"
                " from activities where rider_id = %s",
                rider_id,
            )
        }

    def visible(self, athlete_id: int, *, read_all: bool = True) -> dict[int, dict[str, Any]]:
        return {
            a["id"]: a
            for a in self.fake.activities_of(athlete_id)
            if read_all or not a.get("private")
        }

    def post_event(self, **event: Any) -> tuple[int, dict[str, Any], float]:
        request = urllib.request.Request(
            self.url + HOOK,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), time.monotonic() - started


def event(subscription_id: int, object_id: int, owner: int, aspect: str = "create", **more):
    return {
        "object_type": more.pop("object_type", "activity"),
        "object_id": object_id,
        "aspect_type": aspect,
        "owner_id": owner,
        "subscription_id": subscription_id,
        "event_time": more.pop("event_time", int(time.time())),
        "updates": more.pop("updates", {}),
    }


def upload(fake: FakeStrava, athlete_id: int, *, first_id: int, n: int = 1, **options: Any):
    now = datetime.now(UTC)
    activities = make_activities(
        athlete_id,
        n,
        start=options.pop("start", now - timedelta(hours=3)),
        end=options.pop("end", now - timedelta(hours=1)),
        first_id=first_id,
        seed=first_id,
        **options,
    )
    fake.add_activities(athlete_id, activities)
    return activities


# --- validation ------------------------------------------------------------------------


def test_validation_echoes_the_challenge_only_for_the_verify_token(make_app):
    client = make_app(strava_webhook_verify_token=VERIFY).test_client()
    right = {"hub.mode": "subscribe", "hub.challenge": "15f7d1a91c1f40", "hub.verify_token": VERIFY}
    answer = client.get(HOOK, query_string=right)
    assert answer.status_code == 200
    assert answer.get_json() == {"hub.challenge": "15f7d1a91c1f40"}
    wrong = {**right, "hub.verify_token": VERIFY + "x"}
    assert client.get(HOOK, query_string=wrong).status_code == 403
    missing = {k: v for k, v in right.items() if k != "hub.verify_token"}
    assert client.get(HOOK, query_string=missing).status_code == 403
    assert client.get(HOOK, query_string={**right, "hub.mode": "unsubscribe"}).status_code == 403
    unset = make_app().test_client().get(HOOK, query_string=right)
    assert unset.status_code == 503
    assert unset.get_json()["error"]["code"] == "not_configured"
    assert VERIFY not in unset.get_data(as_text=True)


def test_create_show_delete_the_subscription_through_strava(world):
    subscription_id = world.subscribe()
    assert world.fake.push.subscription["callback_url"] == world.url + HOOK
    shown = world.cli("show")
    assert shown.exit_code == 0
    assert f'"subscription_id": {subscription_id}' in shown.output
    # No event yet: not trusted until one arrives (polling keeps its cadence).
    assert '"healthy": false' in shown.output
    assert '"state": "waiting_for_first_event"' in shown.output
    again = world.cli("create")  # Strava has it already, for this callback: adopted
    assert again.exit_code == 0 and '"adopted": true' in again.output
    deleted = world.cli("delete")
    assert deleted.exit_code == 0
    assert world.fake.push.subscription is None
    assert query(world.database, "select * from strava_push_subscription") == []
    for output in (shown.output, again.output, deleted.output):
        assert CLIENT_SECRET not in output and VERIFY not in output


def test_the_status_says_a_new_subscription_waits_for_its_first_event(world):
    subscription_id = world.subscribe()
    hooks = world.client.get("/api/admin/status", headers=cron_headers()).get_json()["webhooks"]
    assert hooks["healthy"] is False and hooks["state"] == "waiting_for_first_event"
    assert hooks["last_event_at"] is None
    rider = world.rider(810)
    status, _, _ = world.post_event(**event(subscription_id, 1, 810, "update"))
    assert status == 200 and rider
    hooks = world.client.get("/api/admin/status", headers=cron_headers()).get_json()["webhooks"]
    assert hooks["healthy"] is True and hooks["state"] == "healthy"


def test_create_fails_clearly_when_the_callback_does_not_validate(world):
    runtime = world.app.extensions["strava_sync"]
    wrong = replace(runtime.settings, public_base_url=world.url + "/nowhere")
    world.app.extensions["strava_sync"] = replace(runtime, settings=wrong)
    result = world.cli("create")
    assert result.exit_code != 0
    assert "GET to callback URL does not return 200" in result.output
    assert query(world.database, "select * from strava_push_subscription") == []


# --- events end to end -----------------------------------------------------------------


def test_create_update_delete_each_end_with_the_database_equal_to_strava(world):
    world.subscribe()
    rider = world.rider(801, scope="read,activity:read")  # no read_all
    [ride] = upload(world.fake, 801, first_id=90_001)
    world.fake.push.flush()
    assert world.fake.push.log.statuses == [200]
    assert world.rows(rider)[90_001]["name"] == ride["name"]  # processed inside the POST

    world.fake.update_activity(90_001, name="Renamed by the rider")
    world.fake.update_activity(90_001, sport_type="GravelRide")
    world.drain()
    row = world.rows(rider)[90_001]
    assert (row["name"], row["sport_type"]) == ("Renamed by the rider", "GravelRide")

    world.fake.update_activity(90_001, private=True)  # hidden from this grant: a delete
    world.drain()
    assert 90_001 not in world.rows(rider)

    upload(world.fake, 801, first_id=90_002)
    world.drain()
    assert 90_002 in world.rows(rider)
    world.fake.delete_activity(90_002)
    world.drain()
    assert world.rows(rider) == {}
    statuses = query(world.database, "select distinct status from strava_webhook_events")
    assert statuses == [{"status": "done"}]


def test_a_race_arriving_by_event_is_detailed_in_the_same_request(world):
    world.subscribe()
    rider = world.rider(802)
    upload(world.fake, 802, first_id=91_001, race_fraction=1.0)
    world.fake.reset_log()
    world.fake.push.flush()
    row = world.rows(rider)[91_001]
    assert row["enrichment_status"] == "done"
    assert world.fake.count(path_contains="/activities/91001") == 1
    assert world.cron("enrich")["processed"] == 0


def test_a_manual_activity_dated_a_month_back_arrives_through_its_event(world):
    world.subscribe()
    rider = world.rider(803, activities=3)
    assert world.cron("sync-strava")["succeeded"] == 1
    month_ago = datetime.now(UTC) - timedelta(days=30)
    upload(world.fake, 803, first_id=92_001, start=month_ago, end=month_ago + timedelta(hours=1))
    world.drain()
    assert 92_001 in world.rows(rider)
    assert world.rows(rider).keys() == world.visible(803).keys()


def test_forged_delete_and_deauthorization_change_nothing(world):
    rider = world.rider(804, activities=4)  # uploaded before the subscription: no events
    subscription_id = world.subscribe()
    world.cron("sync-strava")
    before = world.rows(rider)
    target = next(iter(before))
    status, body, _ = world.post_event(**event(subscription_id, target, 804, "delete"))
    assert status == 200 and body["stored"] is True
    forged = event(
        subscription_id,
        804,
        804,
        "update",
        object_type="athlete",
        updates={"authorized": "false"},
    )
    status, body, _ = world.post_event(**forged)
    assert status == 200 and body["stored"] is True
    world.drain()
    assert world.rows(rider) == before
    connection = query(world.database, "select status, access_token from strava_connections")[0]
    assert connection["status"] == "active" and connection["access_token"]
    outcomes = {
        r["outcome"] for r in query(world.database, "select outcome from strava_webhook_events")
    }
    assert outcomes == {"unchanged", "still_authorized"}


def test_a_real_deauthorization_deletes_the_riders_strava_data(world):
    world.subscribe()
    rider = world.rider(805, activities=6)
    world.cron("sync-strava")
    assert len(world.rows(rider)) == 6
    world.fake.revoke_athlete(805)  # the rider revokes at Strava's site
    world.drain()
    assert world.rows(rider) == {}
    connection = query(
        world.database,
        "select status, access_token, refresh_token from strava_connections where rider_id = %s",
        rider,
    )[0]
    assert connection == {"status": "revoked", "access_token": None, "refresh_token": None}
    assert query(world.database, "select count(*) as n from riders")[0]["n"] == 1


def test_duplicates_and_reordered_deliveries_converge(world):
    subscription_id = world.subscribe()
    rider = world.rider(806)
    world.fake.push.duplicate = 1.0  # every event delivered twice
    first, second, third = (a["id"] for a in upload(world.fake, 806, first_id=93_001, n=3))
    world.fake.update_activity(second, name="Morning loop, edited")
    world.fake.delete_activity(third)
    world.drain()
    assert world.rows(rider).keys() == world.visible(806).keys() == {first, second}
    assert world.rows(rider)[second]["name"] == "Morning loop, edited"
    stored = query(world.database, "select count(*) as n from strava_webhook_events")[0]["n"]
    assert stored == 5  # three creates, one update, one delete: each stored once
    ignored = query(
        world.database, "select reason, count from strava_webhook_ignored order by reason"
    )
    assert ignored == [{"reason": "duplicate", "count": 5}]

    # Update before create, delete before create: whatever the order, Strava decides.
    world.fake.push.duplicate = 0.0
    [late] = upload(world.fake, 806, first_id=193_010)
    world.fake.push.flush()  # (created and processed)
    world.fake.update_activity(late["id"], name="Renamed")
    world.fake.push.discard()  # lose them; deliver by hand in the wrong order
    t = int(time.time())
    for body in (
        event(subscription_id, late["id"], 806, "update", updates={"title": "x"}, event_time=t + 2),
        event(subscription_id, late["id"], 806, "create", event_time=t + 1),
        event(subscription_id, third, 806, "delete", event_time=t + 4),
        event(subscription_id, third, 806, "create", event_time=t + 3),
    ):
        assert world.post_event(**body)[0] == 200
    world.drain()
    assert world.rows(rider)[late["id"]]["name"] == "Renamed"
    assert world.rows(rider).keys() == world.visible(806).keys()


def test_malformed_unknown_subscription_and_unknown_athlete_are_ignored(world):
    subscription_id = world.subscribe()
    world.rider(807)
    cases = [
        ({"object_type": "activity"}, "malformed"),
        (event(subscription_id, 1, 807, "rename"), "malformed"),
        (event(subscription_id + 1, 1, 807), "unknown_subscription"),
        (event(subscription_id, 1, 999_999), "unknown_athlete"),
    ]
    for body, reason in cases:
        status, answer, _ = world.post_event(**body)
        assert status == 200 and answer == {"stored": False, "ignored": reason}
    response = world.client.post(HOOK, data="not json", content_type="text/plain")
    assert response.status_code == 200 and response.get_json()["ignored"] == "malformed"
    assert query(world.database, "select count(*) as n from strava_webhook_events")[0]["n"] == 0
    status = world.client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert status["webhooks"]["events_24h"]["ignored"] == {
        "malformed": 3,
        "unknown_athlete": 1,
        "unknown_subscription": 1,
    }


def test_a_list_or_an_object_where_a_word_belongs_is_ignored_not_a_500(world):
    """object_type or aspect_type as a list or an object made the callback answer 500."""
    subscription_id = world.subscribe()
    world.rider(809)
    good = event(subscription_id, 1, 809)
    for field in ("object_type", "aspect_type"):
        for value in (["activity"], {"activity": 1}, [], {}):
            response = world.client.post(HOOK, json={**good, field: value})
            assert response.status_code == 200, (field, value)
            assert response.get_json() == {"stored": False, "ignored": "malformed"}
    assert query(world.database, "select count(*) as n from strava_webhook_events")[0]["n"] == 0


def test_an_event_is_answered_in_time_while_strava_is_slow(world):
    """Strava's answer to the service's look at the activity is held back until the
    delivery is answered: the service answers without it, at the end of its inline
    budget, whose greatest setting is inside Strava's 2 seconds."""
    with pytest.raises(ConfigError, match="WEBHOOK_INLINE_BUDGET_S"):
        load_settings({"WEBHOOK_INLINE_BUDGET_S": str(ANSWER_WITHIN_S)})
    world.subscribe()
    rider = world.rider(808)
    upload(world.fake, 808, first_id=94_001)
    world.strava_held.hold()
    world.fake.push.flush()
    assert world.strava_held.waiting == 1  # the service's look at Strava, unanswered
    assert world.fake.push.log.statuses == [200]
    pending = query(world.database, "select status from strava_webhook_events")
    assert pending == [{"status": "pending"}]
    world.strava_held.release()
    world.drain()
    assert 94_001 in world.rows(rider)


def test_an_event_that_cannot_be_stored_answers_5xx_so_strava_retries(world):
    subscription_id = world.subscribe()
    world.rider(809)
    execute(world.database, "alter table strava_webhook_events rename to strava_webhook_events_x")
    try:
        response = world.client.post(HOOK, json=event(subscription_id, 95_001, 809))
        assert response.status_code >= 500
    finally:
        execute(
            world.database, "alter table strava_webhook_events_x rename to strava_webhook_events"
        )


def test_a_thousand_forged_events_for_one_athlete_cost_at_most_the_cap(world):
    subscription_id = world.subscribe()
    world.rider(810)
    cap = world.app.extensions["strava_sync"].settings.webhook_athlete_hourly_cap
    world.fake.reset_log()
    t = int(time.time())
    for i in range(1000):
        body = event(subscription_id, 10_000_000 + i, 810, event_time=t)
        response = world.client.post(HOOK, json=body)
        assert response.status_code == 200
    for _ in range(3):
        world.cron("events")
    api_requests = world.fake.count(path_contains="/api/v3/activities")
    assert 0 < api_requests <= cap
    # Past 200 pending, deliveries are refused (a flood), counted; the rest wait their hour.
    [counts] = query(
        world.database,
        "select count(*) filter (where status = 'pending') as pending, count(*) as stored,"
        " (select sum(count)::int from strava_webhook_ignored where reason = 'flood') as flood"
        " from strava_webhook_events",
    )
    assert counts["pending"] == 200
    assert counts["stored"] + counts["flood"] == 1000


def test_no_secret_in_any_answer_or_log(world, caplog):
    subscription_id = world.subscribe()
    world.rider(811, activities=2)
    with caplog.at_level("DEBUG"):
        world.fake.push.flush()
        world.post_event(**event(subscription_id, 1, 811, "delete"))
        world.drain()
        status = world.client.get("/api/admin/status", headers=cron_headers())
        shown = world.cli("show")
    tokens = stored_tokens(world.database)
    texts = [status.get_data(as_text=True), shown.output, caplog.text]
    for secret in (
        VERIFY,
        CLIENT_SECRET,
        CRON_SECRET,
        tokens["access_token"],
        tokens["refresh_token"],
    ):
        assert all(secret not in text for text in texts)


def test_sync_strava_takes_the_pending_events_of_the_riders_it_syncs(world, make_app):
    subscription_id = world.subscribe()
    rider = world.rider(812, activities=3)
    world.fake.push.discard()  # (the seeding's events)
    world.cron("sync-strava")
    [first, *_] = sorted(world.rows(rider))
    world.fake.update_activity(first, name="Renamed at Strava")
    later = make_app(
        strava_api_url=world.app.extensions["strava_sync"].settings.strava_api_url,
        strava_oauth_url=world.app.extensions["strava_sync"].settings.strava_oauth_url,
        webhook_inline_budget_s=0,  # the POST stores only
        sync_min_interval_s=0,
    ).test_client()
    body = event(
        subscription_id, first, 812, "update", updates={"title": "Renamed at Strava"},
        event_time=int(time.time()) - 120,  # renamed two minutes before the listing
    )  # fmt: skip
    assert later.post(HOOK, json=body).get_json() == {"stored": True}
    execute(world.database, "update strava_connections set next_poll_at = now()")  # its poll
    answer = later.post("/api/cron/sync-strava", headers=cron_headers()).get_json()
    [item] = answer["items"]
    assert item["status"] == "succeeded" and item["events"] == 1
    assert world.rows(rider)[first]["name"] == "Renamed at Strava"
    # The listing's overlap wrote the change after the event: answered without a request.
    assert query(world.database, "select status, outcome from strava_webhook_events") == [
        {"status": "done", "outcome": "covered"}
    ]
    assert answer["strava_requests"] == 1


def test_failed_events_back_off_and_then_fail_with_the_reason(world):
    subscription_id = world.subscribe()
    world.rider(813)
    [ride] = upload(world.fake, 813, first_id=96_001)
    world.fake.push.discard()
    world.fake.fail_next(100, status=500, path_contains=f"/activities/{ride['id']}")
    status, answer, _ = world.post_event(**event(subscription_id, ride["id"], 813))
    assert status == 200 and answer["stored"] and answer["processed"]["status"] == "failed"
    attempts = []
    for _ in range(10):
        [row] = query(
            world.database,
            "select status, attempts, next_attempt_at > received_at as backing_off, last_error,"
            " outcome from strava_webhook_events",
        )
        attempts.append(row["attempts"])
        if row["status"] == "failed":
            break
        assert row["backing_off"] and "strava_unavailable" in row["last_error"]
        execute(world.database, "update strava_webhook_events set next_attempt_at = now()")
        world.cron("events")
    max_attempts = world.app.extensions["strava_sync"].settings.webhook_max_attempts
    assert attempts == list(range(1, max_attempts + 1))
    assert row["status"] == "failed" and row["outcome"].startswith("strava_unavailable")
    assert world.cron("events")["remaining"] == 0  # never retried forever
    status = world.client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert status["webhooks"]["events_24h"]["failed"] == 1
