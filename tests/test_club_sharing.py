"""Sharing with the club by consent, against the real Postgres: the rider's switch
(PUT /api/riders/me/sharing), the club_activities view read as Supabase's roles would
read it (`authenticated` with two riders' JWT claims, and `anon`), routes trimmed on
real polylines (tests/fixtures/strava/routes.json), a webhook privacy change taking
effect at once, and deauthorization deleting what was derived from a rider's data."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from fake_strava import make_activities
from fake_strava.polyline import decode, encode
from services.routes import trim_route
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings.
pytest_plugins = ["tests.jwks_fixture"]

ROUTES = json.loads(
    (Path(__file__).resolve().parent / "fixtures" / "strava" / "routes.json").read_text()
)
SHARING = "/api/riders/me/sharing"
EARTH_M = 6371008.8


# --- geometry, independent of the SQL (haversine on the decoded points) ------------------


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lng1), (lat2, lng2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_M * math.asin(math.sqrt(h))


def along(points: list[tuple[float, float]]) -> list[float]:
    out = [0.0]
    for a, b in zip(points, points[1:], strict=False):
        out.append(out[-1] + metres(a, b))
    return out


def check_trim(full: str, trimmed: str | None, trim: int) -> tuple[int, int]:
    """Assert that `trimmed` is `full` with at least `trim` metres gone from each end as
    the view promises; returns the kept points' first and last index in `full`."""
    points = decode(full)
    distance = along(points)
    total = distance[-1]
    if total <= 2 * trim:
        assert trimmed is None
        return -1, -1
    if trimmed is None:
        # Allowed only when no two points are surely far enough from both ends.
        sure = [
            i
            for i in range(len(points))
            if trim + 1 <= distance[i] <= total - trim - 1
            and all(
                metres(points[j], points[0]) >= trim + 1
                for j in range(i, len(points))
                if distance[j] <= total / 2
            )
            and all(
                metres(points[j], points[-1]) >= trim + 1
                for j in range(0, i + 1)
                if distance[j] >= total / 2
            )
        ]
        assert len(sure) < 2, sure
        return -1, -1
    kept = decode(trimmed)
    assert len(kept) >= 2
    first = next(i for i in range(len(points)) if points[i : i + len(kept)] == kept)
    last = first + len(kept) - 1
    slack = 1.0  # metres: the view's per-segment approximation of the great circle
    # At least `trim` along the route from each end...
    assert distance[first] >= trim - slack and distance[last] <= total - trim + slack
    # ...and no kept point before half way within `trim` of the start (after it, of the end).
    for i in range(first, last + 1):
        if distance[i] <= total / 2:
            assert metres(points[i], points[0]) >= trim - slack, i
        else:
            assert metres(points[i], points[-1]) >= trim - slack, i
    # Not more than that: the point before the first kept one breaks a rule (too little
    # along the route, or inside the start's circle), and likewise after the last.
    before = first - 1
    assert distance[before] < trim + slack or any(
        metres(points[j], points[0]) < trim + slack
        for j in range(before, len(points))
        if distance[j] <= total / 2
    )
    after = last + 1
    assert distance[after] > total - trim - slack or any(
        metres(points[j], points[-1]) < trim + slack
        for j in range(0, after + 1)
        if distance[j] >= total / 2
    )
    return first, last


@pytest.mark.parametrize("name", ["ride_detailed", "ride_summary", "loop_detailed", "loop_summary"])
@pytest.mark.parametrize("trim", [200, 500, 1000])
def test_real_routes_lose_their_ends(name, trim):
    route = ROUTES[name]["polyline"]
    first, last = check_trim(route, trim_route(route, trim), trim)
    assert 0 < first < last < len(decode(route)) - 1


def test_a_loop_home_hides_both_ends_around_home():
    # activity.3.json starts and ends ~20 m apart: both circles are around "home".
    route = ROUTES["loop_detailed"]["polyline"]
    points = decode(route)
    assert metres(points[0], points[-1]) < 50
    trimmed = decode(trim_route(route, 500) or "")
    assert min(metres(p, points[0]) for p in trimmed) >= 499


