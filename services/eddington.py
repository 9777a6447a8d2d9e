"""The cycling Eddington number: the largest E such that the rider rode at least E miles
(or kilometres) on at least E days.

The stored numbers are computed by one SQL statement (models.activities.recompute_eddington)
after a sync that wrote rides; the pure functions here state the rule, and the tests check
the SQL against them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date

from models.base import RIDE_SPORTS

METRES_PER_MILE = 1609.344
METRES_PER_KM = 1000.0


def eddington(values: Iterable[float]) -> int:
    """The largest E with at least E values of at least E (values: one day's distance each)."""
    ranked = sorted(values, reverse=True)
    number = 0
    for rank, value in enumerate(ranked, start=1):
        if value < rank:
            break
        number = rank
    return number


def daily_distances(rides: Iterable[tuple[date, str, float]]) -> list[float]:
    """Metres per day from (local start date, sport type, metres); rides only, summed per day."""
    days: dict[date, float] = defaultdict(float)
    for day, sport_type, metres in rides:
        if sport_type in RIDE_SPORTS:
            days[day] += metres
    return list(days.values())


def eddington_numbers(rides: Iterable[tuple[date, str, float]]) -> tuple[int, int]:
    """(miles, kilometres) for a rider's rides, in one pass over them."""
    metres = daily_distances(rides)
    return (
        eddington(m / METRES_PER_MILE for m in metres),
        eddington(m / METRES_PER_KM for m in metres),
    )
