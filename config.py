"""Settings: read once from the environment (and `.env`), validated, typed."""

from __future__ import annotations

import difflib
import io
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dotenv.main import resolve_variables
from dotenv.parser import parse_stream

from token_keys import TokenKey, parse_key, parse_keys


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
    # Open-Meteo's historical weather API (keyless); the weather phase's only source.
    weather_api_url: str = "https://archive-api.open-meteo.com/v1/archive"
    # Its archive of past forecasts, for the days the archive has not reached yet.
    weather_forecast_url: str = "https://historical-forecast-api.open-meteo.com/v1/forecast"
    weather_archive_delay_days: float = 5.0
    weather_forecast_delay_h: float = 3.0
    supabase_url: str | None = None
    supabase_jwt_secret: str | None = None
    public_base_url: str | None = None
    app_return_url: str | None = None
    # The verify token of Strava's push subscription (the webhook's GET validation).
    strava_webhook_verify_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
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
    # Webhooks (services/webhooks.py): silence after which polling resumes its cadence,
    # requests an athlete's events may cost an hour, the time an event's POST may spend
    # processing it at once (0: never inside the POST), and attempts before failing.
    webhook_silence_s: int = 12 * 3600
    webhook_athlete_hourly_cap: int = 20
    webhook_inline_budget_s: float = 1.0
    webhook_max_attempts: int = 5
    data_dir: str = ".data"
    on_vercel: bool = False
    # Where operator alerts are POSTed (services/alerts.py), and its format when the URL
    # does not say (slack, discord, ntfy or generic); unset: no alerts.
    alert_webhook_url: str | None = None
    alert_webhook_format: str | None = None
    # The key that seals riders' Strava tokens, and old keys still read (services/sealing.py).
    token_encryption_key: TokenKey | None = None
    token_encryption_old_keys: tuple[TokenKey, ...] = ()
    # What the start found odd but not wrong (an unknown key in `.env`), said in words;
    # the app logs them and the command line prints them.
    config_warnings: tuple[str, ...] = ()
    # Athletes the Strava application may connect (its tier); None: unknown, nothing
    # refused ahead of Strava.
    strava_athlete_capacity: int | None = None
    # Metres removed, along the route, from each end of a route in club_activities.
    club_route_trim_m: int = 500

    def redacted(self) -> dict[str, Any]:
        """The settings with every secret masked, safe to log."""
        secret = {
            "cron_secret",
            "strava_client_secret",
            "supabase_jwt_secret",
            "database_url",
            "strava_webhook_verify_token",
            "token_encryption_key",
            "token_encryption_old_keys",
            "alert_webhook_url",  # a Slack or Discord webhook URL is its own secret
        }
        return {
            f.name: ("***" if f.name in secret and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }


# Parsers take the raw text and raise ValueError with what is allowed; load_settings
# names the variable.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


@dataclass(frozen=True)
class Number:
    """A number setting: an integer or a finite decimal from `min` to `max` (inclusive)."""

    kind: type[int] | type[float]
    min: float
    max: float

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        return f"{noun} from {_show(self.min)} to {_show(self.max)}"

    def __call__(self, raw: str) -> int | float:
        number: int | float | None = None
        if self.kind is int and _INTEGER.fullmatch(raw):
            number = int(raw)
        elif self.kind is float and _DECIMAL.fullmatch(raw):
            number = float(raw)  # '1e999' parses to inf: refused below
        if number is None or not math.isfinite(number) or not self.min <= number <= self.max:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise ValueError(f"must be {self.describe()} (got {shown!r})")
        return number

    def check(self, value: object) -> None:
        """An override: the right type and finite (ranges are for the environment)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        elif self.kind is int:
            ok = isinstance(value, int)
        else:
            ok = math.isfinite(value)
        if not ok:
            noun = "an integer" if self.kind is int else "a finite number"
            raise ValueError(f"must be {noun} (got {value!r})")


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


def _text(value: str) -> str:
    return value


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


def _origins(value: str) -> tuple[str, ...]:
    """ALLOWED_ORIGINS: comma-separated exact origins (scheme://host[:port]), no wildcard."""
    origins = []
    for part in value.split(","):
        origin = part.strip()
        if not origin:
            continue
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                "must be comma-separated origins such as https://club.example"
                f" (scheme, host and optional port; no path, no wildcard; got {origin!r})"
            )
        origins.append(origin.lower())
    return tuple(dict.fromkeys(origins))


ALERT_FORMATS = ("slack", "discord", "ntfy", "generic")


def _alert_format(value: str) -> str:
    if value.lower() not in ALERT_FORMATS:
        raise ValueError(f"must be one of {', '.join(ALERT_FORMATS)} (got {value!r})")
    return value.lower()


DAY_S = 86_400

# env var -> (field, parser). Every number setting has its allowed range here.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_URL": ("database_url", _text),
    "CRON_SECRET": ("cron_secret", _text),
    "STRAVA_CLIENT_ID": ("strava_client_id", _text),
    "STRAVA_CLIENT_SECRET": ("strava_client_secret", _text),
    "STRAVA_API_URL": ("strava_api_url", _url),
    "STRAVA_OAUTH_URL": ("strava_oauth_url", _url),
    "WEATHER_API_URL": ("weather_api_url", _url),
    "WEATHER_FORECAST_URL": ("weather_forecast_url", _url),
    # How far the archive lags behind today (Open-Meteo: about 5 days); the forecast
    # archive takes the days in between, lagging by hours.
    "WEATHER_ARCHIVE_DELAY_DAYS": ("weather_archive_delay_days", Number(float, 1, 30)),
    "WEATHER_FORECAST_DELAY_H": ("weather_forecast_delay_h", Number(float, 0, 72)),
    "SUPABASE_URL": ("supabase_url", _url),
    "SUPABASE_JWT_SECRET": ("supabase_jwt_secret", _text),
    "PUBLIC_BASE_URL": ("public_base_url", _url),
    "APP_RETURN_URL": ("app_return_url", _url),
    "STRAVA_WEBHOOK_VERIFY_TOKEN": ("strava_webhook_verify_token", _text),
    # Club sites whose pages may call the rider endpoints (CORS); exact origins only.
    "ALLOWED_ORIGINS": ("allowed_origins", _origins),
    # A serverless call's budget: Vercel functions run for seconds, at most a few minutes.
    "CRON_TIME_BUDGET_S": ("cron_time_budget_s", Number(float, 0.5, 300)),
    # 0 makes every rider due on every call; more than a week leaves riders stale.
    "SYNC_MIN_INTERVAL_S": ("sync_min_interval_s", Number(int, 0, 7 * DAY_S)),
    # Longer than any real ride across a continent is no race threshold.
    "RACE_MIN_DISTANCE_KM": ("race_min_distance_km", Number(float, 1, 5000)),
    # Days re-listed before the last sync (late uploads, edits).
    "SYNC_OVERLAP_DAYS": ("sync_overlap_days", Number(float, 1, 90)),
    # Threads of one call, each holding a database connection and a Strava connection.
    "SYNC_WORKERS": ("sync_workers", Number(int, 1, 32)),
    # Leases are not renewed: one must outlive the call that holds it (see _check_lease).
    "LEASE_TTL_S": ("lease_ttl_s", Number(int, 30, 3600)),
    # Share of the Strava request budget kept for Sync now.
    "SYNC_NOW_RESERVE": ("sync_now_reserve", Number(float, 0, 0.9)),
    "SYNC_NOW_COOLDOWN_S": ("sync_now_cooldown_s", Number(int, 0, DAY_S)),
    "ENRICH_MAX_ATTEMPTS": ("enrich_max_attempts", Number(int, 1, 20)),
    "STUCK_AFTER_S": ("stuck_after_s", Number(int, 60, 7 * DAY_S)),
    # One Strava request; the call's deadline cuts it shorter when the budget runs out.
    "STRAVA_TIMEOUT_S": ("strava_timeout_s", Number(float, 1, 60)),
    # An hour without events is normal for a small club at night; a week is too long.
    "WEBHOOK_SILENCE_S": ("webhook_silence_s", Number(int, 3600, 7 * DAY_S)),
    "WEBHOOK_ATHLETE_HOURLY_CAP": ("webhook_athlete_hourly_cap", Number(int, 1, 1000)),
    # Strava waits 2 s for the answer: processing inside the POST must leave room.
    "WEBHOOK_INLINE_BUDGET_S": ("webhook_inline_budget_s", Number(float, 0, 1.5)),
    "WEBHOOK_MAX_ATTEMPTS": ("webhook_max_attempts", Number(int, 1, 20)),
    "DATA_DIR": ("data_dir", _text),
    # Operator alerts: Slack or Discord incoming webhooks, ntfy, or any JSON receiver.
    "ALERT_WEBHOOK_URL": ("alert_webhook_url", _url),
    "ALERT_WEBHOOK_FORMAT": ("alert_webhook_format", _alert_format),
    # `<key id>:<32 bytes in base64>`; the old keys comma-separated (services/sealing.py).
    "TOKEN_ENCRYPTION_KEY": ("token_encryption_key", parse_key),
    "TOKEN_ENCRYPTION_OLD_KEYS": ("token_encryption_old_keys", parse_keys),
    # Strava's Standard tier connects up to 10 athletes; Extended Access many more.
    "STRAVA_ATHLETE_CAPACITY": ("strava_athlete_capacity", Number(int, 1, 999_999)),
    # Privacy zones are 200 m to 1.6 km; 0 shows whole routes (only with every rider's
    # word that their routes hide nothing).
    "CLUB_ROUTE_TRIM_M": ("club_route_trim_m", Number(int, 0, 20_000)),
}


