"""The keys that seal riders' Strava tokens: their text form, parsing, and the key file
of local runs.

Below config.py (which parses TOKEN_ENCRYPTION_KEY and TOKEN_ENCRYPTION_OLD_KEYS with
these) and services/sealing.py (which seals with them); pure but for local_key().
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

KEY_BYTES = 32  # AES-256
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
KEY_FORMAT = (
    "<key id>:<32 random bytes in base64>, the key id 1 to 32 letters, digits, '.', '_' "
    "or '-' (for example 2026-12:<44 characters>)"
)


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
