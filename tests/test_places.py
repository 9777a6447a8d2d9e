"""Places, offline: known coordinates name their town, the sea names none, and an
activity stored by a real sync gets its start point and place without any network."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fake_strava import make_activity
from fake_strava.polyline import encode
from services.places import DATA_FILE, decode_polyline, nearest_place, row_place, start_point
from tests.conftest import cron_headers
from tests.factories import connect_rider, query


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


def test_the_table_ships_with_the_code_and_stays_small():
    assert DATA_FILE.exists()
    assert DATA_FILE.stat().st_size < 3_000_000


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
