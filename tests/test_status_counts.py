"""The status counts riders by state from kept counts and indexes, not by reading every
rider: the same numbers as counting every rider, whatever the riders' states, on the
real Postgres."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

import models
from models.sync import SYNC_STATE
from tests.factories import execute

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
INTERVAL_S = 3600

# Every rider read, as the status used to count them: the reference.
EVERY_RIDER = f"""
    select coalesce(c.status, 'not_connected') as connection, {SYNC_STATE} as sync_state,
           count(*) as riders,
           count(*) filter (where c.rider_id is not null and c.last_synced_at is null)
               as never_synced
      from riders r left join strava_connections c on c.rider_id = r.id
     group by 1, 2
"""


def counted_by_reading_every_rider(conn, now):
    rows = conn.execute(EVERY_RIDER, {"min_interval_s": INTERVAL_S, "now": now}).fetchall()
    by_connection = dict.fromkeys(["active", "needs_reauth", "revoked", "not_connected"], 0)
    by_state = dict.fromkeys(
        ["in_progress", "due", "up_to_date", "backing_off", "paused", "stopped", "not_connected"],
        0,
    )
    for row in rows:
        by_connection[row["connection"]] += row["riders"]
        by_state[row["sync_state"]] += row["riders"]
    return {
        "total": sum(r["riders"] for r in rows),
        "by_connection_status": by_connection,
        "by_sync_state": by_state,
        "never_synced": sum(r["never_synced"] for r in rows),
    }


def moment(rng: random.Random) -> datetime | None:
    return rng.choice(
        [None, NOW - timedelta(hours=rng.uniform(0, 30)), NOW + timedelta(hours=rng.uniform(0, 30))]
    )


def seed(conn, rng: random.Random, riders: int) -> None:
    for i in range(riders):
        rider = conn.execute(
            "insert into riders (name, auto_sync) values (%s, %s) returning id",
            (f"r{i}", rng.random() < 0.8),
        ).fetchone()["id"]
        if rng.random() < 0.15:
            continue  # never connected
        leased = rng.random() < 0.2
        lease_until = NOW + timedelta(minutes=rng.choice([-30, 30])) if leased else None
        conn.execute(
            "insert into strava_connections (rider_id, athlete_id, access_token, refresh_token,"
            " expires_at, status, last_synced_at, last_sync_attempt_at, next_attempt_at,"
            " next_poll_at, sync_listing_after, sync_listing_page, lease_token,"
            " lease_kind, lease_expires_at)"
            " values (%s, %s, 'x', 'x', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                rider,
                80_000 + rider,
                NOW + timedelta(hours=6),
                rng.choice(["active", "active", "active", "needs_reauth", "revoked"]),
                moment(rng),
                moment(rng),
                rng.choice([None, None, moment(rng)]),
                moment(rng),
                NOW - timedelta(days=2) if rng.random() < 0.1 else None,
                2 if rng.random() < 0.1 else None,
                "00000000-0000-0000-0000-000000000001" if leased else None,
                "sync" if leased else None,
                lease_until,
            ),
        )


def test_the_kept_and_indexed_counts_are_every_riders_counts(database):
    rng = random.Random(4_242)
    with psycopg.connect(database, row_factory=dict_row, autocommit=True) as conn:
        seed(conn, rng, 120)
        seen: set[str] = set()
        for step in range(40):
            now = NOW + timedelta(minutes=rng.uniform(-90, 90))
            if step % 3 == 0:  # a round open since some time, or none
                execute(database, "delete from work_rounds")
                if rng.random() < 0.7:
                    execute(
                        database,
                        "insert into work_rounds (kind, opened_at, closed_at)"
                        " values ('sync-strava', %s, %s)",
                        now - timedelta(hours=rng.uniform(0, 20)),
                        rng.choice([None, now]),
                    )
            counts = models.status.rider_state_counts(conn, min_interval_s=INTERVAL_S, now=now)
            assert counts == counted_by_reading_every_rider(conn, now), step
            seen |= {state for state, n in counts["by_sync_state"].items() if n}
            # riders change between two looks: pause, reconnect, leave, join, sync
            change = rng.randrange(6)
            ids = [r["id"] for r in conn.execute("select id from riders").fetchall()]
            victim = rng.choice(ids)
            if change == 0:
                conn.execute("update riders set auto_sync = not auto_sync where id = %s", (victim,))
            elif change == 1:
                conn.execute(
                    "update strava_connections set status = %s where rider_id = %s",
                    (rng.choice(["active", "needs_reauth", "revoked"]), victim),
                )
            elif change == 2:
                conn.execute("delete from riders where id = %s", (victim,))
            elif change == 3:
                seed(conn, rng, 2)
            elif change == 4:
                conn.execute(
                    "update strava_connections set last_synced_at = %s, next_poll_at = %s,"
                    " next_attempt_at = null where rider_id = %s",
                    (now, now + timedelta(hours=3), victim),
                )
            else:
                conn.execute("delete from strava_connections where rider_id = %s", (victim,))
        assert len(seen) == 7  # every state was met
        # a row lost is counted again, once
        conn.execute("delete from rider_counts")
        assert models.status.rider_state_counts(
            conn, min_interval_s=INTERVAL_S, now=NOW
        ) == counted_by_reading_every_rider(conn, NOW)
