"""Enrich: one detailed fetch (`GET /activities/{id}`) per race, for its race page.

Races are claimed newest first under a per-race lease. A race Strava answers 404 for is
gone and removed; any other failure counts an attempt and backs the race off
exponentially, until the maximum leaves it `failed` for good. Stops that are not the
race's fault (rate limit, time budget, a rider who must reconnect) hand it back untouched.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import models
from services.activities import as_integer, as_number
from services.calls import SKIPPED, SUCCEEDED, Call, LeaseLost, Outcome, Runtime, bounded_call
from services.idle import Waiting
from services.places import row_place, strava_place
from services.progress import Progress
from services.progress import races as race_progress
from services.routes import trim_route
from services.schedule import RECENT_RACE_DAYS, WorkClass, race_class
from services.sharing import retrim_routes
from services.strava import NotFound
from services.tokens import NeedsReauth

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=12)
# Enough for a long brevet's kilometre splits, small enough to keep a row light.
MAX_LAPS = 100
MAX_SPLITS = 1200
MAX_BEST_EFFORTS = 30
_STATS = (
    "average_cadence",
    "average_watts",
    "weighted_average_watts",
    "max_watts",
    "kilojoules",
    "average_heartrate",
    "max_heartrate",
    "elev_high",
    "elev_low",
    "suffer_score",
)


# --- pure decisions ------------------------------------------------------------------


def enrichment_backoff(attempts_before: int) -> timedelta:
    """How long a race waits after its (attempts_before + 1)th failure: 5 min, doubling."""
    exponent = min(max(attempts_before, 0), 20)
    return min(BACKOFF_MAX, BACKOFF_BASE * (2**exponent))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _lap(lap: dict[str, Any]) -> dict[str, Any]:
    return {
        "lap_index": as_integer(lap.get("lap_index")),
        "name": _text(lap.get("name")),
        "distance_m": as_number(lap.get("distance")),
        "elapsed_time_s": as_integer(lap.get("elapsed_time")),
        "moving_time_s": as_integer(lap.get("moving_time")),
        "average_speed_mps": as_number(lap.get("average_speed")),
        "max_speed_mps": as_number(lap.get("max_speed")),
        "total_elevation_gain_m": as_number(lap.get("total_elevation_gain")),
        "average_watts": as_number(lap.get("average_watts")),
        "average_heartrate": as_number(lap.get("average_heartrate")),
    }


def _split(split: dict[str, Any]) -> dict[str, Any]:
    return {
        "split": as_integer(split.get("split")),
        "distance_m": as_number(split.get("distance")),
        "elapsed_time_s": as_integer(split.get("elapsed_time")),
        "moving_time_s": as_integer(split.get("moving_time")),
        "elevation_difference_m": as_number(split.get("elevation_difference")),
        "average_speed_mps": as_number(split.get("average_speed")),
    }


def _best_effort(effort: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _text(effort.get("name")),
        "distance_m": as_number(effort.get("distance")),
        "elapsed_time_s": as_integer(effort.get("elapsed_time")),
        "moving_time_s": as_integer(effort.get("moving_time")),
        "pr_rank": as_integer(effort.get("pr_rank")),
    }


def race_details(detail: dict[str, Any]) -> dict[str, Any]:
    """What a race page wants from the detailed activity, summarized to stay small.

    Segment efforts, stream-like data and photo URLs are left out (large, and available
    from Strava when a page really needs them); laps and splits keep their figures only.
    """
    gear = detail.get("gear")
    gear = gear if isinstance(gear, dict) else None
    photos = detail.get("photos")
    photos = photos if isinstance(photos, dict) else {}
    photo_count = as_integer(photos.get("count"))
    if photo_count is None:
        photo_count = as_integer(detail.get("total_photo_count")) or 0
    return {
        "calories": as_number(detail.get("calories")),
        "device_name": _text(detail.get("device_name")),
        "gear": {"id": _text(gear.get("id")), "name": _text(gear.get("name"))} if gear else None,
        "photo_count": photo_count,
        "segment_effort_count": len(_dicts(detail.get("segment_efforts"))),
        "stats": {k: as_number(detail[k]) for k in _STATS if as_number(detail.get(k)) is not None},
        "laps": [_lap(lap) for lap in _dicts(detail.get("laps"))[:MAX_LAPS]],
        "splits_metric": [_split(s) for s in _dicts(detail.get("splits_metric"))[:MAX_SPLITS]],
        "best_efforts": [
            _best_effort(e) for e in _dicts(detail.get("best_efforts"))[:MAX_BEST_EFFORTS]
        ],
    }


def full_polyline(detail: dict[str, Any]) -> str | None:
    """The detailed activity's full-resolution track, if it has one."""
    activity_map = detail.get("map")
    activity_map = activity_map if isinstance(activity_map, dict) else {}
    return _text(activity_map.get("polyline")) or None


