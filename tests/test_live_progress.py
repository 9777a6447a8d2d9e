"""Live progress through Supabase Realtime Broadcast, against the real Postgres.

The test database has Supabase's `realtime` schema (tests/fixtures/supabase_realtime.sql:
realtime.messages, realtime.topic() and realtime.send() shaped as Supabase's Realtime
server creates them), so what the service sends is read back from realtime.messages, as
Realtime would deliver it. The channel policy is checked the way Realtime checks a join:
in a transaction, a message for the topic is stored, the role, the JWT claims and the
topic are set as the joining user's, and the user may join if they can read it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

import db as dbmod
import models
from fake_strava import FakeStrava, make_activities
from services.progress import MIN_INTERVAL, Progress, due, listing, walk
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers, settings_for
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings.
pytest_plugins = ["tests.jwks_fixture"]

START = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
SYNC = "/api/riders/me/sync"
PAYLOAD_KEYS = {"phase", "done", "total", "added", "message", "finished", "at", "id"}


class Clock:
    """The service's clock, moved by hand or by each answer of the fake Strava."""

    def __init__(self) -> None:
        self.moment = START

    def now(self) -> datetime:
        return self.moment

    def time(self) -> float:
        return self.moment.timestamp()

    def monotonic(self) -> float:
        return (self.moment - START).total_seconds()

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class SlowStrava(FakeStrava):
    """The fake Strava whose every answer takes `step_s` on the shared clock."""

    def __init__(self, clock: Clock, step_s: float) -> None:
        super().__init__(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time)
        self.virtual = clock
        self.step_s = step_s

    def handle(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        answer = super().handle(*args, **kwargs)
        self.virtual.advance(self.step_s)
        return answer


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeStrava:
    """conftest's `web` and `strava` serve this one: 0.4 s an answer on the clock."""
    return SlowStrava(clock, 0.4)


def on_clock(app: Any, clock: Clock) -> Any:
    runtime = app.extensions["strava_sync"]
    app.extensions["strava_sync"] = replace(runtime, clock=clock.now, timer=clock.monotonic)
    return app


def link(database: str, fake: FakeStrava, athlete_id: int, **options: Any) -> tuple[int, uuid.UUID]:
    user = uuid.uuid4()
    rider = connect_rider(database, fake, athlete_id, **options)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    return rider, user


def messages(database: str, user: uuid.UUID) -> list[dict[str, Any]]:
    """What Realtime would deliver on the rider's channel, oldest first."""
    return query(
        database,
        "select topic, event, private, extension, payload from realtime.messages"
        " where topic = %s order by inserted_at, (payload->>'at')",
        f"rider:{user}",
    )


def at(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(message["payload"]["at"].replace("Z", "+00:00"))


def spaced(sent: list[dict[str, Any]]) -> bool:
    """At most one message a second on the service's clock (the last may come sooner)."""
    times = [at(m) for m in sent if not m["payload"]["finished"]]
    return all(b - a >= MIN_INTERVAL for a, b in zip(times, times[1:], strict=False))


# --- the pure rule -------------------------------------------------------------------


def test_a_message_is_due_once_a_second_and_the_last_always():
    t = START
    assert due(None, t, finished=False)  # the first of a run
    assert not due(t, t, finished=False)
    assert not due(t, t + timedelta(milliseconds=999), finished=False)
    assert due(t, t + MIN_INTERVAL, finished=False)
    assert due(t, t + timedelta(milliseconds=10), finished=True)  # the last always
    assert due(t, t - timedelta(seconds=5), finished=False)  # a clock set back


def test_the_messages_say_what_happened_in_plain_words():
    page = listing({"fetched": 200, "added": 12})
    assert (page.phase, page.done, page.total, page.added, page.finished) == (
        "sync",
        200,
        None,
        12,
        False,
    )
    assert "12 new activities so far" in page.message
    nothing = listing({"fetched": 3}, ended=True, finished=True)
    assert nothing.message == "Sync finished: nothing new." and nothing.finished
    one = listing({"fetched": 3, "added": 1, "updated": 2}, ended=True)
    assert one.message == "Sync finished: 1 new activity, 2 updated." and not one.finished
    walking = walk(percent=43, oldest=datetime(2019, 3, 2, tzinfo=UTC), added=120)
    assert walking.message == "Bringing in your older activities: back to March 2019 (43%)."
    assert (walking.done, walking.total) == (43, 100)
    done = walk(percent=99, oldest=None, added=0, complete=True)
    assert done.done == 100 and done.finished and "complete" in done.message


# --- what the service sends ------------------------------------------------------------


def test_sync_now_broadcasts_its_progress_at_most_once_a_second(
    make_app, auth_settings, web, issuer, database, clock
):
    client = on_clock(make_app(**auth_settings), clock).test_client()
    rider, user = link(database, web, 7601)
    web.add_activities(
        7601,
        make_activities(
            7601, 950, start=START - timedelta(days=6), end=START - timedelta(hours=1), seed=4
        ),
    )
    answer = client.post(SYNC, headers=issuer.headers(issuer.es256(user)))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["added"] == 950
    pages = web.count(path_contains="/athlete/activities")
    assert pages == 5  # 200 a page, the last one short
    sent = messages(database, user)
    assert {(m["event"], m["private"], m["extension"]) for m in sent} == {
        ("progress", True, "broadcast")
    }
    payloads = [m["payload"] for m in sent]
    assert all(set(p) == PAYLOAD_KEYS for p in payloads)
    # Pages 0.4 s apart on the service's clock: fewer messages than pages, a second apart.
    assert 2 <= len(sent) < pages + 1 and spaced(sent)
    *running, last = payloads
    assert not any(p["finished"] for p in running)
    assert last["finished"] is True and last["added"] == 950
    assert "950 new activities" in last["message"]
    assert [p["done"] for p in running] == sorted(p["done"] for p in running)
    # The gate's record, on the same clock.
    row = query(
        database, "select progress_sent_at from strava_connections where rider_id = %s", rider
    )
    assert row[0]["progress_sent_at"] == at(sent[-1])


def test_a_history_walk_and_a_scheduled_sync_broadcast_too(make_app, web, database, clock):
    app = on_clock(make_app(), clock)
    client = app.test_client()
    rider, user = link(
        database,
        web,
        7602,
        activities=450,
        start=START - timedelta(days=900),
        end=START - timedelta(days=2),
        history_complete=False,
    )
    walked = client.post("/api/cron/discover", headers=cron_headers())
    assert walked.status_code == 200 and walked.get_json()["items"][0]["complete"] is True
    history = [m["payload"] for m in messages(database, user) if m["payload"]["phase"] == "history"]
    assert history and history[-1]["finished"] is True and history[-1]["done"] == 100
    assert "History complete" in history[-1]["message"]
    assert all(p["total"] == 100 for p in history)

    execute(database, "delete from realtime.messages where topic = %s", f"rider:{user}")
    clock.advance(7200)
    web.add_activities(
        7602, make_activities(7602, 3, start=START, end=clock.now(), seed=9, first_id=7602_000_001)
    )
    synced = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert synced.get_json()["succeeded"] == 1
    [only] = messages(database, user)  # one page: its message is the run's last
    assert only["payload"]["phase"] == "sync" and only["payload"]["finished"] is True
    assert only["payload"]["added"] == 3


def test_a_failed_run_still_sends_its_last_message(make_app, auth_settings, web, issuer, database):
    client = make_app(**auth_settings).test_client()
    _, user = link(database, web, 7603, activities=2)
    web.fail_next(3, status=503, path_contains="/athlete/activities")
    assert client.post(SYNC, headers=issuer.headers(issuer.es256(user))).status_code == 502
    [last] = messages(database, user)
    assert last["payload"]["finished"] is True and last["payload"]["message"].startswith("Stopped")


def test_the_database_gate_holds_across_processes(database, strava, clock):
    rider, user = link(database, strava, 7604)
    first, second = Progress(rider, clock.now), Progress(rider, clock.now)
    report = listing({"fetched": 200, "added": 5})
    with dbmod.connect(database) as conn:
        assert first.report(conn, report) is True
        assert second.report(conn, report) is False  # another process, the same second
        clock.advance(0.5)
        assert first.report(conn, report) is False  # not even asked: too soon here
        clock.advance(0.5)
        assert second.report(conn, report) is True
        assert first.report(conn, listing({"fetched": 9}, ended=True, finished=True)) is True
        assert first.report(conn, report) is False  # a finished run says nothing more
    assert len(messages(database, user)) == 3


def test_a_rider_without_a_supabase_user_gets_no_message(database, strava, clock):
    rider = connect_rider(database, strava, 7605)
    with dbmod.connect(database) as conn:
        assert Progress(rider, clock.now).report(conn, listing({}, finished=True)) is False
    assert (
        query(database, "select count(*) as n from realtime.messages where topic = 'rider:None'")[
            0
        ]["n"]
        == 0
    )


def test_no_client_role_may_send_progress(database, strava):
    rider, _ = link(database, strava, 7606)
    for role in ("anon", "authenticated"):
        with psycopg.connect(database) as conn:
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "select public.send_rider_progress(%s, '{}'::jsonb, true, now(), 1000)",
                    (rider,),
                )


# --- who may join the channel ----------------------------------------------------------


def claims(user: uuid.UUID) -> str:
    return json.dumps({"sub": str(user), "role": "authenticated", "aud": "authenticated"})


def may_join(database: str, topic: str, *, role: str, user: uuid.UUID | None) -> bool:
    """Realtime's read check for a private channel: store a broadcast for the topic, then
    as the joining user (role, JWT claims, realtime.topic) try to read it; roll back."""
    with psycopg.connect(database, row_factory=dict_row) as conn:
        message = conn.execute(
            "insert into realtime.messages (topic, extension) values (%s, 'broadcast')"
            " returning id",
            (topic,),
        ).fetchone()
        conn.execute(
            "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
            " set_config('request.jwt.claims', %s, true)",
            (role, topic, claims(user) if user else ""),
        )
        seen = conn.execute(
            "select 1 from realtime.messages where topic = %s and extension = 'broadcast'"
            " and id = %s",
            (topic, message["id"]),
        ).fetchone()
        conn.rollback()
    return seen is not None


def may_broadcast(database: str, topic: str, user: uuid.UUID) -> bool:
    """Realtime's write check: may the user send on the topic (insert as them)?"""
    with psycopg.connect(database) as conn:
        conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('realtime.topic', %s, true), set_config('request.jwt.claims', %s, true)",
            (topic, claims(user)),
        )
        try:
            conn.execute(
                "insert into realtime.messages (topic, extension) values (%s, 'broadcast')",
                (topic,),
            )
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


