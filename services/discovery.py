"""Discover: walk each rider's whole history backwards, a page at a time, to its start.

A walk starts at an instant taken from the runtime's clock (anything newer is
sync-strava's job) and lists `before` a cursor that moves down to the oldest start_date
each page held. Every page is written with its cursor and progress in one transaction,
so a call that dies loses nothing and repeats at most the page it was fetching. The walk
ends on an empty page, a page with nothing older than the cursor, or a short page under
`activity:read_all`; then the activities it did not see (gone from Strava) are removed,
unless that would remove an implausible share of the rider's history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import models
from services import planning, schedule
from services.activities import listing_ended, oldest_start, page_rows
from services.budget import roll_windows
from services.calls import SKIPPED, SUCCEEDED, Call, LeaseLost, Outcome, Runtime, bounded_call
from services.clock import iso
from services.errors import NotConnected, UnknownRider
from services.idle import Waiting
from services.progress import HISTORY, Progress, Report, report_stop, walk
from services.status import history_percent, history_requests_left
from services.strava import PER_PAGE_MAX

log = logging.getLogger(__name__)

# A page is started only if the call has this many times the slowest page so far left:
# a request cut off by the deadline still costs one from Strava's budget.
PAGE_TIME_MARGIN = 1.5
# Reconciliation refuses to remove more than this share of a rider's activities (or
# RECONCILE_FLOOR, whichever is larger): a Strava glitch must not wipe a history.
RECONCILE_SHARE = 0.05
RECONCILE_FLOOR = 25


class WalkChanged(LeaseLost):
    """The walk was reset (a full refresh) while this call held the rider."""


# --- pure decisions ------------------------------------------------------------------


@dataclass(frozen=True)
class PageStep:
    """Where the walk goes after a page: the new cursor, and whether it has ended."""

    cursor: datetime
    ended: bool


def listing_before(bound: datetime) -> int:
    """`before` (epoch seconds, exclusive) for a page below `bound`.

    One second past the bound's own second: two activities can share a start second (two
    devices recording one ride), so the boundary second is listed again rather than
    skipped; the upsert makes the re-seen row harmless.
    """
    return math.floor(bound.timestamp()) + 1


def next_step(
    page_size: int, oldest: datetime | None, *, cursor: datetime, read_all: bool
) -> PageStep:
    """The walk's next cursor and whether it has ended, from one page.

    Ended: an empty page; a page with nothing older than the cursor (only the re-seen
    boundary second); or, with activity:read_all, a short page (without it Strava drops
    private activities after paging, so a short page can come before more).
    """
    if page_size == 0 or oldest is None or oldest >= cursor:
        return PageStep(cursor=cursor, ended=True)
    return PageStep(cursor=oldest, ended=listing_ended(page_size, read_all=read_all))


def reconcile_allowed(unseen: int, total: int) -> bool:
    """May a finished walk delete `unseen` of the rider's `total` activities?"""
    return unseen <= max(RECONCILE_FLOOR, total * RECONCILE_SHARE)


def time_for_another_page(time_left_s: float, slowest_page_s: float | None) -> bool:
    """Start another page only if it can finish within the call's time budget."""
    if slowest_page_s is None:
        return time_left_s > 0
    return time_left_s > slowest_page_s * PAGE_TIME_MARGIN


def completion_day(requests_left: int, here: planning.Situation, now: datetime) -> date | None:
    """The day a rider's history walk should complete on, from the backfill plan: the
    recent races' details go first, then discover walks every incomplete history a page
    at a time, fewest pages first, so each other history takes at most as many pages as
    this one has left (and a typical history's at most) before it is done. None when no
    day gives the backfill anything."""
    others = max(0, here.backlog["histories"] - 1)
    others_requests = others * min(requests_left, planning.TYPICAL_HISTORY_PAGES)
    needed = here.backlog["recent_races"] + requests_left + others_requests
    return schedule.projected_completion(needed, here.state, here.needs, now)


# --- one rider -----------------------------------------------------------------------


@dataclass
class WalkOutcome(Outcome):
    """A rider taken by discover: its counts, whether the walk completed, how far back."""

    complete: bool = False
    oldest: datetime | None = None

    def as_item(self) -> dict[str, Any]:
        return {**super().as_item(), "complete": self.complete, "oldest": iso(self.oldest)}


@dataclass
class WalkProgress:
    """What one call did for one rider so far (kept when the call stops it midway)."""

    rider_id: int
    oldest: datetime | None = None
    complete: bool = False
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("pages", "fetched", "added", "updated", "races", "removed"), 0
        )
    )

    def outcome(
        self, status: str, *, detail: str | None = None, error: str | None = None
    ) -> WalkOutcome:
        return WalkOutcome(
            "rider_id",
            self.rider_id,
            status,
            detail,
            dict(self.counts),
            error,
            complete=self.complete,
            oldest=self.oldest,
        )


