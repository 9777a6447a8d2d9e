"""Riders' Strava tokens, as stored (sealed): reading, storing, re-sealing under a new key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models.base import Conn


@dataclass(frozen=True)
class StoredTokens:
    """A connection's tokens as stored: sealed (services/sealing.py), or plain text in a
    row written before tokens were sealed."""

    rider_id: int
    access_token: str
    refresh_token: str
    expires_at: datetime
    status: str

    def __repr__(self) -> str:  # never print tokens, even sealed
        return f"StoredTokens(rider_id={self.rider_id}, status={self.status!r})"


_TOKEN_COLUMNS = "rider_id, access_token, refresh_token, expires_at, status"


def read_tokens(conn: Conn, *, rider_id: int, for_update: bool = False) -> StoredTokens | None:
    """The rider's stored tokens; with for_update, lock the row so refreshes are serialized."""
    lock = " for update" if for_update else ""
    row = conn.execute(
        f"select {_TOKEN_COLUMNS} from strava_connections where rider_id = %s{lock}",
        (rider_id,),
    ).fetchone()
    return StoredTokens(**row) if row else None


def store_tokens(
    conn: Conn,
    *,
    rider_id: int,
    access_sealed: str,
    refresh_sealed: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """Keep the newest tokens, sealed (Strava rotates the refresh token).

    Strava has just handed these tokens out, so the grant works: a row marked
    `needs_reauth` meanwhile (a call that sent the refresh token these replace, and was
    refused) is active again. A connection the rider revoked keeps no tokens.
    """
    conn.execute(
        """
        update strava_connections
           set access_token = %(access)s, refresh_token = %(refresh)s,
               expires_at = %(expires_at)s, updated_at = %(now)s,
               last_error = case when status = 'needs_reauth' then null else last_error end,
               error_class = case when status = 'needs_reauth' then null else error_class end,
               status = case when status = 'needs_reauth' then 'active' else status end
         where rider_id = %(rider_id)s and status <> 'revoked'
        """,
        {
            "access": access_sealed,
            "refresh": refresh_sealed,
            "expires_at": expires_at,
            "now": now,
            "rider_id": rider_id,
        },
    )


def reseal_tokens(
    conn: Conn,
    *,
    rider_id: int,
    stored_access: str,
    stored_refresh: str,
    access_sealed: str,
    refresh_sealed: str,
) -> bool:
    """Replace the stored tokens by the same tokens sealed anew, only if the row still
    holds exactly `stored_*` (compare-and-set) and no other transaction has it locked
    (a refresh in flight, which stores new tokens sealed anyway): a stale token never
    overwrites a newer one, and nothing waits. Whether the row was written.

    The same tokens, so `updated_at` is left alone. A row this transaction has locked
    itself (rotate_token_key's batches) is not skipped.
    """
    return (
        conn.execute(
            """
            update strava_connections c
               set access_token = %(access)s, refresh_token = %(refresh)s
              from (select rider_id from strava_connections
                     where rider_id = %(rider_id)s
                       and access_token = %(stored_access)s
                       and refresh_token = %(stored_refresh)s
                     for update skip locked) s
             where c.rider_id = s.rider_id
            """,
            {
                "rider_id": rider_id,
                "stored_access": stored_access,
                "stored_refresh": stored_refresh,
                "access": access_sealed,
                "refresh": refresh_sealed,
            },
        ).rowcount
        == 1
    )


# A row some token of which is not sealed under the key whose values start %(prefix)s.
_NOT_UNDER_KEY = """
    not (starts_with(access_token, %(prefix)s) and starts_with(refresh_token, %(prefix)s))
    and rider_id <> all(%(skip)s::bigint[])
"""


def lock_tokens_to_reseal(
    conn: Conn, *, current_prefix: str, after_rider_id: int, skip: list[int], limit: int
) -> list[StoredTokens]:
    """Up to `limit` connections after `after_rider_id` (by rider id) with a token not
    under the current key, locked for this transaction; rows another transaction holds
    (a token refresh in flight) are skipped, not waited for, and `skip` is left out."""
    rows = conn.execute(
        f"""
        select {_TOKEN_COLUMNS} from strava_connections
         where rider_id > %(after)s and {_NOT_UNDER_KEY}
         order by rider_id
         limit %(limit)s
         for update skip locked
        """,
        {"prefix": current_prefix, "after": after_rider_id, "skip": skip, "limit": limit},
    ).fetchall()
    return [StoredTokens(**row) for row in rows]


def count_tokens_to_reseal(conn: Conn, *, current_prefix: str, skip: list[int]) -> tuple[int, int]:
    """(connections, those with a token not under the current key but those in `skip`)."""
    row = conn.execute(
        f"select count(*) as total, count(*) filter (where {_NOT_UNDER_KEY}) as left"
        " from strava_connections",
        {"prefix": current_prefix, "skip": skip},
    ).fetchone()
    assert row is not None
    return int(row["total"]), int(row["left"])


def mark_needs_reauth(conn: Conn, *, rider_id: int, message: str, now: datetime) -> None:
    """The grant is gone: skip this rider until it reconnects."""
    conn.execute(
        """
        update strava_connections
           set status = 'needs_reauth', last_error = %s, error_class = 'needs_reauth',
               lease_token = null, lease_kind = null, lease_expires_at = null,
               updated_at = %s
         where rider_id = %s
        """,
        (message, now, rider_id),
    )


def expire_access_token(conn: Conn, *, rider_id: int, now: datetime) -> None:
    """Date the stored access token expired at `now` (Strava refused it and renewing it
    failed), so that its next use renews it first instead of sending it again."""
    conn.execute(
        """
        update strava_connections set expires_at = least(expires_at, %s), updated_at = %s
         where rider_id = %s
        """,
        (now, now, rider_id),
    )
