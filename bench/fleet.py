"""Weeks of a club in minutes: a discrete-event simulation of a fleet of riders running
the real service (the Flask app, its SQL, its Strava client) against the fake Strava on
one virtual clock (see bench/fleet_clock.py).

- The fleet (bench/fleet_world.py): history sizes around a median of 1,000 (lognormal,
  a few of 10,000), 3% races, a quarter of the riders without activity:read_all and
  some private activities; each rider with a home time zone (UTC-8 to UTC+10) and a
  riding habit (daily to monthly, some who stopped), rides uploaded a while after they
  end, now and then a manual entry dated weeks back, and Sync now presses after some
  uploads. Every rider connects at the start of the simulation.
- The schedule is read from .github/workflows/*.yml: each workflow's cron times, each
  run calling its endpoint again while `done` is false, up to its max_calls, stopping
  like .github/scripts/call-cron.sh (done, rate_limited, or a call that took nothing);
  runs start 0 to 15 minutes late, a few are dropped, one run per concurrency group at
  a time (a newer waiting run replaces an older one).
- Cron calls go through the Flask test client with the cron bearer; Sync now through
  POST /api/riders/me/sync with the rider's HS256 token.
- With --webhooks the push subscription is made at the start (the fake's validation GET
  through the test client), and the fake's sender delivers an event for each upload
  1 to 30 s after it, to POST /api/strava/webhook, losing --event-loss of them (5%) and
  repeating --event-duplicate; the events workflow (every 5 minutes) takes what the
  callback left pending. Without it the events workflow is left out (nothing to take).
- Strava is the fake installed with `responses`, at the documented default limits (or a
  larger tier), answering with the real headers and 429s; each request costs a
  simulated latency.

Run: .venv/bin/python -m bench.fleet [--riders 200] [--days 21] [--tier default]
     [--seed 1] [--label baseline] [--quick] [--webhooks [--event-loss 0.05]] [--compare]
It prints the report and writes bench/results/fleet-<label>.json; --compare runs the
same world by polling and with webhooks, one after the other, and prints them side by
side (fleet-<label>-polling.json, fleet-<label>-webhooks.json).
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import json
import logging
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import responses
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.rows import dict_row

from app_factory import create_app
from bench.fleet_clock import VirtualClock, on_clock
from bench.fleet_world import (
    CALL_PAUSE_S,
    JOB_STARTUP_S,
    Rider,
    ScheduledRun,
    Upload,
    Workflow,
    build_riders,
    build_uploads,
    histories,
    read_workflows,
    schedule_runs,
)
from bench.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    CRON_SECRET,
    ROOT,
    SEALER,
    bench_settings,
    run_on_code,
    table,
    temporary_database,
)
from fake_strava import FakeStrava, mock
from fake_strava.push import Transport
from fake_strava.server import API_PREFIX, OAUTH_PREFIX
from scripts.seeding import connect_athlete
from services import push_subscription
from services.activities import is_race

RESULTS = Path(__file__).resolve().parent / "results"
API_URL = "https://www.strava.com/api/v3"
OAUTH_URL = "https://www.strava.com/oauth"
JWT_SECRET = "fleet-bench-supabase-jwt-secret-0123456789abcdef"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
DAY_S = 86400.0
PER_PAGE = 200
# A manual entry dated back whose event was lost should be stored within this (the
# weekly look back, and the poll that carries it).
BACKDATED_WITHIN_S = 8 * 86400
# Strava's documented default limits (overall 15 min, overall day, read 15 min, read
# day) and larger tiers as multiples of them.
TIERS: dict[str, tuple[int, int, int, int]] = {
    "default": (200, 2000, 100, 1000),
    "x2": (400, 4000, 200, 2000),
    "x5": (1000, 10000, 500, 5000),
    "x10": (2000, 20000, 1000, 10000),
}
CLASSES = ("sync_now", "incremental", "discover", "enrich", "token")
_CONTEXT_CLASS = {
    "sync-now": "sync_now",
    "sync-strava": "incremental",
    "discover": "discover",
    "enrich": "enrich",
    # Webhook events are incremental work (the same class as sync), inside the callback's
    # POST or the events call.
    "webhook": "incremental",
    "events": "incremental",
}
VERIFY_TOKEN = "fleet-bench-verify-token"
PUBLIC_BASE_URL = "https://sync.fleet-bench.invalid"
HOOK = "/api/strava/webhook"
EVENT_DELAY_S = (1.0, 30.0)  # Strava's deliveries come seconds after the change
_LISTING = API_PREFIX + "/athlete/activities"
_DETAIL = API_PREFIX + "/activities/"


@dataclass(frozen=True)
class FleetConfig:
    riders: int = 200
    days: int = 21
    tier: str = "default"
    seed: int = 1
    history_median: int = 1000
    latency_s: float = 0.150
    workers: int = 1  # SYNC_WORKERS; 1 keeps the figures reproducible (no thread races)
    label: str | None = None
    # (overall 15 min, overall day, read 15 min, read day) instead of the tier's
    limits: tuple[int, int, int, int] | None = None
    webhooks: bool = False
    event_loss: float = 0.05
    event_duplicate: float = 0.0

    @property
    def rate_limits(self) -> tuple[int, int, int, int]:
        return self.limits or TIERS[self.tier]

    @property
    def name(self) -> str:
        hooks = "-webhooks" if self.webhooks else ""
        return self.label or f"{self.tier}-{self.riders}r-{self.days}d-s{self.seed}{hooks}"


class FleetFake(FakeStrava):
    """The fake Strava, noting the ids each listing answered (to count requests that
    found nothing new without parsing the answers again)."""

    last_listing: list[int] | None = None

    def _list_activities(self, grant: Any, query: Mapping[str, str]) -> Any:
        answer = super()._list_activities(grant, query)
        body = answer.body
        self.last_listing = [s["id"] for s in body] if isinstance(body, list) else None
        return answer


@dataclass
class RunState:
    run: ScheduledRun
    started: float
    calls: int = 0
    outcome: str = ""


@dataclass
class Tag:
    """What the simulation knows of one request of the fake's log."""

    context: str | None
    nothing_new: bool | None


