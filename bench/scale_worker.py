"""One tree's half of bench/scale.py, run as a script in a process of its own:

    python bench/scale_worker.py --tree DIR --database URL --stats-url URL --job FILE

DIR is a checkout of the service (this one, or a baseline in a git worktree): its app is
imported from there, and nothing else of it, so the same measurement runs against any
commit. The club is seeded with SQL only (tables and columns every version has), the app
is driven through Flask's test client, and Strava is the fake served by the parent
process. The job file (JSON) holds the fleet's size, the fake's URLs and the athletes'
tokens; the result (JSON) goes to the file the job names.

Per call: wall time, SQL statements (pg_stat_statements), rows read (the app's tables'
and indexes' counters) and the system catalogs' apart, rows written (the database's
counters), all flushed from every connection of the app's pool before each reading; peak
resident memory of this process (sampled every 5 ms).

Stdlib and psycopg only at the top: the tree's modules are imported after its path is set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

CRON_SECRET = "bench-scale-cron-secret"
CLIENT_ID, CLIENT_SECRET = "4242", "bench-scale-client-secret"
# The riders a call has work for, whatever the club's size.
DUE = 50
# Recent activities stored for every rider (the habits polling reads): 20 in 28 days.
RECENT_PER_RIDER = 20
# Strava's limits for the bench: an application tier a club of 20,000 needs (Strava
# raises limits on request), the same at every size, so no call is stopped by the budget.
LIMITS = {
    "limit_15min": 20_000,
    "limit_daily": 200_000,
    "read_limit_15min": 10_000,
    "read_limit_daily": 100_000,
}
CALLS = ("sync-strava", "discover", "enrich", "events", "status")
COUNTS = ("statements", "rows_read", "catalog_rows_read", "rows_written")
# Where the polls of riders without work are planned at each round's start: past the
# round (a few minutes at most), whatever the club's size.
ROUND_PLANNED_AFTER = timedelta(hours=1)
SUBSCRIPTION_ID = 777


# --- who has work: the same riders in the parent (the fake) and here (the database) ----


def roles(riders: int) -> dict[str, list[int]]:
    """Rider ids (1..riders) with work for each call, spread over the club; and one rider
    whose history walk is backing off, so the backfill is never empty and the polls'
    share stays the same from call to call (as in a club that keeps connecting riders)."""
    step = max(4, riders // DUE)
    chosen = {
        "sync": [1 + i * step for i in range(DUE)],
        "discover": [2 + i * step for i in range(DUE)],
        "enrich": [3 + i * step for i in range(DUE)],
        "events": [4 + i * step for i in range(DUE)],
    }
    taken = {r for ids in chosen.values() for r in ids}
    if max(taken) > riders:
        raise SystemExit(f"a club of {riders} is too small for {DUE} riders of each kind")
    # (in a club of 200 every rider has work: an events rider's walk then waits)
    free = [r for r in range(riders, 0, -1) if r not in taken]
    chosen["standing_backlog"] = [free[0] if free else chosen["events"][-1]]
    return chosen


def athlete_of(rider_id: int) -> int:
    return 500_000 + rider_id


# --- measuring ------------------------------------------------------------------------


class PeakMemory:
    """This process's peak resident memory while in the block (MB), sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


# Relations below this oid are the system's (catalogs, their indexes and toast): what
# opening a connection and planning its first statements read, not the club's tables.
FIRST_USER_OID = 16384

# Rows read by sequential scans and index entries read by index scans, per relation:
# the system catalogs' apart from the app's tables and indexes.
_READ_BY_RELATION = """
    select relid < %(first_user)s as catalog,
           case when relid < %(first_user)s then 'catalogs' else relname end as name,
           coalesce(seq_tup_read, 0) as n
      from pg_stat_all_tables
    union all
    select relid < %(first_user)s,
           case when relid < %(first_user)s then 'catalogs'
                else relname || '.' || indexrelname end,
           coalesce(idx_tup_read, 0)
      from pg_stat_all_indexes
"""


