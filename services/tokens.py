"""Riders' Strava tokens: refreshed before they expire, serialized per rider, rotated safely.

Strava invalidates a refresh token the moment it hands out the next one, so two calls
refreshing the same rider at once would lock one of them out. A refresh therefore holds
the connection's row lock from the re-read to the store. Strava's answer is then the
rider's only working grant: it is written and committed before anything else, and written
again in a transaction of its own if the lock's was lost meanwhile. A process killed after
that loses nothing; one killed while the answer is on its way cannot be saved (Strava has
rotated, we never heard), and its rider is asked to reconnect at the next refresh. A
refused refresh token is marked under the lock, so the calls waiting for it never send
the dead token again (docs/how-it-works.md, "Tokens: a refresh that survives a kill").

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

import psycopg

import models
from services.clock import Clock, Timer
from services.errors import NotConnected
from services.sealing import Sealer, TokenUnreadable, key_id_of
from services.strava import (
    DeadlineReached,
    StravaClient,
    StravaError,
    TokenGrant,
    TokenRejected,
    Unauthorized,
)

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
T = TypeVar("T")

# A connection's last_error when Strava stops accepting it, in the rider's words. A refused
# refresh token cannot say whether the rider withdrew the access or a refresh's answer
# (which replaced that token) never arrived: either way, reconnecting is the way back.
REFRESH_REFUSED = (
    "Strava no longer accepts this service's access to the account: it was withdrawn on "
    "Strava, or a renewal of it was lost on the way back. Press Connect Strava to reconnect."
)
TOKEN_REFUSED = (
    "Strava refused this service's access to the account right after renewing it. "
    "Press Connect Strava to reconnect."
)


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
            with self._db.connection() as conn:
                self._give_up(conn, rider_id, TOKEN_REFUSED)
            raise NeedsReauth("Strava refused the rider's token") from None

    def _refresh(self, rider_id: int, *, stale_token: str | None) -> str:
        """Refresh under the connection's row lock; on `invalid_grant`, read the row again
        and try once more only if it holds another refresh token than the one refused."""
        refused: str | None = None  # the refresh token Strava refused in this refresh
        while True:
            grant: TokenGrant | None = None
            unrenewed: StravaError | DeadlineReached | None = None
            try:
                with self._db.connection() as conn:
                    # The lock is held from this read until the new tokens are written.
                    tokens = self._read(conn, rider_id, for_update=True)
                    # Another call may have refreshed while we waited for the lock.
                    fresh = tokens.expires_at - self._clock() > REFRESH_MARGIN
                    if fresh and (stale_token is None or tokens.access_token != stale_token):
                        return tokens.access_token
                    used = tokens.refresh_token
                    if used == refused:  # nobody stored other tokens: no second try
                        raise NeedsReauth(f"rider {rider_id} must reconnect Strava")
                    try:
                        grant = self._strava.refresh(used)
                    except TokenRejected:
                        # Marked while still holding the lock, so a call waiting for it
                        # reads `needs_reauth` and never sends the dead token again.
                        self._give_up(conn, rider_id, REFRESH_REFUSED)
                    except (StravaError, DeadlineReached) as exc:
                        if stale_token is None:
                            raise
                        # Strava refused the access token and renewing it failed (a 5xx,
                        # a timeout): dated expired, the next call renews it first
                        # rather than send a refused token again.
                        models.tokens.expire_access_token(
                            conn, rider_id=rider_id, now=self._clock()
                        )
                        unrenewed = exc
                    else:
                        # Strava may have forgotten `used` already: the answer is written
                        # first, and committed as this block ends.
                        self._store(conn, rider_id, grant)
            except psycopg.Error:
                if grant is None:
                    raise
                # The lock's transaction was lost while Strava answered (a connection cut,
                # the server ending it): the answer is the rider's only working grant.
                self._store_again(rider_id, used, grant)
            if unrenewed is not None:
                raise unrenewed
            if grant is not None:
                self.refreshes += 1
                log.info("refreshed Strava token", extra={"rider_id": rider_id})
                return grant.access_token
            if refused is not None:
                raise NeedsReauth("Strava refused the rider's refresh token")
            # Read the row again, fresh, once: a reconnect (or the stored answer of a refresh
            # whose lock was lost) waiting for our lock writes other tokens and makes the
            # row active again; anything else finds it marked and stops.
            refused = used

    def _store(self, conn: models.Conn, rider_id: int, grant: TokenGrant) -> None:
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

    def _store_again(self, rider_id: int, used: str, grant: TokenGrant) -> None:
        """Write a refresh's answer in a transaction of its own, unless the row holds
        other tokens than those refreshed by now (a reconnect's: newer than ours)."""
        try:
            with self._db.connection() as conn:
                stored = models.tokens.read_tokens(conn, rider_id=rider_id, for_update=True)
                if stored is None or stored.status == "revoked":
                    return
                if open_tokens(self._sealer, stored).refresh_token == used:
                    self._store(conn, rider_id, grant)
        except psycopg.Error:
            log.error(
                "a refreshed Strava token could not be stored; if Strava rotated it, the "
                "rider must reconnect",
                extra={"rider_id": rider_id},
            )
            raise

    def _give_up(self, conn: models.Conn, rider_id: int, message: str) -> None:
        models.tokens.mark_needs_reauth(conn, rider_id=rider_id, message=message, now=self._clock())
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
