"""The service's one source of time.

Two readings, each behind one seam that `Runtime` carries and a simulation replaces:

- the clock (`Clock`, an aware UTC datetime): every decision about time, in Python and
  in SQL (where it is passed as a parameter, never taken from the database's now());
- the timer (`Timer`, monotonic seconds): time budgets within one call (its deadline,
  HTTP timeouts capped at the time left, a page's duration).

This module is the only place that reads the host's real time; everything else is
handed a clock or a timer (see tests/test_one_clock.py, which checks that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import overload

Clock = Callable[[], datetime]
Timer = Callable[[], float]


def utcnow() -> datetime:
    """The host's wall clock, in UTC: the default `Clock`."""
    return datetime.now(UTC)


def monotonic() -> float:
    """The host's monotonic timer: the default `Timer`."""
    return time.monotonic()


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z (the form every answer and the status use), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