def _page_before(call: Call, before: int) -> Callable[[str], list[dict[str, Any]]]:
    """One listing request of the walk, for TokenKeeper.call."""
    return lambda token: call.strava.list_activities(token, before=before, per_page=PER_PAGE_MAX)


def walk_rider(
    call: Call,
    lease: models.sync.RiderLease,
    progress: WalkProgress,
    *,
    live: Progress | None = None,
    plan: planning.Situation | None = None,
) -> WalkOutcome:
    """Walk one rider's history back for as long as the call's budgets allow, telling the
    rider's widget as it goes (`live`) and estimating when the walk completes (`plan`,
    the backfill plan at the call's start)."""
    settings = call.settings
    stored = models.discovery.WalkPosition(lease.history_walk_started_at, lease.history_cursor)
    started = stored.started_at
    if started is None:  # a new walk: its upper bound is now, by the runtime's clock
        # (seen_at, which reconciliation compares with it, is set by that same clock)
        started = call.now()
    cursor = stored.cursor or started
    progress.oldest = stored.cursor
    found = lease.history_activities if stored.started_at is not None else 0
    slowest: float | None = None
    while True:
        began = call.runtime.timer()
        summaries = call.tokens.call(lease.rider_id, _page_before(call, listing_before(cursor)))
        rows = page_rows(
            summaries,
            min_race_distance_km=settings.race_min_distance_km,
            route_trim_m=settings.club_route_trim_m if lease.shares_with_club else None,
        )
        step = next_step(len(summaries), oldest_start(rows), cursor=cursor, read_all=lease.read_all)
        with call.db.connection() as conn:
            now = call.now()
            if not models.sync.hold_lease(
                conn, rider_id=lease.rider_id, lease_token=lease.lease_token
            ):
                raise LeaseLost()
            if models.discovery.walk_position(conn, rider_id=lease.rider_id) != stored:
                raise WalkChanged()
            seen = models.discovery.walk_seen_ids(
                conn,
                rider_id=lease.rider_id,
                strava_ids=[r["strava_id"] for r in rows],
                since=started,
            )
            written = models.activities.upsert_activities(
                conn, rider_id=lease.rider_id, rows=rows, now=now, seen_since=started
            )
            new = [r for r in rows if r["strava_id"] not in seen]
            new_races = sum(1 for r in new if r["is_race"])
            found += len(new)
            walked = {
                "history_walk_started_at": started,
                "history_cursor": step.cursor,
                "history_activities": found,
                "athlete_created_at": lease.athlete_created_at,
            }
            models.discovery.record_walk_page(
                conn,
                rider_id=lease.rider_id,
                lease_token=lease.lease_token,
                walk_started_at=started,
                cursor=step.cursor,
                activities=len(new),
                races=new_races,
                now=now,
                estimated_complete_on=(
                    completion_day(history_requests_left(walked), plan, now)
                    if plan is not None and not step.ended
                    else None
                ),
            )
            # None when reconciliation was refused (the walk completes all the same)
            removed = _finish_walk(conn, lease, started, now) if step.ended else 0
            if live is not None:
                live.report(conn, _walk_report(lease, walked, progress, written.inserted, step))
        stored = models.discovery.WalkPosition(started, step.cursor)
        cursor = step.cursor
        counts = progress.counts
        counts["pages"] += 1
        counts["fetched"] += len(summaries)
        counts["added"] += written.inserted
        counts["updated"] += written.updated
        counts["races"] += new_races
        counts["removed"] += removed or 0
        progress.oldest = cursor if cursor < started else progress.oldest
        if step.ended:
            progress.complete = True
            refused = "reconcile_refused" if removed is None else None
            return progress.outcome(SUCCEEDED, detail=refused)
        slowest = max(slowest or 0.0, call.runtime.timer() - began)
        if call.should_stop() or not time_for_another_page(call.time_left(), slowest):
            break
    with call.db.connection() as conn:  # progress is kept; the next call resumes from it
        models.sync.release_lease(conn, rider_id=lease.rider_id, lease_token=lease.lease_token)
        if live is not None:
            live.report(conn, _walk_report(lease, walked, progress, 0, None))
    return progress.outcome(SUCCEEDED)


def _walk_report(
    lease: models.sync.RiderLease,
    walked: dict[str, Any],
    progress: WalkProgress,
    inserted: int,
    step: PageStep | None,
) -> Report:
    """The live message of a page (`step`), or of the round's end (None)."""
    complete = step is not None and step.ended
    percent = history_percent(
        complete=complete,
        walk_started_at=walked["history_walk_started_at"],
        cursor=walked["history_cursor"],
        floor=lease.athlete_created_at,
    )
    cursor = walked["history_cursor"]
    oldest = cursor if cursor < walked["history_walk_started_at"] else None
    return walk(
        percent=percent,
        oldest=oldest,
        added=progress.counts["added"] + inserted,
        complete=complete,
        finished=step is None,
    )


