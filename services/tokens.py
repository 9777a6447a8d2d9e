"""Riders' Strava tokens: refreshed before they expire, serialized per rider, rotated safely.

Strava invalidates a refresh token the moment it hands out the next one, so two calls
refreshing the same rider at once would lock one of them out. A refresh therefore holds
the connection's row lock from the re-read to the store; the new tokens are in the
database before anything uses them.

Tokens are sealed at rest (services/sealing.py). A stored token not sealed under the
current key (plain text from before sealing, or an old key's) is sealed again when it
is first read, by a compare-and-set that skips a row being refreshed, so a stale token
never overwrites a newer one; rotate_token_key() does the same for every row, in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import models
from services.clock import Clock, Timer
from services.errors import NotConnected
from services.sealing import Sealer, TokenUnreadable, key_id_of
from services.strava import StravaClient, TokenRejected, Unauthorized

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
T = TypeVar("T")


class NeedsReauth(Exception):
    """The rider's grant is gone; they must connect Strava again."""


@dataclass(frozen=True)
class Tokens:
    """A rider's tokens, opened."""

    rider_id: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    status: str


def open_tokens(sealer: Sealer, stored: models.tokens.StoredTokens) -> Tokens:
    """The tokens of a stored row (TokenUnreadable if a key is missing or a value altered)."""
    rider = stored.rider_id
    return Tokens(
        rider,
        sealer.open(stored.access_token, rider_id=rider, column="access_token"),
        sealer.open(stored.refresh_token, rider_id=rider, column="refresh_token"),
        stored.expires_at,
        stored.status,
    )


def seal_tokens(sealer: Sealer, rider_id: int, access: str, refresh: str) -> tuple[str, str]:
    """(access, refresh) sealed under the current key for the rider's row."""
    return (
        sealer.seal(access, rider_id=rider_id, column="access_token"),
        sealer.seal(refresh, rider_id=rider_id, column="refresh_token"),
    )


def needs_resealing(sealer: Sealer, stored: models.tokens.StoredTokens) -> bool:
    return not (sealer.is_current(stored.access_token) and sealer.is_current(stored.refresh_token))


def reseal(
    conn: models.Conn, sealer: Sealer, stored: models.tokens.StoredTokens, tokens: Tokens
) -> bool:
    """Seal a row's tokens under the current key unless the row changed or is locked."""
    rider = stored.rider_id
    access, refresh = seal_tokens(sealer, rider, tokens.access_token, tokens.refresh_token)
    return models.tokens.reseal_tokens(
        conn,
        rider_id=stored.rider_id,
        stored_access=stored.access_token,
        stored_refresh=stored.refresh_token,
        access_sealed=access,
        refresh_sealed=refresh,
    )


class TokenKeeper:
    """Hands out a working access token per rider, refreshing when needed."""

    def __init__(self, db: Database, strava: StravaClient, clock: Clock, sealer: Sealer) -> None:
        self._db = db
        self._strava = strava
        self._clock = clock
        self._sealer = sealer
        self.refreshes = 0

    def _read(self, conn: models.Conn, rider_id: int, *, for_update: bool = False) -> Tokens:
        """The rider's usable tokens, opened; sealed anew first if not under the current key."""
        row = models.tokens.read_tokens(conn, rider_id=rider_id, for_update=for_update)
        stored = _usable(row, rider_id)
        tokens = open_tokens(self._sealer, stored)
        if needs_resealing(self._sealer, stored) and reseal(conn, self._sealer, stored, tokens):
            log.info(
                "sealed a rider's tokens under the current key",
                extra={"rider_id": rider_id, "was": key_id_of(stored.access_token) or "plain"},
            )
        return tokens

    def access_token(self, rider_id: int, *, stale_token: str | None = None) -> str:
        """A token valid for at least REFRESH_MARGIN; refresh `stale_token` if it was refused."""
        with self._db.connection() as conn:
            tokens = self._read(conn, rider_id)
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
            tokens = self._read(conn, rider_id, for_update=True)
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
                access, refresh = seal_tokens(
                    self._sealer, rider_id, grant.access_token, grant.refresh_token
                )
                models.tokens.store_tokens(
                    conn,
                    rider_id=rider_id,
                    access_sealed=access,
                    refresh_sealed=refresh,
                    expires_at=grant.expires_at,
                    now=self._clock(),
                )
                self.refreshes += 1
                log.info("refreshed Strava token", extra={"rider_id": rider_id})
                return grant.access_token
        assert rejected
        # invalid_grant: another process (one not sharing our lock) may have rotated it.
        with self._db.connection() as conn:
            stored = models.tokens.read_tokens(conn, rider_id=rider_id)
        current = open_tokens(self._sealer, stored) if stored is not None else None
        if current is not None and current.status == "active" and current.refresh_token != used:
            return self.access_token(rider_id)
        self._give_up(rider_id, "Strava rejected the refresh token; the rider must reconnect")
        raise NeedsReauth("Strava rejected the rider's refresh token")

    def _give_up(self, rider_id: int, message: str) -> None:
        with self._db.connection() as conn:
            models.tokens.mark_needs_reauth(
                conn, rider_id=rider_id, message=message, now=self._clock()
            )
        log.warning("rider needs to reconnect Strava", extra={"rider_id": rider_id})


