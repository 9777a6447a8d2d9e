"""Operator alerts to ALERT_WEBHOOK_URL: what is wrong, in plain words, when it starts
and once more when it clears, and a daily digest while anything stays open.

When: a run fails, riders must reconnect Strava (named, with the step), the push
subscription goes silent, the day's Strava budget is spent before the last hours of
the day, something is stuck past STUCK_AFTER_S. Each kind and subject is one alert
until it clears (services and the dashboard read the same facts).

Where it runs: after a cron call's work is recorded, by at most one call in
EVALUATE_EVERY (a club-wide turn in the database), only with time left in the call's
budget, with every delivery bounded: no call waits on a slow receiver, and no call
reads every rider (the facts come from bounded, indexed queries). Nothing sent carries
a token: messages are built from names, kinds and counts, and pass the logs' redaction.

The decisions (which conditions hold, how a receiver wants its JSON) are pure; the I/O
is `evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

import models
from config import Settings
from logging_setup import RedactingJsonFormatter
from services.alert_messages import Message, receiver_format, request_for
from services.budget import headroom, reserve_size, roll_windows
from services.planning import webhook_health
from services.status import LISTED_MAX, fleet_stuck
from services.webhooks import Health

if TYPE_CHECKING:
    from services.calls import Runtime

log = logging.getLogger(__name__)

RUN_FAILED = "run_failed"
NEEDS_REAUTH = "needs_reauth"
WEBHOOKS_SILENT = "webhooks_silent"
BUDGET_SPENT_EARLY = "budget_spent_early"
STUCK = "stuck"
DIGEST = "digest"
KINDS = (RUN_FAILED, NEEDS_REAUTH, WEBHOOKS_SILENT, BUDGET_SPENT_EARLY, STUCK)

# The cron calls whose last run is watched (Sync now is a rider's, not the schedule's).
CRON_KINDS = ["sync-strava", "discover", "enrich", "events", "weather"]
# At most one evaluation in this long, club-wide; a call that failed asks for one
# sooner (a minute after the last: overlapping failures do not each evaluate).
EVALUATE_EVERY = timedelta(minutes=5)
EVALUATE_FORCED_EVERY = timedelta(minutes=1)
# Every delivery of one evaluation together, at most (each request's timeout shrinks to
# what is left); a call with less than MIN_TIME_LEFT_S of its budget left does not
# evaluate (the next call will).
DELIVERY_BUDGET_S = 2.0
MIN_TIME_LEFT_S = 0.5
# The platform's limit beyond CRON_TIME_BUDGET_S (8 s of a 10 s limit by default).
PLATFORM_SLACK_S = 1.0
# A day's budget spent before this UTC hour is worth an alert (after it, midnight is near).
LAST_HOURS_FROM = 20
DIGEST_EVERY = timedelta(hours=24)
LISTED_IN_MESSAGE = 10
KEEP_CLEARED = timedelta(days=30)

# --- pure: what is wrong ---------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    kind: str
    subject: str
    title: str
    detail: str


@dataclass(frozen=True)
class Facts:
    """What the alerts are decided on, read at one instant (bounded queries only)."""

    runs: list[dict[str, Any]]  # the latest run of each cron kind
    reconnect: list[dict[str, Any]]  # riders with needs_reauth: rider_id, name
    webhooks: Health
    day_left: int  # Strava requests left today (overall and read, the lower)
    reserve: int  # kept for Sync now
    stuck: list[dict[str, Any]]  # the status's stuck items, riders named
    dashboard: str | None = None  # where the operator looks: <PUBLIC_BASE_URL>/admin


def who(rider_id: int, name: str | None) -> str:
    return f"{name} (rider {rider_id})" if name else f"Rider {rider_id}"


def _run_failed(run: dict[str, Any]) -> bool:
    """The run raised, or every item it worked on failed (riders who must reconnect
    are their own alert)."""
    if run.get("finished_at") is None:
        return False  # running, or died: the stuck list says so once it is late
    if run.get("processed") is None:
        return True
    worked = int(run.get("succeeded") or 0) + int(run.get("failed") or 0)
    failed = int(run.get("failed") or 0)
    return worked > 0 and failed == worked and run.get("error_summary") != NEEDS_REAUTH


def conditions(
    facts: Facts, now: datetime, open_keys: Iterable[tuple[str, str]]
) -> list[Condition]:
    """Every alert that holds now. `open_keys` are the alerts already open: the spent
    budget opens only before the day's last hours, but stays open once open."""
    opened = set(open_keys)
    found: list[Condition] = []
    look = f" See {facts.dashboard}." if facts.dashboard else " See the dashboard (/admin)."
    for run in facts.runs:
        if not _run_failed(run):
            continue
        kind = run["kind"]
        if run.get("processed") is None:
            title = f"The last {kind} call stopped with an error ({run.get('error_summary')})"
            detail = "The service's log has the details; the next call tries again."
        else:
            title = f"The last {kind} call failed: {run['failed']} of {run['processed']} failed"
            detail = (
                f"Reasons: {run.get('error_summary') or 'unknown'}. The next call retries"
                " what failed, with a backoff."
            )
        found.append(Condition(RUN_FAILED, kind, title, detail + look))
    for rider in facts.reconnect:
        found.append(
            Condition(
                NEEDS_REAUTH,
                f"rider:{rider['rider_id']}",
                f"{who(rider['rider_id'], rider.get('name'))} must reconnect Strava",
                "Strava no longer accepts this service's access (withdrawn or expired). Ask"
                " them to open the club's page and press Reconnect Strava; nothing of theirs"
                " syncs until then.",
            )
        )
    if facts.webhooks.state in ("silent", "missing", "unconfirmed"):
        found.append(
            Condition(
                WEBHOOKS_SILENT,
                "subscription",
                "Strava's push events have stopped",
                f"{facts.webhooks.reason}. Check it with `flask --app api.index strava-webhook"
                " show` (and the events workflow).",
            )
        )
    day = now.date().isoformat()
    spent = facts.day_left <= facts.reserve
    if spent and (now.hour < LAST_HOURS_FROM or (BUDGET_SPENT_EARLY, day) in opened):
        found.append(
            Condition(
                BUDGET_SPENT_EARLY,
                day,
                f"Strava's daily budget is spent ({now:%H:%M} UTC)",
                "Cron work waits for midnight UTC; riders' Sync now keeps its reserve. If it"
                " happens often, raise SYNC_MIN_INTERVAL_S or ask Strava for a larger limit.",
            )
        )
    for item in facts.stuck:
        if item["kind"] == "rate_limit_block":
            continue  # the budget's own alert, and it lifts by itself
        ref = item.get("rider_id") or item.get("activity_id") or item.get("run_id") or ""
        subject = f"{item['kind']}:{item.get('activity_id') or ref}"
        name = item.get("rider_name")
        warning = item["warning"]
        if name and item.get("rider_id") is not None:
            warning = f"{who(item['rider_id'], name)}: {warning}"
        found.append(Condition(STUCK, subject, warning, item["action"]))
    return found