def test_a_ride_circling_home_first_is_cut_where_it_leaves():
    # A real ride, with a few laps of a 150 m block at its start put first: 500 m along
    # the route would still be by the house; the cut comes where the ride leaves.
    ride = decode(ROUTES["ride_detailed"]["polyline"])
    home = ride[0]
    block = [(home[0] + dy, home[1] + dx) for dy, dx in ((0.001, 0), (0.001, 0.0012), (0, 0.0012))]
    circled = [home, *block, home, *block, home, *block, *ride]
    trimmed = decode(trim_route(encode(circled), 500) or "")
    assert along(circled)[len(circled) - len(ride)] > 500  # the laps alone pass 500 m
    assert min(metres(p, home) for p in trimmed[: len(trimmed) // 2]) >= 499
    check_trim(encode(circled), trim_route(encode(circled), 500), 500)


def test_a_route_shorter_than_twice_the_trim_has_no_route():
    segment = ROUTES["segment"]["polyline"]  # 2.7 km
    assert trim_route(segment, 1500) is None
    assert trim_route(segment, 500) is not None
    # A real ride's first 900 m or so: under 2 x 500 m.
    points = decode(ROUTES["loop_detailed"]["polyline"])
    head = next(i for i, d in enumerate(along(points)) if d > 900)
    assert along(points[:head])[-1] < 1000
    assert trim_route(encode(points[:head]), 500) is None


def test_odd_routes():
    route = ROUTES["loop_summary"]["polyline"]
    assert trim_route(route, 0) == route  # 0: the club trims nothing
    assert trim_route(None, 500) is None
    assert trim_route("", 500) is None
    assert trim_route("_p~iF~ps|U", 500) is None  # one point
    assert trim_route(route[:-1], 500) is None  # cut short: no route, no error
    assert trim_route("not a polyline \x01", 500) is None


# --- the rider's switch -------------------------------------------------------------------


def link(database: str, fake: Any, athlete_id: int, **options: Any) -> tuple[int, uuid.UUID]:
    user = uuid.uuid4()
    rider = connect_rider(database, fake, athlete_id, **options)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    return rider, user


@pytest.fixture
def client(make_app, auth_settings):
    return make_app(**auth_settings).test_client()


def put(client: Any, issuer: Any, user: uuid.UUID, body: Any, **kwargs: Any) -> Any:
    return client.put(SHARING, headers=issuer.headers(issuer.es256(user)), json=body, **kwargs)


def test_the_switch_turns_sharing_on_and_off(client, web, issuer, database):
    rider, user = link(database, web, 7701)
    on = put(client, issuer, user, {"share": True})
    assert on.status_code == 200, on.get_data(as_text=True)
    body = on.get_json()
    assert body["shared"] is True and body["since"] and body["route_trim_m"] == 500
    assert "first and last 500 m" in body["what_the_club_sees"]
    since = query(database, "select share_with_club_at from riders where id = %s", rider)[0]
    assert since["share_with_club_at"] is not None
    again = put(client, issuer, user, {"share": True}).get_json()
    assert again["since"] == body["since"]  # the first consent's time is kept
    off = put(client, issuer, user, {"share": False}).get_json()
    assert off == {**off, "shared": False, "since": None}
    assert query(database, "select share_with_club_at from riders where id = %s", rider) == [
        {"share_with_club_at": None}
    ]
    state = client.get("/api/riders/me/sync", headers=issuer.headers(issuer.es256(user)))
    assert state.get_json()["sharing"]["shared"] is False


def test_the_switch_refuses_what_it_cannot_do(client, web, issuer, database):
    stranger = uuid.uuid4()
    refused = put(client, issuer, stranger, {"share": True})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_connected"
    assert put(client, issuer, stranger, {"share": False}).get_json()["shared"] is False
    _, user = link(database, web, 7702)
    for body, field in (
        ({"share": "yes"}, "share"),
        ({"share": 1}, "share"),
        ({"share": None}, "share"),
        ({}, "share"),
        ({"share": True, "everyone": True}, "everyone"),
    ):
        answer = put(client, issuer, user, body)
        assert answer.status_code == 400, body
        error = answer.get_json()["error"]
        assert error["code"] == "invalid_parameter" and error["field"] == field, body
    for raw, kind in (
        ("[true]", "application/json"),
        ("share=true", "text/plain"),
        ("{", "application/json"),
    ):
        answer = client.put(
            SHARING,
            headers=issuer.headers(issuer.es256(user)),
            data=raw,
            content_type=kind,
        )
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_body"
    assert client.put(SHARING, json={"share": True}).status_code == 401
    assert (
        query(database, "select count(*) as n from riders where share_with_club_at is not null")[0][
            "n"
        ]
        == 0
    )


# --- the view, as Supabase's roles read it ---------------------------------------------


def claims(user: uuid.UUID) -> str:
    return json.dumps({"sub": str(user), "role": "authenticated", "aud": "authenticated"})


def read_as(database: str, role: str, user: uuid.UUID | None, sql: str, *params: Any) -> Any:
    """A query as Supabase runs a client's: the role, and the JWT's claims."""
    with psycopg.connect(database, row_factory=dict_row) as conn:
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, claims(user) if user else ""),
        )
        return conn.execute(sql, params).fetchall()


