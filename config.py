"""Settings: read once from the environment (and `.env`), validated, typed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dotenv import load_dotenv


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    cron_secret: str | None = None
    strava_client_id: str | None = None
    strava_client_secret: str | None = None
    strava_api_url: str = "https://www.strava.com/api/v3"
    strava_oauth_url: str = "https://www.strava.com/oauth"
    supabase_url: str | None = None
    supabase_jwt_secret: str | None = None
    public_base_url: str | None = None
    app_return_url: str | None = None
    cron_time_budget_s: float = 8.0
    sync_min_interval_s: int = 3600
    race_min_distance_km: float = 200.0
    # Not in the contract's table, but tunable for operators and tests.
    sync_overlap_days: float = 7.0
    sync_workers: int = 8
    lease_ttl_s: int = 120
    sync_now_reserve: float = 0.10
    sync_now_cooldown_s: int = 300
    enrich_max_attempts: int = 5
    stuck_after_s: int = 600
    strava_timeout_s: float = 10.0
    data_dir: str = ".data"
    on_vercel: bool = False

    def redacted(self) -> dict[str, Any]:
        """The settings with every secret masked, safe to log."""
        secret = {"cron_secret", "strava_client_secret", "supabase_jwt_secret", "database_url"}
        return {
            f.name: ("***" if f.name in secret and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }


# env var -> (field, parser). Parsers raise ValueError; load_settings names the variable.
def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or a positive integer")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number < 1:
        raise ValueError("must be a fraction from 0 to below 1")
    return number


def _text(value: str) -> str:
    return value


_VARIABLES: dict[str, tuple[str, Any]] = {
    "DATABASE_URL": ("database_url", _text),
    "CRON_SECRET": ("cron_secret", _text),
    "STRAVA_CLIENT_ID": ("strava_client_id", _text),
    "STRAVA_CLIENT_SECRET": ("strava_client_secret", _text),
    "STRAVA_API_URL": ("strava_api_url", _url),
    "STRAVA_OAUTH_URL": ("strava_oauth_url", _url),
    "SUPABASE_URL": ("supabase_url", _url),
    "SUPABASE_JWT_SECRET": ("supabase_jwt_secret", _text),
    "PUBLIC_BASE_URL": ("public_base_url", _url),
    "APP_RETURN_URL": ("app_return_url", _url),
    "CRON_TIME_BUDGET_S": ("cron_time_budget_s", _positive_float),
    "SYNC_MIN_INTERVAL_S": ("sync_min_interval_s", _non_negative_int),
    "RACE_MIN_DISTANCE_KM": ("race_min_distance_km", _positive_float),
    "SYNC_OVERLAP_DAYS": ("sync_overlap_days", _positive_float),
    "SYNC_WORKERS": ("sync_workers", _positive_int),
    "LEASE_TTL_S": ("lease_ttl_s", _positive_int),
    "SYNC_NOW_RESERVE": ("sync_now_reserve", _fraction),
    "SYNC_NOW_COOLDOWN_S": ("sync_now_cooldown_s", _non_negative_int),
    "ENRICH_MAX_ATTEMPTS": ("enrich_max_attempts", _positive_int),
    "STUCK_AFTER_S": ("stuck_after_s", _positive_int),
    "STRAVA_TIMEOUT_S": ("strava_timeout_s", _positive_float),
    "DATA_DIR": ("data_dir", _text),
}


DOTENV_PATH = Path(__file__).resolve().parent / ".env"


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    dotenv_path: Path = DOTENV_PATH,
) -> Settings:
    """Build Settings from defaults, then `.env`, then the environment, then overrides.

    The `.env` file (at the project root) is read only when `environ` is not given.
    """
    if environ is None:
        load_dotenv(dotenv_path, override=False)  # real environment variables win over .env
        environ = os.environ
    values: dict[str, Any] = {}
    for name, (field, parse) in _VARIABLES.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} is invalid: {exc}") from None
    values["on_vercel"] = bool(environ.get("VERCEL"))
    settings = Settings(**values)
    if overrides:
        known = {f.name for f in fields(Settings)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        settings = replace(settings, **overrides)
    return settings
