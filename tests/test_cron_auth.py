"""The cron endpoints' gate: bearer secret, fail-closed, and `limit` validation."""

from __future__ import annotations

import re

import pytest

from tests.conftest import cron_headers

ENDPOINT = "/api/cron/sync-strava"


def test_missing_and_wrong_bearer_are_401(client, strava):
    assert client.post(ENDPOINT).status_code == 401
    wrong = client.post(ENDPOINT, headers=cron_headers("not-the-secret"))
    assert wrong.status_code == 401
    assert wrong.get_json()["error"]["code"] == "unauthorized"
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    basic = client.post(ENDPOINT, headers={"Authorization": "Basic dGVzdA=="})
    assert basic.status_code == 401
    assert strava.count() == 0


def test_unset_secret_fails_closed_with_503(make_app, strava):
    client = make_app(cron_secret=None).test_client()
    response = client.post(ENDPOINT, headers=cron_headers())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "not_configured"


@pytest.mark.parametrize("raw", ["0", "-1", "501", "abc", "1e9", "", " ", "5.0", "٣"])
def test_bad_limit_in_query_is_400_naming_the_field(client, strava, raw):
    response = client.post(f"{ENDPOINT}?limit={raw}", headers=cron_headers())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == "limit" and "limit" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"limit": "5"},
        {"limit": 0},
        {"limit": 501},
        {"limit": 5.5},
        {"limit": True},
        {"limit": None},
        {"limit": [5]},
    ],
)
def test_bad_limit_in_json_body_is_400(client, strava, body):
    response = client.post(ENDPOINT, json=body, headers=cron_headers())
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "limit"


def test_a_json_body_without_limit_takes_the_default(client, strava):
    response = client.post(ENDPOINT, json={"other": 1}, headers=cron_headers())
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "status"), [("limit=0", 400), ("limit=abc", 400), ("limit=7", 200)]
)
def test_limit_in_a_form_body_is_validated_too(client, strava, form, status):
    response = client.post(
        ENDPOINT,
        data=form,
        headers=cron_headers(),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == status


def test_body_that_is_not_an_object_is_400(client, strava):
    response = client.post(
        ENDPOINT, data="[1]", content_type="application/json", headers=cron_headers()
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"data": "limit=11*", "content_type": "application/x-www-form-urlencoded"}, "limit"),
        ({"json": {"limit": None}}, "limit"),
        ({"data": "[1]", "content_type": "application/json"}, None),
    ],
)
def test_a_bad_body_is_refused_even_with_a_good_limit_in_the_query(client, strava, options, field):
    """The query string's limit wins, but the body is not left unread (a fuzzing find)."""
    response = client.post(f"{ENDPOINT}?limit=5", headers=cron_headers(), **options)
    assert response.status_code == 400
    assert response.get_json()["error"].get("field") == field
    both_good = client.post(f"{ENDPOINT}?limit=2", json={"limit": 3}, headers=cron_headers())
    assert both_good.status_code == 200


def test_good_limits_and_get_for_vercel_cron(client, strava):
    for response in (
        client.post(f"{ENDPOINT}?limit=1", headers=cron_headers()),
        client.post(ENDPOINT, json={"limit": 500}, headers=cron_headers()),
        client.get(ENDPOINT, headers=cron_headers()),
    ):
        assert response.status_code == 200
        body = response.get_json()
        for key in (
            "processed",
            "succeeded",
            "failed",
            "skipped",
            "remaining",
            "done",
            "rate_limited",
            "rate_limit",
            "duration_ms",
            "items",
        ):
            assert key in body
        for key in (
            "usage_15min",
            "limit_15min",
            "usage_daily",
            "limit_daily",
            "read_usage_15min",
            "read_limit_15min",
            "read_usage_daily",
            "read_limit_daily",
            "resets_at",
        ):
            assert key in body["rate_limit"]


def test_unknown_route_is_json_404(client):
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_wrong_method_is_json_405_with_allow(app, client):
    """Every route: a method it does not take is a 405 in the JSON error shape whose
    `Allow` header (RFC 9110) names exactly the methods the path takes."""
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)  # any path variable
        methods = {m for r in app.url_map.iter_rules() if r.rule == rule.rule for m in r.methods}
        wrong = next(m for m in ("PATCH", "PUT", "DELETE", "POST", "GET") if m not in methods)
        response = client.open(path, method=wrong)
        assert response.status_code == 405, (path, wrong)
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert response.content_type == "application/json"
        allow = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allow == methods, (path, allow, methods)
        checked += 1
    assert checked >= 16


def test_health_needs_no_auth_and_reveals_nothing(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}
