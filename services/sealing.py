"""Riders' Strava tokens sealed at rest: AES-256-GCM under a key with an id, rotatable.

A stored token is `enc1:<key id>:<base64url(nonce || ciphertext || tag)>`. The key id
names the key that sealed it, so keys can be rotated: the current key seals, the old
keys still open what they sealed until `flask --app api.index rotate-token-key` has
re-sealed every row. A value without the `enc1:` prefix was stored before tokens were
sealed (Strava's tokens are letters and digits, 40 hex digits today, so never start
so) and is read as it is, to be sealed on first use.

Why AES-GCM rather than Fernet (both authenticated, both from `cryptography`): GCM
takes associated data, and each seal binds its ciphertext to its row and column (the
rider id and `access_token` / `refresh_token`) and to the key id written beside it. A
ciphertext copied into another rider's row, swapped between the two columns, or
relabelled with another key id does not open. Fernet cannot bind anything but its own
timestamp, and MultiFernet tries every key in turn instead of reading the key's id.
Nonces are 96 random bits: with a few thousand tokens, each sealed again every six
hours, a key seals far fewer than the 2**32 messages NIST allows a random-nonce key.

Pure: nothing here reads the environment; config.py parses the keys (token_keys.py) and
sealer_for() builds the Sealer from the settings.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import ConfigError, Settings
from token_keys import LOCAL_KEY_FILE, TokenKey, local_key

PREFIX = "enc1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SEALED = re.compile(rf"{PREFIX}:(?P<kid>[^:]*):(?P<payload>[A-Za-z0-9_-]*)")
Column = Literal["access_token", "refresh_token"]


class TokenUnreadable(Exception):
    """A stored token cannot be opened: its key is not configured, or it was altered.

    The message names the rider, the column and the key id, never a secret."""


def _aad(key_id: str, rider_id: int, column: Column) -> bytes:
    return f"club-strava-sync/{PREFIX}/{key_id}/strava_connections.{column}/{rider_id}".encode()


def key_id_of(stored: str) -> str | None:
    """The id of the key that sealed a stored value; None for a value stored in plain text."""
    match = _SEALED.fullmatch(stored)
    if match:
        return match["kid"]
    if stored.startswith(PREFIX + ":"):
        return ""  # sealed, but malformed: opens with no key
    return None


class Sealer:
    """Seals with the current key; opens with the current key or an old one."""

    def __init__(self, current: TokenKey, old: Iterable[TokenKey] = ()) -> None:
        self.current = current
        self._keys: dict[str, AESGCM] = {}
        self._texts: set[str] = set()
        for key in (current, *old):
            if key.id in self._keys:
                raise ValueError(f"key id {key.id!r} is given twice")
            self._keys[key.id] = AESGCM(key.secret)
            self._texts |= key.secret_texts()
        self._current = self._keys[current.id]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def secret_texts(self) -> set[str]:
        """The keys as text, for the log redaction."""
        return set(self._texts)

    def seal(self, token: str, *, rider_id: int, column: Column) -> str:
        """`token` sealed under the current key, bound to its rider and column."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.encrypt(
            nonce, token.encode(), _aad(self.current.id, rider_id, column)
        )
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}:{self.current.id}:{payload}"

    def open(self, stored: str, *, rider_id: int, column: Column) -> str:
        """The token of a stored value (sealed, or plain text from before sealing)."""
        key_id = key_id_of(stored)
        if key_id is None:
            return stored
        where = f"rider {rider_id}'s {column}"
        match = _SEALED.fullmatch(stored)
        if match is None or not key_id:
            raise TokenUnreadable(f"{where} is not a sealed value this service wrote")
        aead = self._keys.get(key_id)
        if aead is None:
            raise TokenUnreadable(
                f"{where} is sealed under key id {key_id!r}, which is neither "
                "TOKEN_ENCRYPTION_KEY nor in TOKEN_ENCRYPTION_OLD_KEYS"
            )
        payload = match["payload"]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise TokenUnreadable(f"{where} is too short to be a sealed value")
        try:
            aad = _aad(key_id, rider_id, column)
            token = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise TokenUnreadable(
                f"{where} does not open under key id {key_id!r}: the value was altered, "
                "moved from another row, or that id names a different key now"
            ) from None
        return token.decode()

    def is_current(self, stored: str) -> bool:
        """Whether a stored value is sealed under the current key (nothing to re-seal)."""
        return key_id_of(stored) == self.current.id

    def current_prefix(self) -> str:
        """What every value sealed under the current key starts with."""
        return f"{PREFIX}:{self.current.id}:"


def sealer_for(settings: Settings) -> tuple[Sealer, Path | None]:
    """The Sealer of riders' tokens, and the key file if one was just made for a local run.

    TOKEN_ENCRYPTION_KEY is required on Vercel and wherever DATABASE_URL is set: a key
    made on this machine would seal a shared database's tokens under a key no other host
    has (and `rotate-token-key` run so would lock the deployment out of every token). Only
    with the embedded Postgres of local runs is a key made under DATA_DIR, once.
    """
    current = settings.token_encryption_key
    made: Path | None = None
    if current is None:
        if settings.on_vercel or settings.database_url:
            where = "on Vercel" if settings.on_vercel else "with DATABASE_URL set"
            raise ConfigError(
                f"TOKEN_ENCRYPTION_KEY is not set, and {where} it is required: it seals "
                "riders' Strava tokens in the database. Make one with\n"
                "  python3 -c \"import base64, os; print('k1:' + "
                'base64.urlsafe_b64encode(os.urandom(32)).decode())"\n'
                "and set it in the host's environment (README: Deploying, step 3). Only "
                "local runs on the embedded Postgres make their own key."
            )
        try:
            current, created = local_key(settings.data_dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"TOKEN_ENCRYPTION_KEY is not set and the local key failed: {exc}"
            ) from None
        if created:
            made = Path(settings.data_dir) / LOCAL_KEY_FILE
    return Sealer(current, settings.token_encryption_old_keys), made
