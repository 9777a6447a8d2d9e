"""The operator's status JSON (`GET /api/admin/status`) and the operator's actions.

Every number comes from the database as it stands (the queue is derived from the rows
themselves); the pure functions below turn rows into progress, estimates and plain
warnings, each saying what the service will do about it.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import models
from config import Settings
from services import planning, schedule
from services.alert_messages import receiver_format
from services.budget import (
    day_start,
    describe,
    headroom,
    reserve_size,
    roll_windows,
    window_start,
)
from services.calls import Runtime
from services.clock import iso
from services.duplicates import describe as describe_duplicates
from services.errors import NotConnected, UnknownRider
from services.events import webhook_status
from services.schedule import PRIORITY
from services.sharing import athletes
from services.strava import PER_PAGE_MAX
from services.weather import weather_status

RUN_KINDS = ["sync-strava", "discover", "enrich", "events", "sync-now"]
RUNS_PER_KIND = 5
RIDER_RUNS = 20
LISTED_MAX = 50  # stuck items and incomplete histories listed by name; the counts are total
RIDER_PAGE = 500  # riders in the status's list a page (riders_limit), at most RIDER_PAGE_MAX
RIDER_PAGE_MAX = 2000
CONNECTION_STATUSES = ["active", "needs_reauth", "revoked", "not_connected"]
SYNC_STATES = [
    "in_progress",
    "due",
    "up_to_date",
    "backing_off",
    "paused",
    "stopped",
    "not_connected",
]

# Strava opened in 2009: no history is older, whatever the account's creation date says.
STRAVA_EPOCH = datetime(2009, 1, 1, tzinfo=UTC)
# A history not yet started is assumed this long (a club rider's few years).
ASSUMED_HISTORY_ACTIVITIES = 1000

ASSUMPTIONS = [
    "Discovery lists 200 activities a request and needs one more request to see the end.",
    "A walk in progress has as many activities left per day of history as it found so far, "
    "back to the Strava account's creation date (2009 when unknown); a walk not started is "
    f"assumed to hold {ASSUMED_HISTORY_ACTIVITIES} activities.",
    "Enrichment costs one request per race waiting (pending, or failed with attempts left) "
    "of a rider whose connection is active.",
    "The backlog gets the cron's share of the budget (the limits less the Sync-now reserve, "
    "the lower of overall and read) less the scheduled sync's steady load (one request per "
    "auto-sync rider per SYNC_MIN_INTERVAL_S), and the schedule runs often enough to use it.",
    "Hours are at that steady rate: the daily limit usually binds, so a backlog larger than "
    "a day's share takes days regardless of the 15-minute window.",
]


# --- pure ----------------------------------------------------------------------------


def history_percent(
    *,
    complete: bool,
    walk_started_at: datetime | None,
    cursor: datetime | None,
    floor: datetime | None,
) -> int:
    """How much of a rider's history discovery has walked, in per cent.

    The walk goes back in time from its start; the share of the time span from the walk's
    start back to the Strava account's creation (the oldest a history normally goes; 2009
    when unknown) that lies behind the cursor. 100 only when the walk has completed (an
    activity older than the account keeps it at 99 until then).
    """
    if complete:
        return 100
    if walk_started_at is None or cursor is None:
        return 0
    floor = max(floor or STRAVA_EPOCH, STRAVA_EPOCH)
    span = (walk_started_at - floor).total_seconds()
    if span <= 0:
        return 99
    walked = (walk_started_at - cursor).total_seconds()
    return max(0, min(99, int(100 * walked / span)))


def history_requests_left(row: dict[str, Any]) -> int:
    """List requests a rider's history walk still needs (see ASSUMPTIONS)."""
    started, cursor = row["history_walk_started_at"], row["history_cursor"]
    found = row["history_activities"] or 0
    if started is None or cursor is None or found == 0:
        left = float(ASSUMED_HISTORY_ACTIVITIES)
    else:
        floor = max(row["athlete_created_at"] or STRAVA_EPOCH, STRAVA_EPOCH)
        walked_days = max((started - cursor).total_seconds() / 86400, 1.0)
        left_days = max((cursor - floor).total_seconds() / 86400, 0.0)
        left = found / walked_days * left_days
    return math.ceil(left / PER_PAGE_MAX) + 1