_GROUP_TITLES = {
    RUN_FAILED: "{n} cron calls failed",
    NEEDS_REAUTH: "{n} riders must reconnect Strava",
    STUCK: "{n} things are stuck",
}


def messages(alerts: list[models.alerts.StoredAlert]) -> list[Message]:
    """What to send for these undelivered openings and clearings: one message per kind
    (and one per kind's clearings), naming each subject."""
    groups: dict[tuple[str, bool], list[models.alerts.StoredAlert]] = {}
    for alert in alerts:
        cleared = alert.sent_at is not None and alert.cleared_at is not None
        groups.setdefault((alert.kind, cleared), []).append(alert)
    out = []
    for (kind, cleared), group in groups.items():
        listed = group[:LISTED_IN_MESSAGE]
        more = len(group) - len(listed)
        if len(group) == 1:
            title = group[0].title
            lines = [] if cleared else [group[0].detail]
        else:
            title = _GROUP_TITLES.get(kind, "{n} alerts").format(n=len(group))
            lines = [f"- {a.title}" for a in listed] + ([f"- and {more} more"] if more else [])
            if not cleared and len({a.detail for a in group}) == 1:
                lines.append(group[0].detail)
        if cleared:
            title = f"Cleared: {title}"
        out.append(
            Message(
                kind=f"{kind}_cleared" if cleared else kind,
                subjects=tuple(a.subject for a in group),
                title=title,
                lines=tuple(lines),
                alert_ids=tuple(a.id for a in group),
                cleared=cleared,
            )
        )
    return out


