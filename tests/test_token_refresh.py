"""A token refresh that survives a kill, against the real Postgres and the fake Strava,
which rotates refresh tokens as Strava does (the old one dies as the answer leaves).

A process refreshing a rider's token is killed with SIGKILL at each point of the refresh:
while Strava's answer is on its way, between the answer and the write, and right after
the write. Then the service runs as usual and shows what the rider gets. Around that:
calls waiting on a refused refresh, a lock's transaction lost while Strava answers, and
a reconnect landing while a refresh is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import responses

import models
from fake_strava import FakeStrava, mock
from fake_strava.serve import ServedFake, serve_app
from fake_strava.server import API_PREFIX, OAUTH_PREFIX
from services.tokens import REFRESH_REFUSED, NeedsReauth, seal_tokens
from tests.conftest import (
    API_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    CRON_SECRET,
    OAUTH_URL,
    SEALER,
    TOKEN_KEY,
    cron_headers,
)
from tests.factories import connect_rider, execute, query, stored_tokens

ROOT = Path(__file__).resolve().parent.parent
ATHLETE = 5100
TOKEN = "/oauth/token"


def token_answers(fake: FakeStrava) -> list[int]:
    """The statuses of the token requests the fake answered, in order."""
    return [r.status for r in fake.requests if r.path == TOKEN]


def sync(client: Any) -> dict[str, Any]:
    response = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


def connection(database: str, rider: int) -> dict[str, Any]:
    return query(
        database,
        "select status, last_error, error_class from strava_connections where rider_id = %s",
        rider,
    )[0]


def make_due(database: str) -> None:
    """As when the rider's next poll comes round."""
    execute(database, "update strava_connections set last_synced_at = null, next_poll_at = null")


# --- killed during a refresh -------------------------------------------------------------