def backlog_rate_per_hour(
    budget: models.budget.BudgetRow,
    *,
    reserve: int,
    auto_sync_riders: int,
    sync_min_interval_s: int,
) -> dict[str, float]:
    """Requests an hour the backlog can have: the cron's share less the scheduled sync."""
    per_15min = min(budget.limit_15min, budget.read_limit_15min) - reserve
    per_day = min(budget.limit_daily, budget.read_limit_daily) - reserve
    sync_per_day = auto_sync_riders * 86400 / max(sync_min_interval_s, 900)
    hourly = min(max(0.0, per_day - sync_per_day) / 24, max(0.0, per_15min * 4 - sync_per_day / 24))
    return {
        "cron_share_15min": per_15min,
        "cron_share_daily": per_day,
        "scheduled_sync_per_day": round(sync_per_day, 1),
        "backlog_requests_per_hour": round(hourly, 1),
    }


def age(since: datetime, now: datetime) -> str:
    """A duration in words: "12 min", "3 h 5 min", "2 d 4 h"."""
    minutes = max(0, int((now - since).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


_LEASE_TAKER = {
    "sync": "The next sync-strava call takes the rider over.",
    "discover": "The next discover call takes the rider over and resumes its walk from the "
    "stored cursor.",
    "sync_now": "The next sync-strava call (or the rider's next Sync now) takes the rider over.",
}


def _waiting_action(
    row: dict[str, Any], now: datetime, blocked_until: datetime | None, call: str
) -> str:
    if row.get("next_attempt_at") and row["next_attempt_at"] > now:
        error = f" (last error: {row['last_error']})" if row.get("last_error") else ""
        return (
            f"It is backing off after {row['failure_count']} failures{error}; the next {call} "
            f"call after {iso(row['next_attempt_at'])} retries it. An operator can reset it."
        )
    if blocked_until and blocked_until > now:
        return (
            f"Strava calls are paused until {iso(blocked_until)}; the next {call} call after "
            "that takes it."
        )
    return f"The next {call} call takes it; if this persists, check that the {call} schedule runs."


def stuck_items(
    *,
    now: datetime,
    blocked_until: datetime | None,
    blocked_reason: str | None,
    rider_leases: list[dict[str, Any]],
    race_leases: list[dict[str, Any]],
    histories: list[dict[str, Any]],
    overdue: list[dict[str, Any]],
    races: list[dict[str, Any]],
    runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each stalled thing with a plain warning and what the service will do about it."""
    items: list[dict[str, Any]] = []
    if blocked_until and blocked_until > now:
        items.append(
            {
                "kind": "rate_limit_block",
                "since": None,
                "until": iso(blocked_until),
                "warning": f"All Strava calls are paused until {iso(blocked_until)} "
                f"({blocked_reason or 'rate limit'}).",
                "action": "Calls resume on their own at that time; nothing is retried before.",
            }
        )
    for row in rider_leases:
        items.append(
            {
                "kind": "rider_lease_expired",
                "rider_id": row["rider_id"],
                "lease_kind": row["lease_kind"],
                "since": iso(row["since"]),
                "warning": f"Rider {row['rider_id']}'s {row['lease_kind']} lease expired "
                f"{age(row['since'], now)} ago: the call holding it died or overran.",
                "action": _LEASE_TAKER.get(
                    row["lease_kind"], "The next call takes the rider over."
                ),
            }
        )
    for row in race_leases:
        items.append(
            {
                "kind": "race_lease_expired",
                "activity_id": row["strava_id"],
                "rider_id": row["rider_id"],
                "since": iso(row["since"]),
                "warning": f"Race {row['strava_id']} (rider {row['rider_id']}): its enrichment "
                f"lease expired {age(row['since'], now)} ago.",
                "action": "The next enrich call takes it.",
            }
        )
    for row in histories:
        items.append(
            {
                "kind": "history_stalled",
                "rider_id": row["rider_id"],
                "since": iso(row["since"]),
                "warning": f"Rider {row['rider_id']}'s history discovery has made no progress "
                f"for {age(row['since'], now)}.",
                "action": _waiting_action(row, now, blocked_until, "discover"),
            }
        )
    for row in overdue:
        items.append(
            {
                "kind": "sync_overdue",
                "rider_id": row["rider_id"],
                "since": iso(row["since"]),
                "warning": f"Rider {row['rider_id']} has been due for sync for "
                f"{age(row['since'], now)}.",
                "action": _waiting_action(row, now, blocked_until, "sync-strava"),
            }
        )
    for row in races:
        items.append(
            {
                "kind": "race_stalled",
                "activity_id": row["strava_id"],
                "rider_id": row["rider_id"],
                "since": iso(row["since"]),
                "warning": f"Race {row['strava_id']} (rider {row['rider_id']}) has waited "
                f"{age(row['since'], now)} for its details ({row['enrichment_status']}, "
                f"{row['enrichment_attempts']} attempts).",
                "action": _waiting_action({}, now, blocked_until, "enrich")
                + " Races are taken newest first.",
            }
        )
    for row in runs:
        items.append(
            {
                "kind": "run_unfinished",
                "run_id": row["id"],
                "run_kind": row["kind"],
                "since": iso(row["since"]),
                "warning": f"The {row['kind']} call started {age(row['since'], now)} ago never "
                "finished (stopped at the platform's time limit, or it crashed).",
                "action": "Nothing to do: the work it held is taken by the next call once its "
                "leases expire.",
            }
        )
    return items


def with_rider_names(conn: models.Conn, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items that name a rider by id get its name too (one query for those listed)."""
    ids = [int(i["rider_id"]) for i in items if i.get("rider_id") is not None]
    names = models.riders.rider_names(conn, rider_ids=ids)
    return [
        {**i, "rider_name": names.get(int(i["rider_id"]), "")}
        if i.get("rider_id") is not None
        else i
        for i in items
    ]


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    finished = row["finished_at"]
    return {
        "id": row["id"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(finished),
        "finished": finished is not None,
        "duration_ms": (
            int((finished - row["started_at"]).total_seconds() * 1000) if finished else None
        ),
        "processed": row["processed"],
        "succeeded": row["succeeded"],
        "failed": row["failed"],
        "skipped": row["skipped"],
        "remaining": row["remaining"],
        "rate_limited": row["rate_limited"],
        "rate_limit": row["rate_limit"],
        "error_summary": row["error_summary"],
        "idle_reason": row["idle_reason"],
        "next_due_at": iso(row["next_due_at"]),
    }


RUN_FAILURES_LISTED = 10  # a run's failed items shown in a rider's detail; the rest counted
ITEM_PAGE = 200  # a rider's items a page with `?items=all` (items_limit), at most ITEM_PAGE_MAX
ITEM_PAGE_MAX = 1000
ITEM_STATUSES = ("succeeded", "failed", "skipped")


def rider_items(row: dict[str, Any], rider_id: int) -> list[dict[str, Any]]:
    """The items of a recorded run that are this rider's (or its races')."""
    return [i for i in (row.get("items") or []) if i.get("rider_id") == rider_id]


def rider_run(row: dict[str, Any], rider_id: int) -> dict[str, Any]:
    """A run as a rider's detail shows it: its summary, this rider's items counted by
    status, and the failed ones listed (a weather run may hold hundreds of one rider's
    activities: all of them are on request, `?items=all`)."""
    mine = rider_items(row, rider_id)
    counted = Counter(str(i.get("status")) for i in mine)
    failures = [i for i in mine if i.get("status") == "failed"]
    return {
        **_run_summary(row),
        "kind": row["kind"],
        "items_by_status": {status: counted.get(status, 0) for status in ITEM_STATUSES},
        "failures": failures[:RUN_FAILURES_LISTED],
        "failures_not_listed": max(0, len(failures) - RUN_FAILURES_LISTED),
    }


def item_page(
    runs: list[dict[str, Any]], rider_id: int, *, offset: int, limit: int
) -> dict[str, Any]:
    """Every item of this rider in these runs (newest run first), a page at a time."""
    every = [
        {"run_id": r["id"], "kind": r["kind"], "started_at": iso(r["started_at"]), "item": i}
        for r in runs
        for i in rider_items(r, rider_id)
    ]
    return {
        "count": len(every),
        "offset": offset,
        "limit": limit,
        "items": every[offset : offset + limit],
    }


def requests_by_class(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Requests per class in the current window, today (UTC) and each window with any."""
    window, day = window_start(now), day_start(now)
    classes = [c.value for c in PRIORITY]
    windows: dict[datetime, dict[str, int]] = {}
    this_window, today = dict.fromkeys(classes, 0), dict.fromkeys(classes, 0)
    for row in rows:
        start, cls, n = row["window_start"], row["work_class"], int(row["requests"])
        windows.setdefault(start, dict.fromkeys(classes, 0))[cls] += n
        if start >= day:
            today[cls] += n
        if start == window:
            this_window[cls] += n
    return {
        "this_window": this_window,
        "today": today,
        "windows": [{"window_start": iso(start), **counts} for start, counts in windows.items()],
    }


def rate_plan(
    here: planning.Situation,
    poll_share: int,
    *,
    backlog_requests: int,
    now: datetime,
    polls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scheduler's plan: each class's share and use in this window and today, when
    the backlog completes at that pace, and the polling's share of the day (with the
    plan the riders' polls follow, and a whole-club re-plan under way)."""
    completes = schedule.projected_completion(backlog_requests, here.state, here.needs, now)
    planned = here.needs.per_day.get(schedule.WorkClass.INCREMENTAL, 0)
    polls = polls or {}
    replan = polls.get("replan") or {}
    return {
        **schedule.plan(here.state, here.needs, now).as_dict(),
        "backlog": {
            "requests": backlog_requests,
            "per_day": schedule.backfill_per_day(here.state, here.needs),
            "completes_on": completes.isoformat() if completes else None,
        },
        "polling": {
            "share_per_day": poll_share,
            "planned_per_day": planned,
            "fits": planned <= poll_share,
            "kind": polls.get("kind"),
            "note": polls.get("note"),
            "planned_at": iso(polls.get("planned_at")),
            "replan": {
                "pending": bool(replan.get("pending", False)),
                "phase": replan.get("phase"),
                "riders_done": replan.get("riders_done"),
                "started_at": iso(replan.get("started_at")),
            },
        },
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _day_stats(row: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    runs = int(row.get("runs", 0))
    succeeded, failed = int(row.get("items_succeeded", 0)), int(row.get("items_failed", 0))
    return {
        "runs": runs,
        "unfinished": int(row.get("unfinished", 0)),
        "raised": int(row.get("raised", 0)),
        "rate_limited": int(row.get("rate_limited", 0)),
        "runs_without_failures": int(row.get("clean", 0)),
        "items": int(row.get("items", 0)),
        "items_succeeded": succeeded,
        "items_failed": failed,
        "items_skipped": int(row.get("items_skipped", 0)),
        # Items that succeeded among those that succeeded or failed (skips are hand-backs).
        "success_rate": _rate(succeeded, succeeded + failed),
        "run_success_rate": _rate(int(row.get("clean", 0)), runs),
    }


def _history_entry(row: dict[str, Any]) -> dict[str, Any]:
    complete = row["history_complete_at"] is not None and row["full_refresh_requested_at"] is None
    return {
        "rider_id": row["rider_id"],
        "status": row["status"],
        "percent": history_percent(
            complete=complete,
            walk_started_at=row["history_walk_started_at"],
            cursor=row["history_cursor"],
            floor=row["athlete_created_at"],
        ),
        "walk_started_at": iso(row["history_walk_started_at"]),
        "oldest_reached": iso(row["history_cursor"]),
        "pages": row["history_pages"],
        "activities": row["history_activities"],
        "races": row["history_races"],
        "full_refresh_requested_at": iso(row["full_refresh_requested_at"]),
        "last_progress_at": iso(row["last_progress_at"]),
        "requests_left": history_requests_left(row),
    }


def rider_entry(row: dict[str, Any]) -> dict[str, Any]:
    """One rider of the status's list: state, backfill progress, races, last sync, poll."""
    connected = bool(row["connected"])
    complete = (
        connected
        and row["history_complete_at"] is not None
        and row["full_refresh_requested_at"] is None
    )
    return {
        "rider_id": row["rider_id"],
        "name": row["name"],
        "auto_sync": row["auto_sync"],
        "connection": row["connection"],
        "sync_state": row["sync_state"],
        "activities": row["activities"],
        "history": {
            "complete": complete,
            "percent": history_percent(
                complete=complete,
                walk_started_at=row["history_walk_started_at"],
                cursor=row["history_cursor"],
                floor=row["athlete_created_at"],
            )
            if connected
            else 0,
            "pages": row["history_pages"] or 0,
            "activities": row["history_activities"] or 0,
            "oldest_reached": iso(row["history_cursor"]),
        },
        "races": {
            "total": row["races"],
            "waiting": row["races_waiting"],
            "failed": row["races_failed"],
        },
        "last_synced_at": iso(row["last_synced_at"]),
        "last_sync_added": row["last_sync_added"],
        "last_error": row["last_error"],
        "failure_count": row["failure_count"] or 0,
        "next_attempt_at": iso(row["next_attempt_at"]),
        "poll": {
            "next_at": iso(row["next_poll_at"]),
            "per_day": row["polls_per_day"],
            "reason": row["poll_reason"],
        },
    }


# --- I/O -----------------------------------------------------------------------------


def alert_status(conn: models.Conn, settings: Settings) -> dict[str, Any]:
    """The operator alerts (services/alerts.py): whether a receiver is set (never its
    URL: a webhook URL is a secret), its format, and the alerts open now."""
    url = settings.alert_webhook_url
    return {
        "configured": bool(url),
        "format": receiver_format(url, settings.alert_webhook_format) if url else None,
        "open": [
            {
                "kind": a.kind,
                "subject": a.subject,
                "title": a.title,
                "detail": a.detail,
                "opened_at": iso(a.opened_at),
                "sent": a.sent_at is not None,
            }
            for a in models.alerts.open_alerts(conn)
        ],
    }


def fleet_stuck(
    conn: models.Conn, settings: Settings, budget: models.budget.BudgetRow, now: datetime
) -> tuple[list[dict[str, Any]], int]:
    """Everything stuck in the fleet (riders named), and how many races are stalled in
    all (only the oldest LISTED_MAX are listed). The status and the alerts read it."""
    stalled_count, stalled = models.status.stalled_races(
        conn,
        stuck_after_s=settings.stuck_after_s,
        max_attempts=settings.enrich_max_attempts,
        limit=LISTED_MAX,
        now=now,
    )
    stuck = stuck_items(
        now=now,
        blocked_until=roll_windows(budget, now).blocked_until,
        blocked_reason=budget.blocked_reason,
        rider_leases=models.status.expired_rider_leases(conn, now=now),
        race_leases=models.status.expired_race_leases(conn, now=now),
        histories=models.status.stalled_histories(
            conn, stuck_after_s=settings.stuck_after_s, now=now
        ),
        overdue=models.status.overdue_syncs(
            conn,
            min_interval_s=settings.sync_min_interval_s,
            stuck_after_s=settings.stuck_after_s,
            now=now,
        ),
        races=stalled,
        runs=models.runs.unfinished_runs(conn, stuck_after_s=settings.stuck_after_s, now=now),
    )
    return with_rider_names(conn, stuck), stalled_count


def admin_status(
    runtime: Runtime, *, riders_offset: int = 0, riders_limit: int = RIDER_PAGE
) -> dict[str, Any]:
    """The whole fleet: riders (counts, and every rider a page at a time), backlog and its
    estimate, rate limit, runs, what is stuck."""
    settings = runtime.settings
    now = runtime.clock()
    with runtime.db.connection() as conn:
        rider_page = models.status.status_rider_page(
            conn,
            min_interval_s=settings.sync_min_interval_s,
            max_attempts=settings.enrich_max_attempts,
            limit=riders_limit,
            offset=riders_offset,
            now=now,
        )
        riders = models.status.rider_state_counts(
            conn, min_interval_s=settings.sync_min_interval_s, now=now
        )
        due_now = models.sync.count_riders_due_for_sync(
            conn, min_interval_s=settings.sync_min_interval_s, now=now
        )
        everyone_now = models.sync.count_riders_due_for_sync(
            conn, min_interval_s=settings.sync_min_interval_s, now=now, everyone=True
        )
        histories = models.status.incomplete_histories(conn)
        races = models.status.race_counts(conn, max_attempts=settings.enrich_max_attempts)
        auto_sync_riders = models.planning.fleet_counts(conn)["riders"]
        budget = models.budget.read_rate_budget(conn)
        runs = models.runs.last_runs(conn, kinds=RUN_KINDS, per_kind=RUNS_PER_KIND)
        weather = weather_status(conn, now)  # the weather source's breaker and counts
        webhooks = webhook_status(conn, settings, now)
        request_windows = models.budget.requests_by_class(conn, since=now - timedelta(hours=24))
        rolled = roll_windows(budget, now)
        here = planning.situation(conn, rolled, settings, now)
        poll_share = planning.incremental_share(conn, rolled, settings)
        polls = planning.replan_status(conn)
        day = {row["kind"]: row for row in models.runs.run_stats_since(conn, hours=24, now=now)}
        stuck, stalled_count = fleet_stuck(conn, settings, budget, now)
        alerts = alert_status(conn, settings)
    by_kind = Counter(item["kind"] for item in stuck)
    by_kind["race_stalled"] = stalled_count  # only the oldest LISTED_MAX are listed
    by_connection = {k: riders["by_connection_status"][k] for k in CONNECTION_STATUSES}
    by_state = {k: riders["by_sync_state"][k] for k in SYNC_STATES}
    reserve = reserve_size(budget, settings.sync_now_reserve)
    active_histories = [h for h in histories if h["status"] == "active"]
    discover_requests = sum(history_requests_left(h) for h in active_histories)
    enrich_requests = int(races["workable"])
    rate = backlog_rate_per_hour(
        budget,
        reserve=reserve,
        auto_sync_riders=auto_sync_riders,
        sync_min_interval_s=settings.sync_min_interval_s,
    )
    per_hour = rate["backlog_requests_per_hour"]
    total_requests = discover_requests + enrich_requests
    window_left, day_left = headroom(roll_windows(budget, now))
    return {
        "generated_at": iso(now),
        "alerts": alerts,
        "weather": weather,
        "webhooks": webhooks,
        # Connections holding a place of the Strava application's athlete capacity.
        "athletes": athletes(
            settings, by_connection.get("active", 0) + by_connection.get("needs_reauth", 0)
        ),
        "riders": {
            "total": riders["total"],
            "by_connection_status": by_connection,
            "by_sync_state": by_state,
            "due_now": due_now,
            # What "everyone now" (sync-strava?all=true) would take, and cost: a listing
            # each (more for a rider with over 200 new activities).
            "everyone_now": {"riders": everyone_now, "requests": everyone_now},
            "never_synced": riders["never_synced"],
            "list": {
                "count": riders["total"],
                "offset": riders_offset,
                "limit": riders_limit,
                "items": [rider_entry(row) for row in rider_page],
            },
        },
        "backlog": {
            "history": {
                "riders_incomplete": len(active_histories),
                "riders_not_started": sum(
                    1 for h in active_histories if h["history_walk_started_at"] is None
                ),
                "riders_walking": sum(
                    1 for h in active_histories if h["history_walk_started_at"] is not None
                ),
                "full_refresh_requested": sum(
                    1 for h in active_histories if h["full_refresh_requested_at"] is not None
                ),
                "waiting_on_reconnect": len(histories) - len(active_histories),
                "pages_walked": sum(h["history_pages"] for h in active_histories),
                "activities_found": sum(h["history_activities"] for h in active_histories),
                "riders": [_history_entry(h) for h in active_histories[:LISTED_MAX]],
            },
            "races": {
                "total": races["races"],
                "pending": races["pending"],
                "done": races["done"],
                "failed_retrying": races["failed_retrying"],
                "failed": races["failed_final"],
                "waiting": races["workable"],
                "waiting_on_reconnect": races["waiting_on_reconnect"],
            },
            "estimate": {
                "requests_needed": {
                    "discover": discover_requests,
                    "enrich": enrich_requests,
                    "total": total_requests,
                },
                **rate,
                "hours": round(total_requests / per_hour, 1) if per_hour > 0 else None,
                "assumptions": ASSUMPTIONS,
            },
        },
        "rate_limit": {
            **describe(budget, now, held_back=reserve),
            "blocked": bool(roll_windows(budget, now).blocked_until),
            "headers_seen_at": iso(budget.headers_seen_at),
            "left_15min": window_left,
            "left_daily": day_left,
            "cron_share_15min": rate["cron_share_15min"],
            "cron_share_daily": rate["cron_share_daily"],
        },
        "requests": requests_by_class(request_windows, now),
        "plan": rate_plan(here, poll_share, backlog_requests=total_requests, now=now, polls=polls),
        "runs": {
            kind: {
                "last": [_run_summary(r) for r in runs if r["kind"] == kind],
                "last_24h": _day_stats(day.get(kind)),
            }
            for kind in RUN_KINDS
        },
        "stuck": {"count": sum(by_kind.values()), "by_kind": dict(by_kind), "items": stuck},
    }


def rider_detail(
    runtime: Runtime,
    rider_id: int,
    *,
    items_offset: int | None = None,
    items_limit: int = ITEM_PAGE,
) -> dict[str, Any] | None:
    """One rider in full: connection, sync, history, races, what is stuck, recent runs
    (each summed up; with `items_offset`, a page of every item of them too)."""
    settings = runtime.settings
    now = runtime.clock()
    with runtime.db.connection() as conn:
        row = models.sync.rider_sync_state(
            conn,
            rider_id=rider_id,
            min_interval_s=settings.sync_min_interval_s,
            max_attempts=settings.enrich_max_attempts,
            now=now,
        )
        if row is None:
            return None
        budget = models.budget.read_rate_budget(conn)
        runs = models.runs.rider_runs(conn, rider_id=rider_id, limit=RIDER_RUNS)
        failed = models.status.failed_races(conn, rider_id=rider_id, limit=LISTED_MAX)
        duplicates = models.duplicates.rider_duplicates(conn, rider_id=rider_id, limit=LISTED_MAX)
        _, stalled = models.status.stalled_races(
            conn,
            stuck_after_s=settings.stuck_after_s,
            max_attempts=settings.enrich_max_attempts,
            limit=LISTED_MAX,
            now=now,
            rider_id=rider_id,
        )
        stuck = stuck_items(
            now=now,
            blocked_until=None,
            blocked_reason=None,
            rider_leases=models.status.expired_rider_leases(conn, now=now, rider_id=rider_id),
            race_leases=models.status.expired_race_leases(conn, now=now, rider_id=rider_id),
            histories=models.status.stalled_histories(
                conn, stuck_after_s=settings.stuck_after_s, now=now, rider_id=rider_id
            ),
            overdue=models.status.overdue_syncs(
                conn,
                min_interval_s=settings.sync_min_interval_s,
                stuck_after_s=settings.stuck_after_s,
                now=now,
                rider_id=rider_id,
            ),
            races=stalled,
            runs=[],
        )
        stuck = with_rider_names(conn, stuck)
    blocked = roll_windows(budget, now).blocked_until
    detail: dict[str, Any] = {
        "generated_at": iso(now),
        "rider": {
            "id": row["rider_id"],
            "name": row["name"],
            "auto_sync": row["auto_sync"],
            "created_at": iso(row["created_at"]),
            "eddington": {
                "miles": row["eddington_miles"],
                "km": row["eddington_km"],
                "updated_at": iso(row["eddington_updated_at"]),
            },
        },
        "connection": None,
        "activities": {
            "total": row["activities"],
            "first_start": iso(row["first_activity_at"]),
            "last_start": iso(row["last_activity_at"]),
        },
        "races": {
            "total": row["races"],
            "pending": row["races_pending"],
            "waiting": row["races_waiting"],
            "done": row["races_done"],
            "failed": row["races_failed"],
            "failed_races": [
                {
                    "activity_id": r["strava_id"],
                    "name": r["name"],
                    "start_date": iso(r["start_date"]),
                    "attempts": r["enrichment_attempts"],
                    "final": r["enrichment_attempts"] >= settings.enrich_max_attempts,
                    "next_attempt_at": iso(r["enrichment_next_attempt_at"]),
                    "error": r["enrichment_error"],
                }
                for r in failed
            ],
        },
        "duplicates": describe_duplicates(duplicates),  # rides recorded twice
        "stuck": stuck,
        "rate_limit_blocked_until": iso(blocked) if blocked and blocked > now else None,
        "runs": [rider_run(r, rider_id) for r in runs],
    }
    if items_offset is not None:
        detail["items"] = item_page(runs, rider_id, offset=items_offset, limit=items_limit)
    if row["connected"]:
        complete = (
            row["history_complete_at"] is not None and row["full_refresh_requested_at"] is None
        )
        detail["connection"] = {
            "athlete_id": row["athlete_id"],
            "status": row["status"],
            "scope": row["scope"],
            "connected_at": iso(row["connected_at"]),
            "token_expires_at": iso(row["token_expires_at"]),
        }
        detail["sync"] = {
            "state": row["sync_state"],
            "last_synced_at": iso(row["last_synced_at"]),
            "last_sync_added": row["last_sync_added"],
            "last_sync_updated": row["last_sync_updated"],
            "sync_cursor": iso(row["sync_cursor"]),
            "last_error": row["last_error"],
            "error_class": row["error_class"],
            "failure_count": row["failure_count"],
            "next_attempt_at": iso(row["next_attempt_at"]),
            "last_sync_now_at": iso(row["last_sync_now_at"]),
            "poll": {
                "next_at": iso(row["next_poll_at"]),
                "per_day": row["polls_per_day"],
                "interval_s": (
                    int((row["next_poll_at"] - row["last_synced_at"]).total_seconds())
                    if row["next_poll_at"] and row["last_synced_at"]
                    else None
                ),
                "reason": row["poll_reason"],
            },
            "lease": (
                {
                    "kind": row["lease_kind"],
                    "expires_at": iso(row["lease_expires_at"]),
                    "expired": row["lease_expires_at"] < now,
                }
                if row["lease_expires_at"] is not None
                else None
            ),
        }
        history_row = {**row, "rider_id": rider_id}
        detail["history"] = {
            "complete": complete,
            "complete_at": iso(row["history_complete_at"]),
            "percent": _history_entry(history_row)["percent"],
            "walk_started_at": iso(row["history_walk_started_at"]),
            "oldest_reached": iso(row["history_cursor"]),
            "pages": row["history_pages"],
            "activities": row["history_activities"],
            "races": row["history_races"],
            "full_refresh_requested_at": iso(row["full_refresh_requested_at"]),
            "last_progress_at": iso(row["last_progress_at"]),
            "athlete_created_at": iso(row["athlete_created_at"]),
            "requests_left": 0 if complete else history_requests_left(history_row),
        }
    return detail


# --- operator actions ----------------------------------------------------------------


def reset_rider(runtime: Runtime, rider_id: int) -> dict[str, Any]:
    """Clear a rider's backoff and failures and release its lease."""
    with runtime.db.connection() as conn:
        if not models.riders.rider_exists(conn, rider_id=rider_id):
            raise UnknownRider(f"no rider with id {rider_id}")
        if not models.riders.reset_rider(conn, rider_id=rider_id, now=runtime.clock()):
            raise NotConnected(f"rider {rider_id} has no Strava connection")
    return {"rider_id": rider_id, "reset": True, "detail": rider_detail(runtime, rider_id)}


RIDER_NAME_MAX = 80


def clean_rider_name(raw: object) -> str:
    """An operator's name for a rider: text of 1 to 80 characters on one line (runs of
    spaces made one); ValueError says what is wrong."""
    if not isinstance(raw, str):
        raise ValueError("name must be a text of 1 to 80 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw.replace(" ", "")):
        raise ValueError("name must be on one line, without control characters")
    name = " ".join(raw.split())
    if not 1 <= len(name) <= RIDER_NAME_MAX:
        raise ValueError("name must be a text of 1 to 80 characters")
    return name


def rename_rider(runtime: Runtime, rider_id: int, name: str) -> dict[str, Any]:
    """Give a rider the operator's name (kept over Strava's from then on)."""
    with runtime.db.connection() as conn:
        if not models.riders.rename_rider(conn, rider_id=rider_id, name=name, now=runtime.clock()):
            raise UnknownRider(f"no rider with id {rider_id}")
    return {"rider_id": rider_id, "name": name, "named_by": "operator"}


def set_auto_sync(runtime: Runtime, rider_id: int, *, enabled: bool) -> dict[str, Any]:
    """Pause (False) or resume (True) a rider's scheduled sync."""
    with runtime.db.connection() as conn:
        if not models.riders.set_auto_sync(conn, rider_id=rider_id, enabled=enabled):
            raise UnknownRider(f"no rider with id {rider_id}")
    return {"rider_id": rider_id, "auto_sync": enabled}