def _finish_walk(
    conn: models.Conn, lease: models.sync.RiderLease, started: datetime, now: datetime
) -> int | None:
    """Complete the walk, removing what it did not see unless that looks like a glitch;
    the number removed, or None when reconciliation was refused."""
    found = models.discovery.count_unseen_by_walk(
        conn, rider_id=lease.rider_id, walk_started_at=started
    )
    removed: int | None = None
    refusal: str | None = None
    if reconcile_allowed(found.unseen, found.total):
        removed = models.discovery.delete_unseen_by_walk(
            conn, rider_id=lease.rider_id, walk_started_at=started
        )
    else:
        refusal = (
            f"reconciliation refused: the walk did not see {found.unseen} of {found.total}"
            " activities; nothing was deleted"
        )
        log.warning(
            "history reconciliation refused",
            extra={"rider_id": lease.rider_id, "unseen": found.unseen, "total": found.total},
        )
    # The whole history is in now, so the Eddington number can count every ride.
    models.activities.recompute_eddington(conn, rider_id=lease.rider_id, now=now)
    models.discovery.complete_walk(
        conn,
        rider_id=lease.rider_id,
        lease_token=lease.lease_token,
        now=now,
        error_class="reconcile_refused" if refusal else None,
        message=refusal,
    )
    return removed


def _walk_or_record_failure(
    call: Call, lease: models.sync.RiderLease, plan: planning.Situation | None = None
) -> Outcome:
    progress = WalkProgress(lease.rider_id)
    live = Progress(lease.rider_id, call.now)
    try:
        return walk_rider(call, lease, progress, live=live, plan=plan)
    except Exception as exc:  # each rider is isolated: one failing never stops the others
        outcome = call.settle_rider(lease, exc)
        walked = progress.outcome(outcome.status, detail=outcome.detail, error=outcome.error)
        report_stop(call, live, HISTORY, walked)
        return walked


def _hand_back(call: Call, lease: models.sync.RiderLease) -> Outcome:
    """A rider claimed but not started before the call stopped: released untouched."""
    return WalkProgress(lease.rider_id).outcome(SKIPPED, detail=call.hand_back_rider(lease))


# --- the call ------------------------------------------------------------------------


def run_discover(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """One bounded `discover` call: claim riders with incomplete history, walk them."""
    plans: list[planning.Situation] = []  # the backfill plan, read once a call

    def claim(conn: models.Conn, call: Call) -> list[models.sync.RiderLease]:
        leases = models.discovery.claim_riders_for_discovery(
            conn,
            lease_token=call.lease_token,
            limit=limit,
            lease_ttl_s=runtime.settings.lease_ttl_s,
            now=call.started_at,
        )
        if leases:
            budget = roll_windows(models.budget.read_rate_budget(conn), call.started_at)
            plans.append(planning.situation(conn, budget, runtime.settings, call.started_at))
        return leases

    return bounded_call(
        runtime,
        "discover",
        claim=claim,
        work=lambda call, lease: _walk_or_record_failure(call, lease, plans[0] if plans else None),
        hand_back=_hand_back,
        remaining=lambda conn, call: models.discovery.count_riders_due_for_discovery(
            conn, now=call.started_at
        ),
        waiting=lambda conn, call: Waiting(
            **models.discovery.discovery_waiting(conn, now=call.now())
        ),
    )


# --- operator actions and status -----------------------------------------------------


def progress_json(progress: models.discovery.DiscoveryProgress) -> dict[str, Any]:
    """A rider's walk progress as JSON (ISO 8601 UTC times)."""
    return {
        "rider_id": progress.rider_id,
        "pages": progress.pages,
        "activities": progress.activities,
        "races": progress.races,
        "oldest_reached": iso(progress.oldest_reached),
        "complete": progress.complete,
        "complete_at": iso(progress.complete_at),
        "walk_started_at": iso(progress.walk_started_at),
        "full_refresh_requested_at": iso(progress.full_refresh_requested_at),
        "last_progress_at": iso(progress.last_progress_at),
    }


def request_full_refresh(runtime: Runtime, rider_id: int) -> dict[str, Any]:
    """Queue a new walk of the rider's whole history; answer its (reset) walk state.

    Raises UnknownRider, or NotConnected when there is nothing to walk with.
    """
    with runtime.db.connection() as conn:
        asked = models.discovery.request_full_refresh(conn, rider_id=rider_id, now=runtime.clock())
        progress = (
            models.discovery.discovery_progress(conn, rider_id=rider_id) if asked.queued else None
        )
    if not asked.rider_exists:
        raise UnknownRider(f"no rider with id {rider_id}")
    if progress is None:
        raise NotConnected(f"rider {rider_id} has no active Strava connection")
    log.info("full refresh requested", extra={"rider_id": rider_id})
    return progress_json(progress)
