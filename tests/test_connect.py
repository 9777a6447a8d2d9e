"""Connect Strava end to end with the fake Strava: the authorize URL, the callback (state,
scope, denial, an athlete linked twice) and disconnecting."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from services.connect import (
    ConnectError,
    has_activity_scope,
    make_state,
    read_state,
    return_url,
    state_key,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.factories import connect_rider, execute, query, stored_tokens

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings, rider_app,
# rider_client.
pytest_plugins = ["tests.jwks_fixture"]

PUBLIC = "https://sync.club.example"
RETURN = "https://club.example/profile?tab=strava"
CONNECT, CALLBACK, DISCONNECT = (
    "/api/strava/connect",
    "/api/strava/callback",
    "/api/strava/disconnect",
)


@pytest.fixture
def app_json(make_app, auth_settings):
    """No APP_RETURN_URL: the callback answers JSON."""
    return make_app(**auth_settings, public_base_url=PUBLIC)


@pytest.fixture
def client(app_json):
    return app_json.test_client()


def start(client, issuer, user):
    response = client.post(CONNECT, headers=issuer.headers(issuer.es256(user)))
    assert response.status_code == 200, response.get_data(as_text=True)
    url = response.get_json()["authorize_url"]
    return url, parse_qs(urlsplit(url).query)


def callback(client, state, *, code=None, scope="read,activity:read_all", error=None):
    params = {"state": state, "scope": scope}
    if code:
        params["code"] = code
    if error:
        params["error"] = error
    return client.get(CALLBACK, query_string=params)


def connection(database, athlete_id):
    """The athlete's connection row, its tokens opened (and checked to be stored sealed)."""
    rows = query(database, "select * from strava_connections where athlete_id = %s", athlete_id)
    if not rows:
        return None
    row = rows[0]
    assert row["access_token"].startswith("enc1:test:")
    assert row["refresh_token"].startswith("enc1:test:")
    return {**row, **stored_tokens(database, row["rider_id"])}


def test_connect_end_to_end(client, web, issuer, database):
    user = uuid.uuid4()
    url, params = start(client, issuer, user)
    assert url.startswith("https://www.strava.com/oauth/authorize?")
    assert params["client_id"] == [CLIENT_ID]
    assert params["redirect_uri"] == [f"{PUBLIC}/api/strava/callback"]
    assert params["scope"] == ["read,activity:read_all"]
    assert params["response_type"] == ["code"]
    assert requests.get(url, timeout=5).status_code == 200  # the fake's consent page accepts it
    code = web.add_authorization_code(8001, scope="read,activity:read_all")
    response = callback(client, params["state"][0], code=code)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["connected"] is True and body["athlete_id"] == 8001
    assert body["scope"] == "read,activity:read_all" and body["reconnected"] is False
    assert code not in response.get_data(as_text=True)  # the code is never echoed
    rider = query(database, "select * from riders where auth_user_id = %s", user)[0]
    row = connection(database, 8001)
    assert row["rider_id"] == rider["id"] == body["rider_id"]
    assert row["status"] == "active" and row["scope"] == "read,activity:read_all"
    assert row["refresh_token"] == web.current_refresh_token(8001)
    assert row["history_complete_at"] is None  # marked for discovery
    assert row["athlete_created_at"] == datetime(2015, 3, 14, 9, 26, 53, tzinfo=UTC)
    assert web.count(path_contains="/oauth/token", status=200) == 1
    assert query(database, "select count(*) as n from oauth_states")[0]["n"] == 0


def test_connect_redirects_to_the_app_with_a_flag(make_app, auth_settings, web, issuer, database):
    client = make_app(**auth_settings, app_return_url=RETURN).test_client()
    # Without PUBLIC_BASE_URL the redirect_uri is built from the request's host.
    _, params = start(client, issuer, uuid.uuid4())
    assert params["redirect_uri"] == ["http://localhost/api/strava/callback"]
    code = web.add_authorization_code(8002)
    response = callback(client, params["state"][0], code=code)
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.netloc == "club.example" and parse_qs(target.query) == {
        "tab": ["strava"],
        "strava": ["connected"],
    }
    assert response.headers["Referrer-Policy"] == "no-referrer"
    # Errors go back the same way.
    _, params = start(client, issuer, uuid.uuid4())
    denied = callback(client, params["state"][0], error="access_denied")
    assert denied.status_code == 302
    assert parse_qs(urlsplit(denied.headers["Location"]).query)["reason"] == ["access_denied"]
    _, params = start(client, issuer, uuid.uuid4())
    no_scope = callback(
        client, params["state"][0], code=web.add_authorization_code(8003), scope="read"
    )
    assert parse_qs(urlsplit(no_scope.headers["Location"]).query) == {
        "tab": ["strava"],
        "strava": ["error"],
        "reason": ["missing_scope"],
    }


