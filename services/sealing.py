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

Pure: nothing here reads the environment; config.py builds the keys and app_factory.py
the Sealer. local_key() (a key file for local runs) is the only I/O.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc1"
KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_TAG_BYTES = 16
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_SEALED = re.compile(rf"{PREFIX}:(?P<kid>[^:]*):(?P<payload>[A-Za-z0-9_-]*)")
KEY_FORMAT = (
    "<key id>:<32 random bytes in base64>, the key id 1 to 32 letters, digits, '.', '_' "
    "or '-' (for example 2026-12:<44 characters>)"
)

Column = Literal["access_token", "refresh_token"]


class TokenUnreadable(Exception):
    """A stored token cannot be opened: its key is not configured, or it was altered.

    The message names the rider, the column and the key id, never a secret."""


@dataclass(frozen=True)
class TokenKey:
    """One AES-256 key and the id stored beside what it seals."""

    id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID.fullmatch(self.id):
            raise ValueError(f"a key id is 1 to 32 letters, digits, '.', '_' or '-' ({self.id!r})")
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes (got {len(self.secret)})")

    def text(self) -> str:
        """The key as TOKEN_ENCRYPTION_KEY takes it: `<id>:<base64url>`."""
        return f"{self.id}:{base64.urlsafe_b64encode(self.secret).decode()}"

    def secret_texts(self) -> set[str]:
        """Every way the key's bytes may be written (for the log redaction)."""
        standard = base64.b64encode(self.secret).decode()
        url = base64.urlsafe_b64encode(self.secret).decode()
        return {standard, standard.rstrip("="), url, url.rstrip("="), self.secret.hex()}


def new_key(key_id: str) -> TokenKey:
    """A fresh random key."""
    return TokenKey(key_id, secrets.token_bytes(KEY_BYTES))


def parse_key(text: str) -> TokenKey:
    """TOKEN_ENCRYPTION_KEY: `<key id>:<32 bytes in base64>` (url-safe or standard,
    padding optional). The error never repeats the key."""
    key_id, sep, encoded = text.strip().partition(":")
    if not sep or not KEY_ID.fullmatch(key_id):
        raise ValueError(
            f"must be {KEY_FORMAT}; the part before the first ':' is not a key id"
            if sep
            else f"must be {KEY_FORMAT} (no ':' found)"
        )
    compact = encoded.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        padded = compact + "=" * (-len(compact) % 4)
        secret = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"must be {KEY_FORMAT}; the part after key id {key_id!r} is not base64"
        ) from None
    if len(secret) != KEY_BYTES:
        raise ValueError(
            f"must be {KEY_FORMAT}; key {key_id!r} decodes to {len(secret)} bytes, not {KEY_BYTES}"
        )
    return TokenKey(key_id, secret)


def parse_keys(text: str) -> tuple[TokenKey, ...]:
    """TOKEN_ENCRYPTION_OLD_KEYS: keys as TOKEN_ENCRYPTION_KEY, comma-separated, ids distinct."""
    keys: list[TokenKey] = []
    for part in text.split(","):
        if part.strip():
            key = parse_key(part)
            if any(k.id == key.id for k in keys):
                raise ValueError(f"key id {key.id!r} is given twice")
            keys.append(key)
    return tuple(keys)


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


LOCAL_KEY_FILE = "token-key"
LOCAL_KEY_ID = "local"


def local_key(data_dir: str | Path) -> tuple[TokenKey, bool]:
    """The key of local runs (the embedded Postgres): `<data_dir>/token-key`, made once
    (readable by its owner only) and reused. Returns it and whether it was just made."""
    path = Path(data_dir) / LOCAL_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{LOCAL_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(new_key(LOCAL_KEY_ID).text() + "\n")
        try:
            os.link(temporary, path)  # atomic, and refuses to replace a key made meanwhile
            made = True
        except FileExistsError:
            made = False
        finally:
            temporary.unlink()
    else:
        made = False
    try:
        return parse_key(path.read_text()), made
    except ValueError as exc:
        raise ValueError(f"{path} {exc} (delete it to make a new one)") from None
