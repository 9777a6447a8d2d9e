"""Pure rules: what a summary becomes, which activities are races, when a listing ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.activities import activity_row, is_race, listing_ended, page_rows
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
    ],
)
def test_malformed_summaries_are_refused(bad):
    with pytest.raises(BadPayload):
        activity_row(bad, min_race_distance_km=200)


def test_a_page_never_holds_the_same_activity_twice():
    summary = {"id": 5, "start_date": "2024-01-01T00:00:00Z", "sport_type": "Ride", "name": "a"}
    rows = page_rows([summary, {**summary, "name": "b"}], min_race_distance_km=200)
    assert [r["name"] for r in rows] == ["b"]


def test_end_of_listing():
    assert listing_ended(0, read_all=True) and listing_ended(0, read_all=False)
    assert listing_ended(199, read_all=True)
    assert not listing_ended(199, read_all=False)  # private activities filtered after paging
    assert not listing_ended(200, read_all=True)