class DatabaseCounters:
    """Statements, rows read (the app's tables and indexes, and the system catalogs
    apart) and rows written in the bench's database. Statements and rows written are
    read from the server's `postgres` database (so reading them counts nothing in
    ours); rows read, per relation, from a connection of the bench's own to ours,
    whose own reads of the catalogs (a fixed cost per reading, measured when it
    opens) are taken out of the catalogs' figure."""

    def __init__(self, stats_url: str, database: str, pool: Any, url: str) -> None:
        self._admin = psycopg.connect(stats_url, autocommit=True)
        row = self._admin.execute(
            "select oid from pg_database where datname = %s", (database,)
        ).fetchone()
        assert row is not None
        self._dbid = row[0]
        self._pool = pool
        self._own = psycopg.connect(url, autocommit=True)
        self._own_reads = 0  # catalog rows one reading reads
        self._readings = 0  # readings so far, each one's reads in the next's counts
        # Readings back to back, nothing else running: what one reading itself reads
        # of the catalogs (the first ones also fill this connection's caches).
        readings = [self._by_relation() for _ in range(4)]
        self._own_reads = sum(readings[-1].get("catalogs", {}).values()) - sum(
            readings[-2].get("catalogs", {}).values()
        )

    def _flush_app_connections(self) -> None:
        """Each backend keeps its tuple counts until it is idle for a while: ask every
        connection of the app's pool to hand them over now."""
        size = self._pool.get_stats().get("pool_size", 0)
        held = []
        try:
            for _ in range(size):
                conn = self._pool.getconn(timeout=5)
                held.append(conn)
                conn.execute("select pg_stat_force_next_flush()")
                conn.commit()
        finally:
            for conn in held:
                self._pool.putconn(conn)
        time.sleep(0.05)  # the flush happens as each backend goes idle

    def _by_relation(self) -> dict[str, dict[str, int]]:
        """Rows read so far, by relation, under "app" and "catalogs"."""
        # This connection's own counts of its previous reading go in first, so each
        # reading adds the same to the next one's catalogs (taken out in read()).
        self._own.execute("select pg_stat_force_next_flush()")
        with self._own.transaction():
            self._own.execute("select pg_stat_clear_snapshot()")
            rows = self._own.execute(_READ_BY_RELATION, {"first_user": FIRST_USER_OID}).fetchall()
        self._readings += 1
        read: dict[str, dict[str, int]] = {"app": {}, "catalogs": {}}
        for catalog, name, n in rows:
            part = read["catalogs" if catalog else "app"]
            part[str(name)] = part.get(str(name), 0) + int(n)
        return read

    def tables(self) -> dict[str, int]:
        """Rows read so far (for --top), as the figures count them: each app table's
        rows read by sequential scans and each app index's entries read, and the
        system catalogs' as one."""
        self._flush_app_connections()
        earlier = self._readings
        read = self._by_relation()
        catalogs = sum(read["catalogs"].values()) - earlier * self._own_reads
        return {**read["app"], "catalogs": catalogs}

    def statements(self) -> dict[int, tuple[str, int, int]]:
        """Each statement's text, calls and blocks touched so far (for --top)."""
        rows = self._admin.execute(
            "select queryid, query, calls, shared_blks_hit + shared_blks_read"
            " from pg_stat_statements where dbid = %s",
            (self._dbid,),
        ).fetchall()
        return {int(r[0]): (str(r[1]), int(r[2]), int(r[3])) for r in rows if r[0] is not None}

    def read(self) -> dict[str, int]:
        """Counts so far; a difference of two readings is what ran between them (the
        catalogs' less what the earlier reading read of them itself)."""
        self._flush_app_connections()
        earlier = self._readings  # readings whose own reads this one counts
        by_relation = self._by_relation()
        with self._admin.transaction():
            self._admin.execute("select pg_stat_clear_snapshot()")
            written = self._admin.execute(
                "select tup_inserted + tup_updated + tup_deleted"
                " from pg_stat_database where datid = %s",
                (self._dbid,),
            ).fetchone()
            statements = self._admin.execute(
                "select coalesce(sum(calls), 0) from pg_stat_statements"
                " where dbid = %s and query not like %s and query not like %s"
                " and query not like %s and query not like %s",
                (
                    self._dbid,
                    "%pg_stat_force_next_flush%",
                    "%pg_stat_user_tables%",
                    "%pg_stat_clear_snapshot%",
                    "%pg_stat_all_tables%",
                ),
            ).fetchone()
        assert written is not None and statements is not None
        return {
            "statements": int(statements[0]),
            "rows_read": sum(by_relation["app"].values()),
            # cumulative, less the earlier readings' own, so differences are the app's
            "catalog_rows_read": sum(by_relation["catalogs"].values()) - earlier * self._own_reads,
            "rows_written": int(written[0]),
        }

    def close(self) -> None:
        self._own.close()
        self._admin.close()