def digest(
    open_alerts: list[models.alerts.StoredAlert], last: datetime | None, now: datetime
) -> Message | None:
    """The daily digest while anything is open: a day after the oldest open alert was
    sent, then a day after the last digest."""
    sent = [a for a in open_alerts if a.sent_at is not None]
    if not sent:
        return None
    since = last if last is not None else min(a.sent_at for a in sent if a.sent_at)
    if now - since < DIGEST_EVERY:
        return None
    listed = sent[:LISTED_IN_MESSAGE]
    lines = [f"- {a.title} (open since {a.opened_at:%Y-%m-%d %H:%M} UTC)" for a in listed]
    if len(sent) > len(listed):
        lines.append(f"- and {len(sent) - len(listed)} more")
    return Message(
        kind=DIGEST,
        subjects=(now.date().isoformat(),),
        title=f"Daily digest: {len(sent)} alert{'s' if len(sent) > 1 else ''} still open",
        lines=tuple(lines),
    )


# --- I/O ---------------------------------------------------------------------------------


@dataclass
class Report:
    """What one evaluation did (for tests and the log)."""

    evaluated: bool = False
    opened: int = 0
    cleared: int = 0
    sent: list[Message] = field(default_factory=list)
    failed: list[Message] = field(default_factory=list)


def _redactor(runtime: Runtime) -> RedactingJsonFormatter:
    settings = runtime.settings
    return RedactingJsonFormatter(
        [
            settings.cron_secret,
            settings.strava_client_secret,
            settings.supabase_jwt_secret,
            settings.strava_webhook_verify_token,
            settings.alert_webhook_url,
            *runtime.sealer.secret_texts(),
        ]
    )


def gather(conn: models.Conn, settings: Settings, now: datetime) -> Facts:
    """The facts, by bounded queries (the latest run of each kind, the riders who must
    reconnect and the stuck items, each listed LISTED_MAX at most; single rows)."""
    budget = models.budget.read_rate_budget(conn)
    rolled = roll_windows(budget, now)
    base = settings.public_base_url
    stuck, _ = fleet_stuck(conn, settings, budget, now)
    return Facts(
        runs=models.runs.last_runs(conn, kinds=CRON_KINDS, per_kind=1),
        reconnect=models.alerts.riders_to_reconnect(conn, limit=LISTED_MAX),
        webhooks=webhook_health(conn, settings, now),
        day_left=headroom(rolled)[1],
        reserve=reserve_size(rolled, settings.sync_now_reserve),
        stuck=stuck,
        dashboard=f"{base.rstrip('/')}/admin" if base else None,
    )


