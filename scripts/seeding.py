"""Seeding: a fake Strava athlete connected as one of the service's riders, as the OAuth
flow would, for the demo and the tests. It knows both sides (the simulator and the
service's store and sealing), so it lives here rather than in fake_strava/."""

from __future__ import annotations

from datetime import UTC, datetime

import models
from fake_strava.server import FakeStrava
from services.sealing import Sealer
from services.tokens import seal_tokens


def connect_athlete(
    conn: models.Conn,
    fake: FakeStrava,
    athlete_id: int,
    *,
    sealer: Sealer,
    name: str,
    scope: str = "read,activity:read_all",
    expires_in: int | None = None,
    now: datetime | None = None,
) -> int:
    """Grant the athlete's tokens on the fake and store them for a new rider, connected
    at `now` (by default the fake's clock, which a simulation shares with the service);
    its id. The tokens are sealed with `sealer`, as the service's own would be."""
    now = now or fake.now()
    tokens = fake.issue_tokens(athlete_id, scope=scope, expires_in=expires_in)
    rider_id = models.riders.create_rider(conn, name=name, created_at=now)
    access, refresh = seal_tokens(sealer, rider_id, tokens["access_token"], tokens["refresh_token"])
    models.riders.save_connection(
        conn,
        rider_id=rider_id,
        athlete_id=athlete_id,
        access_sealed=access,
        refresh_sealed=refresh,
        expires_at=datetime.fromtimestamp(tokens["expires_at"], UTC),
        scope=scope,
        now=now,
    )
    return rider_id
