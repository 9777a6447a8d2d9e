"""Vercel's entry point: the WSGI `app` for every /api/* route (see vercel.json)."""

import sys
from pathlib import Path

# Vercel runs this file from api/; the project's packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app_factory import create_app  # noqa: E402

app = create_app()