def seed_two_riders(web: Any, database: str, client: Any, issuer: Any) -> dict[str, Any]:
    """Anna shares, Ben does not; each has rides Strava shows to everyone, one to
    followers only and one to nobody, with real routes; then a sync stores them, and
    Anna turns sharing on (her routes, stored uncut, are cut then)."""
    out: dict[str, Any] = {}
    for name, athlete in (("anna", 7711), ("ben", 7712)):
        rider, user = link(database, web, athlete, activities=6, name=name.title())
        rides = web.activities_of(athlete)
        routes = [ROUTES["ride_summary"], ROUTES["loop_summary"], ROUTES["ride_summary"]]
        for ride, route in zip(rides, routes, strict=False):
            web.update_activity(
                ride["id"], map={**ride["map"], "summary_polyline": route["polyline"]}
            )
        web.update_activity(rides[3]["id"], visibility="followers_only")
        web.update_activity(rides[4]["id"], private=True)
        out[name] = {"rider": rider, "user": user, "rides": [r["id"] for r in rides]}
    assert client.post("/api/cron/sync-strava", headers=cron_headers()).get_json()["succeeded"] == 2
    assert query(database, "select count(club_summary_polyline) as n from activities") == [
        {"n": 0}  # nobody shares yet: no route was cut
    ]
    assert put(client, issuer, out["anna"]["user"], {"share": True}).status_code == 200
    return out