def _usable(tokens: models.tokens.StoredTokens | None, rider_id: int) -> models.tokens.StoredTokens:
    if tokens is None:
        raise NotConnected(f"rider {rider_id} has no Strava connection")
    if tokens.status != "active":
        raise NeedsReauth(f"rider {rider_id} must reconnect Strava ({tokens.status})")
    return tokens


# --- rotating the key ------------------------------------------------------------------


@dataclass
class Rotation:
    """What rotate_token_key did: rows by what they were sealed with before."""

    key_id: str
    sealed_from_plain: int = 0
    resealed: dict[str, int] = field(default_factory=dict)  # old key id -> rows
    unreadable: list[int] = field(default_factory=list)  # rider ids (key missing, altered)
    busy: int = 0  # still held by a token refresh when the command gave up waiting
    already_current: int = 0  # under the current key when the command started
    connections: int = 0
    batches: int = 0

    @property
    def done(self) -> bool:
        return not self.unreadable and not self.busy


def rotate_token_key(
    db: Database,
    sealer: Sealer,
    *,
    batch_size: int = 100,
    busy_wait_s: float = 30.0,
    timer: Timer,
    sleep: Callable[[float], None],
) -> Rotation:
    """Seal every stored token under the current key, `batch_size` rows a transaction.

    Each batch locks its rows with SKIP LOCKED, so a cron call refreshing a rider is never
    waited on nor overwritten: its row is skipped, and written by the refresh itself
    (sealed under the refreshing process's current key). Skipped rows are tried again
    in later passes, for up to `busy_wait_s`; a row whose tokens cannot be opened is
    reported, never rewritten.
    """
    rotation = Rotation(sealer.current.id)
    prefix = sealer.current_prefix()
    give_up_at = timer() + busy_wait_s
    with db.connection() as conn:
        total, left = models.tokens.count_tokens_to_reseal(conn, current_prefix=prefix, skip=[])
    rotation.connections, rotation.already_current = total, total - left
    while True:
        after = 0
        while True:
            with db.connection() as conn:
                rows = models.tokens.lock_tokens_to_reseal(
                    conn,
                    current_prefix=prefix,
                    after_rider_id=after,
                    skip=rotation.unreadable,
                    limit=batch_size,
                )
                for stored in rows:
                    _reseal_one(conn, sealer, stored, rotation)
            if not rows:
                break
            rotation.batches += 1
            after = rows[-1].rider_id
        with db.connection() as conn:
            _, left = models.tokens.count_tokens_to_reseal(
                conn, current_prefix=prefix, skip=rotation.unreadable
            )
        if left == 0 or timer() >= give_up_at:
            rotation.busy = left
            return rotation
        sleep(min(0.5, max(0.0, give_up_at - timer())))


def _reseal_one(
    conn: models.Conn, sealer: Sealer, stored: models.tokens.StoredTokens, rotation: Rotation
) -> None:
    try:
        tokens = open_tokens(sealer, stored)
    except TokenUnreadable as exc:
        rotation.unreadable.append(stored.rider_id)
        log.error("a rider's stored token cannot be opened", extra={"error": str(exc)})
        return
    was = key_id_of(stored.access_token)
    if not reseal(conn, sealer, stored, tokens):  # locked by us, so it cannot have changed
        return  # but if it did, the next pass finds it
    if was is None:
        rotation.sealed_from_plain += 1
    else:
        rotation.resealed[was] = rotation.resealed.get(was, 0) + 1