# Names a `.env` may hold besides the settings: read by Flask, python-dotenv, the
# platform, or the tests and the demo.
OTHER_KNOWN_NAMES = frozenset(
    {
        "VERCEL",
        "PYTHON_DOTENV_DISABLED",
        "FLASK_APP",
        "FLASK_DEBUG",
        "FLASK_RUN_HOST",
        "FLASK_RUN_PORT",
        "TEST_DATABASE_URL",
        "CHROMIUM",
        "SCREENSHOT_DIR",
    }
)


def unknown_keys(keys: list[str], source: str = ".env") -> list[str]:
    """A warning for each key that is no setting, naming the nearest known one (a
    misspelt DATABASE_URL would otherwise leave the embedded database in its place)."""
    known = sorted(set(_VARIABLES) | OTHER_KNOWN_NAMES)
    warnings = []
    for key in keys:
        if key in known:
            continue
        near = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.75)
        hint = f": did you mean {near[0]}?" if near else ""
        warnings.append(
            f"{source} sets {key}, which is no setting of this service{hint} (it is ignored)"
        )
    return warnings


def _check_lease(values: Mapping[str, Any], given: Mapping[str, str]) -> None:
    """The rule between two settings, applied to what the environment (and `.env`) set."""
    defaults = Settings()
    lease = values.get("lease_ttl_s", defaults.lease_ttl_s)
    budget = values.get("cron_time_budget_s", defaults.cron_time_budget_s)
    if lease < 2 * budget:
        source = "" if "lease_ttl_s" in values else ", the default"
        raise ConfigError(
            f"LEASE_TTL_S is invalid: must be at least twice CRON_TIME_BUDGET_S "
            f"({_show(2 * budget)} s for a budget of {_show(budget)} s), so that a lease "
            f"outlives the call holding it (got {given.get('LEASE_TTL_S', str(lease))!r}"
            f"{source})"
        )


