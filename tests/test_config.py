"""Settings are read once, validated, and the embedded database never runs on Vercel."""

from __future__ import annotations

import pytest

import db as dbmod
from app_factory import create_app
from config import ConfigError, load_settings


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


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("CRON_TIME_BUDGET_S=5\nSYNC_MIN_INTERVAL_S=60\n")
    monkeypatch.setenv("CRON_TIME_BUDGET_S", "7")
    monkeypatch.delenv("SYNC_MIN_INTERVAL_S", raising=False)
    settings = load_settings(dotenv_path=dotenv)
    assert settings.cron_time_budget_s == 7.0  # the real environment
    assert settings.sync_min_interval_s == 60  # from .env
