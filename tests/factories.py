"""Seeding helpers for tests: riders connected to the fake Strava, with activities."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import jwt
import psycopg

import models
from fake_strava import UNREACHED_LIMITS, FakeStrava, make_activities
from scripts.seeding import connect_athlete
from services.sealing import Sealer
from services.tokens import open_tokens
from tests.conftest import CLIENT_ID, CLIENT_SECRET, SEALER


def unlimited_fake(**options: Any) -> FakeStrava:
    """The fake Strava for the app's client, with rate limits no test reaches (for tests
    about something else than the budget)."""
    return FakeStrava(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        **UNREACHED_LIMITS,
        **options,
    )


def connect_rider(
    database_url: str,
    fake: FakeStrava,
    athlete_id: int,
    *,
    activities: int = 0,
    start: datetime | None = None,
    end: datetime | None = None,
    scope: str = "read,activity:read_all",
    name: str | None = None,
    expires_in: int | None = None,
    sync_cursor: datetime | None = None,
    history_complete: bool = True,
    private_fraction: float = 0.0,
    seed: int | None = None,
    sealer: Sealer | None = None,
    **activity_options: Any,
) -> int:
    """A rider in the database connected to `athlete_id` on the fake, with `activities`
    activities there (not yet synced). Returns the rider id.

    By default the history counts as discovered (so discover leaves it alone) and the
    sync cursor is the connection time, as for a rider who just connected. The tokens are
    sealed with `sealer`, by default the session's (conftest.SEALER, the apps' own).
    """
    fake.add_athlete(athlete_id)
    now = fake.now()  # the fake's clock, which a test may share with the service
    if activities:
        fake.add_activities(
            athlete_id,
            make_activities(
                athlete_id,
                activities,
                start=start or now - timedelta(days=6),
                end=end or now - timedelta(minutes=5),
                seed=athlete_id if seed is None else seed,
                private_fraction=private_fraction,
                **activity_options,
            ),
        )
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        rider_id = connect_athlete(
            conn,
            fake,
            athlete_id,
            sealer=sealer or SEALER,
            name=name or f"Rider {athlete_id}",
            scope=scope,
            expires_in=expires_in,
            now=now,
        )
        conn.execute(
            "update strava_connections set sync_cursor = coalesce(%s, sync_cursor),"
            " history_complete_at = case when %s then %s::timestamptz end where rider_id = %s",
            (sync_cursor, history_complete, now, rider_id),
        )
    return rider_id


def stored_tokens(
    database_url: str, rider_id: int | None = None, *, sealer: Sealer = SEALER
) -> dict[str, Any]:
    """A connection's tokens, opened with the session's key (the only rider's if no id):
    `access_token`, `refresh_token` and `expires_at`."""
    where, params = ("where rider_id = %s", (rider_id,)) if rider_id is not None else ("", ())
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute(
            "select rider_id, access_token, refresh_token, expires_at, status"
            f" from strava_connections {where}",
            params,
        ).fetchall()
    assert len(rows) == 1, f"expected one connection, found {len(rows)}"
    tokens = open_tokens(sealer, models.tokens.StoredTokens(**rows[0]))
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at,
    }


def query(database_url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query, for assertions on what the service stored."""
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def execute(database_url: str, sql: str, *params: Any) -> None:
    """A write for setting up a test's situation (an expired lease, a stale cursor)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(sql, params)


def riders_held_or_backing_off(database_url: str) -> int:
    """Riders still leased or counted as failing: after a stop that was not the riders'
    fault (rate limit, time budget), this must be 0."""
    return int(
        query(
            database_url,
            "select count(*) as n from strava_connections"
            " where lease_token is not null or failure_count > 0",
        )[0]["n"]
    )


def hs256_rider_headers(secret: str) -> dict[str, str]:
    """The Authorization header of a new Supabase user's access token, signed with the
    legacy HS256 secret and valid for ten minutes."""
    now = int(time.time())
    claims = {
        "iss": "https://club-test.supabase.co/auth/v1",
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
    }
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}
