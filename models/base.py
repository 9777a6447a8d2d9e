"""The store's shared pieces: the connection every function takes, the sport types the
service groups as rides and runs, and a liveness check."""

from __future__ import annotations

import psycopg
from psycopg.rows import DictRow

# Every connection of the service returns rows as dicts (db.py sets the row factory).
Conn = psycopg.Connection[DictRow]


def ping(conn: Conn) -> None:
    """A trivial query: is the database there?"""
    conn.execute("select 1")


# Strava sport types the race rule, Eddington numbers and the duplicate rule group.
RUN_SPORTS = frozenset({"Run", "TrailRun", "VirtualRun"})
# Rides for the race rule. Virtual and trainer rides are not brevets, so the distance
# rule leaves them out; a virtual race flagged by workout_type still counts.
RIDE_SPORTS = frozenset(
    {
        "Ride",
        "GravelRide",
        "MountainBikeRide",
        "EBikeRide",
        "EMountainBikeRide",
        "VirtualRide",
        "Velomobile",
        "Handcycle",
    }
)