def test_members_see_only_what_consent_and_visibility_allow(client, web, issuer, database):
    riders = seed_two_riders(web, database, client, issuer)
    anna, ben = riders["anna"], riders["ben"]
    everyone = {
        r["strava_id"]
        for r in query(
            database,
            "select strava_id from activities where rider_id = %s and visibility = 'everyone'"
            " and not private",
            anna["rider"],
        )
    }
    assert len(everyone) == 4  # 6 less the followers-only and the Only Me one
    for reader in (anna["user"], ben["user"]):
        rows = read_as(database, "authenticated", reader, "select * from club_activities")
        assert {r["strava_id"] for r in rows} == everyone, reader
        assert {r["rider_id"] for r in rows} == {anna["rider"]}
        assert {r["rider_name"] for r in rows} == {"Anna"}
        for row in rows:
            assert row["strava_url"] == f"https://www.strava.com/activities/{row['strava_id']}"
            assert not {"start_lat", "start_lng", "end_lat", "average_heartrate"} & set(row)
    # The routes, trimmed: each is the stored route less its ends.
    stored = {
        r["strava_id"]: r["summary_polyline"]
        for r in query(database, "select strava_id, summary_polyline from activities")
    }
    rows = read_as(database, "authenticated", ben["user"], "select * from club_activities")
    real = [
        r
        for r in rows
        if stored[r["strava_id"]]
        in (ROUTES["ride_summary"]["polyline"], ROUTES["loop_summary"]["polyline"])
    ]
    assert len(real) == 3
    for row in real:
        check_trim(stored[row["strava_id"]], row["summary_polyline"], 500)
        assert row["summary_polyline"] != stored[row["strava_id"]]
    # RLS still keeps the table itself to one's own rows: the raw routes stay private.
    own = read_as(database, "authenticated", ben["user"], "select rider_id from activities")
    assert {r["rider_id"] for r in own} == {ben["rider"]}
    # Anonymous visitors: never.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        read_as(database, "anon", None, "select * from club_activities")
    # Nor the settings or the stored routes, for any client role.
    for role, reader in (("anon", None), ("authenticated", ben["user"])):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            read_as(database, role, reader, "select * from club_settings")
    raw = read_as(
        database,
        "authenticated",
        ben["user"],
        "select count(*) as n from activities where rider_id = %s",
        anna["rider"],
    )
    assert raw == [{"n": 0}]
    # Turning sharing off takes effect at once.
    execute(database, "update riders set share_with_club_at = null where id = %s", anna["rider"])
    assert read_as(database, "authenticated", ben["user"], "select * from club_activities") == []


def test_a_copy_of_a_ride_is_not_shown_twice(client, web, database):
    rider, user = link(database, web, 7721, activities=2, name="Chloé")
    ride = web.activities_of(7721)[0]
    copy = {**ride, "id": ride["id"] + 1, "name": ride["name"] + " (phone)"}
    copy["start_date"] = ride["start_date"]
    web.add_activities(7721, [copy])
    client.post("/api/cron/sync-strava", headers=cron_headers())
    pairs = query(database, "select count(*) as n from activities where duplicate_of is not null")
    assert pairs[0]["n"] == 1
    execute(database, "update riders set share_with_club_at = now() where id = %s", rider)
    rows = read_as(database, "authenticated", user, "select strava_id from club_activities")
    assert len(rows) == 2  # three stored, one a copy of another


def test_a_new_trim_hides_routes_until_they_are_cut_again(make_app, web, database):
    rider, user = link(database, web, 7731, activities=1)
    ride = web.activities_of(7731)[0]
    web.update_activity(
        ride["id"],
        workout_type=10 if ride["sport_type"] != "Run" else 0,
        sport_type="Ride",
        distance=ROUTES["ride_summary"]["distance_m"],
        map={**ride["map"], "summary_polyline": ROUTES["ride_summary"]["polyline"]},
    )
    before = make_app()
    before.test_client().post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set share_with_club_at = now() where id = %s", rider)
    # A race's detailed route is cut too, when its details are stored.
    execute(database, "update activities set is_race = true, enrichment_status = 'pending'")
    before.test_client().post("/api/cron/enrich", headers=cron_headers())
    detailed = query(database, "select polyline from activities")[0]["polyline"]
    assert detailed
    [row] = read_as(database, "authenticated", user, "select * from club_activities")
    check_trim(ROUTES["ride_summary"]["polyline"], row["summary_polyline"], 500)
    check_trim(detailed, row["polyline"], 500)

    # CLUB_ROUTE_TRIM_M becomes 3000: the service writes it when it starts...
    after = make_app(club_route_trim_m=3000)
    client = after.test_client()
    client.get("/api/health")
    settings = query(database, "select route_trim_m, routes_trim_m from club_settings")
    assert settings == [{"route_trim_m": 3000, "routes_trim_m": 500}]  # cut with 500
    # ...and at once no route cut with less is shown.
    [row] = read_as(database, "authenticated", user, "select * from club_activities")
    assert row["summary_polyline"] is None and row["polyline"] is None
    # The enrich call cuts the stored routes again with what time it has left.
    client.post("/api/cron/enrich", headers=cron_headers())
    assert query(database, "select routes_trim_m, retrim_after_id from club_settings") == [
        {"routes_trim_m": 3000, "retrim_after_id": None}
    ]
    [row] = read_as(database, "authenticated", user, "select * from club_activities")
    check_trim(ROUTES["ride_summary"]["polyline"], row["summary_polyline"], 3000)
    check_trim(detailed, row["polyline"], 3000)
    # No settings row (deleted by hand): the default trim, never none.
    execute(database, "delete from club_settings")
    [row] = read_as(database, "authenticated", user, "select * from club_activities")
    check_trim(ROUTES["ride_summary"]["polyline"], row["summary_polyline"], 3000)


