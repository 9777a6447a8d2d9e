"""The fleet simulation's virtual clock, shared by the service (`Runtime.clock` and
`Runtime.timer`, see services/clock.py) and the fake Strava (`FakeStrava(clock=...)`:
rate windows, token expiry, the request log).

One VirtualClock holds the simulated instant. Between calls it is set to each event's
time; within a call every Strava request advances it by a simulated latency. Each
thread keeps its own offset from the call's start (a worker thread starts where the
thread that spawned the pool stood), so requests made side by side by a call's workers
overlap in virtual time as they would on a real network; the thread driving the app
(blocked while the pool works) then reads the latest of them, and so does the clock
once the call returns. A call's bound on its Strava requests in flight (`places`) is
kept on the clock too: a thread that waited for a place starts its request when the
request it followed ended, in virtual time as in real time.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from services.calls import Runtime


class VirtualClock:
    """The simulated instant: now() (aware UTC), time() (epoch seconds), monotonic()."""

    def __init__(self, start: datetime) -> None:
        self._origin = start.timestamp()
        self._base = self._origin
        self._offsets: dict[int, float] = {}
        self._lock = threading.Lock()
        self._home = threading.get_ident()

    def _offset(self) -> float:
        ident = threading.get_ident()
        if ident == self._home:
            # The home thread (the one driving the app) waits while a call's pool works:
            # when it reads the clock again it stands at the latest of them.
            offset = max(self._offsets.values(), default=0.0)
        else:
            found = self._offsets.get(ident)
            # a new worker starts where the home thread stood when it spawned the pool
            offset = self._offsets.get(self._home, 0.0) if found is None else found
        self._offsets[ident] = offset
        return offset

    def time(self) -> float:
        with self._lock:
            return self._base + self._offset()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def monotonic(self) -> float:
        return self.time() - self._origin

    def advance(self, seconds: float) -> None:
        """The calling thread spends `seconds` (a Strava request's latency)."""
        with self._lock:
            self._offsets[threading.get_ident()] = self._offset() + seconds

    def places(self, size: int) -> VirtualPlaces:
        """A bound of `size` requests in flight, on this clock (Runtime.places)."""
        return VirtualPlaces(self, size)

    def _wait_until(self, at: float) -> None:
        with self._lock:
            ident = threading.get_ident()
            self._offsets[ident] = max(self._offset(), at - self._base)

    def settle(self) -> float:
        """A call has returned: the clock moves to the latest of its threads."""
        with self._lock:
            self._base += max(self._offsets.values(), default=0.0)
            self._offsets.clear()
            return self._base

    def set(self, epoch: float) -> float:
        """Go to an event's time; never back (a call may have run past it)."""
        with self._lock:
            self._base = max(self._base + max(self._offsets.values(), default=0.0), epoch)
            self._offsets.clear()
            return self._base


class VirtualPlaces:
    """A semaphore of `size` places whose waits are also spent on the virtual clock:
    each place remembers the instant its last holder let go, and the next holder's
    request starts no earlier."""

    def __init__(self, clock: VirtualClock, size: int) -> None:
        self._clock = clock
        self._places = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._free_at = [float("-inf")] * size  # a heap of the instants places came free

    def __enter__(self) -> VirtualPlaces:
        self._places.acquire()
        with self._lock:
            free_at = heapq.heappop(self._free_at)
        self._clock._wait_until(free_at)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            heapq.heappush(self._free_at, self._clock.time())
        self._places.release()


# --- the service on it --------------------------------------------------------------------


def on_clock(runtime: Runtime, clock: VirtualClock) -> Runtime:
    """The app's runtime with the virtual clock and timer (services/clock.py's seams)."""
    return replace(runtime, clock=clock.now, timer=clock.monotonic, places=clock.places)
