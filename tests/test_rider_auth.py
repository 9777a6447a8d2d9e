"""Rider tokens: Supabase access tokens verified against the JWKS (served over HTTP by
`responses`) or the legacy HS256 secret; every way a token can be wrong is a 401."""

from __future__ import annotations

import time
import uuid

import pytest
from jwt.algorithms import ECAlgorithm

from services.rider_auth import JwksCache, jwks_url_for
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings, rider_app,
# rider_client.
pytest_plugins = ["tests.jwks_fixture"]

STATE = "/api/riders/me/sync"


def get_state(client, token):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(STATE, headers=headers)


def assert_401(response, code="invalid_token"):
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", ["es256", "rs256", "hs256"])
def test_valid_tokens_are_accepted(rider_client, web, issuer, kind):
    assert issuer.supabase_url == "https://club-test.supabase.co"
    user = uuid.uuid4()
    token = getattr(issuer, kind)(user)
    response = get_state(rider_client, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["connected"] is False  # a user who never connected
    assert issuer.fetches == (0 if kind == "hs256" else 1)  # HS256 never needs the JWKS


def test_expired_token(rider_client, web, issuer):
    past = int(time.time()) - 120
    assert_401(get_state(rider_client, issuer.es256(uuid.uuid4(), exp=past)), "token_expired")
    assert_401(get_state(rider_client, issuer.hs256(uuid.uuid4(), exp=past)), "token_expired")


def test_wrong_signature(rider_client, web, issuer, keys):
    # Signed by a key that is not the project's, under the project's key id.
    assert_401(get_state(rider_client, issuer.es256(uuid.uuid4(), key=keys.other_ec)))
    assert_401(get_state(rider_client, issuer.hs256(uuid.uuid4(), secret="x" * 40)))
    good = issuer.rs256(uuid.uuid4())
    head, payload, signature = good.split(".")
    tampered_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    assert_401(get_state(rider_client, f"{head}.{tampered_payload}.{signature}"))


def test_wrong_audience_and_issuer(rider_client, web, issuer):
    user = uuid.uuid4()
    assert_401(get_state(rider_client, issuer.es256(user, aud="anon")))
    assert_401(get_state(rider_client, issuer.hs256(user, aud="service_role")))
    assert_401(get_state(rider_client, issuer.es256(user, aud=None)))
    assert_401(get_state(rider_client, issuer.es256(user, iss="https://evil.supabase.co/auth/v1")))
    assert_401(get_state(rider_client, issuer.hs256(user, iss=None)))


def test_alg_none_and_key_confusion_are_refused(rider_client, web, issuer):
    user = uuid.uuid4()
    assert_401(get_state(rider_client, issuer.unsigned(user)))
    # HS256 keyed with the public key: refused whether a secret is configured or not.
    assert_401(get_state(rider_client, issuer.hs256_with_public_key(user)))
    # An ES256 header naming the RSA key: the key's own algorithm binds, not the header's.
    assert_401(get_state(rider_client, issuer.es256(user, kid="rsa-1")))


def test_key_confusion_without_a_secret(make_app, web, issuer):
    client = make_app(supabase_url=issuer.supabase_url).test_client()
    assert_401(get_state(client, issuer.hs256_with_public_key(uuid.uuid4())))
    assert_401(get_state(client, issuer.hs256(uuid.uuid4())))  # no secret: no HS256 at all
    assert get_state(client, issuer.es256(uuid.uuid4())).status_code == 200


def test_missing_and_malformed_tokens(rider_client, web, issuer):
    assert_401(get_state(rider_client, None), "missing_token")
    assert_401(rider_client.get(STATE, headers={"Authorization": "Basic abc"}), "missing_token")
    assert_401(get_state(rider_client, "not-a-jwt"))
    assert_401(get_state(rider_client, issuer.es256("not-a-uuid")))
    assert_401(get_state(rider_client, issuer.hs256(uuid.uuid4(), sub=None)))


def test_neither_source_configured_is_503(make_app, web, issuer):
    client = make_app().test_client()
    for response in (
        get_state(client, issuer.es256(uuid.uuid4())),
        client.post(STATE, headers=issuer.headers(issuer.hs256(uuid.uuid4()))),
        client.post("/api/strava/connect"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "not_configured"


def test_jwks_is_cached_and_refetched_only_for_a_new_key(rider_client, web, issuer, keys):
    for _ in range(3):
        assert get_state(rider_client, issuer.es256(uuid.uuid4())).status_code == 200
    assert issuer.fetches == 1
    # An unknown key id may mean a rotation: one more look, but not one per request.
    assert_401(get_state(rider_client, issuer.es256(uuid.uuid4(), kid="rotated")))
    assert_401(get_state(rider_client, issuer.es256(uuid.uuid4(), kid="rotated")))
    assert issuer.fetches == 1  # the set was fetched under 30 s ago


def test_jwks_unreachable_is_503_not_401(rider_client, web, issuer):
    issuer.jwks_status = 500
    response = get_state(rider_client, issuer.es256(uuid.uuid4()))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "auth_unavailable"
    assert get_state(rider_client, issuer.es256(uuid.uuid4())).status_code == 503
    assert issuer.fetches == 1  # not fetched again on every request while Supabase is down
    # HS256 tokens do not depend on it.
    assert get_state(rider_client, issuer.hs256(uuid.uuid4())).status_code == 200


def test_a_rider_only_ever_reads_and_syncs_itself(rider_client, web, issuer, database):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    me = connect_rider(database, web, 7001, activities=4)
    other = connect_rider(database, web, 7002, activities=6)
    execute(database, "update riders set auth_user_id = %s where id = %s", mine, me)
    execute(database, "update riders set auth_user_id = %s where id = %s", theirs, other)
    token = issuer.es256(mine)
    state = get_state(rider_client, token).get_json()
    assert state["athlete_id"] == 7001
    # No endpoint takes a rider id: query strings and bodies naming another are ignored.
    response = rider_client.post(
        STATE + f"?rider_id={other}", json={"rider_id": other}, headers=issuer.headers(token)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["added"] == 4
    assert {r.athlete_id for r in web.requests if r.athlete_id} == {7001}
    counts = {
        r["rider_id"]: r["n"]
        for r in query(database, "select rider_id, count(*) as n from activities group by 1")
    }
    assert counts == {me: 4}
    assert get_state(rider_client, issuer.es256(theirs)).get_json()["athlete_id"] == 7002


def test_jwks_cache_expires_and_picks_up_rotated_keys(web, issuer, keys):
    clock = [0.0]
    cache = JwksCache(jwks_url_for(issuer.supabase_url), monotonic=lambda: clock[0])
    assert cache.signing_key("ec-1") is not None and issuer.fetches == 1
    clock[0] = 599.0
    assert cache.signing_key("rsa-1") is not None and issuer.fetches == 1
    clock[0] = 600.0  # the TTL is over: fetched again
    assert cache.signing_key("ec-1") is not None and issuer.fetches == 2
    rotated = ECAlgorithm.to_jwk(keys.other_ec.public_key(), as_dict=True)
    issuer.extra_keys = [{**rotated, "kid": "ec-2", "alg": "ES256", "use": "sig"}]
    clock[0] = 610.0  # fetched 10 s ago: an unknown key waits
    assert cache.signing_key("ec-2") is None and issuer.fetches == 2
    clock[0] = 631.0
    assert cache.signing_key("ec-2") is not None and issuer.fetches == 3
    # A shared-secret ("oct") key in the set is never used to verify anything.
    issuer.extra_keys.append({"kty": "oct", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"})
    clock[0] = 1300.0
    assert cache.signing_key("hs") is None and cache.signing_key("ec-2") is not None