def test_routes_stored_before_the_cut_are_cut_by_the_pass(make_app, web, database):
    rider, user = link(database, web, 7732, activities=30)
    app = make_app()
    app.test_client().post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set share_with_club_at = now() where id = %s", rider)
    # As rows stored before routes were cut: nothing to show until the pass.
    execute(
        database, "update activities set club_summary_polyline = null, club_summary_trim_m = null"
    )
    execute(database, "update club_settings set routes_trim_m = null, retrim_after_id = 0")
    rows = read_as(database, "authenticated", user, "select summary_polyline from club_activities")
    assert rows and all(r["summary_polyline"] is None for r in rows)
    from dataclasses import replace

    runtime = app.extensions["strava_sync"]
    from services.sharing import retrim_routes

    ticks = iter([10.0] * 2 + [0.0] * 100)  # time for two batches, then none
    assert retrim_routes(runtime, time_left=lambda: next(ticks), batch=12) == 24
    assert query(database, "select retrim_after_id from club_settings")[0]["retrim_after_id"] > 0
    assert retrim_routes(replace(runtime), time_left=lambda: 10.0, batch=12) == 6
    stored = {
        r["strava_id"]: r["summary_polyline"]
        for r in query(database, "select strava_id, summary_polyline from activities")
    }
    shown = read_as(database, "authenticated", user, "select * from club_activities")
    assert sum(1 for r in shown if r["summary_polyline"]) > 20
    for row in shown:
        if stored[row["strava_id"]] is None:  # a manual entry: no route at all
            assert row["summary_polyline"] is None
        else:
            check_trim(stored[row["strava_id"]], row["summary_polyline"], 500)
    assert query(database, "select routes_trim_m from club_settings") == [{"routes_trim_m": 500}]
    assert retrim_routes(runtime, time_left=lambda: 10.0) == 0  # done: nothing read


