"""A stateful simulator of the Strava API and OAuth endpoints, for tests, demo and benchmarks."""

from fake_strava.data import RIDE_TYPES, RUN_TYPES, make_activities, make_activity
from fake_strava.serve import ServedFake, serve
from fake_strava.server import UNREACHED_LIMITS, FakeStrava, RecordedRequest

__all__ = [
    "RIDE_TYPES",
    "RUN_TYPES",
    "UNREACHED_LIMITS",
    "FakeStrava",
    "RecordedRequest",
    "ServedFake",
    "make_activities",
    "make_activity",
    "serve",
]
