"""What the benchmarks share: a throwaway database and a served fake Strava."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import db as dbmod
from services.sealing import Sealer
from token_keys import new_key

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-client-secret"
CRON_SECRET = "bench-cron-secret"
# The key that seals the riders' tokens of this run (the apps' and the seeding's).
TOKEN_KEY = new_key("bench")
SEALER = Sealer(TOKEN_KEY)


@contextlib.contextmanager
def temporary_database(server_url: str | None = None) -> Iterator[str]:
    """A fresh, migrated database on `server_url`'s server (the tests'), DATABASE_URL's,
    or the embedded one under DATA_DIR (default .data, as for the demo and the tests),
    dropped after."""
    data_dir = ROOT / (os.environ.get("DATA_DIR") or ".data")
    server = server_url or os.environ.get("DATABASE_URL") or dbmod.embedded_database_url(data_dir)
    name = f"strava_sync_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    try:
        dbmod.migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


# Runs a module of this checkout's benchmark against the service of another checkout:
# its app, services, store, migrations and seeding come first on the path; the measuring
# (bench/ and the fake Strava) is this checkout's, so both sides meet the same world.
_ON_CODE = """
import importlib.util, runpy, sys
code, mine, module, *args = sys.argv[1:]
sys.path.insert(0, code)
for name in ("bench", "fake_strava"):
    spec = importlib.util.spec_from_file_location(
        name, f"{mine}/{name}/__init__.py", submodule_search_locations=[f"{mine}/{name}"]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_on_code(code: Path, module: str, args: list[str], *, output: Path) -> subprocess.Popen:
    """Start `python -m <module> <args>` of this benchmark on the service's code at `code`
    (a worktree of another commit, e.g. `git worktree add --detach ../base main`), its
    output written to `output`. The embedded database is this checkout's (DATA_DIR)."""
    code = code.resolve()
    if not (code / "app_factory.py").exists():
        raise SystemExit(f"{code} is not a checkout of the service (no app_factory.py)")
    env = {**os.environ, "DATA_DIR": str(ROOT / (os.environ.get("DATA_DIR") or ".data"))}
    with output.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _ON_CODE, str(code), str(ROOT), module, *args],
            cwd=code,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def bench_settings(database_url: str, api_url: str, oauth_url: str, **overrides: object) -> dict:
    """create_app() settings pointing at the served fake."""
    return {
        "database_url": database_url,
        "cron_secret": CRON_SECRET,
        "strava_client_id": CLIENT_ID,
        "strava_client_secret": CLIENT_SECRET,
        "strava_api_url": api_url,
        "strava_oauth_url": oauth_url,
        "token_encryption_key": TOKEN_KEY,
        **overrides,
    }


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as an aligned plain-text table (first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class LatencyProxy:
    """A loopback TCP proxy in front of a Postgres server that delays every chunk it
    forwards, so a benchmark can show what network round trips cost (as between Vercel
    and Supabase) on one machine. It listens on 127.0.0.1 only, until stopped."""

    def __init__(self, database_url: str, delay_s: float) -> None:
        params = psycopg.conninfo.conninfo_to_dict(database_url)
        host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
        # The embedded server listens on a unix socket only: forward to that.
        self._upstream: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self._params = params
        self._delay = delay_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The database URL through this proxy."""
        return psycopg.conninfo.make_conninfo(
            "", **{**self._params, "host": "127.0.0.1", "port": self.port}
        )

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            family = socket.AF_UNIX if isinstance(self._upstream, str) else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(self._upstream)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                time.sleep(self._delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self) -> None:
        self._listener.close()
