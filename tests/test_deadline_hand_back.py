"""Deadlines hand back: work a call could not finish because its own time ran out (a
retry that would not fit, a request its deadline cut short) is handed back unfailed,
with no backoff, counted in `remaining`, and the next call resumes where it stopped.
Only what Strava gave (an error after every retry, a timeout the request had in full)
fails. A slow, failing Strava served over loopback, a 2-second budget, the real Postgres.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from fake_strava import serve
from services.strava import retry_backoff, retry_fits
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, hs256_rider_headers, query, unlimited_fake

LIST = "/athlete/activities"
DETAIL = "/api/v3/activities/"
SLOW_S = 0.8  # Strava's latency: two attempts fit in the budget, a third does not
BUDGET_S = 2.0
JWT_SECRET = "deadline-test-jwt-secret-of-32-bytes!"


@pytest.fixture
def served():
    fake = unlimited_fake()
    with serve(fake) as server:
        yield fake, server


@pytest.fixture
def app_on(make_app, served):
    _, server = served

    def build(**overrides):
        return make_app(
            strava_api_url=server.api_url,
            strava_oauth_url=server.oauth_url,
            cron_time_budget_s=BUDGET_S,
            sync_workers=1,
            **overrides,
        )

    return build


def cron(client, endpoint):
    response = client.post(f"/api/cron/{endpoint}", headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def rider_row(database, rider):
    return query(
        database,
        "select failure_count, next_attempt_at, error_class, lease_token, sync_listing_page,"
        " history_cursor, history_complete_at from strava_connections where rider_id = %s",
        rider,
    )[0]


def handed_back(row):
    """Not failed, not backing off, not held."""
    return (row["failure_count"], row["next_attempt_at"], row["error_class"], row["lease_token"])


def pages_listed(fake):
    return [int(r.query.get("page", 1)) for r in fake.requests if r.path.endswith(LIST)]


def test_the_retry_rule():
    assert [retry_backoff(n) for n in (1, 2, 3, 4)] == [0.0, 0.5, 1.0, 2.0]
    assert retry_fits(time_left_s=None, backoff_s=2.0, attempt_s=100.0)
    assert retry_fits(time_left_s=1.0, backoff_s=0.0, attempt_s=0.8)
    assert not retry_fits(time_left_s=1.0, backoff_s=0.5, attempt_s=0.8)


def until_done(client, endpoint, most=8):
    """Call the way the workflow does until `done`; every answer, in order."""
    answers = [cron(client, endpoint)]
    while not answers[-1]["done"]:
        assert len(answers) < most, answers[-1]
        answers.append(cron(client, endpoint))
    return answers


def test_a_slow_strava_answering_503_twice_hands_the_rider_back(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7090, activities=3)
    fake.latency_s = SLOW_S
    fake.fail_next(2, status=503, path_contains=LIST)
    client = app_on().test_client()
    first = cron(client, "sync-strava")  # the 503, perhaps its retry; another cannot fit
    assert first["items"] == [{"rider_id": rider, "status": "skipped", "reason": "time_budget"}]
    assert (first["failed"], first["remaining"], first["done"]) == (0, 1, False)
    assert handed_back(rider_row(database, rider)) == (0, None, None, None)
    rest = until_done(client, "sync-strava")
    assert rest[-1]["items"][0]["status"] == "succeeded"
    assert all(a["failed"] == 0 for a in rest)
    stored = query(database, "select count(*) as n from activities where rider_id = %s", rider)
    assert stored[0]["n"] == 3
    assert handed_back(rider_row(database, rider)) == (0, None, None, None)


def test_a_listing_cut_by_its_deadline_resumes_at_its_page(served, app_on, database):
    fake, _ = served
    now = datetime.now(UTC)
    rider = connect_rider(
        database,
        fake,
        7100,
        activities=450,  # three pages: 200, 200, 50
        start=now - timedelta(days=300),
        end=now - timedelta(hours=1),
        sync_cursor=now - timedelta(days=301),
    )
    fake.latency_s = SLOW_S
    fake.fail_next(2, status=503, path_contains=LIST, after=1)  # page 2, twice
    client = app_on().test_client()
    answers = until_done(client, "sync-strava")
    assert len(answers) >= 2  # the 503s and the slow pages cannot fit in one call
    for answer in answers[:-1]:  # each handed the rider back, counted in remaining
        assert answer["items"][0]["reason"] == "time_budget"
        assert (answer["failed"], answer["remaining"], answer["done"]) == (0, 1, False)
    assert answers[-1]["items"][0]["status"] == "succeeded"
    pages = pages_listed(fake)
    assert pages[0] == 1 and pages.count(1) == 1  # never back to page 1
    assert pages == sorted(pages) and pages[-1] == 3  # each call resumed where it stopped
    assert pages.count(2) >= 3  # page 2: its two 503s, then its answer
    stored = query(database, "select count(*) as n from activities where rider_id = %s", rider)
    assert stored[0]["n"] == 450
    assert handed_back(rider_row(database, rider)) == (0, None, None, None)


def test_a_reset_whose_retry_cannot_fit_is_handed_back(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7110, activities=3)
    fake.latency_s = SLOW_S
    fake.fail_next(2, path_contains=LIST, drop=True)
    client = app_on().test_client()
    body = cron(client, "sync-strava")
    assert body["items"] == [{"rider_id": rider, "status": "skipped", "reason": "time_budget"}]
    assert (body["remaining"], body["done"]) == (1, False)
    assert handed_back(rider_row(database, rider)) == (0, None, None, None)
    assert cron(client, "sync-strava")["succeeded"] == 1


def test_strava_failing_through_every_retry_that_fits_still_fails(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7120, activities=3)
    fake.latency_s = 0.05
    fake.fail_next(3, status=503, path_contains=LIST)  # the try and both retries
    body = cron(app_on().test_client(), "sync-strava")
    assert body["items"][0]["status"] == "failed"
    assert body["items"][0]["reason"] == "strava_unavailable"
    row = rider_row(database, rider)
    assert row["failure_count"] == 1 and row["next_attempt_at"] is not None
    assert row["error_class"] == "strava_unavailable"


def test_a_timeout_the_request_had_in_full_still_fails(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7130, activities=3)
    fake.fail_next(3, status=200, path_contains=LIST, delay_s=0.6)
    body = cron(app_on(strava_timeout_s=0.2).test_client(), "sync-strava")
    assert body["items"][0]["reason"] == "strava_unavailable"
    assert rider_row(database, rider)["failure_count"] == 1


def test_a_walk_cut_by_its_deadline_is_handed_back_and_resumes_at_its_cursor(
    served, app_on, database
):
    fake, _ = served
    now = datetime.now(UTC)
    rider = connect_rider(
        database,
        fake,
        7140,
        activities=250,  # two pages of the walk: 200, then a short one
        start=now - timedelta(days=400),
        end=now - timedelta(days=2),
        history_complete=False,
    )
    fake.latency_s = SLOW_S
    fake.fail_next(2, status=503, path_contains=LIST)
    client = app_on().test_client()

    answers = until_done(client, "discover")
    first = answers[0]
    assert first["items"][0]["status"] == "skipped"
    assert first["items"][0]["reason"] == "time_budget"
    assert (first["failed"], first["remaining"], first["done"]) == (0, 1, False)
    assert all(a["failed"] == 0 for a in answers)
    row = rider_row(database, rider)
    assert handed_back(row) == (0, None, None, None)
    assert row["history_complete_at"] is not None
    befores = [r.query["before"] for r in fake.requests if r.path.endswith(LIST)]
    # the two 503s, then each page of the walk once (the walk starts when its first page
    # is stored, so the handed-back call left nothing to resume but nothing to repeat)
    assert len(befores) == 4 and int(befores[3]) < int(befores[2])
    stored = query(database, "select count(*) as n from activities where rider_id = %s", rider)
    assert stored[0]["n"] == 250


def test_a_race_cut_by_its_deadline_is_handed_back(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7150, activities=40, race_fraction=0.05)
    client = app_on().test_client()
    while not cron(client, "sync-strava")["done"]:
        pass
    races = query(database, "select strava_id from activities where is_race order by 1")
    assert races
    execute(
        database,
        "update activities set enrichment_status = 'done' where is_race and strava_id <> %s",
        races[0]["strava_id"],
    )
    fake.latency_s = SLOW_S
    fake.fail_next(2, status=503, path_contains=DETAIL)
    body = cron(client, "enrich")
    assert body["items"] == [
        {
            "activity_id": races[0]["strava_id"],
            "status": "skipped",
            "reason": "time_budget",
            "rider_id": rider,
        }
    ]
    assert (body["remaining"], body["done"]) == (1, False)
    race = query(
        database,
        "select enrichment_status, enrichment_attempts, enrichment_next_attempt_at"
        " from activities where strava_id = %s",
        races[0]["strava_id"],
    )[0]
    assert race == {
        "enrichment_status": "pending",
        "enrichment_attempts": 0,
        "enrichment_next_attempt_at": None,
    }
    rest = until_done(client, "enrich")
    assert rest[-1]["succeeded"] == 1 and all(a["failed"] == 0 for a in rest)


def test_sync_now_cut_by_its_deadline_is_incomplete_not_failed(served, app_on, database):
    fake, _ = served
    rider = connect_rider(database, fake, 7160, activities=3)
    headers = hs256_rider_headers(JWT_SECRET)
    user = jwt.decode(headers["Authorization"][7:], options={"verify_signature": False})["sub"]
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    fake.latency_s = SLOW_S
    fake.fail_next(2, status=503, path_contains=LIST)
    client = app_on(supabase_jwt_secret=JWT_SECRET).test_client()
    response = client.post("/api/riders/me/sync", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "incomplete"
    assert handed_back(rider_row(database, rider)) == (0, None, None, None)
