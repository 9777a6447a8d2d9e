"""The connection pool survives connections closed under it (a pooler's idle timeout,
a database restart, a serverless instance thawed after a while)."""

from __future__ import annotations

import psycopg

from tests.conftest import cron_headers
from tests.factories import connect_rider


def test_requests_succeed_after_the_servers_side_closed_every_connection(client, strava, database):
    connect_rider(database, strava, 701, activities=2)
    assert client.get("/api/health").status_code == 200
    with psycopg.connect(database, autocommit=True) as admin:
        killed = admin.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 1  # the pool's idle connections are gone
    assert client.get("/api/health").status_code == 200
    response = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert response.status_code == 200
    assert response.get_json()["succeeded"] == 1