def test_a_state_works_once(client, web, issuer, database):
    _, params = start(client, issuer, uuid.uuid4())
    state = params["state"][0]
    assert callback(client, state, code=web.add_authorization_code(8010)).status_code == 200
    again = callback(client, state, code=web.add_authorization_code(8011))
    assert again.status_code == 400
    assert again.get_json()["error"]["code"] == "state_used"
    assert connection(database, 8011) is None
    assert web.count(path_contains="/oauth/token") == 1  # the reused state exchanged nothing


def test_an_expired_or_forged_state_is_refused(client, web, issuer, database):
    _, params = start(client, issuer, uuid.uuid4())
    execute(database, "update oauth_states set expires_at = now() - interval '1 second'")
    expired = callback(client, params["state"][0], code=web.add_authorization_code(8020))
    assert expired.status_code == 400
    assert expired.get_json()["error"]["code"] == "state_expired"
    forged_key = state_key("not-the-client-secret")
    forged = make_state(
        forged_key, auth_user_id=uuid.uuid4(), nonce=uuid.uuid4(), now=datetime.now(UTC)
    )
    for bad in (forged, "", "garbage", params["state"][0] + "x"):
        response = callback(client, bad, code=web.add_authorization_code(8021))
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] in ("invalid_state", "state_expired")
    assert web.count(path_contains="/oauth/token") == 0
    assert query(database, "select count(*) as n from strava_connections")[0]["n"] == 0


def test_state_token_rules():
    key = state_key(CLIENT_SECRET)
    user, nonce, now = uuid.uuid4(), uuid.uuid4(), datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    state = make_state(key, auth_user_id=user, nonce=nonce, now=now)
    assert read_state(key, state, now=now + timedelta(minutes=9)) == (user, nonce)
    with pytest.raises(ConnectError) as late:
        read_state(key, state, now=now + timedelta(minutes=10))
    assert late.value.code == "state_expired"
    with pytest.raises(ConnectError) as wrong:
        read_state(state_key("other"), state, now=now)
    assert wrong.value.code == "invalid_state"
    assert CLIENT_SECRET.encode() not in key  # the secret itself never signs


def test_scope_rules_and_return_url():
    assert has_activity_scope("read,activity:read_all")
    assert has_activity_scope("read,activity:read")
    assert has_activity_scope("activity:read_all , read")
    assert not has_activity_scope("read")
    assert not has_activity_scope("read,profile:read_all")
    assert not has_activity_scope(None)
    assert return_url("https://a.example/p?x=1&strava=old", strava="connected") == (
        "https://a.example/p?x=1&strava=connected"
    )


