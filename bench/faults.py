"""What faults cost: a fleet backfilled and synced through the real app's cron endpoints
by two overlapping callers (threads), on the fake Strava served over loopback with
random faults injected at 0, 10, 20 and 30% of requests (5xx, connection resets,
timeouts, a few early token expiries; see FakeStrava.inject_faults), until the database
equals the fake Strava's state. Prints Strava requests by kind (list, detail, token)
and calls to converge at each rate, side by side with the fault-free run, and with the
figures of an earlier run (`--compare`, by default bench/results/faults-baseline.json).

The service runs on the host's timer (deadlines and timeouts are real) and on a clock
that can jump ahead. Each caller calls sync-strava, discover and enrich in turn, each as
its workflow does (again while a call took something and answered neither `done` nor
`rate_limited`), until a pass in which no call took anything. When both callers are done
but riders or races are backing off after a failure, the clock (the service's and the
fake's) moves to when the last answers said work is next due (`idle_reason`
`backing_off`, `next_due_at`; checked against the database) instead of waiting for it.

Each run also says what the requests beyond the fault-free work were (faulted answers by
kind and status, refused tokens sent again, requests answered twice, token refreshes) and
which calls worked on nothing (by endpoint, by the service's idle_reason, by round).

Run: .venv/bin/python -m bench.faults [--label after] [--rates 0,0.1,0.2,0.3] [--seed 1]
     [--baseline CHECKOUT [--seeds 1,2,3]]
With --baseline, each seed and rate runs on the service's code at CHECKOUT (a worktree of
the code before, e.g. `git worktree add --detach ../base main`) and on this code, in
turns, with this bench and fake, and the figures are set side by side.
Results: bench/results/faults-<label>.json
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from psycopg.rows import dict_row

from app_factory import create_app
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
from fake_strava import UNREACHED_LIMITS, FakeStrava, make_activities, serve
from scripts.seeding import connect_athlete

RESULTS = ROOT / "bench" / "results"
ENDPOINTS = ("sync-strava", "discover", "enrich")
CALLERS = 2
# History sizes: on and off page boundaries, a few pages each; about 3% of activities
# are races and 2% brevets, so enrich has work of its own.
FLEET = (
    40, 150, 199, 200, 201, 350, 480, 600, 799, 1000,
    1100, 1300, 1500, 1650, 1800, 1999, 2200, 2401, 2600, 3000,
)  # fmt: skip
TIMEOUT_S = 1.0  # STRAVA_TIMEOUT_S: the smallest allowed, so a timeout costs little wall time
FAULT_DELAY_S = 1.3  # how long an injected timeout holds the answer back
MAX_ROUNDS = 60  # clock jumps before the run is declared stuck


@dataclass
class ShiftClock:
    """The host's time plus an offset that the benchmark moves forward: the service's
    clock (now) and the fake's (time); the timer stays the host's."""

    offset_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def time(self) -> float:
        with self._lock:
            return time.time() + self.offset_s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def jump_to(self, moment: datetime) -> None:
        with self._lock:
            self.offset_s = max(self.offset_s, moment.timestamp() - time.time())


def new_fake(clock: ShiftClock) -> FakeStrava:
    """A fake Strava with rate limits far above what the run uses."""
    return FakeStrava(
        clock=clock.time,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        **UNREACHED_LIMITS,
    )


def athletes(fleet: tuple[int, ...]) -> list[int]:
    return [90_000 + i for i in range(len(fleet))]


def build_fleet(
    database_url: str, fake: FakeStrava, *, seed: int, fleet: tuple[int, ...] = FLEET
) -> None:
    """Riders just connected (histories not walked) with histories on the fake."""
    now = fake.now()
    for athlete, size in zip(athletes(fleet), fleet, strict=True):
        i = athlete - 90_000
        fake.add_athlete(athlete)
        fake.add_activities(
            athlete,
            make_activities(
                athlete,
                size,
                start=now - timedelta(days=6 * 365),
                end=now - timedelta(hours=3),
                seed=seed * 1000 + i,
            ),
        )
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            connect_athlete(
                conn, fake, athlete, sealer=SEALER, name=f"Fault rider {athlete}", now=now
            )


def build_app(
    database_url: str,
    api_url: str,
    oauth_url: str,
    clock: ShiftClock,
    *,
    timeout_s: float = TIMEOUT_S,
) -> Flask:
    settings = bench_settings(
        database_url,
        api_url,
        oauth_url,
        strava_timeout_s=timeout_s,
        sync_min_interval_s=604_800,  # each rider is synced once: the work stays the same
    )
    app = create_app(settings, environ={})
    runtime = app.extensions["strava_sync"]
    app.extensions["strava_sync"] = replace(runtime, clock=clock.now)
    return app


def call(app: Flask, endpoint: str) -> dict[str, Any]:
    response = app.test_client().post(
        f"/api/cron/{endpoint}", headers={"Authorization": f"Bearer {CRON_SECRET}"}
    )
    body = response.get_json()
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint} answered {response.status_code}: {body}")
    return body  # type: ignore[no-any-return]


def caller(app: Flask, answers: list[dict[str, Any]], max_calls: int = 400) -> None:
    """Call each endpoint as its workflow does (.github/scripts/call-cron.sh: again while
    the last call took something and answered neither `done` nor `rate_limited`), the
    three in turn, until a pass in which no call took anything: each endpoint's last
    answer then says why (idle_reason) and when work is next due (next_due_at)."""
    calls = 0
    while calls < max_calls:
        worked = False
        for endpoint in ENDPOINTS:
            while calls < max_calls:
                body = call(app, endpoint)
                calls += 1
                answers.append({"endpoint": endpoint, **body})
                if took_nothing(body):
                    break
                worked = True
                if body["done"] or body["rate_limited"]:
                    break
        if not worked:
            return


def gaps(
    database_url: str, fake: FakeStrava, max_attempts: int, fleet: tuple[int, ...] = FLEET
) -> dict[str, int]:
    """How far the database is from the fake's state (all zero: converged)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        stored: dict[int, set[int]] = {}
        for row in conn.execute(
            "select c.athlete_id, a.strava_id from activities a"
            " join strava_connections c on c.rider_id = a.rider_id"
        ):
            stored.setdefault(row["athlete_id"], set()).add(row["strava_id"])
        state = conn.execute(
            """
            select
              (select count(*) from strava_connections where history_complete_at is null)
                as walks_open,
              (select count(*) from strava_connections where last_synced_at is null) as unsynced,
              (select count(*) from strava_connections where status <> 'active') as needs_reauth,
              (select count(*) from strava_connections where lease_token is not null) as leased,
              (select count(*) from activities where is_race and enrichment_status <> 'done')
                as races_open,
              (select count(*) from activities where enrichment_status = 'failed'
                 and enrichment_attempts >= %s) as races_failed_for_good
            """,
            (max_attempts,),
        ).fetchone()
    assert state is not None
    missing = extra = 0
    for athlete in athletes(fleet):
        on_strava = {a["id"] for a in fake.activities_of(athlete)}
        mine = stored.get(athlete, set())
        missing += len(on_strava - mine)
        extra += len(mine - on_strava)
    return {"missing": missing, "extra": extra, **{k: int(v) for k, v in state.items()}}