# --- seeding (SQL every version of the schema has) -------------------------------------


def seed(conn: psycopg.Connection, job: dict[str, Any], sealer: Any, now: datetime) -> None:
    riders = int(job["riders"])
    who = roles(riders)
    tokens = job["tokens"]
    conn.execute(
        "insert into riders (name, auto_sync, created_at)"
        " select 'Rider ' || g, true, %s from generate_series(1, %s) g",
        (now - timedelta(days=400), riders),
    )
    sync, discover = set(who["sync"]), set(who["discover"])
    backlog = set(who["standing_backlog"])
    day = 86_400
    with conn.cursor().copy(
        "copy strava_connections (rider_id, athlete_id, access_token, refresh_token,"
        " expires_at, scope, status, connected_at, sync_cursor, last_synced_at,"
        " last_sync_attempt_at, history_complete_at, history_walk_started_at, history_cursor,"
        " history_pages, failure_count, next_attempt_at, next_poll_at, polls_per_day,"
        " poll_reason, updated_at) from stdin"
    ) as copy:
        for rider in range(1, riders + 1):
            token = tokens[str(athlete_of(rider))]
            connected = now - timedelta(days=100)
            walking = rider in discover or rider in backlog
            if rider in sync:  # due: its poll came a minute ago, last synced 6 h ago
                synced = now - timedelta(hours=6)
                next_poll = now - timedelta(minutes=1)
                cursor = now - timedelta(days=2)
            else:  # synced in the last 50 minutes, next poll in 1 to 20 hours
                synced = now - timedelta(seconds=60 + rider * 7919 % 2940)
                next_poll = now + timedelta(seconds=3600 + rider * 104729 % (19 * 3600))
                cursor = now - timedelta(days=1)
            copy.write_row(
                (
                    rider,
                    athlete_of(rider),
                    sealer.seal(token["access_token"], rider_id=rider, column="access_token"),
                    sealer.seal(token["refresh_token"], rider_id=rider, column="refresh_token"),
                    datetime.fromtimestamp(token["expires_at"], UTC),
                    "read,activity:read_all",
                    "active",
                    connected,
                    cursor,
                    synced,
                    synced,
                    None if walking else connected,
                    None,
                    None,
                    0,
                    3 if rider in backlog else 0,
                    now + timedelta(days=30) if rider in backlog else None,
                    next_poll,
                    1 + rider % 3,
                    "seeded by the bench",
                    synced,
                )
            )
    # Every rider's recent activities (what polling reads of habits), their weather
    # fetched, one race in five riders already detailed. Ids below 2**32 never meet the
    # fake's (above it).
    conn.execute(
        """
        insert into activities (strava_id, rider_id, name, sport_type, start_date,
                                start_date_local, distance_m, moving_time_s, elapsed_time_s,
                                is_race, enrichment_status, enriched_at, weather_status,
                                seen_at, created_at, updated_at)
        select r * 100 + k, r, 'Ride ' || k, 'Ride',
               s, (s at time zone 'utc') + interval '1 hour', 20000 + k * 1000, 3600, 4000,
               k = 0 and r %% 5 = 0, case when k = 0 and r %% 5 = 0 then 'done' end,
               case when k = 0 and r %% 5 = 0 then s + interval '1 hour' end, 'done', s, s, s
          from generate_series(1, %(riders)s) r, generate_series(0, %(per)s - 1) k,
               lateral (select %(now)s::timestamptz - interval '2 days'
                               - make_interval(secs => ((r * 7 + k * 104729) %% (26 * %(day)s))
                                                      + k)) t(s)
         where r <> all(%(walking)s)
        """,
        {
            "riders": riders,
            "per": RECENT_PER_RIDER,
            "now": now,
            "day": day,
            "walking": who["discover"],  # their whole history is the walk's to find
        },
    )
    for rider in who["enrich"]:  # one race of each waiting for its details
        race = job["races"][str(rider)]
        insert_activity(conn, rider, race, is_race=True, pending=True)
    for rider in who["events"]:  # an activity of each that Strava says was updated
        insert_activity(conn, rider, job["edited"][str(rider)], is_race=False, pending=False)
    conn.execute(
        "insert into strava_push_subscription (id, subscription_id, callback_url, created_at,"
        " confirmed_at) values (1, %s, 'https://club.example/api/strava/webhook', %s, %s)",
        (SUBSCRIPTION_ID, now - timedelta(days=10), now),
    )
    conn.execute(
        "update strava_rate_budget set limit_15min = %(limit_15min)s,"
        " limit_daily = %(limit_daily)s, read_limit_15min = %(read_limit_15min)s,"
        " read_limit_daily = %(read_limit_daily)s, usage_15min = 0, usage_daily = 0,"
        " read_usage_15min = 0, read_usage_daily = 0,"
        " window_start = date_bin('15 minutes', %(now)s, '2000-01-01'),"
        " day_start = date_trunc('day', %(now)s at time zone 'utc') at time zone 'utc',"
        " headers_seen_at = %(now)s where id = 1",
        {**LIMITS, "now": now},
    )
    add_events(conn, job, now, batch="seed")
    # A club whose stored routes are cut for the club's pages already (trees that cut
    # them): cutting them again is a pass made once after the trim changes, not a call's
    # work. The seeded rides carry no route, so there is nothing to cut.
    cuts_routes = conn.execute("select to_regclass('public.club_settings') is not null").fetchone()
    if cuts_routes is not None and cuts_routes[0]:
        conn.execute(
            "update club_settings set routes_trim_m = route_trim_m, retrim_after_id = null"
        )


