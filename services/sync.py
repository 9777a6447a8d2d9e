"""Incremental sync: each due rider's activities since their cursor, minus an overlap."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import models
from services import schedule
from services.activities import listing_ended, newest_start, page_rows
from services.calls import SKIPPED, SUCCEEDED, Call, LeaseLost, Outcome, Runtime, bounded_call
from services.events import process_rider_events
from services.idle import Waiting
from services.planning import continue_replan, plan_riders, webhook_health
from services.progress import SYNC, Progress, listing, report_stop
from services.strava import PER_PAGE_MAX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListingStart:
    """Where a rider's listing starts: its `after`, first page, and newest start so far."""

    after: datetime
    page: int
    newest: datetime | None
    resumed: bool


def listing_start(lease: models.sync.RiderLease, overlap: timedelta) -> ListingStart:
    """Resume an unfinished listing at its next page (same `after`), or start a new one
    from the cursor (or connection time) less the overlap, so late uploads are caught."""
    if lease.sync_listing_after is not None and lease.sync_listing_page is not None:
        newest = max(
            (t for t in (lease.sync_cursor, lease.sync_listing_newest) if t is not None),
            default=None,
        )
        return ListingStart(lease.sync_listing_after, lease.sync_listing_page, newest, True)
    since = lease.sync_cursor or lease.connected_at
    return ListingStart(since - overlap, 1, lease.sync_cursor, False)


# While events arrive, a rider without activity:read_all still lists with the overlap
# one day in this many (by rider id, so not all on one day): an upload dated before the
# cursor whose event was lost waits at most this long.
OVERLAP_EVERY_DAYS = 7


@dataclass(frozen=True)
class ListingNeed:
    """What decides a listing's overlap (see listing_overlap)."""

    events_healthy: bool
    first_listing: bool
    read_all: bool
    rider_id: int


