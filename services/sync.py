"""Incremental sync: each due rider's activities since their cursor, minus an overlap."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import models
from services.activities import listing_ended, newest_start, page_rows
from services.calls import SKIPPED, SUCCEEDED, Call, LeaseLost, Outcome, Runtime, bounded_call
from services.strava import PER_PAGE_MAX

log = logging.getLogger(__name__)


def listing_after(lease: models.RiderLease, overlap: timedelta) -> int:
    """Epoch seconds to list from: the cursor (or connection time) less the overlap, so
    late uploads and edits are caught."""
    since = lease.sync_cursor or lease.connected_at
    return int((since - overlap).timestamp())


def sync_rider(call: Call, lease: models.RiderLease) -> Outcome:
    """List the rider's new activities page by page and store them.

    Each page is committed as it comes; the cursor moves only in the transaction of the
    last page, since the order of pages is not documented and an interrupted listing must
    be repeated from the old cursor, not skipped past.
    """
    settings = call.settings
    after = listing_after(lease, timedelta(days=settings.sync_overlap_days))
    newest: datetime | None = lease.sync_cursor
    counts = {"pages": 0, "fetched": 0, "added": 0, "updated": 0, "races": 0}
    page = 1

    def list_page(token: str) -> list[dict[str, Any]]:
        return call.strava.list_activities(token, after=after, page=page, per_page=PER_PAGE_MAX)

    while True:
        summaries = call.tokens.call(lease.rider_id, list_page)
        rows = page_rows(summaries, min_race_distance_km=settings.race_min_distance_km)
        ended = listing_ended(len(summaries), read_all=lease.read_all)
        page_newest = newest_start(rows)
        if page_newest is not None and (newest is None or page_newest > newest):
            newest = page_newest
        with call.db.connection() as conn:
            if not models.hold_lease(conn, rider_id=lease.rider_id, lease_token=lease.lease_token):
                raise LeaseLost()
            written = models.upsert_activities(conn, rider_id=lease.rider_id, rows=rows)
            counts["pages"] += 1
            counts["fetched"] += len(summaries)
            counts["added"] += written.inserted
            counts["updated"] += written.updated
            counts["races"] += written.races_inserted
            if ended:
                models.finish_sync(
                    conn,
                    rider_id=lease.rider_id,
                    lease_token=lease.lease_token,
                    sync_cursor=newest,
                    added=counts["added"],
                    updated=counts["updated"],
                )
                if counts["added"] or counts["updated"]:  # new or edited rides
                    models.recompute_eddington(conn, rider_id=lease.rider_id)
        if ended:
            return Outcome("rider_id", lease.rider_id, SUCCEEDED, counts=counts)
        page += 1


def _sync_or_record_failure(call: Call, lease: models.RiderLease) -> Outcome:
    try:
        return sync_rider(call, lease)
    except Exception as exc:  # each rider is isolated: one failing never stops the others
        return call.settle_rider(lease, exc)


def run_sync(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """One bounded `sync-strava` call: claim due riders, sync them, answer the contract."""
    settings = runtime.settings
    return bounded_call(
        runtime,
        "sync-strava",
        claim=lambda conn, call: models.claim_riders_for_sync(
            conn,
            lease_token=call.lease_token,
            limit=limit,
            lease_ttl_s=settings.lease_ttl_s,
            min_interval_s=settings.sync_min_interval_s,
        ),
        work=_sync_or_record_failure,
        hand_back=_hand_back,
        remaining=lambda conn: models.count_riders_due_for_sync(
            conn, min_interval_s=settings.sync_min_interval_s
        ),
    )


def _hand_back(call: Call, lease: models.RiderLease) -> Outcome:
    """A rider claimed but not started before the call stopped: released untouched."""
    return Outcome("rider_id", lease.rider_id, SKIPPED, call.hand_back_rider(lease))