def insert_activity(
    conn: psycopg.Connection, rider: int, summary: dict[str, Any], *, is_race: bool, pending: bool
) -> None:
    start = datetime.fromisoformat(summary["start_date"].replace("Z", "+00:00"))
    conn.execute(
        "insert into activities (strava_id, rider_id, name, sport_type, start_date,"
        " start_date_local, distance_m, elapsed_time_s, is_race, enrichment_status,"
        " seen_at, created_at, updated_at)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            summary["id"],
            rider,
            summary["name"],
            summary["sport_type"],
            start,
            start.replace(tzinfo=None),
            summary["distance"],
            summary["elapsed_time"],
            is_race,
            "pending" if pending else None,
            start,
            start,
            start,
        ),
    )


def add_events(conn: psycopg.Connection, job: dict[str, Any], now: datetime, *, batch: str) -> None:
    """One pending `update` event for each rider of the events call."""
    for rider in roles(int(job["riders"]))["events"]:
        activity = job["edited"][str(rider)]["id"]
        conn.execute(
            "insert into strava_webhook_events (delivery_key, subscription_id, object_type,"
            " object_id, aspect_type, owner_id, rider_id, event_time, updates, received_at)"
            " values (%s, %s, 'activity', %s, 'update', %s, %s, %s, '{\"title\": \"x\"}', %s)",
            (
                f"{batch}:{activity}",
                SUBSCRIPTION_ID,
                activity,
                athlete_of(rider),
                rider,
                now - timedelta(seconds=30),
                now,
            ),
        )