def test_a_rider_turning_sharing_on_has_every_route_cut_before_leaving_the_pending(
    make_app, auth_settings, web, issuer, database
):
    from dataclasses import replace
    from datetime import timedelta

    from services.sharing import cut_pending_routes

    rider, user = link(database, web, 7741, activities=30)
    app = make_app(**auth_settings)
    client = app.test_client()
    client.post("/api/cron/sync-strava", headers=cron_headers())
    routes = {
        r["id"]: r["summary_polyline"]
        for r in query(database, "select id, summary_polyline from activities")
    }
    assert len(routes) == 30
    assert query(database, "select count(club_summary_trim_m) as n from activities") == [{"n": 0}]
    # The switch's request cuts the rider's routes (30 take well under its 2 s).
    assert put(client, issuer, user, {"share": True}).status_code == 200
    cut = query(database, "select id, club_summary_polyline, club_summary_trim_m from activities")
    assert {r["club_summary_trim_m"] for r in cut} == {500}
    for row in cut:
        if routes[row["id"]] is not None:
            check_trim(routes[row["id"]], row["club_summary_polyline"], 500)
    # Still pending: a call that leased the rider before the switch may yet store a page
    # without cutting it, as this one row stands for.
    pending = "select club_routes_pending_since as since from riders where id = %s"
    switched = query(database, pending, rider)[0]["since"]
    assert switched is not None
    execute(
        database,
        "update activities set club_summary_polyline = null, club_summary_trim_m = null"
        " where id = (select min(id) from activities)",
    )
    runtime = app.extensions["strava_sync"]
    soon = replace(runtime, clock=lambda: switched + timedelta(seconds=60))
    assert cut_pending_routes(soon, time_left=lambda: 10.0) == 1
    assert query(database, pending, rider)[0]["since"] == switched  # within a lease's life
    # Once a lease's life has passed, a pass that finds nothing left ends the pending.
    later = replace(runtime, clock=lambda: switched + timedelta(seconds=121))
    ticks = iter([10.0, 0.0])  # time for one batch of 12: more is left, still pending
    execute(database, "update activities set club_summary_trim_m = null")
    assert cut_pending_routes(later, time_left=lambda: next(ticks), batch=12) == 12
    assert query(database, pending, rider)[0]["since"] == switched
    assert cut_pending_routes(later, time_left=lambda: 10.0, batch=12) == 18
    assert query(database, pending, rider) == [{"since": None}]
    assert cut_pending_routes(later, time_left=lambda: 10.0) == 0  # nobody pending


def test_a_trim_change_cuts_again_only_the_routes_of_riders_who_share(make_app, web, database):
    sharing, _ = link(database, web, 7742, activities=3)
    keeping, _ = link(database, web, 7743, activities=3)
    app = make_app()
    app.test_client().post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set share_with_club_at = now() where id = %s", sharing)
    make_app(club_route_trim_m=800).test_client().post("/api/cron/enrich", headers=cron_headers())
    trims = query(
        database,
        "select rider_id, array_agg(distinct club_summary_trim_m) as trims from activities"
        " group by rider_id order by rider_id",
    )
    assert trims == [
        {"rider_id": sharing, "trims": [800]},
        {"rider_id": keeping, "trims": [None]},  # cut if and when they turn sharing on
    ]


# --- privacy changes and deauthorization ------------------------------------------------


def test_a_webhook_privacy_change_takes_effect_at_once(make_app, web, database):
    # Events wait for the events cron (nothing processed inside the POST).
    app = make_app(webhook_inline_budget_s=0, strava_webhook_verify_token="verify-7741")
    client = app.test_client()
    rider, user = link(database, web, 7741, activities=3)
    client.post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set share_with_club_at = now() where id = %s", rider)
    execute(
        database,
        "insert into strava_push_subscription (subscription_id, callback_url, created_at)"
        " values (55, 'https://sync.example/api/strava/webhook', now())",
    )
    shown = {
        r["strava_id"]
        for r in read_as(database, "authenticated", user, "select strava_id from club_activities")
    }
    assert len(shown) == 3
    target, forged = sorted(shown)[:2]
    web.update_activity(target, visibility="followers_only")

    def post(object_id: int) -> None:
        event = {
            "object_type": "activity",
            "object_id": object_id,
            "aspect_type": "update",
            "owner_id": 7741,
            "subscription_id": 55,
            "event_time": int(web.now().timestamp()),
            "updates": {"private": "false"},
        }
        assert client.post("/api/strava/webhook", json=event).status_code == 200

    post(target)
    post(forged)  # nothing changed at Strava
    hidden = {
        r["strava_id"]
        for r in read_as(database, "authenticated", user, "select strava_id from club_activities")
    }
    assert hidden == shown - {target, forged}  # at once, before anyone asked Strava
    assert client.post("/api/cron/events", headers=cron_headers()).status_code == 200
    after = {
        r["strava_id"]
        for r in read_as(database, "authenticated", user, "select strava_id from club_activities")
    }
    assert after == shown - {target}  # Strava's answer stands: the forged hint is undone
    row = query(database, "select visibility, private from activities where strava_id = %s", target)
    assert row == [{"visibility": "followers_only", "private": False}]


