"""Vercel's entry point: the WSGI `app` for every /api/* route (see vercel.json)."""

import sys
from pathlib import Path

# Vercel runs this file from api/; the project's packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app_factory import create_app  # noqa: E402
from config import ConfigError  # noqa: E402

try:
    app = create_app()
except ConfigError as exc:
    # One line that says what is wrong and how to fix it (the message names the variable
    # or the .env line), not a traceback with the message at its bottom: this is what the
    # command line, gunicorn and Vercel's log show.
    raise SystemExit(f"ConfigError: {exc}") from None
