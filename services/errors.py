"""Domain errors shared by the services; routes/errors.py maps them to HTTP answers."""

from __future__ import annotations


class UnknownRider(Exception):
    """No rider has this id."""


class NotConnected(Exception):
    """The rider has no (active) Strava connection to work with."""
