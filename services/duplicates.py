"""One ride recorded twice: riders often record a ride on a bike computer and a phone,
and both reach Strava.

Detection is one SQL statement (models.duplicates.mark_duplicates), run whenever a page of
activities writes something: per rider, two activities of the same kind (rides, runs,
else the same sport) whose time ranges overlap for at least 70% of the longer one and
whose distances differ by at most 15% are one ride. Both rows stay; the lesser copy is
marked `duplicate_of` the one kept (a bike computer over a phone, then the longer, then
the first upload). The mark is recomputed from the rows each time, so an edit that makes
them differ undoes it, and deleting the kept one unmarks the copy (on delete set null).
The Eddington number leaves copies out. An operator can overrule a pair
(services/duplicate_overrule.py).

Here, without I/O: what an operator's overrule may say and what is stored for it, and
how copies are shown.
"""

from __future__ import annotations

from typing import Any

VERDICTS = ("distinct", "duplicate", "auto")


class OverruleError(ValueError):
    """The operator's request does not name a pair of this rider's activities."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_overrule(activity_ids: list[int], verdict: str, keep: int | None) -> None:
    """Refuse an overrule that gives no known verdict, does not name two different
    activities, or names a copy to keep other than for `duplicate` or outside the pair."""
    if verdict not in VERDICTS:
        raise OverruleError("verdict", "verdict must be one of: " + ", ".join(VERDICTS))
    if len(activity_ids) != 2 or activity_ids[0] == activity_ids[1]:
        raise OverruleError("activity_ids", "activity_ids must be two different activities")
    if keep is not None and (verdict != "duplicate" or keep not in activity_ids):
        raise OverruleError("keep", "keep must be one of the pair, and only for 'duplicate'")


def stored_overrule(verdict: str, keep: int | None) -> tuple[str | None, int | None]:
    """What is stored for a verdict, (verdict, copy kept): nothing for `auto` (back to the
    rule), and a copy to keep only for `duplicate`."""
    return (None if verdict == "auto" else verdict), (keep if verdict == "duplicate" else None)


def overrule_answer(
    rider_id: int,
    activity_ids: list[int],
    verdict: str,
    duplicates: list[dict[str, Any]],
    eddington: tuple[int, int],
) -> dict[str, Any]:
    """The answer to an overrule: the pair's mark now (among the rider's copies, as
    models.duplicates.rider_duplicates lists them) and the Eddington numbers (miles, km)."""
    first, second = activity_ids
    pair = [d for d in duplicates if {d["activity_id"], d["duplicate_of"]} == {first, second}]
    miles, km = eddington
    return {
        "rider_id": rider_id,
        "activity_ids": [first, second],
        "verdict": verdict,
        "duplicate": (
            {"activity_id": pair[0]["activity_id"], "duplicate_of": pair[0]["duplicate_of"]}
            if pair
            else None
        ),
        "eddington": {"miles": miles, "km": km},
    }


def describe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rider detail's `duplicates`: each copy and the activity kept."""
    return [
        {
            "activity_id": r["activity_id"],
            "duplicate_of": r["duplicate_of"],
            "sport_type": r["sport_type"],
            "start_date": r["start_date"].isoformat().replace("+00:00", "Z"),
            "distance_m": r["distance_m"],
            "kept_distance_m": r["kept_distance_m"],
            "overruled": r["overruled"],
        }
        for r in rows
    ]
