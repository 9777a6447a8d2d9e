"""Operator alerts to ALERT_WEBHOOK_URL, against a fake receiver served on loopback:
what opens an alert, once per kind and subject until it clears (and once more when it
does), a daily digest while anything is open, every receiver's JSON, never a token, and
never a call held up by a slow receiver. The decisions are tested without I/O too."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

import models
from services import alerts
from services.alert_messages import Message, receiver_format, request_for
from services.webhooks import Health
from tests.alert_receiver import serve_receiver
from tests.conftest import API_URL, CLIENT_SECRET, CRON_SECRET, OAUTH_URL, cron_headers
from tests.factories import connect_rider, execute, query, stored_tokens

NOW = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
SYNC = "/api/cron/sync-strava"
LIST = "/athlete/activities"


# --- pure: the receiver's JSON ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "slack"),
        ("https://discord.com/api/webhooks/123/abc", "discord"),
        ("https://discordapp.com/api/webhooks/123/abc", "discord"),
        ("http://127.0.0.1:9/api/webhooks/1/x", "discord"),  # a relay with Discord's path
        ("http://127.0.0.1:9/services/T/B/x", "slack"),
        ("https://ntfy.sh/club-alerts", "ntfy"),
        ("https://ntfy.example.org/club", "ntfy"),
        ("https://alerts.example.org/hook", "generic"),
    ],
)
def test_the_receiver_is_known_by_its_url(url, fmt):
    assert receiver_format(url) == fmt
    assert receiver_format(url, "generic") == "generic"  # the setting wins


def test_each_receiver_gets_its_json():
    message = Message("needs_reauth", ("rider:3",), "Anna B. (rider 3) must reconnect", ("Ask",))
    assert request_for("slack", "https://hooks.slack.com/services/x", message) == (
        "https://hooks.slack.com/services/x",
        {"text": "Anna B. (rider 3) must reconnect\nAsk"},
    )
    assert request_for("discord", "https://discord.com/api/webhooks/1/t", message)[1] == {
        "content": "Anna B. (rider 3) must reconnect\nAsk"
    }
    assert request_for("ntfy", "https://ntfy.sh/club-alerts", message) == (
        "https://ntfy.sh/",
        {"topic": "club-alerts", "title": "Anna B. (rider 3) must reconnect", "message": "Ask"},
    )
    assert request_for("generic", "https://x.example/hook", message)[1] == {
        "text": "Anna B. (rider 3) must reconnect\nAsk",
        "kind": "needs_reauth",
        "subject": "rider:3",
    }
    long = Message("stuck", ("a",), "t", ("x" * 5000,))
    assert (
        len(request_for("discord", "https://discord.com/api/webhooks/1/t", long)[1]["content"])
        < 2000
    )


# --- pure: what is wrong ---------------------------------------------------------------


def facts(**change: Any) -> alerts.Facts:
    values: dict[str, Any] = {
        "runs": [],
        "reconnect": [],
        "webhooks": Health(True, "events arriving"),
        "day_left": 500,
        "reserve": 10,
        "stuck": [],
        "dashboard": "https://sync.club.example/admin",
    }
    return alerts.Facts(**{**values, **change})


def run(kind: str, **change: Any) -> dict[str, Any]:
    return {"kind": kind, "finished_at": NOW, "processed": 3, "succeeded": 0, "failed": 3,
            "error_summary": "strava_unavailable", **change}  # fmt: skip


def test_nothing_wrong_is_no_alert():
    assert alerts.conditions(facts(), NOW, []) == []


def test_a_failed_run_is_one_alert_per_kind():
    found = alerts.conditions(
        facts(runs=[run("sync-strava"), run("discover", succeeded=2, failed=1),
                    run("enrich", processed=None, error_summary="ProgrammingError"),
                    run("events", finished_at=None), run("weather", error_summary="needs_reauth")]),
        NOW, [],
    )  # fmt: skip
    assert [(c.kind, c.subject) for c in found] == [
        ("run_failed", "sync-strava"),
        ("run_failed", "enrich"),
    ]
    assert "3 of 3 failed" in found[0].title and "strava_unavailable" in found[0].detail
    assert "ProgrammingError" in found[1].title
    assert "https://sync.club.example/admin" in found[0].detail


def test_riders_who_must_reconnect_are_named_with_the_step():
    [c] = alerts.conditions(facts(reconnect=[{"rider_id": 7, "name": "Anna B."}]), NOW, [])
    assert (c.kind, c.subject) == ("needs_reauth", "rider:7")
    assert c.title == "Anna B. (rider 7) must reconnect Strava"
    assert "press Reconnect Strava" in c.detail
    [nameless] = alerts.conditions(facts(reconnect=[{"rider_id": 8, "name": ""}]), NOW, [])
    assert nameless.title == "Rider 8 must reconnect Strava"


@pytest.mark.parametrize("state", ["silent", "missing", "unconfirmed"])
def test_a_silent_subscription_is_an_alert(state):
    [c] = alerts.conditions(facts(webhooks=Health(False, "no event for 13 h", state)), NOW, [])
    assert c.kind == "webhooks_silent" and "no event for 13 h" in c.detail
    for quiet in ("none", "waiting_for_first_event", "healthy"):
        assert not alerts.conditions(facts(webhooks=Health(False, "x", quiet)), NOW, [])


def test_the_days_budget_spent_early_opens_and_stays_until_the_day_ends():
    spent = facts(day_left=10, reserve=10)
    [c] = alerts.conditions(spent, NOW, [])
    assert (c.kind, c.subject) == ("budget_spent_early", "2026-12-06") and "10:30" in c.title
    late = NOW.replace(hour=21)
    assert alerts.conditions(spent, late, []) == []  # midnight is near: no alert
    assert alerts.conditions(spent, late, [("budget_spent_early", "2026-12-06")])  # stays
    assert not alerts.conditions(facts(day_left=11, reserve=10), NOW, [])


def test_stuck_things_are_alerts_but_a_rate_limit_block_is_not():
    stuck = [
        {"kind": "sync_overdue", "rider_id": 4, "rider_name": "Ben C.",
         "warning": "Rider 4 has been due for sync for 2 h 0 min.", "action": "The next..."},
        {"kind": "race_stalled", "rider_id": 4, "rider_name": "Ben C.", "activity_id": 99,
         "warning": "Race 99 waits.", "action": "The next enrich call takes it."},
        {"kind": "run_unfinished", "run_id": 12, "warning": "died", "action": "Nothing."},
        {"kind": "rate_limit_block", "warning": "paused", "action": "wait"},
    ]  # fmt: skip
    found = alerts.conditions(facts(stuck=stuck), NOW, [])
    assert [(c.kind, c.subject) for c in found] == [
        ("stuck", "sync_overdue:4"),
        ("stuck", "race_stalled:99"),
        ("stuck", "run_unfinished:12"),
    ]
    assert found[0].title.startswith("Ben C. (rider 4): Rider 4 has been due")


def stored(id: int, kind: str, subject: str, **change: Any) -> models.alerts.StoredAlert:
    values: dict[str, Any] = {
        "id": id, "kind": kind, "subject": subject, "title": f"{subject} title",
        "detail": "do this", "opened_at": NOW, "sent_at": None, "cleared_at": None,
        "clear_sent_at": None, "attempts": 0,
    }  # fmt: skip
    return models.alerts.StoredAlert(**{**values, **change})


def test_messages_group_a_kind_and_say_cleared():
    pending = [
        stored(1, "needs_reauth", "rider:1"),
        stored(2, "needs_reauth", "rider:2"),
        stored(3, "run_failed", "enrich", sent_at=NOW, cleared_at=NOW),
    ]
    grouped = {m.kind: m for m in alerts.messages(pending)}
    assert grouped["needs_reauth"].title == "2 riders must reconnect Strava"
    assert grouped["needs_reauth"].lines == ("- rider:1 title", "- rider:2 title", "do this")
    assert grouped["needs_reauth"].alert_ids == (1, 2)
    assert grouped["run_failed_cleared"].title == "Cleared: enrich title"
    assert grouped["run_failed_cleared"].cleared


def test_a_digest_comes_a_day_after_while_anything_is_open():
    open_ = [stored(1, "stuck", "a", sent_at=NOW), stored(2, "stuck", "b")]
    assert alerts.digest(open_, None, NOW + timedelta(hours=23)) is None
    daily = alerts.digest(open_, None, NOW + timedelta(hours=24))
    assert daily is not None and daily.title == "Daily digest: 1 alert still open"
    assert alerts.digest(open_, NOW + timedelta(hours=24), NOW + timedelta(hours=30)) is None
    assert alerts.digest(open_, NOW + timedelta(hours=24), NOW + timedelta(hours=48))
    assert alerts.digest([], None, NOW + timedelta(days=9)) is None


# --- against the fake receiver on loopback ---------------------------------------------


@pytest.fixture
def receiver():
    with serve_receiver() as served:
        yield served


@pytest.fixture
def strava(fake, receiver):
    """The fake Strava at Strava's URLs (as conftest's), the receiver reached for real."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        rsps.add_passthru(receiver.url)
        yield fake