@dataclass
class Totals:
    runs_scheduled: Counter[str] = field(default_factory=Counter)
    runs_dropped: Counter[str] = field(default_factory=Counter)
    runs_superseded: Counter[str] = field(default_factory=Counter)
    runs_done: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    call_failures: Counter[str] = field(default_factory=Counter)
    presses: Counter[str] = field(default_factory=Counter)


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95 and max (nearest rank), in seconds rounded to 0.1."""
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float | None:
        return round(ordered[max(0, math.ceil(q * n) - 1)], 1) if n else None

    return {"n": n, "p50_s": rank(0.50), "p95_s": rank(0.95), "max_s": rank(1.0)}


def history_pages(size: int, *, read_all: bool) -> int:
    """The fewest listings that walk a history of `size` at 200 a page: the last page
    must come back short (or empty); without activity:read_all only an empty page ends
    it (Strava filters private activities after paging)."""
    if read_all:
        return size // PER_PAGE + 1
    return math.ceil(size / PER_PAGE) + 1


class Simulation:
    def __init__(self, config: FleetConfig, *, server_url: str | None = None) -> None:
        if config.tier not in TIERS:
            raise ValueError(f"tier must be one of {sorted(TIERS)}")
        self.config = config
        self.server_url = server_url
        self.rng = random.Random(config.seed)
        self.clock = VirtualClock(START)
        limits = config.rate_limits
        self.fake = FleetFake(
            clock=self.clock.time,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            limit_15min=limits[0],
            limit_daily=limits[1],
            read_limit_15min=limits[2],
            read_limit_daily=limits[3],
            seed=config.seed,
        )
        push = self.fake.push
        push.timer = self.clock.monotonic  # Strava's 2 s for an answer, in virtual time
        push.loss, push.duplicate, push.delay_s = (
            config.event_loss,
            config.event_duplicate,
            EVENT_DELAY_S,
        )
        self.event_lost: set[int] = set()  # rides whose event the sender lost
        self._delivery_at: float | None = None
        self.end = START.timestamp() + config.days * DAY_S
        self.tags: list[Tag] = []
        self.context: str | None = None
        self._lock = threading.Lock()
        self._served: set[int] = set()
        self._detailed: set[int] = set()
        self.totals = Totals()
        self.reported: Counter[str] = Counter()  # Strava requests the answers reported
        self.uploaded_at: dict[int, float] = {}  # visible new rides: upload time
        self.pending: set[int] = set()  # uploaded, not stored yet
        self.fresh: dict[int, float] = {}  # stored: seconds from upload to row
        self.backdated: set[int] = set()
        # manual entries dated back: when they were entered, and how long until stored
        self.backdated_at: dict[int, float] = {}
        self.backdated_found: dict[int, float] = {}
        self.backfill_done_at: float | None = None
        self.busy: dict[str, RunState] = {}
        self.waiting: dict[str, ScheduledRun] = {}
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0

    # ---- the world -----------------------------------------------------------------------

    def build(self) -> None:
        config = self.config
        self.riders: list[Rider] = build_riders(
            self.rng, config.riders, start=START, history_median=config.history_median
        )
        self.uploads: list[Upload] = build_uploads(
            self.rng, self.riders, start=START, days=config.days
        )
        self.workflows: list[Workflow] = [
            w for w in read_workflows() if config.webhooks or w.endpoint != "events"
        ]
        self.runs: list[ScheduledRun] = schedule_runs(
            self.rng, self.workflows, start=START, days=config.days
        )
        self.history_visible: dict[int, set[int]] = {}
        self.history_ids: set[int] = set()
        self.history_race_ids: set[int] = set()  # the races the backfill must detail
        for rider, history in zip(self.riders, histories(self.riders), strict=True):
            self.fake.add_athlete(rider.athlete_id, firstname="Rider", lastname=str(rider.index))
            self.fake.add_activities(rider.athlete_id, history)
            visible = [s for s in history if rider.visible(s)]
            self.history_visible[rider.index] = {s["id"] for s in visible}
            self.history_ids.update(s["id"] for s in history)
            self.history_race_ids.update(s["id"] for s in visible if _race(s))
        self.history_races = len(self.history_race_ids)
        self.tokens: dict[int, str] = {}

    def connect(self, database_url: str) -> None:
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            for rider in self.riders:
                scope = "read,activity:read_all" if rider.read_all else "read,activity:read"
                rider.rider_id = connect_athlete(
                    conn,
                    self.fake,
                    rider.athlete_id,
                    sealer=SEALER,
                    name=f"Rider {rider.index}",
                    scope=scope,
                )
                user = uuid.UUID(int=self.rng.getrandbits(128), version=4)
                conn.execute(
                    "update riders set auth_user_id = %s where id = %s", (user, rider.rider_id)
                )
                self.tokens[rider.index] = _rider_token(user)

    # ---- Strava at the boundary ----------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.clock.advance(self.config.latency_s)
        with self._lock:
            self.fake.last_listing = None
            answer = self.fake.handle(method, path, query, headers, body)
            status = answer[0]
            nothing_new: bool | None = None
            if status == 200 and path == _LISTING and self.fake.last_listing is not None:
                ids = self.fake.last_listing
                nothing_new = all(i in self._served for i in ids)
                self._served.update(ids)
            elif status == 200 and path.startswith(_DETAIL):
                activity = int(path.rsplit("/", 1)[1])
                nothing_new = activity in self._detailed
                self._detailed.add(activity)
            self.tags.append(Tag(self.context, nothing_new))
            assert len(self.tags) == len(self.fake.requests)
        return answer

    # ---- events --------------------------------------------------------------------------

    def push(self, at: float, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, data))

    def loop(self, client: FlaskClient) -> None:
        for upload in self.uploads:
            self.push(upload.at, "upload", upload)
        for run in self.runs:
            self.totals.runs_scheduled[run.workflow.endpoint] += 1
            if run.dropped:
                self.totals.runs_dropped[run.workflow.endpoint] += 1
            else:
                self.push(run.starts, "run", run)
        while self._heap:
            at, _, kind, data = heapq.heappop(self._heap)
            if at >= self.end:
                break
            self.clock.set(at)
            if kind == "upload":
                self.upload(data)
            elif kind == "press":
                self.press(client, data)
            elif kind == "run":
                self.start_run(data)
            elif kind == "call":
                self.cron_call(client, data)
            elif kind == "deliver":
                self._delivery_at = None
                self.fake.push.deliver_due()
            self.schedule_delivery()

    def schedule_delivery(self) -> None:
        """The sender's next due delivery (or retry) on the heap, once."""
        due = self.fake.push.next_due()
        if due is not None and (self._delivery_at is None or due < self._delivery_at):
            self._delivery_at = due
            self.push(due, "deliver", None)

    def webhook_transport(self, client: FlaskClient) -> Transport:
        """The sender's POST, through the test client; the answer's time is virtual."""

        def post(url: str, event: dict[str, Any]) -> int:
            self.context = "webhook"
            try:
                response = client.post(HOOK, json=event)
            finally:
                self.context = None
                self.clock.settle()
            self.after_call()
            return response.status_code

        return post

    def subscribe(self, client: FlaskClient) -> None:
        """strava-webhook create, with the fake's validation GET through the client."""

        def validate(url: str) -> tuple[int, Any]:
            answer = client.get(url.removeprefix(PUBLIC_BASE_URL))
            return answer.status_code, answer.get_json(silent=True)

        self.fake.push.validator = validate
        self.fake.push.transport = self.webhook_transport(client)
        push_subscription.create(self.runtime)

    def upload(self, upload: Upload) -> None:
        rider = self.riders[upload.rider]
        lost = self.fake.push.log.lost
        self.fake.add_activities(rider.athlete_id, [upload.summary])
        activity = upload.summary["id"]
        if self.fake.push.log.lost > lost:
            self.event_lost.add(activity)
        if not rider.visible(upload.summary):
            return
        if upload.manual_backdated:
            self.backdated.add(activity)
            self.backdated_at[activity] = upload.at
        else:
            self.uploaded_at[activity] = upload.at
            self.pending.add(activity)
        if upload.press_at is not None:
            self.push(upload.press_at, "press", (upload.rider, activity))

    def start_run(self, run: ScheduledRun) -> None:
        group = run.workflow.group
        if group in self.busy:  # GitHub's concurrency group: wait; newest waiting kept
            if group in self.waiting:
                self.totals.runs_superseded[run.workflow.endpoint] += 1
            self.waiting[group] = run
            return
        state = RunState(run, started=self.clock.time())
        self.busy[group] = state
        self.push(self.clock.time(), "call", state)

    def cron_call(self, client: FlaskClient, state: RunState) -> None:
        workflow = state.run.workflow
        endpoint = workflow.endpoint
        state.calls += 1
        self.totals.calls[endpoint] += 1
        self.context = endpoint
        try:
            response = client.post(
                f"/api/cron/{endpoint}",
                headers={"Authorization": f"Bearer {CRON_SECRET}"},
                json={},
            )
        finally:
            self.context = None
            self.clock.settle()
        self.after_call()
        body = response.get_json(silent=True) or {}
        self.reported[endpoint] += int(body.get("strava_requests", 0))
        if response.status_code != 200:
            self.totals.call_failures[f"{endpoint} {response.status_code}"] += 1
            outcome = "failed"
        elif body["done"]:
            outcome = "done"
        elif body["rate_limited"]:
            outcome = "rate_limited"
        elif body["processed"] == 0:
            outcome = "stalled"
        elif state.calls >= workflow.max_calls:
            outcome = "max_calls"
        else:
            self.push(self.clock.time() + CALL_PAUSE_S, "call", state)
            return
        self.totals.outcomes[endpoint][outcome] += 1
        self.totals.runs_done[endpoint] += 1
        del self.busy[workflow.group]
        waiting = self.waiting.pop(workflow.group, None)
        if waiting is not None:
            self.push(self.clock.time() + JOB_STARTUP_S, "run", waiting)

    def press(self, client: FlaskClient, pressed: tuple[int, int]) -> None:
        index, activity = pressed
        had = activity not in self.pending
        self.context = "sync-now"
        try:
            response = client.post(
                "/api/riders/me/sync", headers={"Authorization": f"Bearer {self.tokens[index]}"}
            )
        finally:
            self.context = None
            self.clock.settle()
        self.after_call()
        body = response.get_json(silent=True) or {}
        self.reported["sync-now"] += int(body.get("strava_requests", 0))
        status = response.status_code
        if status == 200:
            if had:
                outcome = "200: the ride was already in"
            elif activity in self.fresh:
                outcome = "200: answered with the new ride"
            else:
                outcome = "200: without the new ride"
        elif status == 202:
            outcome = "202: in progress (held by a cron call)"
        else:
            code = (body.get("error") or {}).get("code", "?")
            outcome = f"{status}: {code}"
        self.totals.presses[outcome] += 1

    def after_call(self) -> None:
        """Note the new rides that got their row, and the end of the backfill."""
        now = self.clock.time()
        with self.runtime.db.connection() as conn:
            if self.pending:
                rows = conn.execute(
                    "select strava_id from activities where strava_id = any(%s)",
                    (list(self.pending),),
                ).fetchall()
                for row in rows:
                    activity = row["strava_id"]
                    self.fresh[activity] = now - self.uploaded_at[activity]
                    self.pending.discard(activity)
            waiting = [a for a in self.backdated_at if a not in self.backdated_found]
            if waiting:
                rows = conn.execute(
                    "select strava_id from activities where strava_id = any(%s)", (waiting,)
                ).fetchall()
                for row in rows:
                    activity = row["strava_id"]
                    self.backdated_found[activity] = now - self.backdated_at[activity]
            if self.backfill_done_at is None:
                left = conn.execute(
                    """
                    select (select count(*) from strava_connections
                             where history_complete_at is null) as walks,
                           (select count(*) from activities
                             where enrichment_status in ('pending', 'failed')
                               and start_date < %s) as races
                    """,
                    (START,),
                ).fetchone()
                assert left is not None
                if left["walks"] == 0 and left["races"] == 0:
                    self.backfill_done_at = now

    # ---- the whole run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        wall = time.perf_counter()
        self.build()
        built_s = time.perf_counter() - wall
        with temporary_database(self.server_url) as url:
            self.connect(url)
            app = self._app(url)
            original = app.extensions["strava_sync"]
            self.runtime = on_clock(original, self.clock)
            app.extensions["strava_sync"] = self.runtime
            try:
                with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
                    mock.install(self.handle, rsps, {API_URL: API_PREFIX, OAUTH_URL: OAUTH_PREFIX})
                    client = self.client = app.test_client()
                    if self.config.webhooks:
                        self.subscribe(client)
                    self.loop(client)
                report = self.report(built_s=built_s)
            finally:
                original.db.close()
        total = time.perf_counter() - wall
        report["wall_time"].update(total_s=round(total, 1), simulation_s=round(total - built_s, 1))
        return report

    def _app(self, database_url: str) -> Flask:
        settings = bench_settings(
            database_url,
            API_URL,
            OAUTH_URL,
            supabase_jwt_secret=JWT_SECRET,
            sync_workers=self.config.workers,
            strava_webhook_verify_token=VERIFY_TOKEN,
            public_base_url=PUBLIC_BASE_URL,
        )
        return create_app(settings, environ={})

    # ---- figures -------------------------------------------------------------------------

    def report(self, *, built_s: float) -> dict[str, Any]:
        config = self.config
        days = config.days
        with self.runtime.db.connection() as conn:
            stored_rows = conn.execute(
                "select count(*) as n, count(distinct strava_id) as d from activities"
            ).fetchone()
            stored = {r["strava_id"] for r in conn.execute("select strava_id from activities")}
            synced = {
                r["rider_id"]: r["last_synced_at"]
                for r in conn.execute("select rider_id, last_synced_at from strava_connections")
            }
            wall_stamped = self._wall_stamped(conn)
        assert stored_rows is not None
        requests = self._requests(days)
        backfill = self._backfill()
        freshness = self._freshness(days)
        history_missing = sum(len(ids - stored) for ids in self.history_visible.values())
        on_strava = self.history_ids | {u.summary["id"] for u in self.uploads}
        by_context = Counter(tag.context for tag in self.tags)
        missed_before_sync = 0
        for upload in self.uploads:
            rider = self.riders[upload.rider]
            last = synced.get(rider.rider_id)
            activity = upload.summary["id"]
            if (
                activity in self.uploaded_at
                and last is not None
                and upload.at < last.timestamp()
                and activity not in stored
            ):
                missed_before_sync += 1
        freshness["missing_at_end"] = {
            "new_rides": len(self.pending),
            "manual_entries_dated_back": len(self.backdated - stored),
            "manual_entries_total": len(self.backdated),
            "history": history_missing,
        }
        totals = self.totals
        presses = sum(totals.presses.values())
        return {
            "config": {
                **asdict(config),
                "label": config.name,
                "start": _iso(START.timestamp()),
                "limits": dict(
                    zip(
                        ("limit_15min", "limit_daily", "read_limit_15min", "read_limit_daily"),
                        config.rate_limits,
                        strict=True,
                    )
                ),
            },
            "fleet": self._fleet(),
            "schedule": [
                {
                    "workflow": w.file,
                    "endpoint": w.endpoint,
                    "cron": list(w.crons),
                    "max_calls": w.max_calls,
                    "group": w.group,
                    "runs_scheduled": totals.runs_scheduled[w.endpoint],
                    "runs_dropped": totals.runs_dropped[w.endpoint],
                    "runs_superseded": totals.runs_superseded[w.endpoint],
                    "runs_done": totals.runs_done[w.endpoint],
                    "calls": totals.calls[w.endpoint],
                    "outcomes": dict(sorted(totals.outcomes[w.endpoint].items())),
                    "call_failures": {
                        k: v
                        for k, v in sorted(totals.call_failures.items())
                        if k.startswith(w.endpoint + " ")
                    },
                }
                for w in self.workflows
            ],
            "backfill": backfill,
            "freshness": freshness,
            "sync_now": {
                "presses": presses,
                "answered_with_new_rides": totals.presses["200: answered with the new ride"],
                "outcomes": dict(sorted(totals.presses.items())),
                "refused": {
                    k: v for k, v in sorted(totals.presses.items()) if not k.startswith("200")
                },
            },
            "requests": requests,
            "webhooks": self._webhooks(),
            "integrity": {
                "rows": stored_rows["n"],
                "stored_twice": stored_rows["n"] - stored_rows["d"],
                "uploads_missed_before_last_sync": missed_before_sync,
                "history_missing": history_missing,
                "stored_not_on_strava": len(stored - on_strava),
                # timestamps after the simulated days: something read the host's clock
                "rows_stamped_after_the_simulation": wall_stamped,
                "requests_in_fake_log": len(self.fake.requests),
                # per call kind: the fake's log (token requests included) and what the
                # service's answers said they made (`strava_requests`)
                "requests_by_call": {
                    kind: {"fake_log": by_context[kind], "answers": self.reported[kind]}
                    for kind in _CONTEXT_CLASS
                    if kind != "webhook"  # the callback's answer does not count requests
                },
            },
            "wall_time": {"world_s": round(built_s, 1)},
        }

    def _wall_stamped(self, conn: Any) -> dict[str, int]:
        """Per table.column, rows stamped after the simulated days: the service or the
        database read the host's clock (START lies in the host's past)."""
        columns = conn.execute(
            """
            select table_name, column_name from information_schema.columns
             where table_schema = 'public' and data_type = 'timestamp with time zone'
             order by table_name, column_name
            """
        ).fetchall()
        high = datetime.fromtimestamp(self.end, UTC) + timedelta(days=1)
        found = {}
        for column in columns:
            table_name, name = column["table_name"], column["column_name"]
            if name in ("start_date", "athlete_created_at"):  # Strava's, not the service's
                continue
            row = conn.execute(
                sql.SQL("select count(*) as n from {} where {} > %s").format(
                    sql.Identifier(table_name), sql.Identifier(name)
                ),
                (high,),
            ).fetchone()
            if row["n"]:
                found[f"{table_name}.{name}"] = row["n"]
        return found

    def _fleet(self) -> dict[str, Any]:
        sizes = sorted(r.history_size for r in self.riders)
        n = len(sizes)
        return {
            "riders": n,
            "history_activities": sum(sizes),
            "history_median": sizes[n // 2] if n else 0,
            "history_max": sizes[-1] if n else 0,
            "riders_over_10000": sum(1 for s in sizes if s >= 10_000),
            "without_read_all": sum(1 for r in self.riders if not r.read_all),
            "history_races_visible": self.history_races,
            "habits": dict(sorted(Counter(r.habit for r in self.riders).items())),
            "new_rides_uploaded": len(self.uploaded_at),
            "manual_entries_dated_back": len(self.backdated),
            "uploads_invisible_to_the_service": sum(
                1 for u in self.uploads if not self.riders[u.rider].visible(u.summary)
            ),
        }

    def _webhooks(self) -> dict[str, Any]:
        """What the events did: the sender's log, the rides whose event arrived against
        those whose event was lost (upload to row), and the service's own status."""
        if not self.config.webhooks:
            return {"enabled": False}
        log = self.fake.push.log
        arrived: list[float] = []
        lost: list[float] = []
        for activity in self.uploaded_at:
            if activity in self.fresh:
                (lost if activity in self.event_lost else arrived).append(self.fresh[activity])
        backdated_lost = self.backdated & self.event_lost
        status = self.client.get(
            "/api/admin/status", headers={"Authorization": f"Bearer {CRON_SECRET}"}
        ).get_json()
        return {
            "enabled": True,
            "event_loss": self.config.event_loss,
            "event_duplicate": self.config.event_duplicate,
            "sender": {
                "emitted": log.emitted,
                "lost": log.lost,
                "duplicated": log.duplicated,
                "attempts": log.attempts,
                "delivered": log.delivered,
                "given_up": log.given_up,
                "answers": dict(sorted(Counter(log.statuses).items())),
            },
            "freshness_event_arrived": quantiles(arrived),
            "freshness_event_lost": quantiles(lost),
            "new_rides_event_lost": len(self.event_lost & set(self.uploaded_at)),
            # manual entries dated weeks back whose event was lost: entered to stored
            "backdated_event_lost": {
                "entries": len(backdated_lost),
                "found": quantiles(
                    [self.backdated_found[a] for a in backdated_lost if a in self.backdated_found]
                ),
                "not_found": len(backdated_lost - set(self.backdated_found)),
                # of those, entered BACKDATED_WITHIN_S or more before the end: found late
                "not_found_overdue": sum(
                    self.end - self.backdated_at[a] >= BACKDATED_WITHIN_S
                    for a in backdated_lost - set(self.backdated_found)
                ),
                "found_overdue": sum(
                    self.backdated_found[a] > BACKDATED_WITHIN_S
                    for a in backdated_lost & set(self.backdated_found)
                ),
            },
            "status": status["webhooks"],
        }

    def _requests(self, days: int) -> dict[str, Any]:
        per_day = [
            dict.fromkeys((*CLASSES, "other", "total", "429", "events", "read"), 0)
            for _ in range(days)
        ]
        by_class = dict.fromkeys((*CLASSES, "other"), 0)
        by_kind: Counter[str] = Counter()  # "<class> <kind>" (list, detail, other)
        nothing_new = dict.fromkeys((*CLASSES, "other"), 0)
        status_429 = 0
        start = START.timestamp()
        for record, tag in zip(self.fake.requests, self.tags, strict=True):
            if record.method == "POST" and record.path == OAUTH_PREFIX + "/token":
                cls = "token"
            else:
                cls = _CONTEXT_CLASS.get(tag.context or "", "other")
            day = min(days - 1, max(0, int((record.at - start) // DAY_S)))
            if cls == "incremental" and tag.context in ("webhook", "events"):
                per_day[day]["events"] += 1  # of incremental: the events' fetches
            per_day[day][cls] += 1
            per_day[day]["total"] += 1
            per_day[day]["read"] += _is_read(record)
            by_class[cls] += 1
            if cls != "token":
                by_kind[f"{cls} {_kind(record.path)}"] += 1
            if record.status == 429:
                per_day[day]["429"] += 1
                status_429 += 1
            if tag.nothing_new:
                nothing_new[cls] += 1
        done = self.backfill_done_at
        # whole days after the backfill: the steady state of a club whose history is in
        steady = [
            row for d, row in enumerate(per_day) if done is not None and start + d * DAY_S >= done
        ]

        def mean(rows: list[dict[str, int]], key: str) -> float | None:
            return round(sum(r[key] for r in rows) / len(rows), 1) if rows else None

        return {
            "incremental_per_day": {
                "all_days": mean(per_day, "incremental"),
                "after_backfill": mean(steady, "incremental"),
                "events_after_backfill": mean(steady, "events"),
                "days_after_backfill": len(steady),
            },
            "by_class": by_class,
            "by_class_and_kind": dict(sorted(by_kind.items())),
            "total": sum(by_class.values()),
            "status_429": status_429,
            "nothing_new": nothing_new,
            "nothing_new_means": (
                "a 200 listing none of whose activities an earlier answer held (an empty"
                " page included), or a detail fetched before"
            ),
            "per_day": [
                {"day": d + 1, **row, "unspent": max(0, self.config.rate_limits[3] - row["read"])}
                for d, row in enumerate(per_day)
            ],
            "events_means": "of incremental: requests for webhook events (callback, events call)",
            "read_means": "API GETs, what Strava counts against the read limits (not token POSTs)",
            "unspent_means": "the daily read limit less the day's read requests",
        }

    def _backfill_work(self, record: Any, tag: Tag) -> bool:
        """Whether a request is the backfill's own work: a discover call's listing, or the
        detail of a race of the histories (whichever call fetched it: Sync now details a
        rider's recent races)."""
        if tag.context == "discover":
            return True
        if record.path.startswith(_DETAIL):
            return int(record.path.rsplit("/", 1)[1]) in self.history_race_ids
        return False

    def _backfill(self) -> dict[str, Any]:
        config = self.config
        pages = sum(history_pages(r.history_size, read_all=r.read_all) for r in self.riders)
        races = self.history_races
        needed = pages + races
        limit = config.rate_limits[3]
        done = self.backfill_done_at
        start = START.timestamp()
        # what the rest of the service really read a day while the backfill ran
        until = done if done is not None else self.end
        period_days = (until - start) / DAY_S
        other: Counter[str] = Counter()  # "<class> <kind>": read requests not the backfill's
        listings: Counter[str] = Counter()  # the bound's first form: listings only
        reads_by_day: Counter[int] = Counter()
        backfill_reads = 0
        for record, tag in zip(self.fake.requests, self.tags, strict=True):
            if record.at >= until or not _is_read(record):
                continue
            reads_by_day[int((record.at - start) // DAY_S)] += 1
            cls = _CONTEXT_CLASS.get(tag.context or "", "other")
            if record.path == _LISTING:
                listings[cls] += 1
            if self._backfill_work(record, tag):
                backfill_reads += 1
            else:
                other[f"{cls} {_kind(record.path)}"] += 1
        other_per_day = sum(other.values()) / period_days
        left = limit - other_per_day
        bound = needed / left if left > 0 else None
        listed = limit - (listings["incremental"] + listings["sync_now"]) / period_days
        whole_days = int(period_days)
        unspent = [max(0, limit - reads_by_day[d]) for d in range(whole_days)]
        done_days = (done - start) / DAY_S if done is not None else None

        def a_day(n: float) -> float:
            return round(n / period_days, 1)

        return {
            "done": done is not None,
            "done_at": _iso(done) if done is not None else None,
            "done_after_days": round(done_days, 2) if done_days is not None else None,
            "lower_bound_days": round(bound, 2) if bound is not None else None,
            "against_bound": (
                round(done_days / bound, 3) if done_days is not None and bound else None
            ),
            "requests_needed": needed,
            "history_pages": pages,
            "races": races,
            "backfill_requests": backfill_reads,
            "daily_read_limit": limit,
            "other_work_per_day": round(other_per_day, 1),
            "other_work_per_day_by_kind": {k: a_day(n) for k, n in sorted(other.items())},
            "incremental_per_day": a_day(
                sum(n for k, n in other.items() if k.startswith("incremental "))
            ),
            "sync_now_per_day": a_day(
                sum(n for k, n in other.items() if k.startswith("sync_now "))
            ),
            "left_per_day": round(left, 1),
            "unspent_whole_days": sum(unspent),
            "unspent_by_day": unspent,
            # the bound as first written: only incremental and Sync now listings counted
            # as other work (the events' fetches, details, were left to the backfill)
            "lower_bound_days_listings_only": round(needed / listed, 2) if listed > 0 else None,
            "how": (
                f"({pages} history pages: per rider floor(n/200)+1 with activity:read_all,"
                f" ceil(n/200)+1 without, + {races} races, one request each) / ({limit}"
                f" read requests a day - {other_per_day:.1f} a day of other work: every read"
                " request but discover's listings and the history races' details, their daily"
                f" average over the {period_days:.2f} days of the backfill) = {needed} /"
                f" {left:.1f} daily budgets (a backfill starting at 00:00 UTC has a new one"
                " each midnight)"
            ),
        }

    def _freshness(self, days: int) -> dict[str, Any]:
        start = START.timestamp()
        by_day: list[list[float]] = [[] for _ in range(days)]
        missing_by_day = [0] * days
        during: list[float] = []
        after: list[float] = []
        done = self.backfill_done_at
        for activity, at in self.uploaded_at.items():
            day = min(days - 1, int((at - start) // DAY_S))
            if activity in self.fresh:
                delay = self.fresh[activity]
                by_day[day].append(delay)
                (during if done is None or at < done else after).append(delay)
            else:
                missing_by_day[day] += 1
        return {
            "per_day": [
                {"day": d + 1, **quantiles(values), "missing": missing_by_day[d]}
                for d, values in enumerate(by_day)
            ],
            "during_backfill": quantiles(during),
            "after_backfill": quantiles(after),
        }


def _is_read(record: Any) -> bool:
    """A request Strava counts against the read limits: an API GET (not a token POST)."""
    return bool(record.method == "GET" and record.path.startswith(API_PREFIX + "/"))


def _kind(path: str) -> str:
    if path == _LISTING:
        return "list"
    return "detail" if path.startswith(_DETAIL) else "other"


def _race(summary: Mapping[str, Any]) -> bool:
    return is_race(
        sport_type=summary["sport_type"],
        workout_type=summary.get("workout_type"),
        distance_m=float(summary["distance"]),
        trainer=bool(summary.get("trainer")),
        min_distance_km=200.0,
    )


def _rider_token(user: uuid.UUID) -> str:
    """A Supabase-like HS256 access token (PyJWT checks exp against real time)."""
    now = int(time.time())
    claims = {
        "iss": "https://fleet-bench.invalid/auth/v1",
        "sub": str(user),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 7 * 86400,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hours(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- printing ------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    config, fleet, backfill = report["config"], report["fleet"], report["backfill"]
    limits = config["limits"]
    out = [
        f"Fleet simulation '{config['label']}': {fleet['riders']} riders, {config['days']}"
        f" days from {config['start']}, seed {config['seed']}, Strava tier {config['tier']}"
        f" (read {limits['read_limit_15min']}/15 min, {limits['read_limit_daily']}/day;"
        f" overall {limits['limit_15min']}/{limits['limit_daily']}),"
        f" {config['latency_s'] * 1000:.0f} ms a request, SYNC_WORKERS={config['workers']}",
        f"Histories: {fleet['history_activities']:,} activities (median"
        f" {fleet['history_median']:,}, max {fleet['history_max']:,},"
        f" {fleet['riders_over_10000']} of 10,000+), {fleet['history_races_visible']:,} races"
        f" visible, {fleet['without_read_all']} riders without activity:read_all; new:"
        f" {fleet['new_rides_uploaded']:,} rides, {fleet['manual_entries_dated_back']} manual"
        f" entries dated weeks back ({fleet['uploads_invisible_to_the_service']} uploads are"
        " private to riders without read_all: not counted)",
        "",
        "Schedule (read from .github/workflows):",
        table(
            [
                (
                    "workflow",
                    "cron",
                    "max_calls",
                    "runs",
                    "dropped",
                    "superseded",
                    "calls",
                    "outcomes",
                )
            ]  # fmt: skip
            + [
                (
                    s["workflow"],
                    " | ".join(s["cron"]),
                    str(s["max_calls"]),
                    str(s["runs_done"]),
                    str(s["runs_dropped"]),
                    str(s["runs_superseded"]),
                    str(s["calls"]),
                    ", ".join(f"{k} {v}" for k, v in s["outcomes"].items())
                    + "".join(f", FAILED {k} {v}" for k, v in s["call_failures"].items()),
                )
                for s in report["schedule"]
            ]
        ),
        "",
        "Backfill (every history discovered, every race of it detailed):",
        f"  done: {backfill['done_at'] or 'NOT DONE'}"
        + (f" (after {backfill['done_after_days']} days)" if backfill["done"] else ""),
        f"  lower bound: {backfill['lower_bound_days']} days = {backfill['how']}",
        f"  against its bound: {backfill['against_bound'] or '-'}; the backfill's own requests"
        f" {backfill['backfill_requests']:,} of {backfill['requests_needed']:,} needed; other"
        f" work a day: "
        + ", ".join(f"{k} {v}" for k, v in backfill["other_work_per_day_by_kind"].items())
        + f"; read budget left unspent in its whole days: {backfill['unspent_whole_days']:,}"
        f" (by day: {', '.join(map(str, backfill['unspent_by_day']))})",
        f"  (the bound counting only listings as other work, as first written:"
        f" {backfill['lower_bound_days_listings_only']} days)",
        "",
        "Freshness: upload -> row (p50 / p95 / max), by the day of the upload:",
    ]
    rows: list[tuple[str, ...]] = [("day", "rides", "p50", "p95", "max", "missing")]
    for day in report["freshness"]["per_day"]:
        rows.append(
            (
                str(day["day"]),
                str(day["n"]),
                _hours(day["p50_s"]),
                _hours(day["p95_s"]),
                _hours(day["max_s"]),
                str(day["missing"]),
            )
        )
    for name in ("during_backfill", "after_backfill"):
        part = report["freshness"][name]
        rows.append(
            (
                name.replace("_", " "),
                str(part["n"]),
                _hours(part["p50_s"]),
                _hours(part["p95_s"]),
                _hours(part["max_s"]),
                "",
            )
        )
    out.append(table(rows))
    missing = report["freshness"]["missing_at_end"]
    out.append(
        f"  missing at the end: {missing['new_rides']} new rides,"
        f" {missing['manual_entries_dated_back']} of {missing['manual_entries_total']} manual"
        f" entries dated back, {missing['history']} history activities"
    )
    sync_now = report["sync_now"]
    out += ["", f"Sync now: {sync_now['presses']} presses"]
    out.append(
        table([("answer", "presses")] + [(k, str(v)) for k, v in sync_now["outcomes"].items()])
    )
    requests = report["requests"]
    out += [
        "",
        f"Strava requests: {requests['total']:,} ({requests['status_429']} answered 429)",
    ]
    header: tuple[str, ...] = ("day", *CLASSES, "total", "429", "events", "read", "unspent")
    rows = [header]
    for day in requests["per_day"]:
        rows.append(tuple(str(day[k]) for k in header))
    per_day = requests["per_day"]
    sums = [str(sum(d[k] for d in per_day)) for k in ("events", "read", "unspent")]
    rows.append(("all", *(str(requests["by_class"][c]) for c in CLASSES),
                 str(requests["total"]), str(requests["status_429"]), *sums))  # fmt: skip
    rows.append(("nothing new", *(str(requests["nothing_new"][c]) for c in CLASSES),
                 *[""] * 5))  # fmt: skip
    out.append(table(rows))
    out.append(
        "  (events: of incremental, the webhook events' requests; read: API GETs, counted"
        " against the read limits; unspent: the daily read limit less them)"
    )
    out.append(
        "  by class and kind: "
        + ", ".join(f"{k} {v:,}" for k, v in requests["by_class_and_kind"].items())
    )
    if requests["by_class"]["other"]:
        out.append(f"  (other, outside any call: {requests['by_class']['other']})")
    incremental = requests["incremental_per_day"]
    out.append(
        f"  incremental a day: {incremental['all_days']} over the run,"
        f" {incremental['after_backfill'] if incremental['after_backfill'] is not None else '-'}"
        f" over the {incremental['days_after_backfill']} whole days after the backfill"
        + (
            f" ({incremental['events_after_backfill']} of them for events)"
            if report["webhooks"]["enabled"]
            else ""
        )
    )
    out += render_webhooks(report["webhooks"])
    integrity = report["integrity"]
    wall = report["wall_time"]
    out += [
        "",
        f"Integrity: {integrity['rows']:,} rows, {integrity['stored_twice']} stored twice,"
        f" {integrity['uploads_missed_before_last_sync']} uploads missing although uploaded"
        " before the rider's last sync; rows stamped after the simulated days (wall time):"
        f" {integrity['rows_stamped_after_the_simulation'] or 'none'}",
        f"Wall time: {wall['total_s']} s ({wall['world_s']} s building the world,"
        f" {wall['simulation_s']} s simulating)",
    ]
    return "\n".join(out)


def render_webhooks(hooks: dict[str, Any]) -> list[str]:
    if not hooks["enabled"]:
        return []
    sender, status = hooks["sender"], hooks["status"]
    arrived, lost = hooks["freshness_event_arrived"], hooks["freshness_event_lost"]
    lag = status.get("lag_s") or {}
    return [
        "",
        f"Webhooks ({hooks['event_loss']:.0%} of events lost,"
        f" {hooks['event_duplicate']:.0%} duplicated): {sender['emitted']:,} events,"
        f" {sender['lost']} lost, {sender['duplicated']} duplicated, {sender['attempts']:,}"
        f" deliveries ({sender['given_up']} given up after 3 attempts), answers"
        f" {sender['answers']}",
        f"  upload -> row, event arrived: p50 {_hours(arrived['p50_s'])}, p95"
        f" {_hours(arrived['p95_s'])}, max {_hours(arrived['max_s'])} ({arrived['n']} rides)",
        f"  upload -> row, event lost (the safety-net poll): p50 {_hours(lost['p50_s'])},"
        f" p95 {_hours(lost['p95_s'])}, max {_hours(lost['max_s'])} ({lost['n']} of"
        f" {hooks['new_rides_event_lost']} rides whose event was lost)",
        *_backdated_line(hooks.get("backdated_event_lost")),
        f"  the status at the end: healthy {status['healthy']} ({status['reason']}); lag"
        f" event_time -> processed p50 {_hours(lag.get('p50'))}, p95 {_hours(lag.get('p95'))}",
    ]


def _backdated_line(backdated: dict[str, Any] | None) -> list[str]:
    if not backdated:
        return []
    found = backdated["found"]
    return [
        f"  manual entries dated back whose event was lost: {backdated['entries']}; entered"
        f" -> row p50 {_hours(found['p50_s'])}, max {_hours(found['max_s'])}"
        f" ({found['n']} found, {backdated['not_found']} not);"
        f" later than {BACKDATED_WITHIN_S // 86400} days:"
        f" {backdated.get('found_overdue', '?')} found, {backdated.get('not_found_overdue', '?')}"
        " not found although entered that long before the end"
    ]


def compared_figures(r: dict[str, Any]) -> dict[str, str]:
    """The figures --compare sets side by side."""
    incremental, freshness = r["requests"]["incremental_per_day"], r["freshness"]
    missing, hooks = freshness["missing_at_end"], r["webhooks"]
    lost = hooks["freshness_event_lost"]["p95_s"] if hooks["enabled"] else None
    lost_p50 = hooks["freshness_event_lost"]["p50_s"] if hooks["enabled"] else None
    return {
        "incremental requests a day, after the backfill": str(incremental["after_backfill"]),
        "  of them for events": str(incremental["events_after_backfill"]),
        "incremental requests a day, whole run": str(incremental["all_days"]),
        "freshness after the backfill, p50": _hours(freshness["after_backfill"]["p50_s"]),
        "freshness after the backfill, p95": _hours(freshness["after_backfill"]["p95_s"]),
        "freshness during the backfill, p95": _hours(freshness["during_backfill"]["p95_s"]),
        "freshness of rides whose event was lost, p95": _hours(lost),
        "freshness of rides whose event was lost, p50": _hours(lost_p50),
        "manual entries dated back, event lost: found / max entered -> row": (
            _backdated_compared(hooks)
        ),
        "  later than 8 days: found late / not found, entered 8+ days before the end": (
            _backdated_overdue(hooks)
        ),
        "backfill complete, day": str(r["backfill"]["done_after_days"]),
        "  its lower bound, days": str(r["backfill"]["lower_bound_days"]),
        "  against the bound": str(r["backfill"]["against_bound"]),
        "  other work a day while it ran": str(r["backfill"]["other_work_per_day"]),
        "  read budget unspent in its whole days": str(r["backfill"]["unspent_whole_days"]),
        "  the bound counting listings only (first form)": str(
            r["backfill"]["lower_bound_days_listings_only"]
        ),
        "Sync now presses: answered with the new ride / it was in / refused": (
            f"{r['sync_now']['answered_with_new_rides']} /"
            f" {r['sync_now']['outcomes'].get('200: the ride was already in', 0)} /"
            f" {sum(r['sync_now']['refused'].values())} of {r['sync_now']['presses']}"
        ),
        "Strava requests in all": f"{r['requests']['total']:,}",
        "429s": str(r["requests"]["status_429"]),
        "missing at the end: new rides / manual entries dated back": (
            f"{missing['new_rides']} / {missing['manual_entries_dated_back']}"
        ),
        "wall time": f"{r['wall_time']['total_s']} s",
    }


def _backdated_compared(hooks: dict[str, Any]) -> str:
    backdated = hooks.get("backdated_event_lost") if hooks["enabled"] else None
    if not backdated:
        return "-"
    found = backdated["found"]
    return f"{found['n']} of {backdated['entries']} / {_hours(found['max_s'])}"


def _backdated_overdue(hooks: dict[str, Any]) -> str:
    """Entries stored later than BACKDATED_WITHIN_S, and entries not stored although
    entered that long before the end (an entry near the end has had no week yet)."""
    backdated = hooks.get("backdated_event_lost") if hooks["enabled"] else None
    if not backdated:
        return "-"
    # (a report from before these counts has neither)
    return f"{backdated.get('found_overdue', '?')} / {backdated.get('not_found_overdue', '?')}"


def render_comparison(*columns: tuple[str, dict[str, Any]]) -> str:
    """Reports side by side, one column each (named)."""
    figures = [compared_figures(report) for _, report in columns]
    rows: list[tuple[str, ...]] = [("figure", *(name for name, _ in columns))]
    return table(rows + [(k, *(f[k] for f in figures)) for k in figures[0]])


def write(report: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"fleet-{report['config']['label']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Options:
    config: FleetConfig
    profile: str | None = None
    compare: bool = False
    baseline: Path | None = None
    jobs: int = 2


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--riders", type=int, default=None, help="fleet size (default 200)")
    parser.add_argument("--days", type=int, default=None, help="simulated days (default 21)")
    parser.add_argument("--tier", choices=sorted(TIERS), default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default=None, help="names bench/results/fleet-<label>.json")
    parser.add_argument("--history-median", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=1, help="SYNC_WORKERS (default 1)")
    parser.add_argument("--quick", action="store_true", help="20 riders, 3 days")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the run")
    parser.add_argument("--webhooks", action="store_true", help="Strava's events as well")
    parser.add_argument("--event-loss", type=float, default=0.05, help="share lost (0.05)")
    parser.add_argument("--event-duplicate", type=float, default=0.0, help="share repeated")
    parser.add_argument(
        "--compare", action="store_true", help="the same world by polling, then with webhooks"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run the service's code at CHECKOUT (e.g. a worktree of main) in the same"
        " world, with this bench, and set the figures side by side (before, after)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="simulations at once with --baseline (default 2)"
    )
    args = parser.parse_args(argv)
    if (args.compare or args.baseline) and args.profile:
        parser.error("--profile: profile one run at a time")
    riders = args.riders or (20 if args.quick else 200)
    days = args.days or (3 if args.quick else 21)
    config = FleetConfig(
        riders=riders,
        days=days,
        tier=args.tier,
        seed=args.seed,
        history_median=args.history_median,
        latency_s=args.latency_ms / 1000,
        workers=args.workers,
        label=args.label,
        webhooks=args.webhooks,
        event_loss=args.event_loss,
        event_duplicate=args.event_duplicate,
    )
    return Options(config, args.profile, args.compare, args.baseline, max(1, args.jobs))


def config_args(config: FleetConfig) -> list[str]:
    """The command line that runs `config` (as parse_args reads it)."""
    args = [
        f"--riders={config.riders}",
        f"--days={config.days}",
        f"--tier={config.tier}",
        f"--seed={config.seed}",
        f"--history-median={config.history_median}",
        f"--latency-ms={config.latency_s * 1000:g}",
        f"--workers={config.workers}",
        f"--label={config.name}",
        f"--event-loss={config.event_loss:g}",
        f"--event-duplicate={config.event_duplicate:g}",
    ]
    if config.limits is not None:
        raise ValueError("custom limits are not on the command line: use a tier")
    return args + (["--webhooks"] if config.webhooks else [])


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if ROOT in path.parents else path


def simulate(config: FleetConfig) -> dict[str, Any]:
    return Simulation(config).run()


def with_baseline(options: Options) -> None:
    """Every run of this configuration on the code at --baseline and on this code, as
    processes (--jobs at once: the figures are counts on the virtual clock, the same
    however busy the machine), then their figures side by side."""
    assert options.baseline is not None
    base = options.config.name.removesuffix("-webhooks")
    modes = (False, True) if options.compare else (options.config.webhooks,)
    runs: list[tuple[str, FleetConfig, Path]] = []
    for hooks in modes:
        mode = "webhooks" if hooks else "polling"
        for side, code in (("before", options.baseline), ("after", ROOT)):
            config = replace(options.config, webhooks=hooks, label=f"{base}-{side}-{mode}")
            runs.append((f"{mode}, {side}", config, code))
    RESULTS.mkdir(exist_ok=True)
    waiting = list(runs)
    running: list[tuple[str, Any]] = []
    while waiting or running:
        while waiting and len(running) < options.jobs:
            name, config, code = waiting.pop(0)
            log = RESULTS / f"fleet-{config.name}.log"
            process = run_on_code(code, "bench.fleet", config_args(config), output=log)
            print(f"started: {name} ({_shown(code)}), output in {_shown(log)}", flush=True)
            running.append((name, process))
        time.sleep(2)
        for entry in list(running):
            if entry[1].poll() is not None:
                running.remove(entry)
                if entry[1].returncode != 0:
                    raise SystemExit(f"{entry[0]} failed: see its output")
                print(f"finished: {entry[0]}", flush=True)
    reports = [
        (name, json.loads((RESULTS / f"fleet-{c.name}.json").read_text())) for name, c, _ in runs
    ]
    for name, report in reports:
        print(f"\n== {name} ==\n{render(report)}")
    print("\nSide by side (the same world and schedule; before: the code at"
          f" {options.baseline}, after: this code):")  # fmt: skip
    print(render_comparison(*reports))


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    config = options.config
    if options.baseline is not None:
        with_baseline(options)
        return
    logging.disable(logging.WARNING)  # the figures, not the service's log lines
    if options.compare:
        reports = []
        for hooks in (False, True):
            label = f"{config.name.removesuffix('-webhooks')}-{'webhooks' if hooks else 'polling'}"
            report = simulate(replace(config, webhooks=hooks, label=label))
            print(render(report) + "\n")
            print(f"written: {_shown(write(report))}\n", flush=True)
            reports.append((label.rsplit("-", 1)[1], report))
        print("Side by side (the same world and schedule):")
        print(render_comparison(*reports))
        return
    if options.profile:
        profiler = cProfile.Profile()
        report = profiler.runcall(simulate, config)
        profiler.dump_stats(options.profile)
    else:
        report = simulate(config)
    print(render(report))
    path = write(report)
    print(f"\nwritten: {_shown(path)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
