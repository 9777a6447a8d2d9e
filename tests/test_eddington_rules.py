"""The cycling Eddington number's rule, without a database: the largest E with at least E
days of at least E (checked against trying every E), of the rides' daily distances."""

from __future__ import annotations

from datetime import date

import pytest

from services.eddington import (
    METRES_PER_KM,
    METRES_PER_MILE,
    daily_distances,
    eddington,
    eddington_numbers,
)


def brute_force(day_metres: list[float], unit: float) -> int:
    """Try every E: the largest with at least E days of at least E units."""
    best = 0
    for e in range(1, len(day_metres) + 1):
        if sum(1 for m in day_metres if m / unit >= e) >= e:
            best = e
    return best


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], 0),
        ([0.4], 0),
        ([1], 1),
        ([3, 3, 3], 3),
        ([10, 10, 2], 2),
        ([5, 4, 3, 2, 1], 3),
        ([100, 100, 100, 100], 4),
        ([2.99, 3, 3], 2),
        ([7, 6, 5, 4, 4, 4], 4),
    ],
)
def test_the_rule(values, expected):
    assert eddington(values) == expected == brute_force(values, 1)


def test_a_days_rides_add_up_and_other_sports_do_not_count():
    first, second, third = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)
    rides = [
        (first, "Ride", 3_000.0),
        (first, "GravelRide", 2_500.0),
        (first, "Run", 10_000.0),
        (second, "VirtualRide", 7_000.0),
        (third, "Walk", 9_000.0),
    ]
    assert sorted(daily_distances(rides)) == [5_500.0, 7_000.0]


def test_miles_and_kilometres_from_the_same_days():
    """Local days' rides in miles (km): 5.5 (8.85), 6 (9.66), 5.5 (8.85), 7 (11.27),
    4 (6.44), 5.6 (9.01), 1 (1.61). Miles: five days of at least 5, not six of 6: E = 5.
    Km: six days of at least 6, not seven of 7: E = 6."""
    miles = [(3, 2.5), (6,), (5.5,), (7,), (4,), (5.6,), (1,)]
    rides = [
        (date(2024, 5, day), "Ride", part * METRES_PER_MILE)
        for day, parts in enumerate(miles, start=1)
        for part in parts
    ]
    rides.append((date(2024, 5, 7), "Run", 9 * METRES_PER_MILE))  # a run counts for nothing
    assert eddington_numbers(rides) == (5, 6)
    assert eddington_numbers([(date(2024, 5, 1), "Ride", 1.5 * METRES_PER_KM)]) == (0, 1)