class KillingFake:
    """The fake Strava served on loopback, killing the process under test at one point:
    `in_flight`, once Strava has rotated the token but before its answer leaves (the
    answer lost on its way); `stored`, at the process's first request with the new
    token (the write comes before any use of it, so: right after the write)."""

    def __init__(self, fake: FakeStrava, point: str) -> None:
        self.fake = fake
        self.point = point
        self.process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL to the process under test (once: later requests are the service's)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def app(self, environ: Any, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if self.point == "stored" and path.startswith(API_PREFIX):
            self.kill()
        answer = self.fake.wsgi_app(environ, start_response)  # Strava's state changes here
        if self.point == "in_flight" and path == TOKEN:
            self.kill()
        return answer


def child_environment(database: str, served: ServedFake) -> dict[str, str]:
    """What the killed process is told: its environment, as on a host."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHON_DOTENV_DISABLED": "1",
        "DATABASE_URL": database,
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY.text(),
        "CRON_SECRET": CRON_SECRET,
        "STRAVA_CLIENT_ID": CLIENT_ID,
        "STRAVA_CLIENT_SECRET": CLIENT_SECRET,
        "STRAVA_API_URL": served.api_url,
        "STRAVA_OAUTH_URL": served.oauth_url,
    }


@contextmanager
def killed_during_a_refresh(database: str, point: str) -> Iterator[tuple[FakeStrava, int, str]]:
    """A rider whose token needs refreshing, a process refreshing it killed at `point`;
    yields the fake, the rider and the fake's loopback URL, still served."""
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    rider = connect_rider(database, fake, ATHLETE, activities=3, expires_in=60)
    killing = KillingFake(fake, point)
    served = ServedFake(*serve_app(killing.app, name="fake-strava-killing"))
    try:
        args = [str(rider)] + (["answered"] if point == "answered" else [])
        killing.process = subprocess.Popen(
            [sys.executable, "-m", "tests.refresh_child", *args],
            cwd=ROOT,
            env=child_environment(database, served),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = killing.process.communicate(timeout=90)
        assert killing.process.returncode == -signal.SIGKILL, output.decode(errors="replace")
        assert token_answers(fake) == [200]  # Strava answered, and rotated
        yield fake, rider, served.url
    finally:
        if killing.process is not None and killing.process.poll() is None:
            killing.process.kill()
        served.stop()


@pytest.mark.parametrize("point", ["in_flight", "answered"])
def test_a_kill_before_the_write_asks_the_rider_to_reconnect_once(make_app, database, point):
    """Strava rotated the token, the answer never reached the database: this cannot be
    closed. The next refresh is refused once, the rider is told in plain words to
    reconnect, and nothing sends the dead token again."""
    with killed_during_a_refresh(database, point) as (fake, rider, url):
        assert stored_tokens(database, rider)["refresh_token"] != fake.current_refresh_token(
            ATHLETE
        )  # the stored refresh token is dead
        app = make_app(strava_api_url=url + API_PREFIX, strava_oauth_url=url + OAUTH_PREFIX)
        client = app.test_client()
        body = sync(client)
        assert [(i["rider_id"], i["status"], i["reason"]) for i in body["items"]] == [
            (rider, "failed", "needs_reauth")
        ]
        assert token_answers(fake) == [200, 400]  # one refusal
        row = connection(database, rider)
        assert row["status"] == "needs_reauth" and row["error_class"] == "needs_reauth"
        assert row["last_error"] == REFRESH_REFUSED
        assert "Press Connect Strava to reconnect." in row["last_error"]
        # never a loop: the rider is not taken again until they reconnect
        for _ in range(2):
            make_due(database)
            assert rider not in {i["rider_id"] for i in sync(client)["items"]}
        assert token_answers(fake) == [200, 400]
        assert query(database, "select count(*) as n from activities")[0]["n"] == 0


def test_a_kill_right_after_the_write_loses_nothing(make_app, database):
    with killed_during_a_refresh(database, "stored") as (fake, rider, url):
        assert stored_tokens(database, rider)["refresh_token"] == fake.current_refresh_token(
            ATHLETE
        )
        app = make_app(strava_api_url=url + API_PREFIX, strava_oauth_url=url + OAUTH_PREFIX)
        body = sync(app.test_client())
        assert [(i["rider_id"], i["status"], i["added"]) for i in body["items"]] == [
            (rider, "succeeded", 3)
        ]
        assert token_answers(fake) == [200]  # the stored token simply works
        assert connection(database, rider) == {
            "status": "active",
            "last_error": None,
            "error_class": None,
        }


# --- calls overlapping on a refused refresh ------------------------------------------------


def lose_an_answer(database: str, fake: FakeStrava) -> None:
    """A refresh Strava answered and the database never heard of: the stored refresh
    token is dead, the grant still alive at Strava."""
    old = stored_tokens(database)["refresh_token"]
    answer = requests.post(
        f"{OAUTH_URL}/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": old,
        },
        timeout=5,
    )
    assert answer.status_code == 200 and fake.current_refresh_token(ATHLETE) != old


def test_calls_waiting_for_a_refused_refresh_never_send_the_dead_token(make_app, strava, database):
    """Four calls find the token expiring at once (sync, enrich, Sync now, another
    worker): the first is refused and marks the rider while it holds the row's lock, so
    the three waiting for that lock read `needs_reauth` instead of trying the dead
    token again."""
    from services.calls import Call

    rider = connect_rider(database, strava, ATHLETE, activities=1, expires_in=30)
    lose_an_answer(database, strava)
    strava.latency_s = 0.2  # the first refresh holds the lock while the others arrive
    runtime = make_app().extensions["strava_sync"]
    barrier = threading.Barrier(4)
    raised: list[BaseException] = []

    def refresh() -> None:
        call = Call(runtime, kind="sync-strava")
        try:
            barrier.wait()
            call.tokens.access_token(rider)
        except BaseException as exc:
            raised.append(exc)
        finally:
            call.close()

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(raised) == 4 and all(isinstance(e, NeedsReauth) for e in raised), raised
    assert token_answers(strava) == [200, 400]  # the lost one, then one refusal
    assert connection(database, rider)["last_error"] == REFRESH_REFUSED


# --- a lock's transaction lost, a reconnect landing --------------------------------------------


@contextmanager
def answering(
    fake: FakeStrava,
    *,
    before_token: Callable[[], None] | None = None,
    after_token: Callable[[], None] | None = None,
) -> Iterator[None]:
    """The fake Strava at Strava's URLs, running a hook as a token request reaches it
    (before Strava sees it) or once Strava has answered it (before the answer leaves)."""

    def handler(method: str, path: str, *request: Any) -> tuple[int, dict[str, str], bytes]:
        if path == TOKEN and before_token is not None:
            before_token()
        answer = fake.handle(method, path, *request)
        if path == TOKEN and after_token is not None:
            after_token()
        return answer

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock.install(handler, rsps, {API_URL: API_PREFIX, OAUTH_URL: OAUTH_PREFIX})
        yield


def backends(database: str, where: str) -> list[int]:
    """Other sessions on the test database in a given state."""
    rows = query(
        database,
        "select pid from pg_stat_activity where datname = current_database()"
        f" and pid <> pg_backend_pid() and {where}",
    )
    return [r["pid"] for r in rows]


def test_an_answer_is_stored_even_when_the_locks_transaction_was_lost(make_app, database):
    """The server ends the transaction holding the row's lock while Strava answers (a
    connection cut, a pooler restarting): the answer is written in a transaction of its
    own, and the rider goes on working."""
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    ended: list[int] = []

    def end_the_locks_transaction() -> None:
        (pid,) = backends(database, "state = 'idle in transaction'")  # the refresh's
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        ended.append(pid)

    with answering(fake, after_token=end_the_locks_transaction):
        rider = connect_rider(database, fake, ATHLETE, activities=3, expires_in=60)
        client = make_app().test_client()
        body = sync(client)
    assert ended, "the refresh's transaction was never ended"
    assert [(i["status"], i["added"]) for i in body["items"]] == [("succeeded", 3)]
    assert stored_tokens(database, rider)["refresh_token"] == fake.current_refresh_token(ATHLETE)
    assert token_answers(fake) == [200]
    with answering(fake):
        make_due(database)
        assert sync(client)["items"][0]["status"] == "succeeded"  # and again: still working


def test_a_refused_refresh_reads_the_row_again_and_uses_a_reconnect_that_landed(
    make_app, database, monkeypatch
):
    """The rider connects again while a refresh with the old grant is on its way: Strava
    refuses the old refresh token, the reconnect's write waits for the refresh's lock,
    and the refresh reads the row again (fresh) and tries once more with the new one.

    Once the refusal is marked and the lock let go, the reconnect's write and the read
    again race; here the write lands first. (Had the read come first, it would find the
    rider marked and fail this call, and the reconnect's write would still win: it comes
    after the mark.)"""
    from services.calls import Call

    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    rider = connect_rider(database, fake, ATHLETE, activities=1, expires_in=60)
    writes: list[threading.Thread] = []

    def save(grant: dict[str, Any]) -> None:
        access, refresh = seal_tokens(SEALER, rider, grant["access_token"], grant["refresh_token"])
        with psycopg.connect(database) as conn:
            models.riders.save_connection(
                conn,
                rider_id=rider,
                athlete_id=ATHLETE,
                access_sealed=access,
                refresh_sealed=refresh,
                expires_at=datetime.fromtimestamp(grant["expires_at"], UTC),
                scope=grant["scope"],
                now=datetime.now(UTC),
            )

    def reconnect() -> None:
        if writes:
            return
        # A new grant (the old one dies); it expires soon, so using it takes a refresh.
        grant = fake.issue_tokens(ATHLETE, expires_in=60)
        writes.append(threading.Thread(target=save, args=(grant,)))
        writes[0].start()
        # Until the write waits for the refresh's row lock (30 s only guards a hang: a
        # loaded machine may take seconds to start the thread and connect).
        for _ in range(3000):
            if backends(database, "wait_event_type = 'Lock'"):
                return
            time.sleep(0.01)
        raise AssertionError("the reconnect's write never waited for the lock")

    read_tokens = models.tokens.read_tokens

    def read_once_the_reconnect_is_written(conn: Any, **options: Any) -> Any:
        if writes and options.get("for_update"):  # the read again: the lock is let go
            writes[0].join(timeout=30)
        return read_tokens(conn, **options)

    monkeypatch.setattr(models.tokens, "read_tokens", read_once_the_reconnect_is_written)
    runtime = make_app().extensions["strava_sync"]
    call = Call(runtime, kind="sync-strava")
    try:
        with answering(fake, before_token=reconnect):
            token = call.tokens.access_token(rider)
    finally:
        call.close()
        for thread in writes:
            thread.join()
    assert token_answers(fake) == [400, 200]  # the old grant refused, the new one refreshed
    assert stored_tokens(database, rider)["refresh_token"] == fake.current_refresh_token(ATHLETE)
    assert token == stored_tokens(database, rider)["access_token"]
    assert connection(database, rider) == {
        "status": "active",
        "last_error": None,
        "error_class": None,
    }


def test_a_stored_answer_makes_a_marked_row_active_but_never_fills_a_revoked_one(strava, database):
    """A refresh's answer that lands after another call was refused and marked the rider
    (the answer of a refresh whose lock was lost) proves the grant works; a connection
    the rider revoked keeps no tokens whatever lands."""
    marked = connect_rider(database, strava, ATHLETE)
    revoked = connect_rider(database, strava, ATHLETE + 1)
    with psycopg.connect(database, row_factory=psycopg.rows.dict_row) as conn:
        now = conn.execute("select now() as t").fetchone()["t"]
        models.tokens.mark_needs_reauth(conn, rider_id=marked, message=REFRESH_REFUSED, now=now)
        models.riders.revoke_connection(conn, rider_id=revoked, message="revoked", now=now)
        for rider in (marked, revoked):
            access, refresh = seal_tokens(SEALER, rider, "e" * 40, "f" * 40)
            models.tokens.store_tokens(
                conn,
                rider_id=rider,
                access_sealed=access,
                refresh_sealed=refresh,
                expires_at=now,
                now=now,
            )
    assert connection(database, marked) == {
        "status": "active",
        "last_error": None,
        "error_class": None,
    }
    assert stored_tokens(database, marked)["refresh_token"] == "f" * 40
    assert query(
        database,
        "select status, access_token, refresh_token from strava_connections where rider_id = %s",
        revoked,
    ) == [{"status": "revoked", "access_token": None, "refresh_token": None}]
