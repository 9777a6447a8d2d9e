"""Request bodies are bounded: the service takes tiny JSON bodies, and anything over
MAX_CONTENT_LENGTH is a 413 `payload_too_large` in the Error shape before a route (and
its database work) runs."""

from __future__ import annotations

import io
import json
from typing import Any

import psycopg
import pytest

from app_factory import MAX_CONTENT_LENGTH
from tests.conftest import cron_headers
from tests.factories import hs256_rider_headers

JWT_SECRET = "test-jwt-secret-for-request-limits-5d2e"
SYNC = "/api/cron/sync-strava"
RIDER_SYNC = "/api/riders/me/sync"


def rider_headers() -> dict[str, str]:
    return hs256_rider_headers(JWT_SECRET)


def body_of(size: int) -> bytes:
    """A JSON object of exactly `size` bytes: {"limit": 5, "pad": "xxx..."}."""
    empty = json.dumps({"limit": 5, "pad": ""}).encode()
    body = json.dumps({"limit": 5, "pad": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


def count(database: str, table: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(f"select count(*) from {table}").fetchone()
        assert row is not None
        return int(row[0])


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "payload_too_large"
    assert str(MAX_CONTENT_LENGTH) in error["message"]


@pytest.fixture
def client(make_app):
    return make_app(supabase_jwt_secret=JWT_SECRET).test_client()


def test_the_limit_is_small():
    assert MAX_CONTENT_LENGTH == 16 * 1024


def test_an_oversized_body_to_a_cron_endpoint_is_refused_and_nothing_is_written(client, database):
    response = client.post(
        SYNC,
        data=body_of(MAX_CONTENT_LENGTH + 1),
        content_type="application/json",
        headers=cron_headers(),
    )
    assert_too_large(response)
    assert count(database, "cron_runs") == 0


def test_a_body_at_the_limit_still_works(client, database, strava):
    response = client.post(
        SYNC,
        data=body_of(MAX_CONTENT_LENGTH),
        content_type="application/json",
        headers=cron_headers(),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert count(database, "cron_runs") == 1
    small = client.post(SYNC, json={"limit": 5}, headers=cron_headers())
    assert small.status_code == 200
    assert count(database, "cron_runs") == 2


def test_an_oversized_body_without_a_content_length_is_refused_too(client, database):
    """A chunked body declares no length (the server says its input is terminated, as
    gunicorn does): Werkzeug stops reading at the limit."""
    response = client.post(
        SYNC,
        input_stream=io.BytesIO(body_of(4 * MAX_CONTENT_LENGTH)),
        content_type="application/json",
        headers={**cron_headers(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_too_large(response)
    assert count(database, "cron_runs") == 0


def test_an_oversized_body_to_a_rider_endpoint_is_refused_before_anything(client, database):
    # Sync now reads no body at all, yet a huge one is refused rather than ignored, and
    # before the token is even looked at.
    for headers in (rider_headers(), {}):
        response = client.post(
            RIDER_SYNC,
            data=body_of(MAX_CONTENT_LENGTH + 1),
            content_type="application/json",
            headers=headers,
        )
        assert_too_large(response)
    assert count(database, "riders") == 0
    assert count(database, "cron_runs") == 0
    # A small body still reaches the route: this signed-in user has no Strava connection.
    small = client.post(RIDER_SYNC, json={"x": 1}, headers=rider_headers())
    assert small.status_code == 409, small.get_data(as_text=True)
    assert small.get_json()["error"]["code"] == "not_connected"