def evaluate(
    runtime: Runtime, *, force: bool = False, budget_s: float = DELIVERY_BUDGET_S
) -> Report:
    """Take the club's evaluation turn (unless another call had it within
    EVALUATE_EVERY, or with `force` EVALUATE_FORCED_EVERY), bring the open alerts in
    line with the facts, and deliver what is new, within `budget_s` in all. What could
    not be delivered is tried next time."""
    settings = runtime.settings
    report = Report()
    url = settings.alert_webhook_url
    if not url:
        return report
    now = runtime.clock()
    with runtime.db.connection() as conn:
        every = int((EVALUATE_FORCED_EVERY if force else EVALUATE_EVERY).total_seconds())
        if not models.alerts.take_evaluation_turn(conn, every_s=every, now=now):
            return report
        report.evaluated = True
        facts = gather(conn, settings, now)
        stored = models.alerts.open_alerts(conn)
        found = {
            (c.kind, c.subject): c
            for c in conditions(facts, now, [(a.kind, a.subject) for a in stored])
        }
        for alert in stored:
            if (alert.kind, alert.subject) not in found:
                models.alerts.clear_alert(conn, alert_id=alert.id, now=now)
                report.cleared += 1
        known = {(a.kind, a.subject) for a in stored}
        for key, condition in found.items():
            report.opened += key not in known
            models.alerts.open_alert(
                conn,
                kind=condition.kind,
                subject=condition.subject,
                title=condition.title,
                detail=condition.detail,
                now=now,
            )
        models.alerts.prune_cleared(conn, before=now - KEEP_CLEARED)
        pending = messages(models.alerts.unsent(conn, limit=LISTED_MAX * len(KINDS)))
        daily = digest(models.alerts.open_alerts(conn), models.alerts.digest_sent_at(conn), now)
    if daily is not None:
        pending.append(daily)
    _deliver(runtime, pending, report, budget_s=budget_s)
    with runtime.db.connection() as conn:
        for message in report.sent:
            if message.kind == DIGEST:
                models.alerts.record_digest(conn, now=now)
            else:
                models.alerts.mark_sent(
                    conn, alert_ids=list(message.alert_ids), cleared=message.cleared, now=now
                )
        for message in report.failed:
            if message.alert_ids:
                models.alerts.count_attempt(conn, alert_ids=list(message.alert_ids))
    return report


def _deliver(runtime: Runtime, pending: list[Message], report: Report, *, budget_s: float) -> None:
    """POST each message, all within `budget_s` (each request's timeout is what is left);
    what did not get a 2xx in time stays unsent."""
    settings = runtime.settings
    url = settings.alert_webhook_url
    assert url is not None
    fmt = receiver_format(url, settings.alert_webhook_format)
    redact = _redactor(runtime).redact
    deadline = runtime.timer() + budget_s
    with requests.Session() as session:
        for message in pending:
            left = deadline - runtime.timer()
            if left <= 0.05:
                report.failed.append(message)
                continue
            safe = Message(
                kind=message.kind,
                subjects=tuple(redact(s) for s in message.subjects),
                title=redact(message.title),
                lines=tuple(redact(line) for line in message.lines),
                alert_ids=message.alert_ids,
                cleared=message.cleared,
            )
            target, body = request_for(fmt, url, safe)
            error: str | None = None
            try:
                answer = session.post(target, json=body, timeout=(min(left, 1.0), left))
                ok = 200 <= answer.status_code < 300
                status: int | None = answer.status_code
            except requests.RequestException as exc:
                ok, status, error = False, None, type(exc).__name__
            if ok:
                report.sent.append(message)
            else:
                report.failed.append(message)
                # Never the URL: a Slack or Discord webhook URL is a secret of its own.
                log.warning(
                    "alert not delivered",
                    extra={"kind": message.kind, "status": status, "error": error},
                )


def after_call(runtime: Runtime, kind: str, answer: dict[str, Any]) -> None:
    """The hook at the end of every cron call: evaluate the alerts if the club's turn
    has come and the call has time left; never raise (a call's answer is already
    recorded, and alerts must never break it)."""
    settings = runtime.settings
    if not settings.alert_webhook_url or kind not in CRON_KINDS:
        return
    elapsed = float(answer.get("duration_ms") or 0) / 1000
    left = settings.cron_time_budget_s + PLATFORM_SLACK_S - elapsed
    if left < MIN_TIME_LEFT_S:
        return
    worked = int(answer.get("succeeded") or 0) + int(answer.get("failed") or 0)
    failed = worked > 0 and int(answer.get("failed") or 0) == worked
    try:
        report = evaluate(runtime, force=failed, budget_s=min(DELIVERY_BUDGET_S, left))
    except Exception as exc:  # alerts are a side show: the call has its answer
        log.warning("alert evaluation failed", extra={"error": type(exc).__name__})
        return
    if report.evaluated and (report.sent or report.failed or report.opened or report.cleared):
        log.info(
            "alerts evaluated",
            extra={
                "opened": report.opened,
                "cleared": report.cleared,
                "sent": len(report.sent),
                "not_sent": len(report.failed),
            },
        )