def listing_overlap(need: ListingNeed, overlap_days: float, now: datetime) -> timedelta:
    """How far before the cursor a new listing starts. Polling alone needs the overlap to
    catch uploads dated before the cursor (a ride uploaded late, out of order, or edited).
    While Strava's events arrive each such change has its own event, and the daily
    safety-net poll (for lost events) drops the overlap where it costs a request: without
    activity:read_all a listing ends only on an empty page, so the overlap's rides cost a
    second one. It keeps it on the rider's first listing (rides that ended just before
    the connection, uploaded after it), one day in OVERLAP_EVERY_DAYS, and with
    activity:read_all (a short page ends the listing: the overlap is free). When events
    stop, every poll takes it again, and it covers the days of silence."""
    full = timedelta(days=overlap_days)
    if not need.events_healthy or need.first_listing or need.read_all:
        return full
    day = int(now.timestamp() // 86400)
    if (day + need.rider_id) % OVERLAP_EVERY_DAYS == 0:
        return full
    return timedelta(0)


def sync_rider(
    call: Call,
    lease: models.sync.RiderLease,
    *,
    events_healthy: bool,
    progress: Progress | None = None,
    last_phase: bool = True,
    look_back: bool = False,
) -> Outcome:
    """List the rider's new activities page by page and store them.

    Each page is committed with where the listing resumes; the cursor moves only in the
    transaction of the last page, since the order of pages is not documented: until the
    listing is complete, nothing says which activities after the old cursor are stored.
    Each page's transaction also carries the rider's live progress when one is due (the
    end of the listing ends the run unless `last_phase` is false: Sync now goes on).

    With `look_back` (the scheduled poll's, not Sync now's) the rider's weekly look back,
    when due, replaces the overlap: the last LOOK_BACK_DAYS listed to an empty page.
    """
    outcome, _ = _sync_listing(
        call,
        lease,
        events_healthy=events_healthy,
        progress=progress,
        last_phase=last_phase,
        look_back=look_back,
    )
    return outcome


def _sync_listing(
    call: Call,
    lease: models.sync.RiderLease,
    *,
    events_healthy: bool,
    progress: Progress | None = None,
    last_phase: bool = True,
    look_back: bool = False,
) -> tuple[Outcome, bool]:
    """sync_rider, and whether the rider has webhook events waiting (looked at in the
    last page's transaction, so a rider without any costs no transaction more)."""
    settings = call.settings
    need = ListingNeed(
        events_healthy=events_healthy,
        first_listing=lease.last_synced_at is None,
        read_all=lease.read_all,
        rider_id=lease.rider_id,
    )
    now = call.now()
    looking_back = look_back and schedule.look_back_due(
        lease.rider_id,
        last_look_back_at=lease.last_look_back_at,
        connected_at=lease.connected_at,
        last_synced_at=lease.last_synced_at,
        now=now,
    )
    start = listing_start(lease, listing_overlap(need, settings.sync_overlap_days, now))
    if looking_back and not start.resumed:
        back = min(start.after, schedule.look_back_after(now))
        start = ListingStart(back, 1, lease.sync_cursor, False)
    # A listing cut short resumes as it began: only a look back's counts as one (an
    # ordinary one finishes first, and the look back waits for the next poll).
    looking_back = looking_back and schedule.lists_back(start.after, now)
    after = int(start.after.timestamp())
    newest, page = start.newest, start.page
    counts = {"pages": 0, "fetched": 0, "added": 0, "updated": 0, "races": 0}
    events_waiting = False

    def list_page(token: str) -> list[dict[str, Any]]:
        return call.strava.list_activities(token, after=after, page=page, per_page=PER_PAGE_MAX)

    while True:
        summaries = call.tokens.call(lease.rider_id, list_page)
        rows = page_rows(
            summaries,
            min_race_distance_km=settings.race_min_distance_km,
            route_trim_m=settings.club_route_trim_m if lease.shares_with_club else None,
        )
        # A look back trusts no short page: it reads to the empty one.
        ended = listing_ended(len(summaries), read_all=lease.read_all and not looking_back)
        page_newest = newest_start(rows)
        if page_newest is not None and (newest is None or page_newest > newest):
            newest = page_newest
        with call.db.connection() as conn:
            if not models.sync.hold_lease(
                conn, rider_id=lease.rider_id, lease_token=lease.lease_token
            ):
                raise LeaseLost()
            now = call.now()
            written = models.activities.upsert_activities(
                conn, rider_id=lease.rider_id, rows=rows, now=now
            )
            counts["pages"] += 1
            counts["fetched"] += len(summaries)
            counts["added"] += written.inserted
            counts["updated"] += written.updated
            counts["races"] += written.races_inserted
            if not ended:
                models.sync.record_sync_listing(
                    conn,
                    rider_id=lease.rider_id,
                    lease_token=lease.lease_token,
                    after=start.after,
                    next_page=page + 1,
                    newest=newest,
                    now=now,
                )
            else:
                models.sync.finish_sync(
                    conn,
                    rider_id=lease.rider_id,
                    lease_token=lease.lease_token,
                    sync_cursor=newest,
                    added=counts["added"],
                    updated=counts["updated"],
                    now=now,
                    looked_back=looking_back,
                )
                # New or edited rides (a resumed listing may have stored them earlier).
                if counts["added"] or counts["updated"] or start.resumed:
                    models.activities.recompute_eddington(conn, rider_id=lease.rider_id, now=now)
                events_waiting = models.webhooks.has_pending_events(conn, rider_id=lease.rider_id)
            if progress is not None:
                progress.report(conn, listing(counts, ended=ended, finished=ended and last_phase))
        if ended:
            return Outcome("rider_id", lease.rider_id, SUCCEEDED, counts=counts), events_waiting
        page += 1


def _sync_or_record_failure(
    call: Call, lease: models.sync.RiderLease, *, events_healthy: bool
) -> Outcome:
    progress = Progress(lease.rider_id, call.now)
    try:
        outcome, events_waiting = _sync_listing(
            call, lease, events_healthy=events_healthy, progress=progress, look_back=True
        )
    except Exception as exc:  # each rider is isolated: one failing never stops the others
        outcome = call.settle_rider(lease, exc)
        report_stop(call, progress, SYNC, outcome)
        return outcome
    if not events_waiting:
        return outcome
    # The rider's webhook events ride along: creates the listing stored cost nothing.
    events = process_rider_events(call, lease)
    if events:
        outcome.counts["events"] = sum(o.counts.get("events", 0) for o in events)
    return outcome


def run_sync(runtime: Runtime, *, limit: int, everyone: bool = False) -> dict[str, Any]:
    """One bounded `sync-strava` call: claim due riders, sync them, answer the contract.

    With `everyone` (the operator's "everyone now"), every active auto-sync rider not
    synced within SYNC_MIN_INTERVAL_S is due, whatever their planned poll; the budget's
    shares, the leases, backoffs and the round hold as always."""
    settings = runtime.settings
    events_healthy = False  # decided in the claim's transaction, once for the call

    def claim(conn: models.Conn, call: Call) -> list[models.sync.RiderLease]:
        nonlocal events_healthy
        events_healthy = webhook_health(conn, settings, call.started_at).healthy
        # The calls of one loop share a round: what one synced is not due in the next.
        models.sync.open_sync_round(conn, now=call.started_at)
        return models.sync.claim_riders_for_sync(
            conn,
            lease_token=call.lease_token,
            limit=limit,
            lease_ttl_s=settings.lease_ttl_s,
            min_interval_s=settings.sync_min_interval_s,
            now=call.started_at,
            everyone=everyone,
        )

    def wrap_up(call: Call, outcomes: list[Outcome]) -> None:
        # What this call found moves its riders' next polls (a find brings one forward);
        # the rest of the club keeps its plan unless the plan itself changed.
        synced = [o.id for o in outcomes if o.status == SUCCEEDED]
        with call.db.connection() as conn:
            plan_riders(conn, synced, settings, call.now())
        continue_replan(
            call.db, settings, call.runtime.clock, call.runtime.timer, deadline=call.deadline
        )

    def remaining(conn: models.Conn, call: Call) -> int:
        left = models.sync.count_riders_due_for_sync(
            conn,
            min_interval_s=settings.sync_min_interval_s,
            now=call.started_at,
            everyone=everyone,
        )
        if left == 0:
            models.sync.close_sync_round(conn, now=call.now())
        return left

    return bounded_call(
        runtime,
        "sync-strava",
        claim=claim,
        work=lambda call, lease: _sync_or_record_failure(
            call, lease, events_healthy=events_healthy
        ),
        hand_back=_hand_back,
        remaining=remaining,
        wrap_up=wrap_up,
        waiting=lambda conn, call: Waiting(
            **models.sync.sync_waiting(
                conn,
                min_interval_s=settings.sync_min_interval_s,
                now=call.now(),
                everyone=everyone,
            )
        ),
    )


def _hand_back(call: Call, lease: models.sync.RiderLease) -> Outcome:
    """A rider claimed but not started before the call stopped: released untouched."""
    return Outcome("rider_id", lease.rider_id, SKIPPED, call.hand_back_rider(lease))