def next_due(database_url: str) -> datetime | None:
    """When the first rider or race backing off (or held by a lease) is due again."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """
            select least(
              (select min(greatest(next_attempt_at, lease_expires_at)) from strava_connections
                where status = 'active'
                  and (history_complete_at is null or last_synced_at is null)),
              (select min(greatest(enrichment_next_attempt_at, enrichment_lease_expires_at))
                 from activities where is_race and enrichment_status <> 'done'))
            """
        ).fetchone()
    return row[0] if row else None


def kind_of(path: str) -> str:
    if path == "/api/v3/athlete/activities":
        return "list"
    if path.startswith("/api/v3/activities/"):
        return "detail"
    return "token" if path == "/oauth/token" else "other"


def by_kind(fake: FakeStrava) -> Counter[str]:
    """Strava requests the fake received, by kind (faulted ones included)."""
    return Counter(kind_of(r.path) for r in fake.requests)


def where_they_went(fake: FakeStrava) -> dict[str, dict[str, int]]:
    """Each kind's requests split: answered (first time), answered again (the same
    request, for the same athlete, already answered 200: a repeat), and not answered
    (an injected fault, or a 401 for a token gone stale)."""
    seen: set[tuple[Any, ...]] = set()
    split: dict[str, Counter[str]] = {}
    for r in fake.requests:
        kind = kind_of(r.path)
        counts = split.setdefault(kind, Counter())
        key = (r.method, r.path, tuple(sorted(r.query.items())), r.athlete_id)
        if kind == "token":
            counts["answered" if r.status == 200 else f"status {r.status}"] += 1
        elif r.status in (200, 404):
            counts["repeat" if key in seen else "answered"] += 1
            seen.add(key)
        else:
            counts[f"status {r.status}"] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(split.items())}


def said_next_due(answers: list[dict[str, Any]]) -> datetime | None:
    """When the service said work is next due, from each endpoint's last answer of a
    round: the earliest `next_due_at` of those saying their work is backing off."""
    last = {a["endpoint"]: a for a in answers}
    due = [
        datetime.fromisoformat(a["next_due_at"].replace("Z", "+00:00"))
        for a in last.values()
        if a.get("idle_reason") == "backing_off" and a.get("next_due_at")
    ]
    return min(due, default=None)


def took_nothing(answer: dict[str, Any]) -> bool:
    """A call that worked on nothing: no item succeeded or failed (none claimed, or every
    one handed back)."""
    return not any(i.get("status") in ("succeeded", "failed") for i in answer["items"])


def extra_requests(fake: FakeStrava) -> dict[str, Any]:
    """What the requests beyond the work were, by kind and cause: each kind's faulted
    answers (an injected fault: 5xx, 0 a dropped connection, 401 an early expiry; more
    401s than expiries injected are requests sent with a token already refused), the
    requests answered twice, and the token refreshes (answered or faulted)."""
    where = where_they_went(fake)
    statuses: Counter[str] = Counter()
    for kind in ("list", "detail"):
        for key, n in where.get(kind, {}).items():
            if key.startswith("status "):
                statuses[f"{kind} {key.removeprefix('status ')}"] += n
    refused = sum(n for key, n in statuses.items() if key.endswith(" 401"))
    expiries = fake.injected.get("expiry", 0)
    tokens = where.get("token", {})
    return {
        "faulted_by_kind_and_status": dict(sorted(statuses.items())),
        "faults_injected": dict(sorted(fake.injected.items())),
        "refused_tokens_sent_again": max(0, refused - expiries),
        "answered_twice": sum(where.get(k, {}).get("repeat", 0) for k in ("list", "detail")),
        "refreshes": sum(tokens.values()),
        "refreshes_faulted": sum(n for key, n in tokens.items() if key != "answered"),
    }


@dataclass
class Jumps:
    """How each round that left work ended: the service's next_due_at (from answers
    saying backing_off) against the database's own earliest due time."""

    said: int = 0  # rounds whose last answers said backing_off with a next_due_at
    agreed: int = 0  # of them, the same instant as the database's (to the second)
    unsaid: int = 0  # rounds that left work without saying when it is due


