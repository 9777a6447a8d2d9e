"""Riders have names: from their Strava athlete at connect ("Anna B."), or the
operator's (`PUT /api/admin/riders/{id}/name`), kept over Strava's once given; and
what lists riders by id (the stuck list) names them too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.connect import athlete_name
from services.status import clean_rider_name
from tests.conftest import cron_headers
from tests.factories import execute, query

pytest_plugins = ["tests.jwks_fixture"]


@pytest.mark.parametrize(
    ("athlete", "name"),
    [
        ({"firstname": "Anna", "lastname": "Bertrand"}, "Anna B."),
        ({"firstname": "  Marie-Claire ", "lastname": "de la Tour"}, "Marie-Claire D."),
        ({"firstname": "Chloé", "lastname": ""}, "Chloé"),
        ({"firstname": "Dev", "lastname": None}, "Dev"),
        ({"firstname": "Jean\nPaul", "lastname": "x"}, "Jean Paul X."),
        ({"firstname": "", "lastname": "Bertrand"}, None),
        ({"firstname": None}, None),
        ({}, None),
        ({"firstname": "A" * 200, "lastname": "Z"}, "A" * 77 + " Z."),
    ],
)
def test_a_name_from_the_athlete_is_first_name_and_last_initial(athlete, name):
    assert athlete_name(athlete) == name
    assert name is None or len(name) <= 80


def connect(client, issuer, web, user, athlete_id):
    started = client.post("/api/strava/connect", headers=issuer.headers(issuer.es256(user)))
    state = parse_qs(urlsplit(started.get_json()["authorize_url"]).query)["state"][0]
    code = web.add_authorization_code(athlete_id, scope="read,activity:read_all")
    answer = client.get(
        "/api/strava/callback",
        query_string={"state": state, "code": code, "scope": "read,activity:read_all"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["rider_id"]


def name_of(database, rider_id):
    return query(database, "select name from riders where id = %s", rider_id)[0]["name"]


def test_connect_names_the_rider_and_the_operators_name_is_kept(
    make_app, auth_settings, web, issuer, database
):
    """A rider made by Connect Strava had only its auth_user_id: the dashboard listed
    "17", and "whom do I ask to reconnect?" needed SQL."""
    client = make_app(**auth_settings).test_client()
    web.add_athlete(8401, firstname="Anna", lastname="Bertrand")
    user = uuid.uuid4()
    rider = connect(client, issuer, web, user, 8401)
    assert name_of(database, rider) == "Anna B."
    # Renamed on Strava: the next connect follows.
    web.add_athlete(8401, firstname="Annie", lastname="Bertrand")
    assert connect(client, issuer, web, user, 8401) == rider
    assert name_of(database, rider) == "Annie B."
    # The operator's name wins from then on.
    renamed = client.put(
        f"/api/admin/riders/{rider}/name", json={"name": "  Annie  (tandem) "},
        headers=cron_headers(),
    )  # fmt: skip
    assert renamed.status_code == 200
    assert renamed.get_json() == {
        "rider_id": rider,
        "name": "Annie (tandem)",
        "named_by": "operator",
    }
    connect(client, issuer, web, user, 8401)
    assert name_of(database, rider) == "Annie (tandem)"
    listed = client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert [r["name"] for r in listed["riders"]["list"]["items"]] == ["Annie (tandem)"]


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 81}, {"name": 5}, {"name": None},
     {"name": "two\nlines"}, {"name": "bell\x07"}, ["Anna"]],
)  # fmt: skip
def test_a_name_must_be_one_line_of_1_to_80_characters(client, database, body):
    rider = query(database, "insert into riders (name) values ('Old') returning id")[0]["id"]
    answer = client.put(f"/api/admin/riders/{rider}/name", json=body, headers=cron_headers())
    assert answer.status_code == 400
    assert answer.get_json()["error"]["field"] == "name"
    assert name_of(database, rider) == "Old"


def test_renaming_needs_the_bearer_and_a_rider(client, database):
    assert client.put("/api/admin/riders/1/name", json={"name": "A"}).status_code == 401
    missing = client.put(
        "/api/admin/riders/999999/name", json={"name": "A"}, headers=cron_headers()
    )
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "rider_not_found"
    assert clean_rider_name("x" * 80) == "x" * 80


def test_the_stuck_list_names_its_riders(client, strava, database):
    from tests.factories import connect_rider

    rider = connect_rider(database, strava, 8402, name="Ben C.")
    execute(
        database,
        "update strava_connections set lease_token = %s, lease_kind = 'sync',"
        " lease_expires_at = %s where rider_id = %s",
        uuid.uuid4(),
        datetime.now(UTC) - timedelta(minutes=20),
        rider,
    )
    stuck = client.get("/api/admin/status", headers=cron_headers()).get_json()["stuck"]
    [item] = [i for i in stuck["items"] if i["kind"] == "rider_lease_expired"]
    assert item["rider_id"] == rider and item["rider_name"] == "Ben C."
