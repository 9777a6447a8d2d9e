"""The Strava simulator behaves like the real API, documented or reported behaviour included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses

from fake_strava import (
    RIDE_TYPES,
    RUN_TYPES,
    FakeStrava,
    make_activities,
    make_activity,
    serve,
)
from fake_strava.server import ORDERS

API = "https://www.strava.com/api/v3"
OAUTH = "https://www.strava.com/oauth"
ATHLETE = 1001
OTHER = 2002
NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)  # on a 15-minute boundary
SECRET = {"client_id": "1234", "client_secret": "fake-client-secret"}

# Keys of the SummaryActivity example in Strava's swagger ("device_name" there is a
# detailed-activity field; STRAVA.md lists it among what the detail adds).
SWAGGER_SUMMARY_KEYS = {
    "resource_state", "athlete", "name", "distance", "moving_time", "elapsed_time",
    "total_elevation_gain", "type", "sport_type", "workout_type", "id", "external_id",
    "upload_id", "start_date", "start_date_local", "timezone", "utc_offset", "start_latlng",
    "end_latlng", "location_city", "location_state", "location_country", "achievement_count",
    "kudos_count", "comment_count", "athlete_count", "photo_count", "map", "trainer", "commute",
    "manual", "private", "flagged", "gear_id", "from_accepted_tag", "average_speed", "max_speed",
    "average_cadence", "average_watts", "weighted_average_watts", "kilojoules", "device_watts",
    "has_heartrate", "average_heartrate", "max_heartrate", "max_watts", "pr_count",
    "total_photo_count", "has_kudoed", "suffer_score",
}  # fmt: skip
# Keys of a real run (stravalib's activity.3.json test resource), minus the long-gone
# guid/start_latitude/start_longitude.
REFERENCE_DETAIL_KEYS = {
    "achievement_count", "athlete", "athlete_count", "average_speed", "best_efforts",
    "calories", "comment_count", "commute", "description", "distance", "elapsed_time",
    "end_latlng", "external_id", "flagged", "gear_id", "has_kudoed", "id", "kudos_count",
    "location_city", "location_state", "manual", "map", "max_speed", "moving_time", "name",
    "photo_count", "total_photo_count", "private", "resource_state", "segment_efforts",
    "splits_metric", "splits_standard", "start_date", "start_date_local", "start_latlng",
    "timezone", "total_elevation_gain", "trainer", "type", "upload_id", "workout_type",
}  # fmt: skip


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def fake(clock: Clock) -> FakeStrava:
    return FakeStrava(clock=clock)


@pytest.fixture
def rsps(fake: FakeStrava) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.install(mock)
        yield mock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def list_page(token: str, **params: Any) -> requests.Response:
    return requests.get(f"{API}/athlete/activities", params=params, headers=bearer(token))


def epoch(activity: dict[str, Any]) -> int:
    start = datetime.strptime(activity["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return int(start.timestamp())


def refresh(refresh_token: str) -> requests.Response:
    data = {**SECRET, "grant_type": "refresh_token", "refresh_token": refresh_token}
    return requests.post(f"{OAUTH}/token", data=data)


def seeded(fake: FakeStrava, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    start = NOW - timedelta(days=365)
    activities = make_activities(ATHLETE, n, start=start, end=NOW, **kwargs)
    fake.add_activities(ATHLETE, activities)
    return activities


# ---- generated data ---------------------------------------------------------------------


def test_make_activities_is_deterministic_and_varied() -> None:
    start, end = NOW - timedelta(days=730), NOW
    activities = make_activities(ATHLETE, 400, start=start, end=end, private_fraction=0.1)
    assert activities == make_activities(ATHLETE, 400, start=start, end=end, private_fraction=0.1)
    ids = [a["id"] for a in activities]
    assert ids == sorted(set(ids)) and ids[0] > 2**32
    assert all(start.timestamp() <= epoch(a) < end.timestamp() for a in activities)
    sports = {a["sport_type"] for a in activities}
    assert {"Ride", "GravelRide", "Run", "Walk", "VirtualRide"} <= sports
    races = [a for a in activities if a["workout_type"] in (1, 11)]
    assert len(races) == round(400 * 0.03)
    assert all((a["workout_type"] == 11) == (a["sport_type"] in RIDE_TYPES) for a in races)
    assert all(a["sport_type"] in RIDE_TYPES | RUN_TYPES for a in races)
    assert any(a["sport_type"] in RIDE_TYPES and a["distance"] >= 200_000 for a in activities)
    assert sum(a["private"] for a in activities) == 40
    assert all(a["visibility"] == ("only_me" if a["private"] else "everyone") for a in activities)
    assert any(a["upload_id"] and a["upload_id"] > 2**63 for a in activities)
    assert any(a["map"]["summary_polyline"] is None for a in activities)  # manual entries
    assert SWAGGER_SUMMARY_KEYS <= set().union(*activities)
    other = make_activities(OTHER, 400, start=start, end=end)
    assert not set(ids) & {a["id"] for a in other}


def test_make_activity_shape() -> None:
    summer = datetime(2024, 7, 1, 5, 30, tzinfo=UTC)
    activity = make_activity(
        9_876_543_210_123, athlete_id=ATHLETE, start_date=summer, sport_type="GravelRide"
    )
    assert activity["resource_state"] == 2 and activity["athlete"] == {
        "id": ATHLETE,
        "resource_state": 1,
    }
    assert activity["type"] == "Ride" and activity["sport_type"] == "GravelRide"
    assert activity["start_date"] == "2024-07-01T05:30:00Z"
    # Strava labels the zone with its standard offset but applies the summer one, and
    # writes local times with a "Z".
    assert activity["timezone"] == "(GMT+01:00) Europe/Paris"
    assert activity["utc_offset"] == 7200.0
    assert activity["start_date_local"] == "2024-07-01T07:30:00Z"
    assert activity["name"] == "Morning Gravel Ride"
    assert activity["map"]["summary_polyline"] and activity["map"]["resource_state"] == 2
    assert "description" not in activity
    private = make_activity(1, athlete_id=ATHLETE, start_date=summer, private=True, kudos_count=7)
    assert private["visibility"] == "only_me" and private["kudos_count"] == 7
    with pytest.raises(ValueError):
        make_activity(1, athlete_id=ATHLETE, start_date=datetime(2024, 7, 1))


# ---- listing ------------------------------------------------------------------------------


@pytest.mark.usefixtures("rsps")
def test_paging_with_after_and_before(fake: FakeStrava) -> None:
    activities = seeded(fake, 95)
    token = fake.issue_tokens(ATHLETE)["access_token"]
    after = epoch(activities[0]) - 1
    pages = [list_page(token, after=after, page=p, per_page=30).json() for p in range(1, 6)]
    assert [len(p) for p in pages] == [30, 30, 30, 5, 0]
    # `after` alone lists oldest first; payloads survive JSON intact, ids past 2**63 included.
    assert [a for page in pages for a in page] == activities
    assert any(a["upload_id"] and a["upload_id"] > 2**63 for a in activities)

    # Bounds are strict, and `before` (or no filter) lists newest first.
    pivot = activities[50]
    newer = list_page(token, after=epoch(pivot), per_page=200).json()
    older = list_page(token, before=epoch(pivot), per_page=200).json()
    assert [a["id"] for a in newer] == [a["id"] for a in activities[51:]]
    assert [a["id"] for a in older] == [a["id"] for a in reversed(activities[:50])]
    assert list_page(token).json()[0]["id"] == activities[-1]["id"]
    assert len(list_page(token).json()) == 30
    assert len(list_page(token, per_page=1000).json()) == 95  # capped at 200, not refused


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_every_order_pages_without_gaps(clock: Clock, order: str) -> None:
    fake = FakeStrava(clock=clock, order=order, seed=3)
    activities = seeded(fake, 70)
    token = fake.issue_tokens(ATHLETE)["access_token"]
    with responses.RequestsMock() as mock:
        fake.install(mock)
        pages = [list_page(token, after=0, page=p, per_page=20).json() for p in range(1, 5)]
    listed = [a["id"] for page in pages for a in page]
    assert sorted(listed) == [a["id"] for a in activities]
    if order == "newest_first":
        assert listed == sorted(listed, reverse=True)
    elif order == "oldest_first":
        assert listed == sorted(listed)
    elif order == "shuffled":
        assert listed != sorted(listed) and listed != sorted(listed, reverse=True)


@pytest.mark.usefixtures("rsps")
def test_bad_listing_parameters_are_refused(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    for params in ({"after": "yesterday"}, {"page": "0"}, {"per_page": "1.5"}):
        answer = list_page(token, **params)
        assert answer.status_code == 400
        assert answer.json()["message"] == "Bad Request"
        assert answer.json()["errors"][0]["field"] == next(iter(params))


@pytest.mark.usefixtures("rsps")
def test_private_activities_vanish_after_paging(fake: FakeStrava) -> None:
    activities = seeded(fake, 60, private_fraction=0.25)
    public = [a["id"] for a in activities if not a["private"]]
    token = fake.issue_tokens(ATHLETE, scope="read,activity:read")["access_token"]
    pages = [list_page(token, after=0, page=p, per_page=20).json() for p in range(1, 5)]
    assert [len(p) for p in pages][-1] == 0
    assert any(len(p) < 20 for p in pages[:2])  # short page that is not the last
    assert [a["id"] for page in pages for a in page] == public
    everything = fake.issue_tokens(ATHLETE)["access_token"]
    assert len(list_page(everything, per_page=200).json()) == 60


@pytest.mark.usefixtures("rsps")
def test_activity_endpoints_need_an_activity_scope(fake: FakeStrava) -> None:
    seeded(fake, 3)
    token = fake.issue_tokens(ATHLETE, scope="read")["access_token"]
    answer = list_page(token)
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["field"] == "activity:read_permission"
    assert requests.get(f"{API}/athlete", headers=bearer(token)).json()["id"] == ATHLETE


# ---- one activity ---------------------------------------------------------------------------


@pytest.mark.usefixtures("rsps")
def test_detailed_activity_has_the_reference_shape(fake: FakeStrava) -> None:
    run = make_activity(
        2**40 + 5, athlete_id=ATHLETE, start_date=NOW, sport_type="Run", distance_m=12_345.0
    )
    fake.add_activities(ATHLETE, [run])
    token = fake.issue_tokens(ATHLETE)["access_token"]
    detail = requests.get(f"{API}/activities/{run['id']}", headers=bearer(token)).json()
    assert REFERENCE_DETAIL_KEYS <= set(detail)
    assert {"laps", "photos", "device_name", "gear"} <= set(detail)
    assert detail["resource_state"] == 3 and detail["map"]["resource_state"] == 3
    assert detail["map"]["summary_polyline"] == run["map"]["summary_polyline"]
    assert len(detail["map"]["polyline"]) > len(run["map"]["summary_polyline"])
    assert len(detail["splits_metric"]) == 13 and detail["best_efforts"][-1]["name"] == "10k"
    shared = set(run) - {"map", "resource_state"}
    assert {key: detail[key] for key in shared} == {key: run[key] for key in shared}

    manual = make_activity(7, athlete_id=ATHLETE, start_date=NOW, manual=True)
    fake.add_activities(ATHLETE, [manual])
    detail = requests.get(f"{API}/activities/7", headers=bearer(token)).json()
    assert detail["map"]["polyline"] is None and detail["segment_efforts"] == []
    assert "laps" not in detail and detail["start_latlng"] is None


@pytest.mark.usefixtures("rsps")
def test_activity_not_visible_is_not_found(fake: FakeStrava) -> None:
    mine = make_activity(11, athlete_id=ATHLETE, start_date=NOW)
    hidden = make_activity(12, athlete_id=ATHLETE, start_date=NOW, private=True)
    theirs = make_activity(13, athlete_id=OTHER, start_date=NOW)
    fake.add_activities(ATHLETE, [mine, hidden])
    fake.add_activities(OTHER, [theirs])
    limited = fake.issue_tokens(ATHLETE, scope="read,activity:read")["access_token"]

    def status(activity_id: int, token: str = limited) -> int:
        return requests.get(f"{API}/activities/{activity_id}", headers=bearer(token)).status_code

    assert status(11) == 200
    assert status(12) == 404  # "Only Me" without activity:read_all
    assert status(13) == 404  # another athlete's
    assert status(99) == 404
    fake.delete_activity(11)
    answer = requests.get(f"{API}/activities/11", headers=bearer(limited))
    assert answer.status_code == 404
    assert answer.json() == {
        "message": "Record Not Found",
        "errors": [{"resource": "Activity", "field": "id", "code": "invalid"}],
    }
    assert status(12, fake.issue_tokens(ATHLETE)["access_token"]) == 200


@pytest.mark.usefixtures("rsps")
def test_updates_show_in_listing(fake: FakeStrava) -> None:
    activity = make_activity(21, athlete_id=ATHLETE, start_date=NOW - timedelta(days=1))
    fake.add_activities(ATHLETE, [activity])
    fake.update_activity(21, private=True, sport_type="GravelRide", start_date=NOW)
    stored = fake.activities_of(ATHLETE)[0]
    assert stored["visibility"] == "only_me" and stored["type"] == "Ride"
    assert stored["start_date"] == "2025-06-02T12:00:00Z"
    assert stored["start_date_local"] == "2025-06-02T14:00:00Z"
    token = fake.issue_tokens(ATHLETE, scope="read,activity:read")["access_token"]
    assert list_page(token).json() == []
    with pytest.raises(ValueError):
        fake.add_activities(OTHER, [activity])


# ---- rate limits -----------------------------------------------------------------------------


@pytest.mark.usefixtures("rsps")
def test_rate_limit_answers_429_and_keeps_counting_the_day(clock: Clock) -> None:
    fake = FakeStrava(clock=clock, limit_15min=3, limit_daily=5)
    token = fake.issue_tokens(ATHLETE)["access_token"]
    with responses.RequestsMock() as mock:
        fake.install(mock)
        answers = [list_page(token) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.json()["message"] == "Rate Limit Exceeded"
        assert limited.headers["X-RateLimit-Limit"] == "3,5"
        assert limited.headers["X-RateLimit-Usage"] == "3,4"  # the 429 counted for the day
        assert limited.headers["X-ReadRateLimit-Limit"] == "100,1000"
        assert limited.headers["X-ReadRateLimit-Usage"] == "3,4"

        refresh(fake.current_refresh_token(ATHLETE) or "")  # OAuth is not rate limited
        clock.advance(15 * 60)  # next window
        answers = [list_page(token) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 429]  # the day is spent
        assert answers[-1].headers["X-RateLimit-Usage"] == "1,6"
        clock.advance(12 * 3600)  # past midnight UTC
        assert list_page(token).headers["X-RateLimit-Usage"] == "1,1"


@pytest.mark.usefixtures("rsps")
def test_read_limit_and_preset_usage(fake: FakeStrava, clock: Clock) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.set_usage(read_usage_15min=99, usage_15min=120)
    first, second = list_page(token), list_page(token)
    assert first.status_code == 200 and first.headers["X-ReadRateLimit-Usage"] == "100,1"
    assert second.status_code == 429 and second.headers["X-RateLimit-Usage"] == "121,2"
    clock.advance(60)  # same window: still limited
    assert list_page(token).status_code == 429
    clock.advance(14 * 60)
    assert list_page(token).status_code == 200


# ---- tokens and OAuth -----------------------------------------------------------------------


@pytest.mark.usefixtures("rsps")
def test_refresh_keeps_a_token_with_over_an_hour_left(fake: FakeStrava, clock: Clock) -> None:
    tokens = fake.issue_tokens(ATHLETE)
    clock.advance(4 * 3600)
    answer = refresh(tokens["refresh_token"]).json()
    assert answer["access_token"] == tokens["access_token"]
    assert answer["refresh_token"] == tokens["refresh_token"]
    assert answer["expires_in"] == 2 * 3600 and answer["token_type"] == "Bearer"
    assert fake.refresh_count(ATHLETE) == 1


@pytest.mark.usefixtures("rsps")
def test_refresh_rotates_and_kills_old_tokens(fake: FakeStrava, clock: Clock) -> None:
    tokens = fake.issue_tokens(ATHLETE)
    clock.advance(5.5 * 3600)
    answer = refresh(tokens["refresh_token"])
    assert answer.status_code == 200
    new = answer.json()
    assert new["access_token"] != tokens["access_token"]
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["expires_at"] == int(clock.now) + 21600 and new["expires_in"] == 21600
    assert fake.current_refresh_token(ATHLETE) == new["refresh_token"]
    assert fake.refresh_count(ATHLETE) == 1

    old = list_page(tokens["access_token"])
    assert old.status_code == 401
    assert old.json() == {
        "message": "Authorization Error",
        "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}],
    }
    # A second process refreshing with the old token is locked out.
    stale = refresh(tokens["refresh_token"])
    assert stale.status_code == 400
    assert stale.json()["errors"][0]["resource"] == "RefreshToken"
    assert list_page(new["access_token"]).status_code == 200
    assert fake.refresh_count(ATHLETE) == 1

    clock.advance(6 * 3600)  # expired access tokens are refused
    assert list_page(new["access_token"]).status_code == 401


def test_refresh_without_rotation(clock: Clock) -> None:
    fake = FakeStrava(clock=clock, rotate_refresh_tokens=False, token_ttl_s=600)
    tokens = fake.issue_tokens(ATHLETE, expires_in=60)
    with responses.RequestsMock() as mock:
        fake.install(mock)
        new = refresh(tokens["refresh_token"]).json()
    assert new["refresh_token"] == tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"] and new["expires_in"] == 600


@pytest.mark.usefixtures("rsps")
def test_token_endpoint_checks_the_client(fake: FakeStrava) -> None:
    tokens = fake.issue_tokens(ATHLETE)
    wrong = {**SECRET, "client_secret": "nope", "grant_type": "refresh_token"}
    answer = requests.post(
        f"{OAUTH}/token", data={**wrong, "refresh_token": tokens["refresh_token"]}
    )
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["resource"] == "Application"
    json_body = {**SECRET, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert requests.post(f"{OAUTH}/token", json=json_body).status_code == 200
    assert requests.post(f"{OAUTH}/token", data={**SECRET, "grant_type": "x"}).status_code == 400


@pytest.mark.usefixtures("rsps")
def test_authorization_code_is_single_use_and_carries_its_scope(fake: FakeStrava) -> None:
    fake.add_athlete(ATHLETE, firstname="Jeannie", lastname="Longo")
    fake.add_activities(
        ATHLETE, [make_activity(31, athlete_id=ATHLETE, start_date=NOW, private=True)]
    )
    code = fake.add_authorization_code(ATHLETE, scope="read,activity:read")
    data = {**SECRET, "grant_type": "authorization_code", "code": code}
    first = requests.post(f"{OAUTH}/token", data=data)
    assert first.status_code == 200
    body = first.json()
    assert body["athlete"]["firstname"] == "Jeannie" and body["athlete"]["id"] == ATHLETE
    assert body["expires_in"] == 21600 and body["refresh_token"]
    assert (
        requests.get(f"{API}/activities/31", headers=bearer(body["access_token"])).status_code
        == 404
    )
    again = requests.post(f"{OAUTH}/token", data=data)
    assert again.status_code == 400
    assert again.json()["errors"][0] == {
        "resource": "AuthorizationCode",
        "field": "code",
        "code": "invalid",
    }


@pytest.mark.usefixtures("rsps")
def test_deauthorize_revokes_every_token(fake: FakeStrava) -> None:
    tokens = fake.issue_tokens(ATHLETE)
    answer = requests.post(f"{OAUTH}/deauthorize", headers=bearer(tokens["access_token"]))
    assert answer.json() == {"access_token": tokens["access_token"]}
    assert list_page(tokens["access_token"]).status_code == 401
    assert refresh(tokens["refresh_token"]).status_code == 400
    assert fake.current_refresh_token(ATHLETE) is None
    again = fake.issue_tokens(ATHLETE)
    fake.revoke_athlete(ATHLETE)
    assert list_page(again["access_token"]).status_code == 401


@pytest.mark.usefixtures("rsps")
def test_token_in_query_string_is_refused(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    answer = requests.get(f"{API}/athlete", params={"access_token": token})
    assert answer.status_code == 401
    both = requests.get(f"{API}/athlete", params={"access_token": token}, headers=bearer(token))
    assert both.status_code == 401
    assert requests.get(f"{API}/athlete", headers={"Authorization": token}).status_code == 401
    assert fake.requests[0].query == {"access_token": "[redacted]"}
    assert token not in repr(fake.requests)


@pytest.mark.usefixtures("rsps")
def test_authorize_page_validates_the_request(fake: FakeStrava) -> None:
    params = {
        "client_id": "1234",
        "redirect_uri": "http://localhost:5000/callback",
        "response_type": "code",
        "scope": "read,activity:read_all",
    }
    page = requests.get(f"{OAUTH}/authorize", params=params)
    assert page.status_code == 200 and "activity:read_all" in page.text
    for bad in ({"client_id": "9"}, {"redirect_uri": "nowhere"}, {"response_type": "token"}):
        assert requests.get(f"{OAUTH}/authorize", params={**params, **bad}).status_code == 400


# ---- faults, inactive application, log ---------------------------------------------------------


@pytest.mark.usefixtures("rsps")
def test_fail_next_after_lets_matching_requests_through_first(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.fail_next(2, status=429, path_contains="/athlete/activities", after=2)
    assert requests.get(f"{API}/athlete", headers=bearer(token)).status_code == 200
    statuses = [list_page(token).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 200]
    with pytest.raises(ValueError):
        fake.fail_next(after=-1)


@pytest.mark.usefixtures("rsps")
def test_fail_next_targets_paths_and_leaves_usage_alone(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.fail_next(2, status=503, path_contains="/athlete/activities")
    fake.fail_next(status=429, path_contains="/oauth/token", body={"message": "slow down"})
    assert requests.get(f"{API}/athlete", headers=bearer(token)).status_code == 200
    failed = [list_page(token) for _ in range(2)]
    assert [f.status_code for f in failed] == [503, 503]
    assert failed[0].json() == {"message": "Service Unavailable", "errors": []}
    assert failed[1].headers["X-RateLimit-Usage"] == "1,1"  # injected faults cost nothing
    assert list_page(token).status_code == 200
    throttled = refresh(fake.current_refresh_token(ATHLETE) or "")
    assert throttled.status_code == 429 and throttled.json() == {"message": "slow down"}
    assert fake.count(status=503) == 2 and fake.count(path_contains="/oauth") == 1

    fake.fail_next(delay_s=0.05)
    started = time.monotonic()
    assert list_page(token).status_code == 500
    assert time.monotonic() - started >= 0.05


@pytest.mark.usefixtures("rsps")
def test_fail_next_can_drop_the_connection(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.fail_next(1, path_contains="/athlete/activities", drop=True)
    with pytest.raises(requests.ConnectionError):
        list_page(token)
    assert list_page(token).status_code == 200


def test_random_faults_keep_to_their_rate_and_kinds(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.inject_faults(0.3, seed=4, timeout_s=0.3, mix={"5xx": 0.5, "reset": 0.3, "timeout": 0.2})
    outcomes: list[int | str] = []
    with serve(fake) as server:
        for page in range(1, 121):
            try:
                answer = requests.get(
                    f"{server.api_url}/athlete/activities",
                    params={"page": page},
                    headers=bearer(token),
                    timeout=0.15,
                )
                outcomes.append(answer.status_code)
            except requests.Timeout:
                outcomes.append("timeout")
            except requests.ConnectionError:
                outcomes.append("reset")
    injected = fake.injected
    assert 20 <= sum(injected.values()) <= 52  # 30% of 120, give or take
    assert outcomes.count(200) == 120 - sum(injected.values())
    assert outcomes.count("timeout") == injected["timeout"]
    assert outcomes.count("reset") == injected["reset"]
    assert sum(1 for o in outcomes if o in (500, 502, 503, 504)) == injected["5xx"]
    fake.inject_faults(0)
    with pytest.raises(ValueError):
        fake.inject_faults(1.0)


@pytest.mark.usefixtures("rsps")
def test_an_early_expiry_refuses_the_token_until_a_refresh(fake: FakeStrava, clock: Clock) -> None:
    grant = fake.issue_tokens(ATHLETE)
    clock.advance(60)  # a token handed out seconds ago is never expired early
    fake.inject_faults(0.99, seed=1, mix={"expiry": 1.0})
    assert list_page(grant["access_token"]).status_code == 401
    fake.inject_faults(0)
    assert list_page(grant["access_token"]).status_code == 401  # it stays expired
    renewed = refresh(grant["refresh_token"]).json()
    assert renewed["access_token"] != grant["access_token"]
    assert list_page(renewed["access_token"]).status_code == 200


@pytest.mark.usefixtures("rsps")
def test_inactive_application_is_forbidden(fake: FakeStrava) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    fake.application_inactive = True
    answer = list_page(token)
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["code"] == "inactive"
    assert "inactive" in answer.text.lower() and "X-RateLimit-Usage" in answer.headers


@pytest.mark.usefixtures("rsps")
def test_request_log(fake: FakeStrava, clock: Clock) -> None:
    token = fake.issue_tokens(ATHLETE)["access_token"]
    list_page(token, after=5)
    requests.get(f"{API}/nowhere", headers=bearer(token))
    recorded = fake.requests[0]
    assert (recorded.method, recorded.path, recorded.query) == (
        "GET",
        "/api/v3/athlete/activities",
        {"after": "5"},
    )
    assert (recorded.status, recorded.at, recorded.athlete_id) == (200, clock.now, ATHLETE)
    assert fake.count(method="get") == 2 and fake.count(status=404) == 1
    fake.reset_log()
    assert fake.count() == 0


@pytest.mark.usefixtures("rsps")
def test_the_injected_clock_is_the_fakes_only_time(fake: FakeStrava, clock: Clock) -> None:
    """Token expiry, rate windows and the request log all read the one clock passed in,
    so a simulation can share it with the service."""
    assert fake.clock is clock and fake.now() == NOW
    tokens = fake.issue_tokens(ATHLETE, expires_in=60)
    assert tokens["expires_at"] == int(NOW.timestamp()) + 60
    fake.set_usage(read_usage_15min=100)
    assert list_page(tokens["access_token"]).status_code == 429
    clock.advance(59)  # same window, token still live
    assert list_page(tokens["access_token"]).status_code == 429
    clock.advance(15 * 60)  # next window, token expired
    assert fake.now() == NOW + timedelta(seconds=959)
    assert list_page(tokens["access_token"]).status_code == 401
    assert [r.at for r in fake.requests] == [clock.now - 959, clock.now - 900, clock.now]


def test_install_normalizes_other_base_urls(fake: FakeStrava) -> None:
    tokens = fake.issue_tokens(ATHLETE)
    data = {**SECRET, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    with responses.RequestsMock() as mock:
        # An OAuth base nested under the API base must still reach the OAuth routes.
        fake.install(
            mock, api_url="http://strava.test/v3/", oauth_url="http://strava.test/v3/oauth"
        )
        athlete = requests.get(
            "http://strava.test/v3/athlete", headers=bearer(tokens["access_token"])
        )
        assert athlete.json()["id"] == ATHLETE
        assert requests.post("http://strava.test/v3/oauth/token", data=data).status_code == 200
        with pytest.raises(requests.ConnectionError):  # other hosts are not routed
            requests.get(f"{API}/athlete")
    assert [r.path for r in fake.requests] == ["/api/v3/athlete", "/oauth/token"]


# ---- real HTTP ----------------------------------------------------------------------------------


def test_served_over_loopback_with_overlapping_latency() -> None:
    latency_s = 0.5
    fake = FakeStrava(latency_s=latency_s)
    fake.add_activities(
        ATHLETE, make_activities(ATHLETE, 10, start=NOW - timedelta(days=30), end=NOW)
    )
    with serve(fake) as served:
        assert served.api_url == served.url + "/api/v3"
        code = fake.add_authorization_code(ATHLETE)
        data = {**SECRET, "grant_type": "authorization_code", "code": code}
        token = requests.post(f"{served.oauth_url}/token", data=data).json()["access_token"]
        results: list[int] = []

        def fetch() -> None:
            with requests.Session() as session:
                answer = session.get(f"{served.api_url}/athlete/activities", headers=bearer(token))
                results.append(len(answer.json()))

        threads = [threading.Thread(target=fetch) for _ in range(6)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [10] * 6
        # the sleeps overlapped: one after another they would take 6 x 0.5 s at least
        assert time.monotonic() - started < len(threads) * latency_s

        fake.latency_s = 0.0
        fake.fail_next(delay_s=0.3, path_contains="/athlete/activities")
        with pytest.raises(requests.Timeout):
            requests.get(f"{served.api_url}/athlete/activities", headers=bearer(token), timeout=0.1)
        time.sleep(0.25)  # let the slow answer finish before the server stops
    assert fake.count(path_contains="/athlete/activities", status=200) == 6
    assert fake.count(status=500) == 1


def test_the_push_sender_retries_three_times_in_all_then_gives_up():
    from fake_strava.push import PushSender

    answers: list[int] = []
    sender = PushSender(
        clock=lambda: 1_000.0, application_id=1, transport=lambda u, e: answers.pop(0)
    )
    sender.subscription = {"id": 5, "callback_url": "http://callback"}
    answers[:] = [500, 503, 200]
    sender.emit("activity", 1, "create", 2)
    assert sender.deliver_due() == 3 and sender.log.delivered == 1
    answers[:] = [500, 500, 500, 200]
    sender.emit("activity", 2, "create", 2)
    assert sender.deliver_due() == 3 and sender.log.given_up == 1 and answers == [200]


def test_a_slow_answer_counts_as_none_and_losses_and_duplicates_are_seeded():
    import time as real_time

    from fake_strava.push import PushSender

    def slow(url, event):
        real_time.sleep(0.06)
        return 200

    sender = PushSender(clock=lambda: 0.0, application_id=1, transport=slow)
    sender.subscription = {"id": 5, "callback_url": "http://callback"}
    sender.answer_within_s = 0.05
    sender.emit("activity", 1, "create", 2)
    sender.deliver_due()
    assert sender.log.statuses == [599, 599, 599] and sender.log.given_up == 1
    counted = PushSender(clock=lambda: 0.0, application_id=1, transport=lambda u, e: 200, seed=4)
    counted.subscription = {"id": 5, "callback_url": "http://callback"}
    counted.loss, counted.duplicate = 0.1, 0.1
    for i in range(1000):
        counted.emit("activity", i + 1, "create", 2)
    assert 60 < counted.log.lost < 140 and 60 < counted.log.duplicated < 140
    assert counted.pending() == 1000 - counted.log.lost + counted.log.duplicated
    # Without a subscription nothing is queued.
    idle = PushSender(clock=lambda: 0.0, application_id=1)
    idle.emit("activity", 1, "create", 2)
    assert idle.pending() == 0 and idle.log.emitted == 0