def converge(
    app: Flask,
    database_url: str,
    fake: FakeStrava,
    clock: ShiftClock,
    *,
    fleet: tuple[int, ...] = FLEET,
    jumps: Jumps | None = None,
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """Two overlapping callers until the database equals the fake's state (or nothing
    is due any more): every answer, the rounds taken, and what is left. Between rounds
    the clock moves to when the service said work is next due (`jumps` counts how the
    rounds ended)."""
    jumps = jumps if jumps is not None else Jumps()
    max_attempts = app.extensions["strava_sync"].settings.enrich_max_attempts
    answers: list[dict[str, Any]] = []
    rounds = 0
    left = gaps(database_url, fake, max_attempts, fleet)
    while any(left.values()) and rounds < MAX_ROUNDS:
        rounds += 1
        before = len(answers)
        threads = [threading.Thread(target=caller, args=(app, answers)) for _ in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for answer in answers[before:]:
            answer["round"] = rounds
        left = gaps(database_url, fake, max_attempts, fleet)
        if any(left.values()):
            due = next_due(database_url)
            said = said_next_due(answers[before:])
            if said is None:
                jumps.unsaid += 1
            else:
                jumps.said += 1
                jumps.agreed += due is not None and abs((said - due).total_seconds()) < 1
                due = said
            if due is None:
                break  # nothing will ever be due again: stuck
            clock.jump_to(due + timedelta(seconds=1))
    return answers, rounds, left


def run_rate(rate: float, *, seed: int) -> dict[str, Any]:
    """One run at one fault rate, on a fresh database and a fresh fake."""
    clock = ShiftClock()
    fake = new_fake(clock)
    wall = time.perf_counter()
    with temporary_database() as url, serve(fake) as server:
        build_fleet(url, fake, seed=seed)
        fake.inject_faults(rate, seed=seed, timeout_s=FAULT_DELAY_S)
        app = build_app(url, server.api_url, server.oauth_url, clock)
        jumps = Jumps()
        answers, rounds, left = converge(app, url, fake, clock, jumps=jumps)
        app.extensions["strava_sync"].db.close()
        kinds = by_kind(fake)
        calls = Counter(a["endpoint"] for a in answers)
        idle = [a for a in answers if took_nothing(a)]
        items = Counter(
            (a["endpoint"], i["status"], i.get("reason")) for a in answers for i in a["items"]
        )
    return {
        "fault_rate": rate,
        "converged": not any(left.values()),
        "gaps": left,
        "requests": {
            "total": sum(kinds.values()),
            **{k: kinds[k] for k in ("list", "detail", "token", "other")},
        },
        "where": where_they_went(fake),
        "faults_injected": dict(fake.injected),
        "calls": {"total": len(answers), **{e: calls[e] for e in ENDPOINTS}},
        "extra": extra_requests(fake),
        "idle_calls": {
            "total": len(idle),
            "by_endpoint": dict(sorted(Counter(a["endpoint"] for a in idle).items())),
            # the service's own word for it, where it says one (idle_reason)
            "by_reason": dict(
                sorted(Counter(str(a.get("idle_reason", "not said")) for a in idle).items())
            ),
            "by_round": dict(sorted(Counter(str(a["round"]) for a in idle).items())),
        },
        "calls_by_round": dict(sorted(Counter(str(a["round"]) for a in answers).items())),
        "clock_jumps": rounds - 1,
        # how the rounds that left work ended: their last answers said backing_off and
        # next_due_at (and it was the database's earliest due time), or said nothing
        "rounds_ended": {
            "said_backing_off": jumps.said,
            "next_due_at_as_the_database": jumps.agreed,
            "without_a_next_due_at": jumps.unsaid,
        },
        "clock_jumped_s": round(clock.offset_s),
        "items": {f"{e} {s} {r or ''}".strip(): n for (e, s, r), n in sorted(items.items())},
        "wall_s": round(time.perf_counter() - wall, 1),
    }


def ratio(value: int, base: int) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _with_ratio(value: int, base: int) -> str:
    return f"{value} ({ratio(value, base)})"


def fault_share(run: dict[str, Any]) -> float:
    """The share of the run's requests that met an injected fault."""
    total = run["requests"]["total"]
    return sum(run["faults_injected"].values()) / total if total else 0.0


def print_runs(runs: list[dict[str, Any]], earlier: list[dict[str, Any]] | None) -> None:
    base = runs[0]["requests"]
    rows: list[tuple[str, ...]] = [
        ("faults", "requests", "vs 0%", "list", "detail", "token", "faulted", "calls", "idle",
         "converged", "wall")
    ]  # fmt: skip
    for run in runs:
        req = run["requests"]
        rows.append(
            (
                f"{run['fault_rate']:.0%}",
                str(req["total"]),
                ratio(req["total"], base["total"]),
                f"{req['list']} ({ratio(req['list'], base['list'])})",
                f"{req['detail']} ({ratio(req['detail'], base['detail'])})",
                str(req["token"]),
                f"{sum(run['faults_injected'].values())} ({fault_share(run):.1%})",
                str(run["calls"]["total"]),
                str(run["idle_calls"]["total"]),
                "yes" if run["converged"] else f"no {run['gaps']}",
                f"{run['wall_s']} s",
            )
        )
    print(table(rows))
    for run in runs[1:]:
        extra = run["extra"]
        print(
            f"  {run['fault_rate']:.0%}: faults injected {extra['faults_injected']}; faulted"
            f" answers {extra['faulted_by_kind_and_status']}; refused tokens sent again"
            f" {extra['refused_tokens_sent_again']}; answered twice {extra['answered_twice']};"
            f" refreshes {extra['refreshes']} ({extra['refreshes_faulted']} faulted); idle calls"
            f" by endpoint {run['idle_calls']['by_endpoint']}, by reason"
            f" {run['idle_calls']['by_reason']}; calls by round {run['calls_by_round']};"
            f" rounds that left work ended with {run['rounds_ended']}"
        )
    if earlier:
        print("\nside by side with the earlier run (requests, vs its 0%; calls):")
        old_base = earlier[0]["requests"]["total"]
        rows = [("faults", "earlier", "now", "earlier calls", "now calls")]
        old = {r["fault_rate"]: r for r in earlier}
        for run in runs:
            before = old.get(run["fault_rate"])
            if before is None:
                continue
            rows.append(
                (
                    f"{run['fault_rate']:.0%}",
                    _with_ratio(before["requests"]["total"], old_base),
                    _with_ratio(run["requests"]["total"], base["total"]),
                    str(before["calls"]["total"]),
                    str(run["calls"]["total"]),
                )
            )
        print(table(rows))


def print_side_by_side(sides: list[dict[str, Any]]) -> None:
    """Before and after at each seed and rate: requests (vs the same side's 0% of that
    seed), by kind, the faults met, calls and the calls that worked on nothing."""
    zero = {(r["side"], r["seed"]): r["requests"]["total"] for r in sides if r["fault_rate"] == 0}
    rows: list[tuple[str, ...]] = [
        ("seed", "faults", "side", "requests", "list / detail / token", "faulted",
         "refused sent again", "calls", "idle calls")
    ]  # fmt: skip
    for run in sides:
        req = run["requests"]
        base = zero.get((run["side"], run["seed"]), 0)
        rows.append(
            (
                str(run["seed"]),
                f"{run['fault_rate']:.0%}",
                run["side"],
                _with_ratio(req["total"], base),
                f"{req['list']} / {req['detail']} / {req['token']}",
                f"{sum(run['faults_injected'].values())} ({fault_share(run):.1%})",
                str(run["extra"]["refused_tokens_sent_again"]),
                str(run["calls"]["total"]),
                str(run["idle_calls"]["total"]),
            )
        )
    print(table(rows))


def with_baseline(
    baseline: Path, rates: list[float], seeds: list[int], label: str
) -> list[dict[str, Any]]:
    """Each seed and rate on the code at `baseline` (before), then on this code (after),
    one run at a time (the runs keep wall-clock deadlines and timeouts, so they must not
    share the machine with each other), every run a process of its own."""
    sides = []
    for seed in seeds:
        for rate in rates:
            for side, code in (("before", baseline), ("after", ROOT)):
                name = f"{label}-{side}-s{seed}-r{rate:g}"
                args = [f"--rates={rate:g}", f"--seed={seed}", f"--label={name}", "--compare="]
                log = RESULTS / f"faults-{name}.log"
                print(f"{side}, seed {seed}, {rate:.0%}: output in {log.relative_to(ROOT)}")
                process = run_on_code(code, "bench.faults", args, output=log)
                if process.wait() != 0:
                    raise SystemExit(f"{name} failed: see {log}")
                (run,) = json.loads((RESULTS / f"faults-{name}.json").read_text())["runs"]
                sides.append({"side": side, "seed": seed, "code": str(code), **run})
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--rates", default="0,0.1,0.2,0.3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default=None, help="several seeds, e.g. 1,2,3 (--baseline)")
    parser.add_argument("--compare", default=str(RESULTS / "faults-baseline.json"))
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="run each seed and rate on the service's code at CHECKOUT (e.g. a worktree of"
        " main) and on this code, in turns, and set them side by side",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the app logs every call; the figures are the output
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in (args.seeds or str(args.seed)).split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"faults-{args.label}.json"
    report: dict[str, Any] = {
        "label": args.label,
        "seeds": seeds,
        "fleet": list(FLEET),
        "callers": CALLERS,
        "strava_timeout_s": TIMEOUT_S,
    }
    if args.baseline is not None:
        sides = with_baseline(args.baseline, rates, seeds, args.label)
        print()
        print_side_by_side(sides)
        out.write_text(json.dumps({**report, "baseline": str(args.baseline), "sides": sides},
                                  indent=2) + "\n")  # fmt: skip
        print(f"\nwritten: {out.relative_to(ROOT)}")
        return
    runs = []
    for rate in rates:
        run = run_rate(rate, seed=seeds[0])
        runs.append(run)
        print(f"{rate:.0%}: {json.dumps({k: run[k] for k in ('requests', 'calls', 'converged')})}")
    compare = Path(args.compare) if args.compare else None
    earlier = None
    if compare and compare.is_file() and compare.name != out.name:
        earlier = json.loads(compare.read_text())["runs"]
    print()
    print_runs(runs, earlier)
    out.write_text(json.dumps({**report, "seed": seeds[0], "runs": runs}, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