def test_missing_activity_scope_is_refused_clearly(client, web, issuer, database):
    _, params = start(client, issuer, uuid.uuid4())
    response = callback(
        client,
        params["state"][0],
        code=web.add_authorization_code(8030, scope="read"),
        scope="read",
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "missing_scope"
    assert "activities" in error["message"] and "Connect Strava again" in error["message"]
    assert web.count(path_contains="/oauth/token") == 0
    assert connection(database, 8030) is None


def test_activity_read_without_read_all_is_accepted(client, web, issuer, database):
    _, params = start(client, issuer, uuid.uuid4())
    code = web.add_authorization_code(8035, scope="read,activity:read")
    response = callback(client, params["state"][0], code=code, scope="read,activity:read")
    assert response.status_code == 200
    assert connection(database, 8035)["scope"] == "read,activity:read"


def test_denied_approval_is_reported_not_a_500(client, web, issuer, database):
    _, params = start(client, issuer, uuid.uuid4())
    response = callback(client, params["state"][0], error="access_denied")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "access_denied"
    assert query(database, "select count(*) as n from oauth_states")[0]["n"] == 0  # burnt
    assert query(database, "select count(*) as n from riders")[0]["n"] == 0
    # Even without any state.
    assert client.get(CALLBACK, query_string={"error": "access_denied"}).status_code == 400


def test_an_athlete_linked_twice_is_409_and_the_first_link_keeps_working(
    client, web, issuer, database
):
    first, second = uuid.uuid4(), uuid.uuid4()
    _, params = start(client, issuer, first)
    assert (
        callback(client, params["state"][0], code=web.add_authorization_code(8040)).status_code
        == 200
    )
    web.add_activities(
        8040,
        [
            {
                **a,
                "start_date": (datetime.now(UTC) - timedelta(hours=2)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            }
            for a in _activities(8040, 3)
        ],
    )
    _, params = start(client, issuer, second)
    response = callback(client, params["state"][0], code=web.add_authorization_code(8040))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "athlete_linked"
    assert (
        query(database, "select count(*) as n from riders where auth_user_id = %s", second)[0]["n"]
        == 0
    )
    assert connection(database, 8040)["refresh_token"] == web.current_refresh_token(8040)
    synced = client.post("/api/riders/me/sync", headers=issuer.headers(issuer.es256(first)))
    assert synced.status_code == 200, synced.get_data(as_text=True)
    assert synced.get_json()["added"] == 3


def test_reconnecting_keeps_the_rider_and_walks_history_again(client, web, issuer, database):
    user = uuid.uuid4()
    for expected in (False, True):
        _, params = start(client, issuer, user)
        body = callback(
            client, params["state"][0], code=web.add_authorization_code(8050)
        ).get_json()
        assert body["reconnected"] is expected
    assert query(database, "select count(*) as n from riders")[0]["n"] == 1
    assert connection(database, 8050)["history_complete_at"] is None


def test_connect_needs_a_token_and_strava_credentials(make_app, auth_settings, web, issuer):
    client = make_app(**auth_settings).test_client()
    assert client.post(CONNECT).status_code == 401
    unconfigured = make_app(**auth_settings, strava_client_secret=None).test_client()
    response = unconfigured.post(CONNECT, headers=issuer.headers(issuer.hs256(uuid.uuid4())))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "strava_not_configured"


def _link(database, fake, athlete_id, user, **options):
    rider = connect_rider(database, fake, athlete_id, **options)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    return rider


def _activities(athlete_id, n):
    from fake_strava import make_activities

    now = datetime.now(UTC)
    return make_activities(
        athlete_id, n, start=now - timedelta(days=3), end=now - timedelta(hours=1), seed=1
    )


def test_disconnect_deauthorizes_and_deletes_everything(client, web, issuer, database):
    user = uuid.uuid4()
    rider = _link(database, web, 8060, user, activities=5)
    other = _link(database, web, 8061, uuid.uuid4(), activities=2)
    token = issuer.es256(user)
    assert client.post("/api/riders/me/sync", headers=issuer.headers(token)).status_code == 200
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date)"
        " values (99, %s, 'Ride', now())",
        other,
    )
    execute(database, "update riders set eddington_km = 3 where id = %s", rider)
    response = client.post(DISCONNECT, headers=issuer.headers(token))
    assert response.status_code == 200
    assert response.get_json() == {
        "disconnected": True,
        "deauthorized": True,
        "activities_deleted": 5,
        "tokens_deleted": True,
    }
    assert web.count(path_contains="/oauth/deauthorize", status=200) == 1
    assert web.current_refresh_token(8060) is None  # revoked at Strava
    assert connection(database, 8060) is None
    assert (
        query(database, "select count(*) as n from activities where rider_id = %s", rider)[0]["n"]
        == 0
    )
    assert (
        query(database, "select eddington_km from riders where id = %s", rider)[0]["eddington_km"]
        is None
    )
    assert connection(database, 8061)["rider_id"] == other  # nobody else touched
    assert query(database, "select rider_id from activities") == [{"rider_id": other}]
    again = client.post(DISCONNECT, headers=issuer.headers(token))
    assert again.status_code == 200 and again.get_json()["disconnected"] is False


def test_disconnect_deletes_even_when_strava_cannot_revoke(client, web, issuer, database):
    user = uuid.uuid4()
    rider = _link(database, web, 8070, user, activities=0)
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date)"
        " values (1, %s, 'Ride', now())",
        rider,
    )
    web.fail_next(1, status=503, path_contains="/oauth/deauthorize")
    body = client.post(DISCONNECT, headers=issuer.headers(issuer.es256(user))).get_json()
    assert body["disconnected"] is True and body["deauthorized"] is False
    assert "strava.com/settings/apps" in body["note"]
    assert body["activities_deleted"] == 1
    assert connection(database, 8070) is None
    # A grant Strava already dropped: nothing to revoke, the data still goes.
    user2 = uuid.uuid4()
    _link(database, web, 8071, user2, expires_in=30)
    web.revoke_athlete(8071)
    body = client.post(DISCONNECT, headers=issuer.headers(issuer.es256(user2))).get_json()
    assert body["disconnected"] is True and body["deauthorized"] is False
    assert connection(database, 8071) is None