# --- one race ------------------------------------------------------------------------


def _race_outcome(race: models.enrichment.RaceLease, status: str, **more: Any) -> Outcome:
    return Outcome(
        "activity_id", race.strava_id, status, counts={"rider_id": race.rider_id}, **more
    )


def enrich_race(call: Call, race: models.enrichment.RaceLease) -> Outcome:
    """Fetch one race's detailed activity and store its details (or remove it on a 404)."""
    try:
        # A recent race keeps what riders see fresh: it counts before old history. (Sync
        # now's own races stay Sync now's.)
        work_class = call.budget.work_class
        if work_class is not WorkClass.SYNC_NOW:
            work_class = race_class(race.start_date, call.started_at)
        with call.budget.working_as(work_class):
            detail = call.tokens.call(
                race.rider_id, lambda token: call.strava.get_activity(token, race.strava_id)
            )
    except NotFound:
        with call.db.connection() as conn:
            if not models.enrichment.remove_race(
                conn, strava_id=race.strava_id, lease_token=call.lease_token
            ):
                raise LeaseLost() from None
        log.info(
            "race gone from Strava: removed",
            extra={"rider_id": race.rider_id, "activity_id": race.strava_id},
        )
        return _race_outcome(race, SUCCEEDED, detail="removed")
    polyline = full_polyline(detail)
    trim = call.settings.club_route_trim_m
    with call.db.connection() as conn:
        stored = models.enrichment.finish_enrichment(
            conn,
            strava_id=race.strava_id,
            lease_token=call.lease_token,
            description=_text(detail.get("description")),
            polyline=polyline,
            details=race_details(detail),
            now=call.now(),
            club_polyline=trim_route(polyline, trim),
            club_polyline_trim_m=trim,
        )
        if stored:  # Strava's location fields of the detail, else the offline table
            models.enrichment.store_detail_place(
                conn,
                strava_id=race.strava_id,
                place=row_place(strava_place(detail)),
                now=call.now(),
            )
    if not stored:
        raise LeaseLost()
    return _race_outcome(race, SUCCEEDED)


def _enrich_or_record_failure(call: Call, race: models.enrichment.RaceLease) -> Outcome:
    try:
        return enrich_race(call, race)
    except Exception as exc:  # each race is isolated: one failing never stops the others
        outcome, error_class = call.failure("activity_id", race.strava_id, exc)
        outcome.counts = {"rider_id": race.rider_id}
        with call.db.connection() as conn:
            if error_class is None:
                models.enrichment.release_races(
                    conn, lease_token=call.lease_token, strava_ids=[race.strava_id]
                )
            else:
                models.enrichment.record_enrichment_failure(
                    conn,
                    strava_id=race.strava_id,
                    lease_token=call.lease_token,
                    message=f"{error_class}: {outcome.error or error_class}",
                    backoff_s=enrichment_backoff(race.attempts).total_seconds(),
                    now=call.now(),
                )
                outcome.counts["attempts"] = race.attempts + 1
        if isinstance(exc, NeedsReauth):  # the rider's problem, not the race's
            outcome.status, outcome.error = SKIPPED, None
        return outcome


def _hand_back(call: Call, race: models.enrichment.RaceLease) -> Outcome:
    """A race claimed but not started before the call stopped: release it untouched."""
    with call.db.connection() as conn:
        models.enrichment.release_races(
            conn, lease_token=call.lease_token, strava_ids=[race.strava_id]
        )
    return _race_outcome(race, SKIPPED, detail=call.stop_reason())


