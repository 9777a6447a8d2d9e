"""Riders' Strava tokens: refreshed before they expire, serialized per rider, rotated safely.

Strava invalidates a refresh token the moment it hands out the next one, so two calls
refreshing the same rider at once would lock one of them out. A refresh therefore holds
the connection's row lock from the re-read to the store; the new tokens are in the
database before anything uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import models
from services.clock import Clock
from services.errors import NotConnected
from services.strava import StravaClient, TokenRejected, Unauthorized

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
T = TypeVar("T")


class NeedsReauth(Exception):
    """The rider's grant is gone; they must connect Strava again."""


class TokenKeeper:
    """Hands out a working access token per rider, refreshing when needed."""

    def __init__(self, db: Database, strava: StravaClient, clock: Clock) -> None:
        self._db = db
        self._strava = strava
        self._clock = clock
        self.refreshes = 0

    def access_token(self, rider_id: int, *, stale_token: str | None = None) -> str:
        """A token valid for at least REFRESH_MARGIN; refresh `stale_token` if it was refused."""
        with self._db.connection() as conn:
            tokens = _usable(models.read_tokens(conn, rider_id=rider_id), rider_id)
        if stale_token is None and tokens.expires_at - self._clock() > REFRESH_MARGIN:
            return tokens.access_token
        return self._refresh(rider_id, stale_token=stale_token)

    def call(self, rider_id: int, request: Callable[[str], T]) -> T:
        """Run `request(token)`, refreshing once if Strava refuses the token."""
        token = self.access_token(rider_id)
        try:
            return request(token)
        except Unauthorized:
            token = self.access_token(rider_id, stale_token=token)
        try:
            return request(token)
        except Unauthorized:
            self._give_up(rider_id, "Strava refused a freshly refreshed token")
            raise NeedsReauth("Strava refused the rider's token") from None

    def _refresh(self, rider_id: int, *, stale_token: str | None) -> str:
        with self._db.connection() as conn:
            tokens = _usable(models.read_tokens(conn, rider_id=rider_id, for_update=True), rider_id)
            # Another call may have refreshed while we waited for the lock.
            fresh = tokens.expires_at - self._clock() > REFRESH_MARGIN
            if fresh and (stale_token is None or tokens.access_token != stale_token):
                return tokens.access_token
            used = tokens.refresh_token
            try:
                grant = self._strava.refresh(used)
            except TokenRejected:
                rejected = True
            else:
                rejected = False
                models.store_tokens(
                    conn,
                    rider_id=rider_id,
                    access_token=grant.access_token,
                    refresh_token=grant.refresh_token,
                    expires_at=grant.expires_at,
                    now=self._clock(),
                )
                self.refreshes += 1
                log.info("refreshed Strava token", extra={"rider_id": rider_id})
                return grant.access_token
        assert rejected
        # invalid_grant: another process (one not sharing our lock) may have rotated it.
        with self._db.connection() as conn:
            current = models.read_tokens(conn, rider_id=rider_id)
        if current is not None and current.status == "active" and current.refresh_token != used:
            return self.access_token(rider_id)
        self._give_up(rider_id, "Strava rejected the refresh token; the rider must reconnect")
        raise NeedsReauth("Strava rejected the rider's refresh token")

    def _give_up(self, rider_id: int, message: str) -> None:
        with self._db.connection() as conn:
            models.mark_needs_reauth(conn, rider_id=rider_id, message=message, now=self._clock())
        log.warning("rider needs to reconnect Strava", extra={"rider_id": rider_id})


def _usable(tokens: models.ConnectionTokens | None, rider_id: int) -> models.ConnectionTokens:
    if tokens is None:
        raise NotConnected(f"rider {rider_id} has no Strava connection")
    if tokens.status != "active":
        raise NeedsReauth(f"rider {rider_id} must reconnect Strava ({tokens.status})")
    return tokens