def test_deauthorization_deletes_what_was_derived_from_the_riders_data(make_app, web, database):
    app = make_app(strava_webhook_verify_token="verify-7751")
    client = app.test_client()
    rider, user = link(database, web, 7751, activities=5)
    other, _ = link(database, web, 7752, activities=2)
    client.post("/api/cron/sync-strava", headers=cron_headers())
    rides = query(
        database, "select strava_id from activities where rider_id = %s order by 1", rider
    )
    execute(
        database, "update riders set share_with_club_at = now() where id in (%s, %s)", rider, other
    )
    execute(
        database,
        "update activities set weather_status = 'done', weather_temperature_c = 11,"
        " start_city = 'Lyon' where rider_id = %s",
        rider,
    )
    execute(
        database,
        "insert into duplicate_overrules (first_strava_id, second_strava_id, rider_id, verdict,"
        " created_at) values (%s, %s, %s, 'distinct', now())",
        rides[0]["strava_id"],
        rides[1]["strava_id"],
        rider,
    )
    execute(
        database,
        "insert into strava_push_subscription (subscription_id, callback_url, created_at)"
        " values (56, 'https://sync.example/api/strava/webhook', now())",
    )
    execute(
        database,
        "insert into realtime.messages (topic, extension, event, payload)"
        " values (%s, 'broadcast', 'progress', '{}')",
        f"rider:{user}",
    )
    web.revoke_athlete(7751)
    event = {
        "object_type": "athlete",
        "object_id": 7751,
        "aspect_type": "update",
        "owner_id": 7751,
        "subscription_id": 56,
        "event_time": int(web.now().timestamp()),
        "updates": {"authorized": "false"},
    }
    assert client.post("/api/strava/webhook", json=event).status_code == 200
    client.post("/api/cron/events", headers=cron_headers())
    connection = query(database, "select * from strava_connections where rider_id = %s", rider)[0]
    assert connection["status"] == "revoked" and connection["access_token"] is None
    assert connection["sync_cursor"] is None and connection["history_cursor"] is None
    assert connection["poll_reason"] is None and connection["athlete_created_at"] is None
    for table in ("activities", "duplicate_overrules", "strava_webhook_events"):
        left = query(database, f"select count(*) as n from {table} where rider_id = %s", rider)
        assert left == [{"n": 0}], table
    me = query(
        database,
        "select eddington_km, eddington_miles, share_with_club_at from riders where id = %s",
        rider,
    )
    assert me == [{"eddington_km": None, "eddington_miles": None, "share_with_club_at": None}]
    assert query(
        database, "select count(*) as n from realtime.messages where topic = %s", f"rider:{user}"
    ) == [{"n": 0}]
    # The other rider keeps everything.
    assert (
        query(database, "select count(*) as n from activities where rider_id = %s", other)[0]["n"]
        == 2
    )
    assert query(
        database, "select share_with_club_at is not null as s from riders where id = %s", other
    ) == [{"s": True}]


# --- the athlete capacity -----------------------------------------------------------------