def enrich_races(call: Call, races: list[models.enrichment.RaceLease]) -> list[Outcome]:
    """Enrich claimed races on the call's pool; those not reached are handed back."""
    return call.run(
        races,
        lambda race: _enrich_or_record_failure(call, race),
        lambda race: _hand_back(call, race),
    )


def enrich_rider_races(
    call: Call, rider_id: int, *, limit: int, live: Progress | None = None
) -> list[Outcome]:
    """Claim and enrich up to `limit` due recent races of one rider within `call`, newest
    first. Older races are the backfill's: a rider's press must not spend the club's top
    priority on their history. `live` tells the rider's widget how many there are."""
    now = call.now()
    with call.db.connection() as conn:
        races = models.enrichment.claim_races_for_enrichment(
            conn,
            lease_token=call.lease_token,
            limit=limit,
            lease_ttl_s=call.settings.lease_ttl_s,
            max_attempts=call.settings.enrich_max_attempts,
            now=now,
            recent_since=now - timedelta(days=RECENT_RACE_DAYS),
            rider_id=rider_id,
            started_since=now - timedelta(days=RECENT_RACE_DAYS),
        )
        if live is not None and races:
            live.report(conn, race_progress(0, len(races)))
    return enrich_races(call, races)


# --- the call ------------------------------------------------------------------------


def run_enrich(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """One bounded `enrich` call: claim due races, fetch their details, answer."""
    settings = runtime.settings
    old_share_spent = False

    def claim(conn: models.Conn, call: Call) -> list[models.enrichment.RaceLease]:
        # Old races whose share is spent are left unclaimed: claimed beside recent ones,
        # the first refused would stop the whole call, recent races with it.
        nonlocal old_share_spent
        old_share_spent = not call.budget.share_left(WorkClass.ENRICH_OLD)
        recent_since = call.started_at - timedelta(days=RECENT_RACE_DAYS)
        return models.enrichment.claim_races_for_enrichment(
            conn,
            lease_token=call.lease_token,
            limit=limit,
            lease_ttl_s=settings.lease_ttl_s,
            max_attempts=settings.enrich_max_attempts,
            now=call.started_at,
            recent_since=recent_since,
            started_since=recent_since if old_share_spent else None,
        )

    def wrap_up(call: Call, outcomes: list[Outcome]) -> None:
        if old_share_spent:  # the old races wait for their share: the call says so
            with call.budget.working_as(WorkClass.ENRICH_OLD):
                call.budget.check_share()

    return bounded_call(
        runtime,
        "enrich",
        claim=claim,
        work=_enrich_or_record_failure,
        hand_back=_hand_back,
        remaining=lambda conn, call: _remaining(runtime, conn, call),
        wrap_up=wrap_up,
        waiting=lambda conn, call: Waiting(
            **models.enrichment.enrichment_waiting(
                conn, max_attempts=settings.enrich_max_attempts, now=call.now()
            )
        ),
        share_class=_share_class,
    )


def _share_class(conn: models.Conn, call: Call) -> WorkClass:
    """The class whose share lets an enrich call claim: recent races' while one is due.
    The claim takes recent races first and each request is counted as its race's class,
    so old races stay within their own share; judged by the old races' share alone, the
    call would claim nothing all the while discovery holds that share (the backfill's
    first days), and recent races would wait for discovery to end."""
    recent = models.enrichment.race_due_since(
        conn,
        max_attempts=call.settings.enrich_max_attempts,
        now=call.started_at,
        since=call.started_at - timedelta(days=RECENT_RACE_DAYS),
    )
    return WorkClass.ENRICH_RECENT if recent else WorkClass.ENRICH_OLD


def _remaining(runtime: Runtime, conn: models.Conn, call: Call) -> int:
    """The races still due; first, with the time left, the club's stored routes are cut
    again if the trim changed (the enrich call is the routes' job)."""
    retrim_routes(runtime, time_left=call.time_left)
    return models.enrichment.count_races_due_for_enrichment(
        conn, max_attempts=runtime.settings.enrich_max_attempts, now=call.started_at
    )