def rearm(conn: psycopg.Connection, job: dict[str, Any], now: datetime) -> None:
    """Give each call the same work again: what the warm-up round did is undone."""
    who = roles(int(job["riders"]))
    new_ids = [a["id"] for rider in who["sync"] for a in job["new"][str(rider)]]
    conn.execute("delete from activities where strava_id = any(%s)", (new_ids,))
    conn.execute(
        "update strava_connections set last_synced_at = %(synced)s,"
        " last_sync_attempt_at = %(synced)s, next_poll_at = %(poll)s,"
        " sync_cursor = %(cursor)s, sync_listing_after = null, sync_listing_page = null,"
        " sync_listing_newest = null where rider_id = any(%(ids)s)",
        {
            "synced": now - timedelta(hours=6),
            "poll": now - timedelta(minutes=1),
            "cursor": now - timedelta(days=2),
            "ids": who["sync"],
        },
    )
    # Nobody else's poll comes during the round (a club of 20,000 plans about 200 polls
    # a window, and the warm-up's plans fall from now on): the polls planned before
    # the round's end move past it, so the same 50 are due for the whole measurement.
    conn.execute(
        "update strava_connections set next_poll_at = %(after)s"
        " + make_interval(secs => rider_id * 104729 %% (19 * 3600))"
        " where (next_poll_at < %(after)s or next_poll_at is null)"
        " and rider_id <> all(%(ids)s)",
        {"after": now + ROUND_PLANNED_AFTER, "ids": who["sync"]},
    )
    history_ids = [a["id"] for rider in who["discover"] for a in job["history"][str(rider)]]
    conn.execute("delete from activities where strava_id = any(%s)", (history_ids,))
    conn.execute(
        "update strava_connections set history_complete_at = null,"
        " history_walk_started_at = null, history_cursor = null, history_pages = 0,"
        " history_activities = 0, history_races = 0 where rider_id = any(%s)",
        (who["discover"],),
    )
    race_ids = [job["races"][str(rider)]["id"] for rider in who["enrich"]]
    conn.execute(
        "update activities set enrichment_status = 'pending', enrichment_attempts = 0,"
        " enriched_at = null, description = null, polyline = null, details = null"
        " where strava_id = any(%s)",
        (race_ids,),
    )
    add_events(conn, job, now, batch=f"measured-{now.timestamp()}")


# --- the calls ------------------------------------------------------------------------


