"""Places, offline: known coordinates name their town, the sea names none, and an
activity stored by a real sync gets its start point and place without any network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

import models
from fake_strava import make_activity
from fake_strava.polyline import encode
from services.activities import page_rows
from services.places import (
    DATA_FILE,
    INDEX_FILE,
    decode_polyline,
    nearest_place,
    row_place,
    start_point,
)
from tests.conftest import cron_headers
from tests.factories import connect_rider, query

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "strava"
PLACE = ("start_lat", "start_lng", "end_lat", "end_lng", "start_city", "start_region",
         "start_country")  # fmt: skip


@pytest.mark.parametrize(
    ("point", "city", "region", "country"),
    [
        ((48.8566, 2.3522), "Paris", "Île-de-France", "France"),
        ((51.5074, -0.1278), "London", "England", "United Kingdom"),
        ((-37.81, 144.96), "Melbourne", "Victoria", "Australia"),
        ((40.71, -74.0), "New York City", "New York", "United States"),
        ((69.65, 18.96), "Tromsø", "Troms", "Norway"),
        ((46.2, 6.15), "Genève", "Geneva", "Switzerland"),
    ],
)
def test_known_coordinates_name_their_town(point, city, region, country):
    place = nearest_place(point)
    assert place is not None
    assert (place.city, place.region, place.country) == (city, region, country)
    assert place.distance_km is not None and place.distance_km < 5


@pytest.mark.parametrize(
    "point",
    [(45.0, -30.0), (0.0, -140.0), (-40.0, 80.0), (0.0, 0.0), (91.0, 0.0), (10.0, 181.0)],
)
def test_the_open_sea_and_impossible_points_have_no_place(point):
    assert nearest_place(point) is None


def test_the_table_and_its_index_ship_with_the_code_and_stay_small():
    assert DATA_FILE.exists() and DATA_FILE.stat().st_size < 3_000_000
    # Uncompressed, to load in milliseconds; 2.4 MB gzipped, as a deployment ships it.
    assert INDEX_FILE.exists() and INDEX_FILE.stat().st_size < 7_000_000


def test_the_start_point_comes_from_start_latlng_or_the_polyline_and_strava_wins():
    track = [(45.76, 4.84), (45.77, 4.85), (45.78, 4.86)]
    assert decode_polyline(encode(track)) == track
    assert decode_polyline(encode(track), limit=1) == track[:1]
    assert decode_polyline("_p~iF~ps|U_ulLnnqC_mqNvxq`@"[:7]) == []  # cut mid-point
    assert start_point({"summary_polyline": encode(track)}) == track[0]
    assert start_point({"start_latlng": [48.85, 2.35], "summary_polyline": encode(track)}) == (
        48.85,
        2.35,
    )
    assert start_point({"summary_polyline": None}) is None
    assert start_point({"start_latlng": [], "summary_polyline": ""}) is None
    lyon = row_place({"summary_polyline": encode(track)})
    assert lyon == {
        "start_lat": 45.76,
        "start_lng": 4.84,
        "end_lat": 45.78,  # no end_latlng: the polyline's last point
        "end_lng": 4.86,
        "start_city": "Lyon 03",  # GeoNames keeps the arrondissements
        "start_region": "Auvergne-Rhône-Alpes",
        "start_country": "France",
    }
    kept = row_place(
        {"summary_polyline": encode(track), "location_city": "Lugdunum", "location_country": ""}
    )
    assert (kept["start_city"], kept["start_region"], kept["start_country"]) == (
        "Lugdunum",
        "Auvergne-Rhône-Alpes",
        "France",
    )
    assert row_place({"summary_polyline": None})["start_city"] is None


def test_a_synced_activity_is_stored_with_its_place(client, strava, database):
    rider = connect_rider(database, strava, 8101)
    now = strava.now()
    outdoor = make_activity(81010, athlete_id=8101, start_date=now - timedelta(hours=3))
    indoor = make_activity(
        81011, athlete_id=8101, start_date=now - timedelta(hours=6), trainer=True
    )
    manual = make_activity(81012, athlete_id=8101, start_date=now - timedelta(hours=9), manual=True)
    strava.add_activities(8101, [outdoor, indoor, manual])
    response = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert response.status_code == 200 and response.get_json()["succeeded"] == 1
    rows = {
        r["strava_id"]: r
        for r in query(
            database,
            "select strava_id, start_lat, start_lng, start_city, start_region, start_country"
            " from activities where rider_id = %s",
            rider,
        )
    }
    lat, lng = decode_polyline(outdoor["map"]["summary_polyline"])[0]
    expected = nearest_place((lat, lng))
    assert expected is not None
    assert rows[81010] == {
        "strava_id": 81010,
        "start_lat": lat,
        "start_lng": lng,
        "start_city": expected.city,
        "start_region": expected.region,
        "start_country": expected.country,
    }
    for no_point in (81011, 81012):
        assert rows[no_point]["start_lat"] is None and rows[no_point]["start_city"] is None


def place_of(row):
    return tuple(row[c] for c in PLACE)


def swagger_example(path):
    swagger = json.loads((REFERENCE / "strava_swagger.activities.json").read_text())
    return swagger["paths"][path]["get"]["responses"]["200"]["examples"]["application/json"]


def test_stravas_own_location_fields_are_kept_and_the_table_fills_the_rest():
    # A real detailed activity: start_latlng, end_latlng, location_city and _state set,
    # location_country absent (the table's country fills it in).
    detailed = json.loads((REFERENCE / "activity.3.json").read_text())
    assert detailed["location_city"] == "San Francisco" and "location_country" not in detailed
    (row,) = page_rows([detailed], min_race_distance_km=200)
    assert place_of(row) == (
        37.78108, -122.39554, 37.78088, -122.39548, "San Francisco", "CA", "United States"
    )  # fmt: skip
    # Strava's published summaries: no point at all, only location_country.
    for row in page_rows(swagger_example("/athlete/activities"), min_race_distance_km=200):
        assert place_of(row) == (None, None, None, None, None, None, "United States")
    # Strava's published detailed example: points, no location_*: all from the table.
    (example,) = [swagger_example("/activities/{id}")]
    (row,) = page_rows([example], min_race_distance_km=200)
    town = nearest_place((37.83, -122.26))
    assert town is not None
    assert place_of(row) == (37.83, -122.26, 37.83, -122.26, town.city, town.region,
                             town.country)  # fmt: skip
    # start_latlng wins over the polyline's first point; end_latlng over its last.
    track = [(45.76, 4.84), (45.77, 4.85), (45.78, 4.86)]
    summary = make_activity(1, athlete_id=1, start_date=datetime(2030, 5, 1, tzinfo=UTC))
    summary.update(start_latlng=[45.5, 4.5], end_latlng=[45.9, 4.9], map={
        "id": "a1", "summary_polyline": encode(track), "resource_state": 2})  # fmt: skip
    (row,) = page_rows([summary], min_race_distance_km=200)
    assert place_of(row)[:4] == (45.5, 4.5, 45.9, 4.9)


def test_a_races_detail_brings_stravas_location_over_the_summarys(client, strava, database):
    rider = connect_rider(database, strava, 8201)
    now = strava.now()
    brevet = make_activity(82010, athlete_id=8201, start_date=now - timedelta(days=3),
                           distance_m=300_000)  # fmt: skip
    brevet.update(location_city="Bourg-en-Bresse", location_state="Ain", location_country="")
    strava.add_activities(8201, [brevet])
    # The listing had no location fields (as Strava's summaries mostly have none).
    bare = {**brevet, "location_city": None, "location_state": None, "location_country": None}
    with psycopg.connect(database, row_factory=dict_row) as conn:
        models.activities.upsert_activities(
            conn, rider_id=rider, rows=page_rows([bare], min_race_distance_km=200),
            now=datetime.now(UTC),
        )  # fmt: skip
    sql = f"select {', '.join(PLACE)} from activities where strava_id = 82010"
    listed = query(database, sql)[0]
    town = nearest_place((listed["start_lat"], listed["start_lng"]))
    assert town is not None and listed["start_city"] == town.city
    response = client.post("/api/cron/enrich", headers=cron_headers())
    assert response.status_code == 200 and response.get_json()["succeeded"] == 1
    detailed = query(database, sql)[0]
    assert (detailed["start_city"], detailed["start_region"]) == ("Bourg-en-Bresse", "Ain")
    assert detailed["start_country"] == town.country  # Strava's empty string: the table's
    start, end = brevet["start_latlng"], brevet["end_latlng"]
    assert (detailed["start_lat"], detailed["start_lng"]) == (
        round(start[0], 5),
        round(start[1], 5),
    )
    assert (detailed["end_lat"], detailed["end_lng"]) == (round(end[0], 5), round(end[1], 5))
