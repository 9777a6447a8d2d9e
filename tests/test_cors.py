"""CORS for the rider endpoints (the club's site on its own origin calls them), never for
the cron and admin endpoints; ALLOWED_ORIGINS parsing; the pages' headers."""

from __future__ import annotations

import uuid

import pytest

from config import ConfigError, load_settings
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute

pytest_plugins = ["tests.jwks_fixture"]

CLUB = "https://club.example"
OTHER = "https://evil.example"
RIDER_PATHS = [
    ("/api/riders/me/sync", "POST"),
    ("/api/riders/me/sync", "GET"),
    ("/api/strava/connect", "POST"),
    ("/api/strava/disconnect", "POST"),
]
CLOSED_PATHS = [
    ("/api/cron/sync-strava", "POST"),
    ("/api/admin/status", "GET"),
    ("/api/admin/riders/1/reset", "POST"),
    ("/api/health", "GET"),
    ("/api/strava/callback", "GET"),
]
CORS_HEADERS = {
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
}


@pytest.fixture
def cors_client(make_app, auth_settings):
    return make_app(**auth_settings, allowed_origins=(CLUB, "http://127.0.0.1:8001")).test_client()


def preflight(client, path, method, origin):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        },
    )


def cors_of(response):
    return {name for name in response.headers.keys() if name in CORS_HEADERS}


@pytest.mark.parametrize(("path", "method"), RIDER_PATHS)
def test_a_listed_origins_preflight_is_answered(cors_client, path, method):
    response = preflight(cors_client, path, method, CLUB)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == CLUB
    assert method in response.headers["Access-Control-Allow-Methods"].split(", ")
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers  # bearer, not cookies
    assert int(response.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(("path", "method"), RIDER_PATHS)
def test_an_unlisted_origin_gets_no_cors_headers(cors_client, path, method):
    response = preflight(cors_client, path, method, OTHER)
    assert cors_of(response) == set()
    assert "Origin" in response.headers["Vary"]
    for origin in (OTHER, "https://club.example.evil.example", "null", CLUB + ":443"):
        answer = cors_client.open(path, method=method, headers={"Origin": origin})
        assert cors_of(answer) == set(), origin


def test_error_answers_carry_cors_headers_for_a_listed_origin(cors_client, web, issuer, database):
    # 401: no token.
    unauthorized = cors_client.post("/api/riders/me/sync", headers={"Origin": CLUB})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["Access-Control-Allow-Origin"] == CLUB
    # 409: a rider without a connection.
    token = issuer.es256(uuid.uuid4())
    refused = cors_client.post(
        "/api/riders/me/sync", headers={"Origin": CLUB, **issuer.headers(token)}
    )
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_connected"
    assert refused.headers["Access-Control-Allow-Origin"] == CLUB
    # 200 then 429 (cooldown), whose Retry-After the widget may read.
    user = uuid.uuid4()
    rider = connect_rider(database, web, 4401, activities=2)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    headers = {"Origin": CLUB, **issuer.headers(issuer.es256(user))}
    assert cors_client.post("/api/riders/me/sync", headers=headers).status_code == 200
    again = cors_client.post("/api/riders/me/sync", headers=headers)
    assert again.status_code == 429 and again.headers["Retry-After"]
    assert again.headers["Access-Control-Allow-Origin"] == CLUB
    assert "Retry-After" in again.headers["Access-Control-Expose-Headers"]
    state = cors_client.get("/api/riders/me/sync", headers=headers)
    assert state.status_code == 200 and state.headers["Access-Control-Allow-Origin"] == CLUB


@pytest.mark.parametrize(("path", "method"), CLOSED_PATHS)
def test_cron_admin_and_others_are_never_opened(cors_client, path, method):
    response = preflight(cors_client, path, method, CLUB)
    assert cors_of(response) == set()
    answer = cors_client.open(path, method=method, headers={"Origin": CLUB, **cron_headers()})
    assert cors_of(answer) == set()


def test_no_allowed_origins_means_no_cors(rider_client):
    response = preflight(rider_client, "/api/riders/me/sync", "POST", CLUB)
    assert cors_of(response) == set()


def test_allowed_origins_are_parsed_strictly():
    settings = load_settings({"ALLOWED_ORIGINS": " https://Club.example , http://127.0.0.1:8001,"})
    assert settings.allowed_origins == ("https://club.example", "http://127.0.0.1:8001")
    assert load_settings({}).allowed_origins == ()
    for bad in ("*", "https://club.example/", "club.example", "https://*.club.example", "null"):
        with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
            load_settings({"ALLOWED_ORIGINS": bad})


def test_the_pages_headers(client):
    widget = client.get("/widget.js")
    assert widget.status_code == 200 and widget.content_type == "text/javascript; charset=utf-8"
    assert b"ClubSync" in widget.data
    assert widget.headers["Cache-Control"] == "public, max-age=300"
    assert widget.headers["Access-Control-Allow-Origin"] == "*"
    assert widget.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert widget.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/widget.css").content_type == "text/css; charset=utf-8"
    page = client.get("/admin")
    assert page.status_code == 200 and page.content_type == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert rule in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    for asset, kind in (("/admin/admin.js", "text/javascript"), ("/admin/admin.css", "text/css")):
        answer = client.get(asset)
        assert answer.status_code == 200 and answer.content_type.startswith(kind)
        assert "Access-Control-Allow-Origin" not in answer.headers
