"""The fleet simulation's virtual clock, shared by the service, the fake Strava and the
database.

One VirtualClock holds the simulated instant. Between calls it is set to each event's
time; within a call every Strava request advances it by a simulated latency. Each
thread keeps its own offset from the call's start (a worker thread starts where the
thread that spawned the pool stood), so requests made side by side by a call's workers
overlap in virtual time as they would on a real network; when the call returns, the
clock moves on to the latest of them.

Two seams make the service follow it:

- `Runtime.clock` (and `Runtime.timer` for call budgets, once the service has that
  field; before, `services.calls`, `services.discovery` and `services.strava` get a
  `time` module whose monotonic() is the virtual one, restored afterwards);
- the throwaway database's now(): a `simclock.now()` that reads the virtual instant
  from a one-row table, found first through the database's search_path, and set as the
  default of every column that defaulted to now(). SQL that takes its instant as a
  parameter does not need it; SQL that still calls now() gets virtual time all the same.
"""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

import services.calls
import services.discovery
import services.strava


class VirtualClock:
    """The simulated instant: now() (aware UTC), time() (epoch seconds), monotonic()."""

    def __init__(self, start: datetime) -> None:
        self._origin = start.timestamp()
        self._base = self._origin
        self._offsets: dict[int, float] = {}
        self._lock = threading.Lock()
        self._home = threading.get_ident()

    def _offset(self) -> float:
        ident = threading.get_ident()
        offset = self._offsets.get(ident)
        if offset is None:  # a new worker starts where the spawning (home) thread stands
            offset = self._offsets.get(self._home, 0.0)
            self._offsets[ident] = offset
        return offset

    def time(self) -> float:
        with self._lock:
            return self._base + self._offset()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def monotonic(self) -> float:
        return self.time() - self._origin

    def advance(self, seconds: float) -> None:
        """The calling thread spends `seconds` (a Strava request's latency)."""
        with self._lock:
            self._offsets[threading.get_ident()] = self._offset() + seconds

    def settle(self) -> float:
        """A call has returned: the clock moves to the latest of its threads."""
        with self._lock:
            self._base += max(self._offsets.values(), default=0.0)
            self._offsets.clear()
            return self._base

    def set(self, epoch: float) -> float:
        """Go to an event's time; never back (a call may have run past it)."""
        with self._lock:
            self._base = max(self._base + max(self._offsets.values(), default=0.0), epoch)
            self._offsets.clear()
            return self._base


# --- the database's now() ---------------------------------------------------------------

_SHIM = (
    "create schema if not exists simclock",
    "create table if not exists simclock.clock (id int primary key, t timestamptz not null)",
    "insert into simclock.clock values (1, %(t)s) on conflict (id) do update set t = excluded.t",
    "create or replace function simclock.now() returns timestamptz"
    " language sql stable as $$ select t from simclock.clock where id = 1 $$",
)


class DatabaseClock:
    """The throwaway database's now() follows the virtual clock (see the module doc)."""

    def __init__(self, database_url: str, start: datetime) -> None:
        self._conn = psycopg.connect(database_url, autocommit=True)
        for statement in _SHIM:
            self._conn.execute(statement, {"t": start} if "%(t)s" in statement else None)
        name = self._conn.info.dbname
        self._conn.execute(
            sql.SQL(
                'alter database {} set search_path = simclock, pg_catalog, "$user", public'
            ).format(sql.Identifier(name))
        )
        defaults = self._conn.execute(
            """
            select c.relname, a.attname
              from pg_attrdef d
              join pg_class c on c.oid = d.adrelid
              join pg_namespace n on n.oid = c.relnamespace
              join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
             where n.nspname = 'public' and pg_get_expr(d.adbin, d.adrelid) = 'now()'
            """
        ).fetchall()
        for table, column in defaults:
            self._conn.execute(
                sql.SQL("alter table public.{} alter column {} set default simclock.now()").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
            )
        self._last: float | None = None

    def set(self, epoch: float) -> None:
        if epoch != self._last:
            self._conn.execute(
                "update simclock.clock set t = to_timestamp(%s) where id = 1", (epoch,)
            )
            self._last = epoch

    def close(self) -> None:
        self._conn.close()


# --- the service's clock and timer ------------------------------------------------------

_TIMED_MODULES = (services.calls, services.discovery, services.strava)


class _VirtualTime(types.ModuleType):
    """The `time` module with the virtual monotonic(), for modules without a timer seam."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("time")
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def monotonic(self) -> float:
        return self._clock.monotonic()


def has_timer_seam(runtime: Any) -> bool:
    return any(f.name == "timer" for f in fields(runtime))


@contextlib.contextmanager
def service_on(clock: VirtualClock, runtime: Any) -> Iterator[Any]:
    """The runtime with the virtual clock (and timer); without a timer seam the service
    modules' `time` is swapped for the virtual one while the simulation runs."""
    if has_timer_seam(runtime):
        yield replace(runtime, clock=clock.now, timer=clock.monotonic)
        return
    saved = {module: module.time for module in _TIMED_MODULES}
    virtual = _VirtualTime(clock)
    try:
        for module in _TIMED_MODULES:
            module.time = virtual  # type: ignore[attr-defined]
        yield replace(runtime, clock=clock.now)
    finally:
        for module, original in saved.items():
            module.time = original  # type: ignore[attr-defined]