def alert_app(make_app, receiver, path="/hook", **settings):
    return make_app(alert_webhook_url=receiver.url + path, **settings)


def cron(client, path=SYNC):
    response = client.post(path, headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def next_turn(database):
    """As if EVALUATE_EVERY had passed since the last evaluation."""
    execute(database, "update alert_checks set checked_at = now() - interval '6 minutes'")


def test_a_failing_run_alerts_once_and_clears_once(make_app, receiver, strava, database):
    client = alert_app(make_app, receiver).test_client()
    riders = [connect_rider(database, strava, 9100 + n, activities=2) for n in range(2)]
    # Two calls' listings fail (each listing is tried three times), then Strava answers.
    strava.fail_next(12, status=500, path_contains=LIST)
    failed = cron(client)
    assert failed["failed"] == 2 and failed["succeeded"] == 0
    [message] = receiver.bodies()
    assert message["kind"] == "run_failed" and message["subject"] == "sync-strava"
    assert "The last sync-strava call failed: 2 of 2 failed" in message["text"]
    # Failing again (the riders' backoff over): the same alert, not sent again.
    execute(database, "update strava_connections set next_attempt_at = null")
    assert cron(client)["failed"] == 2
    next_turn(database)
    cron(client, "/api/cron/discover")
    assert len(receiver.bodies()) == 1
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()["alerts"]
    assert status["configured"] is True and status["format"] == "generic"
    assert [(a["kind"], a["sent"]) for a in status["open"]] == [("run_failed", True)]
    assert receiver.url not in str(status)
    # Strava answers again: the next run succeeds, and the alert clears, once.
    execute(database, "update strava_connections set next_attempt_at = null, next_poll_at = null")
    assert cron(client)["succeeded"] == len(riders)
    next_turn(database)
    cron(client, "/api/cron/discover")
    assert [b["kind"] for b in receiver.bodies()] == ["run_failed", "run_failed_cleared"]
    assert receiver.bodies()[1]["text"].startswith("Cleared: The last sync-strava call failed")
    next_turn(database)
    cron(client, "/api/cron/discover")
    assert len(receiver.bodies()) == 2


def test_riders_who_must_reconnect_are_named_in_one_message(make_app, receiver, strava, database):
    client = alert_app(make_app, receiver, "/api/webhooks/1/token").test_client()
    anna = connect_rider(database, strava, 9201, name="Anna B.")
    ben = connect_rider(database, strava, 9202, name="Ben C.")
    execute(
        database,
        "update strava_connections set status = 'needs_reauth' where rider_id in (%s, %s)",
        anna, ben,
    )  # fmt: skip
    cron(client)
    [message] = receiver.bodies()  # Discord's shape
    assert set(message) == {"content"}
    text = message["content"]
    assert text.startswith("2 riders must reconnect Strava")
    assert f"Anna B. (rider {anna}) must reconnect Strava" in text
    assert f"Ben C. (rider {ben}) must reconnect Strava" in text
    assert "press Reconnect Strava" in text


def test_an_alert_never_carries_a_token_or_a_secret(make_app, receiver, strava, database):
    client = alert_app(
        make_app, receiver, strava_webhook_verify_token="verify-3b9e1c-secret"
    ).test_client()
    rider = connect_rider(database, strava, 9301, activities=2, name="Chloé D.")
    tokens = stored_tokens(database, rider)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    strava.fail_next(100, status=500, path_contains=LIST)
    connect_rider(database, strava, 9302, activities=2)
    cron(client)
    sent = receiver.texts()
    assert "Chloé D." in sent
    sealed = query(database, "select access_token, refresh_token from strava_connections")
    for secret in (
        tokens["access_token"],
        tokens["refresh_token"],
        CRON_SECRET,
        CLIENT_SECRET,
        "verify-3b9e1c-secret",
        "enc1:",
        *[r["access_token"] for r in sealed],
    ):
        assert secret not in sent  # fmt: skip


def test_a_slow_receiver_never_holds_a_call(make_app, receiver, strava, database, caplog):
    client = alert_app(make_app, receiver).test_client()
    connect_rider(database, strava, 9401, activities=1)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    receiver.hold()  # it answers only once the test has looked
    answer = cron(client)
    # The call answered while its delivery was still held: bounded by DELIVERY_BUDGET_S
    # (each request's timeout is what is left of it), never by the receiver.
    assert receiver.bodies() == [] and receiver.held(1)
    assert answer["processed"] == 0
    # What it could not deliver waits, unsent.
    unsent = query(database, "select kind, sent_at, attempts from operator_alerts")
    assert unsent == [{"kind": "needs_reauth", "sent_at": None, "attempts": 1}]
    assert receiver.url not in caplog.text  # the webhook URL is a secret: never logged
    # The receiver answers again: the next evaluation delivers it.
    receiver.release()
    next_turn(database)
    cron(client)
    assert any(b["kind"] == "needs_reauth" for b in receiver.bodies())
    assert query(database, "select sent_at is not null as sent from operator_alerts") == [
        {"sent": True}
    ]


def test_a_failing_receiver_is_retried_later(make_app, receiver, strava, database):
    client = alert_app(make_app, receiver, "/services/T/B/x").test_client()  # Slack's path
    connect_rider(database, strava, 9501)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    receiver.status = 500
    cron(client)
    assert len(receiver.bodies()) == 1  # tried once
    receiver.status = 200
    next_turn(database)
    cron(client)
    assert len(receiver.bodies()) == 2 and set(receiver.bodies()[1]) == {"text"}
    next_turn(database)
    cron(client)
    assert len(receiver.bodies()) == 2  # delivered: not again


def test_ntfy_gets_its_json_at_the_server_root(make_app, receiver, strava, database):
    client = alert_app(make_app, receiver, "/club-alerts", alert_webhook_format="ntfy")
    connect_rider(database, strava, 9601, name="Dev E.")
    execute(database, "update strava_connections set status = 'needs_reauth'")
    cron(client.test_client())
    [received] = receiver.received
    assert received.path == "/" and received.content_type == "application/json"
    assert received.body["topic"] == "club-alerts"
    assert received.body["title"].startswith("Dev E. (rider ")
    assert "press Reconnect Strava" in received.body["message"]


def test_once_a_day_a_digest_while_anything_stays_open(make_app, receiver, strava, database):
    app = alert_app(make_app, receiver)
    connect_rider(database, strava, 9701, name="Eve F.")
    execute(database, "update strava_connections set status = 'needs_reauth'")
    runtime = app.extensions["strava_sync"]
    assert alerts.evaluate(runtime).sent[0].kind == "needs_reauth"
    for hours, expect in ((6, []), (25, ["digest"]), (30, []), (50, ["digest"])):
        later = dataclasses.replace(
            runtime, clock=lambda h=hours: datetime.now(UTC) + timedelta(hours=h)
        )
        assert [m.kind for m in alerts.evaluate(later, force=True).sent] == expect, hours
    digests = [b for b in receiver.bodies() if b["kind"] == "digest"]
    assert len(digests) == 2
    assert digests[0]["text"].startswith("Daily digest: 1 alert still open")
    assert "Eve F." in digests[0]["text"]


def test_no_receiver_no_evaluation(client, strava, database):
    connect_rider(database, strava, 9801)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    cron(client)
    assert query(database, "select count(*) as n from operator_alerts") == [{"n": 0}]
    assert query(database, "select checked_at from alert_checks where checked_at is not null") == []
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()["alerts"]
    assert status == {"configured": False, "format": None, "open": []}


def test_one_evaluation_in_five_minutes_whatever_the_calls(make_app, receiver, strava, database):
    client = alert_app(make_app, receiver).test_client()
    cron(client)
    first = query(database, "select checked_at from alert_checks")[0]["checked_at"]
    connect_rider(database, strava, 9901)
    execute(database, "update strava_connections set status = 'needs_reauth'")
    cron(client, "/api/cron/discover")
    assert query(database, "select checked_at from alert_checks")[0]["checked_at"] == first
    assert receiver.bodies() == []  # not this call's turn


def test_an_alert_that_clears_before_it_was_sent_is_never_sent(
    make_app, receiver, strava, database
):
    """Opened while the receiver was down, cleared before it came back: neither its
    opening nor a "cleared" is sent (nobody was told it had started)."""
    client = alert_app(make_app, receiver).test_client()
    rider = connect_rider(database, strava, 9951, name="Fay G.")
    execute(database, "update strava_connections set status = 'needs_reauth'")
    receiver.status = 503
    cron(client)
    assert query(database, "select sent_at from operator_alerts") == [{"sent_at": None}]
    execute(database, "update strava_connections set status = 'active' where rider_id = %s", rider)
    receiver.status = 200
    next_turn(database)
    cron(client, "/api/cron/discover")
    assert [b.get("kind") for b in receiver.bodies()] == ["needs_reauth"]  # the failed try only
    assert query(database, "select cleared_at is not null as cleared from operator_alerts") == [
        {"cleared": True}
    ]