def test_a_rider_joins_their_own_channel_only(database):
    anna, ben = uuid.uuid4(), uuid.uuid4()
    assert may_join(database, f"rider:{anna}", role="authenticated", user=anna)
    assert may_join(database, f"rider:{ben}", role="authenticated", user=ben)
    assert not may_join(database, f"rider:{ben}", role="authenticated", user=anna)
    assert not may_join(database, f"rider:{anna}", role="authenticated", user=ben)
    assert not may_join(database, f"rider:{anna}", role="anon", user=None)
    assert not may_join(database, "rider:", role="authenticated", user=anna)
    # Presence on one's own topic is no broadcast: not granted either.
    with psycopg.connect(database) as conn:
        conn.execute(
            "insert into realtime.messages (topic, extension) values (%s, 'presence')",
            (f"rider:{anna}",),
        )
        conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('realtime.topic', %s, true), set_config('request.jwt.claims', %s, true)",
            (f"rider:{anna}", claims(anna)),
        )
        assert conn.execute(
            "select count(*) from realtime.messages where extension = 'presence'"
        ).fetchone() == (0,)
        conn.rollback()
    # Nobody but the database sends: a rider cannot fake progress, even on their topic.
    assert not may_broadcast(database, f"rider:{anna}", anna)
    assert not may_broadcast(database, f"rider:{ben}", anna)