def call(client: Any, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {CRON_SECRET}"}
    if name == "status":
        response = client.get("/api/admin/status", headers=headers)
    else:
        response = client.post(f"/api/cron/{name}?limit={DUE}", headers=headers)
    if response.status_code != 200:
        text = response.get_data(as_text=True)
        raise SystemExit(f"{name} answered {response.status_code}: {text}")
    body: dict[str, Any] = response.get_json()
    return body


def replanning(client: Any) -> bool:
    """Whether the app says a re-plan of the whole club is under way (versions that do
    not say so re-plan within each call)."""
    polling = call(client, "status").get("plan", {}).get("polling", {})
    return bool(polling.get("replan", {}).get("pending"))


def polls_due(database: str) -> int:
    """Active riders whose planned poll has come (read outside any call's figures)."""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "select count(*) from strava_connections"
            " where status = 'active' and next_poll_at <= now()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def measure_round(client: Any, counters: DatabaseCounters, *, top: int) -> dict[str, Any]:
    """Each call once, with its figures (and, with `top`, its costliest statements and
    the rows it read by table)."""
    results: dict[str, Any] = {}
    for name in CALLS:
        tables_before = counters.tables() if top else {}
        statements_before = counters.statements() if top else {}
        before = counters.read()
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            answer = call(client, name)
            wall = time.perf_counter() - t0
        after = counters.read()
        results[name] = {
            "wall_s": round(wall, 3),
            **{k: after[k] - before[k] for k in COUNTS},
            "peak_mb": round(memory.peak_mb, 1),
            "processed": answer.get("processed"),
            "strava_requests": answer.get("strava_requests"),
        }
        if top:
            tables_after = counters.tables()
            results[name]["tables"] = {
                t: n - tables_before.get(t, 0)
                for t, n in sorted(tables_after.items())
                if n - tables_before.get(t, 0)
            }
            grown = []
            for queryid, (text, calls, blocks) in counters.statements().items():
                _, calls_before, blocks_before = statements_before.get(queryid, ("", 0, 0))
                grown.append((blocks - blocks_before, calls - calls_before, text))
            grown.sort(reverse=True)
            results[name]["top"] = [
                {"blocks": b, "calls": c, "query": " ".join(q.split())[:300]}
                for b, c, q in grown[:top]
                if c
            ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--stats-url", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--top", type=int, default=0, help="list the costliest statements")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (medians)")
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)
    sys.path.insert(0, tree)
    os.chdir(tree)
    with open(args.job) as f:
        job = json.load(f)

    import logging

    from app_factory import create_app  # the tree's own

    logging.disable(logging.INFO)
    app = create_app(
        {
            "database_url": args.database,
            "cron_secret": CRON_SECRET,
            "strava_client_id": CLIENT_ID,
            "strava_client_secret": CLIENT_SECRET,
            "strava_api_url": job["api_url"],
            "strava_oauth_url": job["oauth_url"],
        },
        environ={"TOKEN_ENCRYPTION_KEY": job["token_key"]},
    )
    runtime = app.extensions["strava_sync"]
    pool = runtime.db.pool  # opens the pool and migrates the database
    now = datetime.now(UTC)
    started = time.perf_counter()
    with psycopg.connect(args.database) as conn:
        seed(conn, job, runtime.sealer, now)
    with psycopg.connect(args.database, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    seeded_s = time.perf_counter() - started
    client = app.test_client()

    # Warm-up: the first call of each kind in this process (imports, tables loaded), and
    # whatever a version does once for a club it has not planned yet.
    started = time.perf_counter()
    warmup_calls = 0
    while True:
        answer = call(client, "sync-strava")
        warmup_calls += 1
        if (answer["done"] and not replanning(client)) or warmup_calls >= 200:
            break
    for name in CALLS[1:]:
        call(client, name)
    warmup_s = time.perf_counter() - started
    dbname = str(psycopg.conninfo.conninfo_to_dict(args.database)["dbname"])
    counters = DatabaseCounters(args.stats_url, dbname, pool, args.database)
    rounds: list[dict[str, Any]] = []
    polls: list[dict[str, int]] = []  # riders whose poll had come, at each round's ends
    for index in range(args.rounds):
        with psycopg.connect(args.database) as conn:
            rearm(conn, job, datetime.now(UTC))
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute("vacuum analyze")
        due_at_start = polls_due(args.database)
        rounds.append(measure_round(client, counters, top=args.top if index == 0 else 0))
        polls.append({"due_at_start": due_at_start, "due_at_end": polls_due(args.database)})
    results = {}
    for name in CALLS:
        runs = [r[name] for r in rounds]
        results[name] = {
            **runs[0],  # the first round's details (--top)
            **{
                k: round(statistics.median(run[k] for run in runs), 3)
                for k in ("wall_s", "peak_mb")
            },
            **{  # counts: a round's own (the lower middle one)
                k: statistics.median_low(run[k] for run in runs) for k in COUNTS
            },
            "wall_max_s": max(run["wall_s"] for run in runs),
            "walls_s": [run["wall_s"] for run in runs],
        }
    counters.close()
    runtime.db.close()
    budget_s = float(runtime.settings.cron_time_budget_s)
    with open(job["out"], "w") as f:
        json.dump(
            {
                "calls": results,
                "time_budget_s": budget_s,
                "seeded_s": round(seeded_s, 1),
                "warmup_s": round(warmup_s, 1),
                "warmup_sync_calls": warmup_calls,
                "polls_due": polls,
            },
            f,
        )


if __name__ == "__main__":
    main()
