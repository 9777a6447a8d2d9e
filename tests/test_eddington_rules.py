"""The cycling Eddington number's rule, without a database: the largest E with at least E
days of at least E, checked against trying every E."""

from __future__ import annotations

import pytest

from services.eddington import eddington


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
