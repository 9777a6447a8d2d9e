"""Settings are read once, validated, and the embedded database never runs on Vercel."""

from __future__ import annotations

import os

import pytest

import db as dbmod
from app_factory import create_app
from config import _VARIABLES, ConfigError, Number, Settings, load_settings

# The allowed range of every number setting: (env var, field, kind, min, max, default).
RANGES = [
    ("CRON_TIME_BUDGET_S", "cron_time_budget_s", float, 0.5, 300, 8.0),
    ("SYNC_MIN_INTERVAL_S", "sync_min_interval_s", int, 0, 604800, 3600),
    ("RACE_MIN_DISTANCE_KM", "race_min_distance_km", float, 1, 5000, 200.0),
    ("SYNC_OVERLAP_DAYS", "sync_overlap_days", float, 1, 90, 7.0),
    ("SYNC_WORKERS", "sync_workers", int, 1, 32, 8),
    ("LEASE_TTL_S", "lease_ttl_s", int, 30, 3600, 120),
    ("SYNC_NOW_RESERVE", "sync_now_reserve", float, 0, 0.9, 0.10),
    ("SYNC_NOW_COOLDOWN_S", "sync_now_cooldown_s", int, 0, 86400, 300),
    ("ENRICH_MAX_ATTEMPTS", "enrich_max_attempts", int, 1, 20, 5),
    ("STUCK_AFTER_S", "stuck_after_s", int, 60, 604800, 600),
    ("STRAVA_TIMEOUT_S", "strava_timeout_s", float, 1, 60, 10.0),
    ("WEBHOOK_SILENCE_S", "webhook_silence_s", int, 3600, 604800, 43200),
    ("WEBHOOK_ATHLETE_HOURLY_CAP", "webhook_athlete_hourly_cap", int, 1, 1000, 20),
    ("WEBHOOK_INLINE_BUDGET_S", "webhook_inline_budget_s", float, 0, 1.5, 1.0),
    ("WEBHOOK_MAX_ATTEMPTS", "webhook_max_attempts", int, 1, 20, 5),
    ("WEATHER_ARCHIVE_DELAY_DAYS", "weather_archive_delay_days", float, 1, 30, 5.0),
    ("WEATHER_FORECAST_DELAY_H", "weather_forecast_delay_h", float, 0, 72, 3.0),
    # Unset: the capacity is unknown and nothing is refused ahead of Strava.
    ("STRAVA_ATHLETE_CAPACITY", "strava_athlete_capacity", int, 1, 999_999, None),
    ("CLUB_ROUTE_TRIM_M", "club_route_trim_m", int, 0, 20_000, 500),
]
IDS = [r[0] for r in RANGES]
# A lease long enough for the longest budget, so each bound is tested on its own.
BASE = {"LEASE_TTL_S": "3600"}


def allowed(kind, low, high):
    noun = "an integer" if kind is int else "a number"
    return f"{noun} from {low:g} to {high:g}"


def test_every_number_setting_has_a_tested_range():
    numbers = {name: p for name, (_, p) in _VARIABLES.items() if isinstance(p, Number)}
    assert set(numbers) == set(IDS)
    for name, field, kind, low, high, default in RANGES:
        assert _VARIABLES[name][0] == field
        assert (numbers[name].kind, numbers[name].min, numbers[name].max) == (kind, low, high)
        assert getattr(Settings(), field) == default
        assert default is None or low <= default <= high


@pytest.mark.parametrize(("name", "field", "kind", "low", "high", "default"), RANGES, ids=IDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN", "1e999", "1e9", "-1", "ten"])
def test_nonsense_numbers_are_refused_with_the_range(name, field, kind, low, high, default, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, name: value})
    message = str(caught.value)
    assert message.startswith(f"{name} is invalid: ")
    assert f"must be {allowed(kind, low, high)} (got {value!r})" in message


@pytest.mark.parametrize(("name", "field", "kind", "low", "high", "default"), RANGES, ids=IDS)
def test_each_bound_is_allowed_and_just_beyond_is_not(name, field, kind, low, high, default):
    step = 1 if kind is int else 0.01
    for value in (low, high, low + step, high - step):
        settings = load_settings({**BASE, name: f"{value:g}" if kind is float else str(value)})
        assert getattr(settings, field) == pytest.approx(value)
        assert type(getattr(settings, field)) is kind
    for value in (low - step, high + step):
        with pytest.raises(ConfigError, match=f"{name} is invalid: .*{allowed(kind, low, high)}"):
            load_settings({**BASE, name: f"{value:g}" if kind is float else str(value)})


@pytest.mark.parametrize("name", [r[0] for r in RANGES if r[2] is int])
@pytest.mark.parametrize("value", ["1.5", "1e3", "2.0", "0x10", "1_000", "\u0663"])
def test_integer_settings_refuse_anything_but_digits(name, value):
    with pytest.raises(ConfigError, match=rf"{name} is invalid: must be an integer from \d+ to"):
        load_settings({**BASE, name: value})


def test_the_example_message():
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNC_WORKERS": "1000"})
    assert str(caught.value) == (
        "SYNC_WORKERS is invalid: must be an integer from 1 to 32 (got '1000')"
    )


