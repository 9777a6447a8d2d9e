"""Pure rules: what a summary becomes, which activities are races, when a listing ends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.activities import (
    activity_row,
    is_race,
    listing_ended,
    newest_start,
    oldest_start,
    page_rows,
    parse_start_date,
)
from services.routes import trim_route
from services.strava import BadPayload

# Strava's own payloads, copied into the repository (see tests/fixtures/strava/README.md).
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "strava"


def race(sport, workout_type=None, km=30.0, trainer=False):
    return is_race(
        sport_type=sport,
        workout_type=workout_type,
        distance_m=km * 1000,
        trainer=trainer,
        min_distance_km=200,
    )


def test_race_rule():
    assert race("Run", 1) and race("TrailRun", 1)
    assert race("Ride", 11) and race("GravelRide", 11) and race("VirtualRide", 11)
    assert race("Ride", km=200) and race("GravelRide", km=312.5)
    assert not race("Ride", km=199.9)
    assert not race("Run", 11) and not race("Ride", 1)  # the codes belong to their sport
    assert not race("Run", 2) and not race("Ride", 10) and not race("Ride", 12)
    assert not race("VirtualRide", km=250) and not race("Ride", km=250, trainer=True)
    assert not race("Walk", km=250)


def test_reference_payloads_become_rows():
    detailed = json.loads((REFERENCE / "activity.3.json").read_text())
    row = activity_row(detailed, min_race_distance_km=200)
    assert row["strava_id"] == detailed["id"]
    assert row["start_date"].endswith("+00:00")
    assert row["summary_polyline"] == (detailed["map"].get("summary_polyline") or None)
    manual = json.loads((REFERENCE / "activity-manual.3.json").read_text())
    manual_row = activity_row(manual, min_race_distance_km=200)
    assert manual_row["summary_polyline"] is None
    json.dumps([row, manual_row])  # JSON-ready for the bulk upsert


def swagger_example(path: str):
    swagger = json.loads((REFERENCE / "strava_swagger.activities.json").read_text())
    return swagger["paths"][path]["get"]["responses"]["200"]["examples"]["application/json"]


def test_swagger_summary_example_with_huge_ids():
    examples = swagger_example("/athlete/activities")
    rows = page_rows(examples, min_race_distance_km=200)
    assert [r["strava_id"] for r in rows] == [e["id"] for e in examples]
    first = rows[0]
    assert first["upload_id"] == "987654321234567891234"  # beyond 64 bits, kept exactly
    assert first["workout_type"] is None and first["summary_polyline"] is None
    assert first["sport_type"] == "MountainBikeRide"


def test_swagger_detailed_example_becomes_a_row():
    detailed = swagger_example("/activities/{id}")
    row = activity_row(detailed, min_race_distance_km=200)
    assert row["strava_id"] == 12345678987654321  # beyond 53 bits: not a float anywhere
    assert row["upload_id"] == "98765432123456789"
    assert row["sport_type"] == "MountainBikeRide" and row["workout_type"] == 10
    assert row["start_date"] == "2018-02-16T14:52:54+00:00"
    assert not row["is_race"]  # 28 km, workout_type 10 (a workout, not a race)
    json.dumps(row)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"id": "12", "start_date": "2024-01-01T00:00:00Z", "sport_type": "Ride"},
        {"id": 1, "sport_type": "Ride"},
        {"id": 1, "start_date": "yesterday", "sport_type": "Ride"},
        {"id": 1, "start_date": "2024-01-01T00:00:00Z"},
        {"id": 1, "start_date": "2024-01-01T00:00:00Z", "sport_type": "", "type": ""},
    ],
)
def test_malformed_summaries_are_refused(bad):
    with pytest.raises(BadPayload):
        activity_row(bad, min_race_distance_km=200)


def test_a_page_never_holds_the_same_activity_twice():
    summary = {"id": 5, "start_date": "2024-01-01T00:00:00Z", "sport_type": "Ride", "name": "a"}
    rows = page_rows([summary, {**summary, "name": "b"}], min_race_distance_km=200)
    assert [r["name"] for r in rows] == ["b"]


def test_a_page_cut_for_the_club_carries_each_route_cut_and_the_trim_it_was_cut_with():
    detailed = json.loads((REFERENCE / "activity.3.json").read_text())
    route = detailed["map"]["summary_polyline"]
    manual = json.loads((REFERENCE / "activity-manual.3.json").read_text())
    ride, no_route = page_rows([detailed, manual], min_race_distance_km=200, route_trim_m=200)
    assert ride["strava_id"] == detailed["id"] and ride["summary_polyline"] == route
    assert ride["club_summary_polyline"] == trim_route(route, 200)
    assert ride["club_summary_polyline"] and ride["club_summary_polyline"] != route
    assert ride["club_summary_trim_m"] == 200
    assert no_route["club_summary_polyline"] is None and no_route["club_summary_trim_m"] == 200
    # A trim of 0 shows the whole route; without a trim the page is not cut at all.
    (whole,) = page_rows([detailed], min_race_distance_km=200, route_trim_m=0)
    assert (whole["club_summary_polyline"], whole["club_summary_trim_m"]) == (route, 0)
    (uncut,) = page_rows([detailed], min_race_distance_km=200)
    assert "club_summary_polyline" not in uncut and "club_summary_trim_m" not in uncut


def test_end_of_listing():
    assert listing_ended(0, read_all=True) and listing_ended(0, read_all=False)
    assert listing_ended(199, read_all=True)
    assert not listing_ended(199, read_all=False)  # private activities filtered after paging
    assert not listing_ended(200, read_all=True)


# A summary as Strava lists it (resource_state 2), every field a value of its own.
SUMMARY = {
    "id": 11223344,
    "resource_state": 2,
    "name": "Col de la Madeleine",
    "sport_type": "GravelRide",
    "type": "Ride",
    "workout_type": 10,
    "start_date": "2024-05-01T06:12:00Z",
    "start_date_local": "2024-05-01T08:12:00Z",
    "timezone": "(GMT+01:00) Europe/Paris",
    "distance": 84210.4,
    "moving_time": 14400,
    "elapsed_time": 16200,
    "total_elevation_gain": 1544.2,
    "average_speed": 5.848,
    "max_speed": 19.7,
    "average_watts": 187.4,
    "average_heartrate": 141.3,
    "trainer": False,
    "commute": True,
    "manual": False,
    "private": False,
    "visibility": "followers_only",
    "gear_id": "b1234567",
    "upload_id": 5566778899,
    "external_id": "garmin_ping_312.fit",
    "map": {"id": "a11223344", "summary_polyline": "ki{eFvqfiVqAWQIGEEK", "resource_state": 2},
}


def test_a_summary_becomes_a_row_field_by_field():
    row = activity_row(SUMMARY, min_race_distance_km=200)
    assert row["strava_id"] == 11223344
    assert row["name"] == "Col de la Madeleine"
    assert row["sport_type"] == "GravelRide"  # sport_type, not the coarser type
    assert row["workout_type"] == 10
    assert row["start_date"] == "2024-05-01T06:12:00+00:00"
    assert row["start_date_local"] == "2024-05-01T08:12:00Z"  # the local date, kept as given
    assert row["timezone"] == "(GMT+01:00) Europe/Paris"
    assert row["distance_m"] == 84210.4
    assert row["moving_time_s"] == 14400 and row["elapsed_time_s"] == 16200
    assert row["total_elevation_gain_m"] == 1544.2
    assert row["average_speed_mps"] == 5.848 and row["max_speed_mps"] == 19.7
    assert row["average_watts"] == 187.4 and row["average_heartrate"] == 141.3
    assert row["trainer"] is False and row["commute"] is True and row["manual"] is False
    assert row["private"] is False and row["visibility"] == "followers_only"
    assert row["gear_id"] == "b1234567"
    assert row["upload_id"] == "5566778899"
    assert row["external_id"] == "garmin_ping_312.fit"
    assert row["summary_polyline"] == "ki{eFvqfiVqAWQIGEEK"
    assert row["is_race"] is False


def test_the_flags_of_a_summary_are_read_each_from_its_own_field():
    flagged = {**SUMMARY, "trainer": True, "commute": False, "manual": True}
    row = activity_row(
        {**flagged, "private": True, "visibility": "only_me"}, min_race_distance_km=200
    )
    assert row["trainer"] is True and row["commute"] is False and row["manual"] is True
    assert row["private"] is True and row["visibility"] == "only_me"


def test_what_a_summary_leaves_out_is_null_or_empty_in_the_row():
    bare = {"id": 7, "sport_type": "Ride", "start_date": "2024-05-01T06:12:00Z"}
    row = activity_row(bare, min_race_distance_km=200)
    assert row["name"] == ""
    assert row["distance_m"] == 0.0
    assert row["trainer"] is False and row["commute"] is False and row["manual"] is False
    for key in ("workout_type", "start_date_local", "timezone", "moving_time_s",
                "elapsed_time_s", "total_elevation_gain_m", "average_speed_mps",
                "max_speed_mps", "average_watts", "average_heartrate", "gear_id", "upload_id",
                "external_id", "summary_polyline"):  # fmt: skip
        assert row[key] is None, key
    assert activity_row({**bare, "name": None}, min_race_distance_km=200)["name"] == ""


def test_a_negative_distance_is_stored_as_none_ridden():
    row = activity_row({**SUMMARY, "distance": -12.5}, min_race_distance_km=200)
    assert row["distance_m"] == 0.0


def test_the_upload_id_is_taken_from_its_string_form_when_strava_sends_both():
    # Beyond 2**53 the number can lose its last digits in a JSON parser; the string cannot.
    both = {**SUMMARY, "upload_id": 98765432123456784, "upload_id_str": "98765432123456789"}
    assert activity_row(both, min_race_distance_km=200)["upload_id"] == "98765432123456789"


@pytest.mark.parametrize(
    ("change", "raced"),
    [
        ({"sport_type": "Run", "workout_type": 1, "distance": 5000.0}, True),
        ({"sport_type": "Ride", "workout_type": 11, "distance": 30000.0}, True),
        ({"sport_type": "Ride", "workout_type": None, "distance": 200000.0}, True),
        ({"sport_type": "Ride", "workout_type": None, "distance": 199999.0}, False),
        # A long ride on a trainer is no race, though the distance is.
        (
            {"sport_type": "Ride", "workout_type": None, "distance": 250000.0, "trainer": True},
            False,
        ),
    ],
)
def test_a_row_says_whether_the_summary_is_a_race(change, raced):
    row = activity_row({**SUMMARY, **change}, min_race_distance_km=200)
    assert row["is_race"] is raced
    assert row["trainer"] is bool(change.get("trainer"))


def test_start_dates_are_utc_instants_whatever_their_form():
    utc = datetime(2024, 5, 1, 6, 12, tzinfo=UTC)
    assert parse_start_date("2024-05-01T06:12:00Z") == utc
    assert parse_start_date("2024-05-01T08:12:00+02:00") == utc
    naive = parse_start_date("2024-05-01T06:12:00")  # no offset: Strava's start_date is UTC
    assert naive == utc and naive.utcoffset() == timedelta(0)


def test_the_newest_and_oldest_start_of_a_page_whatever_its_order():
    rows = [
        {"start_date": "2024-05-02T06:00:00+00:00"},
        {"start_date": "2024-05-03T06:00:00+00:00"},
        {"start_date": "2024-05-01T06:00:00+00:00"},
    ]
    assert newest_start(rows) == datetime(2024, 5, 3, 6, tzinfo=UTC)
    assert oldest_start(rows) == datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert newest_start([]) is None and oldest_start([]) is None
