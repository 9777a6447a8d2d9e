"""The store: every SQL statement of the service (moved here from models.py; split by subject next)."""

from models.weather import *  # noqa: F401,F403
