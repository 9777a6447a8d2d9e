"""What sharing and live progress cost, beside a baseline in the same run.

- Cutting a route's ends (services/routes.trim_route), done once as an activity is
  written (a page of a sync, a race's details). Baseline: decoding the route alone.
- Reading `club_activities` (as `authenticated`, as the club's pages do): the routes
  were cut when written, so the view only filters and picks columns. Baseline: the same
  rows and columns read straight from `activities`.
- Sending one progress message (public.send_rider_progress: the once-a-second gate and
  realtime.send), which rides in the transaction of the work it reports. Baseline: a
  trivial statement (`select 1`), a round trip that does nothing.

    .venv/bin/python -m bench.sharing [--rows 50] [--repeat 20]

Routes: the real polylines of tests/fixtures/strava/routes.json (a 28 km ride: 123
points summary, 939 detailed) and a 10,000-point detailed route made from the ride
repeated (a brevet's order of size).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.support import ROOT, table, temporary_database
from fake_strava.polyline import decode, encode
from services import routes

ROUTES = json.loads((ROOT / "tests" / "fixtures" / "strava" / "routes.json").read_text())
REALTIME = ROOT / "tests" / "fixtures" / "supabase_realtime.sql"


def long_route(points: int) -> str:
    """A detailed route of about `points` points: the real ride, out and back, again."""
    ride = decode(ROUTES["ride_detailed"]["polyline"])
    track: list[tuple[float, float]] = []
    while len(track) < points:
        track.extend(ride if len(track) // len(ride) % 2 == 0 else ride[::-1])
    return encode(track[:points])


def seed(conn: psycopg.Connection[Any], rows: int) -> uuid.UUID:
    """A sharing rider with `rows` public rides, each with the real summary route, and
    detailed routes of 939 and 10,000 points on the races, cut as the service cuts them
    when it writes them."""
    user = uuid.uuid4()
    rider = conn.execute(
        "insert into riders (name, auth_user_id, share_with_club_at) values ('Bench', %s, now())"
        " returning id",
        (user,),
    ).fetchone()
    assert rider is not None
    summary, detailed, long = (
        ROUTES["ride_summary"]["polyline"],
        ROUTES["ride_detailed"]["polyline"],
        long_route(10_000),
    )
    conn.execute(
        """
        insert into activities (rider_id, strava_id, name, sport_type, start_date, distance_m,
                                visibility, summary_polyline, polyline, is_race,
                                club_summary_polyline, club_summary_trim_m,
                                club_polyline, club_polyline_trim_m)
        select %(rider)s, 9_000_000 + n, 'Ride ' || n, 'Ride', now() - make_interval(days => n),
               28099, 'everyone', %(summary)s,
               case when n %% 2 = 0 then %(detailed)s else %(long)s end, true,
               %(club_summary)s, 500,
               case when n %% 2 = 0 then %(club_detailed)s else %(club_long)s end, 500
          from generate_series(1, %(rows)s) n
        """,
        {
            "rider": rider["id"],
            "rows": rows,
            "summary": summary,
            "detailed": detailed,
            "long": long,
            "club_summary": routes.trim_route(summary, 500),
            "club_detailed": routes.trim_route(detailed, 500),
            "club_long": routes.trim_route(long, 500),
        },
    )
    conn.execute(
        "insert into strava_connections (rider_id, athlete_id, access_token, refresh_token,"
        " expires_at) values (%s, 9_000_001, 'x', 'x', now())",
        (rider["id"],),
    )
    return user


def timed(run: Callable[[], object], repeat: int) -> float:
    """The median of `repeat` runs, in milliseconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def read(conn: psycopg.Connection[Any], sql: str) -> Callable[[], object]:
    return lambda: conn.execute(sql.encode()).fetchall()


def as_member(conn: psycopg.Connection[Any], user: uuid.UUID) -> None:
    claims = json.dumps({"sub": str(user), "role": "authenticated"})
    conn.execute(
        "select set_config('role', 'authenticated', false),"
        " set_config('request.jwt.claims', %s, false)",
        (claims,),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sharing")
    parser.add_argument("--rows", type=int, default=50, help="rows a page reads (default 50)")
    parser.add_argument("--repeat", type=int, default=20, help="runs a figure (median)")
    args = parser.parse_args(argv)
    cuts: list[tuple[str, ...]] = [("route", "baseline (decode)", "trim_route", "")]
    for label, route in (
        ("summary, 123 points", ROUTES["ride_summary"]["polyline"]),
        ("detailed, 939 points", ROUTES["ride_detailed"]["polyline"]),
        ("detailed, 10,000 points", long_route(10_000)),
    ):
        plain = timed(functools.partial(routes.decode, route), args.repeat)
        cut = timed(functools.partial(routes.trim_route, route, 500), args.repeat)
        cuts.append((label, f"{plain:.2f} ms", f"{cut:.2f} ms", ""))
    print(f"Cutting a route's ends as it is written (median of {args.repeat} runs):\n")
    print(table([row[:3] for row in cuts]))
    with temporary_database() as url:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as owner:
            owner.execute(REALTIME.read_bytes())
            user = seed(owner, max(args.rows, 2))
            owner.execute("analyze")
            rider = owner.execute("select id from riders").fetchone()
        assert rider is not None
        figures: list[tuple[str, ...]] = [("read", "baseline (activities)", "club_activities")]
        with (
            psycopg.connect(url, autocommit=True) as baseline,
            psycopg.connect(url, autocommit=True) as member,
        ):
            as_member(member, user)
            for label, column, limit in (
                (f"latest {args.rows}, summary routes", "summary_polyline", args.rows),
                ("latest 1 race, detailed route", "polyline", 1),
                (f"latest {args.rows} races, detailed routes", "polyline", args.rows),
            ):
                sql = (
                    f"select strava_id, name, {column} from {{}} order by start_date desc"
                    f" limit {limit}"
                )
                plain = timed(read(baseline, sql.format("activities")), args.repeat)
                shown = timed(read(member, sql.format("club_activities")), args.repeat)
                figures.append((label, f"{plain:.2f} ms", f"{shown:.2f} ms"))
        print(f"\nReading the club's view (median of {args.repeat} runs):\n")
        print(table(figures))

        sends: list[tuple[str, ...]] = [("statement", "median", "")]
        with psycopg.connect(url, autocommit=True) as conn:
            noop = timed(lambda: conn.execute("select 1").fetchone(), args.repeat * 10)
            send = timed(
                lambda: conn.execute(
                    'select public.send_rider_progress(%s, \'{"phase": "sync"}\'::jsonb,'
                    " true, now(), 1000)",
                    (rider["id"],),
                ).fetchone(),
                args.repeat * 10,
            )
            throttled = timed(
                lambda: conn.execute(
                    "select public.send_rider_progress(%s, '{}'::jsonb, false, now(), 3600000)",
                    (rider["id"],),
                ).fetchone(),
                args.repeat * 10,
            )
        sends.append(("baseline: select 1 (a round trip)", f"{noop:.3f} ms", ""))
        sends.append(("send_rider_progress, sent (gate + realtime.send)", f"{send:.3f} ms", ""))
        sends.append(
            ("send_rider_progress, within the second (gate only)", f"{throttled:.3f} ms", "")
        )
        print("\nOne progress message, on the loopback (a page's transaction holds at most")
        print("one a second; Progress asks only once a second has passed):\n")
        print(table([row[:2] for row in sends]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
