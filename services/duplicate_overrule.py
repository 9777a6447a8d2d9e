"""An operator's word on a pair of a rider's activities, against the duplicate rule:
checked (services/duplicates.py), stored, and the marks and the Eddington number
recomputed at once."""

from __future__ import annotations

from typing import Any

import models
from services.calls import Runtime
from services.duplicates import OverruleError, check_overrule, overrule_answer, stored_overrule


def overrule(
    runtime: Runtime,
    rider_id: int,
    *,
    activity_ids: list[int],
    verdict: str,
    keep: int | None = None,
) -> dict[str, Any]:
    """An operator's word on a pair of a rider's activities (Strava ids): `distinct`
    (never pair them), `duplicate` (pair them, keeping `keep`, by default the copy the
    rule would keep) or `auto` (back to the rule). Marks are recomputed at once, and the
    Eddington number with them."""
    check_overrule(activity_ids, verdict, keep)
    first, second = activity_ids
    now = runtime.clock()
    with runtime.db.connection() as conn:
        span = models.duplicates.activity_span(conn, rider_id=rider_id, strava_ids=activity_ids)
        owned = models.duplicates.count_rider_activities(
            conn, rider_id=rider_id, strava_ids=activity_ids
        )
        if span is None or owned != 2:
            raise OverruleError("activity_ids", "both activities must be this rider's")
        if verdict == "duplicate" and keep is None:
            keep = models.duplicates.better_copy(conn, strava_ids=activity_ids)
        stored_verdict, kept = stored_overrule(verdict, keep)
        models.duplicates.save_duplicate_overrule(
            conn,
            rider_id=rider_id,
            strava_ids=(first, second),
            verdict=stored_verdict,
            keep_strava_id=kept,
            now=now,
        )
        models.duplicates.mark_duplicates(conn, rider_id=rider_id, since=span[0], until=span[1])
        duplicates = models.duplicates.rider_duplicates(conn, rider_id=rider_id)
    with runtime.db.connection() as conn:
        eddington = models.activities.recompute_eddington(conn, rider_id=rider_id, now=now)
    return overrule_answer(rider_id, activity_ids, verdict, duplicates, eddington)