def test_connect_is_refused_before_strava_once_the_capacity_is_reached(
    make_app, auth_settings, web, issuer, database
):
    client = make_app(**auth_settings, strava_athlete_capacity=2).test_client()
    _, first = link(database, web, 7761)
    _, second = link(database, web, 7762)
    newcomer = uuid.uuid4()
    refused = client.post("/api/strava/connect", headers=issuer.headers(issuer.es256(newcomer)))
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["code"] == "athlete_capacity" and "2 athletes" in error["message"]
    assert query(database, "select count(*) as n from oauth_states")[0]["n"] == 0  # not sent on
    # A rider reconnecting their own athlete is never refused, even needing to reconnect.
    execute(
        database, "update strava_connections set status = 'needs_reauth' where athlete_id = 7762"
    )
    for user in (first, second):
        again = client.post("/api/strava/connect", headers=issuer.headers(issuer.es256(user)))
        assert again.status_code == 200 and again.get_json()["authorize_url"]
    # A revoked connection holds no place.
    execute(database, "update strava_connections set status = 'revoked' where athlete_id = 7761")
    allowed = client.post("/api/strava/connect", headers=issuer.headers(issuer.es256(newcomer)))
    assert allowed.status_code == 200
    status = client.get("/api/admin/status", headers=cron_headers()).get_json()
    assert status["athletes"] == {"connected": 1, "capacity": 2, "full": False}
    unknown = make_app(**auth_settings).test_client()
    assert unknown.get("/api/admin/status", headers=cron_headers()).get_json()["athletes"] == {
        "connected": 1,
        "capacity": None,
        "full": False,
    }


def test_stravas_own_capacity_refusal_is_recognised(make_app, auth_settings, web, issuer, database):
    from urllib.parse import parse_qs, urlsplit

    client = make_app(**auth_settings, app_return_url="https://club.example/me").test_client()
    headers = issuer.headers(issuer.es256(uuid.uuid4()))
    # Strava refuses the code's exchange for the athlete limit.
    started = client.post("/api/strava/connect", headers=headers).get_json()
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    web.fail_next(
        1,
        status=403,
        path_contains="/oauth/token",
        body={"message": "Limit of connected athletes exceeded", "errors": []},
    )
    code = web.add_authorization_code(7771)
    back = client.get(
        "/api/strava/callback",
        query_string={"state": state, "code": code, "scope": "read,activity:read_all"},
    )
    assert back.status_code == 302
    assert parse_qs(urlsplit(back.headers["Location"]).query)["reason"] == ["athlete_capacity"]
    # Or sends the rider back with the refusal as the error.
    started = client.post("/api/strava/connect", headers=headers).get_json()
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    back = client.get(
        "/api/strava/callback",
        query_string={"state": state, "error": "Limit of connected athletes exceeded"},
    )
    assert parse_qs(urlsplit(back.headers["Location"]).query)["reason"] == ["athlete_capacity"]
    assert query(database, "select count(*) as n from strava_connections")[0]["n"] == 0


def test_new_rides_of_a_sharing_rider_appear_as_they_sync(client, web, database):
    from datetime import timedelta

    rider, user = link(database, web, 7781, activities=2)
    client.post("/api/cron/sync-strava", headers=cron_headers())
    execute(database, "update riders set share_with_club_at = now() where id = %s", rider)
    before = read_as(database, "authenticated", user, "select strava_id from club_activities")
    web.add_activities(
        7781,
        make_activities(
            7781,
            2,
            start=web.now() - timedelta(hours=3),
            end=web.now(),
            seed=3,
            first_id=7781_000_001,
        ),
    )
    execute(database, "update strava_connections set last_synced_at = null, next_poll_at = null")
    client.post("/api/cron/sync-strava", headers=cron_headers())
    after = read_as(database, "authenticated", user, "select strava_id from club_activities")
    assert len(after) == len(before) + 2


@settings(max_examples=150, deadline=None)
@given(
    start=st.tuples(st.integers(-80_00000, 80_00000), st.integers(-179_00000, 179_00000)),
    steps=st.lists(
        st.tuples(st.integers(-400, 400), st.integers(-400, 400)), min_size=1, max_size=80
    ),
    trim=st.integers(1, 3000),
)
def test_any_route_keeps_its_promise(start, steps, trim):
    """Random routes (steps of up to ~60 m, in the polyline's units): whatever is shown
    is a stretch of the route with at least `trim` metres gone from each end."""
    points = [start]
    for dlat, dlng in steps:
        points.append((points[-1][0] + dlat, points[-1][1] + dlng))
    route = encode([(lat / 1e5, lng / 1e5) for lat, lng in points])
    check_trim(route, trim_route(route, trim), trim)