DOTENV_PATH = Path(__file__).resolve().parent / ".env"


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of a `.env` file (none if it is absent), parsed by python-dotenv.

    A statement python-dotenv cannot parse (it would only warn and skip it) is a
    ConfigError naming the file and the line. `${VAR}` references are expanded, the
    real environment winning, as `load_dotenv(override=False)` does.
    """
    disabled = os.environ.get("PYTHON_DOTENV_DISABLED", "").casefold()  # as load_dotenv
    if not path.is_file() or disabled in {"1", "true", "t", "yes", "y"}:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    pairs: list[tuple[str, str | None]] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # python-dotenv's position is where the statement's leading blank lines start.
            string = binding.original.string
            blank = string[: len(string) - len(string.lstrip())]
            line = binding.original.line + len(re.findall(r"\r\n|\n|\r", blank))
            raise ConfigError(
                f"{path}, line {line}: python-dotenv cannot parse this statement "
                "(expected NAME=value; quotes must be closed)"
            )
        if binding.key is not None:
            pairs.append((binding.key, binding.value))
    resolved = resolve_variables(pairs, override=False)
    return {key: value for key, value in resolved.items() if value is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    dotenv_path: Path = DOTENV_PATH,
) -> Settings:
    """Build Settings from defaults, then `.env`, then the environment, then overrides.

    The `.env` file (at the project root) is read only when `environ` is not given; it
    does not change os.environ. Values from `.env` and the environment must lie in the
    ranges of _VARIABLES; overrides (tests, benchmarks) need only the right type and
    finite numbers, so tests may use short timeouts and leases.
    """
    warnings: list[str] = []
    if environ is None:
        dotenv = read_dotenv(dotenv_path)
        warnings = unknown_keys(list(dotenv), source=str(dotenv_path))
        environ = {**dotenv, **os.environ}  # the real environment wins
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for name, (field, parse) in _VARIABLES.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} is invalid: {exc}") from None
        given[name] = raw
    _check_lease(values, given)
    _check_key_ids(values.get("token_encryption_key"), values.get("token_encryption_old_keys", ()))
    values["on_vercel"] = bool(environ.get("VERCEL"))
    values["config_warnings"] = tuple(warnings)
    settings = Settings(**values)
    if overrides:
        known = {f.name for f in fields(Settings)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        numbers = {field: p for field, p in _VARIABLES.values() if isinstance(p, Number)}
        for field, value in overrides.items():
            if field in numbers:
                try:
                    numbers[field].check(value)
                except ValueError as exc:
                    raise ConfigError(f"override {field} is invalid: {exc}") from None
        settings = replace(settings, **overrides)
        _check_key_overrides(settings)
    return settings


def _check_key_ids(current: TokenKey | None, old: tuple[TokenKey, ...]) -> None:
    if current is not None and any(k.id == current.id for k in old):
        raise ConfigError(
            f"TOKEN_ENCRYPTION_OLD_KEYS is invalid: key id {current.id!r} is also "
            "TOKEN_ENCRYPTION_KEY's; give each key its own id"
        )


def _check_key_overrides(settings: Settings) -> None:
    current, old = settings.token_encryption_key, settings.token_encryption_old_keys
    if current is not None and not isinstance(current, TokenKey):
        raise ConfigError("override token_encryption_key is invalid: must be a TokenKey")
    if not isinstance(old, tuple) or not all(isinstance(k, TokenKey) for k in old):
        raise ConfigError("override token_encryption_old_keys is invalid: must be TokenKeys")
    _check_key_ids(current, old)