# --- a Postgres without Realtime ----------------------------------------------------------


@pytest.fixture
def plain_database(scratch_database, database_url: str):
    """A database migrated without Supabase's realtime schema (a plain Postgres)."""
    url = scratch_database("strava_sync_plain")
    assert url != database_url
    return url


def test_without_realtime_the_migration_is_a_no_op_and_progress_is_only_polled(
    plain_database, strava
):
    from app_factory import create_app

    app = create_app(settings_for(plain_database), environ={})
    try:
        client = app.test_client()
        assert client.get("/api/health").status_code in (200, 503)
        with psycopg.connect(plain_database) as conn:
            assert conn.execute("select to_regclass('realtime.messages')").fetchone() == (None,)
            applied = {
                r[0]
                for r in conn.execute("select version from supabase_migrations.schema_migrations")
            }
        assert "20261206120000" in applied
        rider, _ = link(plain_database, strava, 7607, activities=4)
        synced = client.post("/api/cron/sync-strava", headers=cron_headers())
        assert synced.status_code == 200 and synced.get_json()["succeeded"] == 1
        # The gate ran (and the run was not disturbed); there was nowhere to send.
        row = query(
            plain_database,
            "select progress_sent_at, last_sync_added from strava_connections where rider_id = %s",
            rider,
        )[0]
        assert row["progress_sent_at"] is not None and row["last_sync_added"] == 4
    finally:
        app.extensions["strava_sync"].db.close()


def test_forgetting_a_rider_deletes_their_progress_messages(database, strava, clock):
    rider, user = link(database, strava, 7608)
    with dbmod.connect(database) as conn:
        Progress(rider, clock.now).report(conn, listing({}, finished=True))
    assert len(messages(database, user)) == 1
    with dbmod.connect(database) as conn:
        assert models.progress.forget_rider_progress(conn, rider_id=rider) == 1
    assert messages(database, user) == []