def test_a_lease_must_outlive_the_call_holding_it():
    with pytest.raises(ConfigError, match=r"LEASE_TTL_S .*twice CRON_TIME_BUDGET_S .*default"):
        load_settings({"CRON_TIME_BUDGET_S": "100"})  # the default lease, 120 s, is too short
    with pytest.raises(ConfigError, match=r"LEASE_TTL_S .*200 s .*got '150'"):
        load_settings({"CRON_TIME_BUDGET_S": "100", "LEASE_TTL_S": "150"})
    settings = load_settings({"CRON_TIME_BUDGET_S": "100", "LEASE_TTL_S": "200"})
    assert (settings.cron_time_budget_s, settings.lease_ttl_s) == (100.0, 200)


def test_overrides_need_the_right_type_but_may_go_below_production_ranges():
    settings = load_settings({}, {"strava_timeout_s": 0.3, "race_min_distance_km": 100})
    assert settings.strava_timeout_s == 0.3 and settings.race_min_distance_km == 100
    for field, value in [
        ("sync_workers", 1.5),
        ("sync_workers", True),
        ("sync_workers", "4"),
        ("cron_time_budget_s", float("nan")),
        ("cron_time_budget_s", float("inf")),
    ]:
        with pytest.raises(ConfigError, match=f"override {field} is invalid"):
            load_settings({}, {field: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CRON_TIME_BUDGET_S", "soon"),
        ("CRON_TIME_BUDGET_S", "-1"),
        ("SYNC_MIN_INTERVAL_S", "1.5"),
        ("RACE_MIN_DISTANCE_KM", "0"),
        ("STRAVA_API_URL", "www.strava.com/api/v3"),
        ("SUPABASE_URL", "ftp://example"),
        ("SYNC_NOW_RESERVE", "1.5"),
    ],
)
def test_a_malformed_variable_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_defaults_and_parsing():
    settings = load_settings(
        {"CRON_TIME_BUDGET_S": "9.5", "STRAVA_API_URL": "https://api-v3.strava.com/", "VERCEL": "1"}
    )
    assert settings.cron_time_budget_s == 9.5
    assert settings.strava_api_url == "https://api-v3.strava.com"  # trailing slash dropped
    assert settings.on_vercel is True
    assert settings.sync_min_interval_s == 3600 and settings.race_min_distance_km == 200


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings({}, {"cron_secrett": "x"})


def test_the_embedded_database_is_refused_on_vercel():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        dbmod.resolve_database_url(load_settings({"VERCEL": "1"}))
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app(environ={"VERCEL": "1", "CRON_SECRET": "x" * 16})


@pytest.fixture
def clean_environ(monkeypatch):
    """No setting (nor VERCEL) in the real environment, whatever the runner had."""
    for name in [*_VARIABLES, "VERCEL", "PYTHON_DOTENV_DISABLED"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_environment_wins_over_dotenv(tmp_path, clean_environ):
    dotenv = tmp_path / ".env"
    dotenv.write_text("CRON_TIME_BUDGET_S=5\nSYNC_MIN_INTERVAL_S=60\n")
    clean_environ.setenv("CRON_TIME_BUDGET_S", "7")
    settings = load_settings(dotenv_path=dotenv)
    assert settings.cron_time_budget_s == 7.0  # the real environment
    assert settings.sync_min_interval_s == 60  # from .env


def test_a_good_dotenv_is_read_without_changing_the_environment(tmp_path, clean_environ):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# local settings\n"
        "\n"
        "export SYNC_WORKERS=4\n"
        "STRAVA_TIMEOUT_S = '2.5'  # seconds\n"
        'CRON_SECRET="with # hash"\n'
        "PUBLIC_BASE_URL=https://club.example\n"
        "APP_RETURN_URL=${PUBLIC_BASE_URL}/profile\n"
        "VERCEL=1\n"
    )
    before = dict(os.environ)
    settings = load_settings(dotenv_path=dotenv)
    assert settings.sync_workers == 4 and settings.strava_timeout_s == 2.5
    assert settings.cron_secret == "with # hash"
    assert settings.app_return_url == "https://club.example/profile"
    assert settings.on_vercel is True
    assert dict(os.environ) == before
    assert load_settings(dotenv_path=tmp_path / "absent.env") == Settings()


def test_dotenv_values_are_checked_like_the_environment(tmp_path, clean_environ):
    dotenv = tmp_path / ".env"
    dotenv.write_text("SYNC_WORKERS=1000\n")
    with pytest.raises(ConfigError, match=r"SYNC_WORKERS is invalid: .*from 1 to 32"):
        load_settings(dotenv_path=dotenv)
    clean_environ.setenv("SYNC_WORKERS", "3")  # the environment wins, so the start goes on
    assert load_settings(dotenv_path=dotenv).sync_workers == 3


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("CRON_TIME_BUDGET_S=5\nSYNC_WORKERS 4\nSYNC_MIN_INTERVAL_S=60\n", 2),
        ("CRON_TIME_BUDGET_S=5\n\n# comment\n\n   SYNC_WORKERS 4\n", 5),
        ('CRON_TIME_BUDGET_S=5\r\n\r\nCRON_SECRET="abc-unclosed\r\nSYNC_WORKERS=4\r\n', 3),
        ("A=1\nB='x' trailing junk\n", 2),
        ("=value\n", 1),
    ],
)
def test_a_dotenv_line_that_cannot_be_parsed_stops_the_start(tmp_path, clean_environ, text, line):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(text.encode())
    with pytest.raises(ConfigError) as caught:
        load_settings(dotenv_path=dotenv)
    message = str(caught.value)
    assert message.startswith(f"{dotenv}, line {line}: ")
    assert "abc-unclosed" not in message  # the line's text (perhaps a secret) is not echoed
