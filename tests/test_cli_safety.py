"""The command line refuses to guess: a command that changes data says which database it
will change before doing anything, and refuses the embedded Postgres of local runs unless
told `--local`; a misspelt `.env` key is named with the setting it resembles; a bad
setting is one line, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app_factory import create_app
from config import load_settings, unknown_keys
from tests.conftest import ROOT, TOKEN_KEY


def test_a_misspelt_dotenv_key_is_named_with_the_setting_it_resembles(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DATABSE_URL=postgresql://club@db.example:6543/postgres\n"
        "CRON_SECRET=abc\nSUPABASE_ANON_KEY=xyz\nstrava_client_id=1\n"
    )
    settings = load_settings(dotenv_path=dotenv)
    assert settings.database_url is None  # the misspelt name sets nothing
    assert settings.config_warnings == (
        f"{dotenv} sets DATABSE_URL, which is no setting of this service: did you mean"
        " DATABASE_URL? (it is ignored)",
        f"{dotenv} sets SUPABASE_ANON_KEY, which is no setting of this service (it is ignored)",
        f"{dotenv} sets strava_client_id, which is no setting of this service: did you mean"
        " STRAVA_CLIENT_ID? (it is ignored)",
    )
    assert "postgresql://" not in " ".join(settings.config_warnings)  # keys, never values
    assert unknown_keys(["CRON_SECRET", "VERCEL", "TOKEN_ENCRYPTION_KEY"]) == []
    assert unknown_keys(["STRAVA_WEBHOK_VERIFY_TOKEN"])[0].endswith(
        "did you mean STRAVA_WEBHOOK_VERIFY_TOKEN? (it is ignored)"
    )


def test_the_app_logs_each_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text("CRON_SECRETT=abc\n")
    settings = load_settings(dotenv_path=dotenv)
    app = create_app(
        {"database_url": "postgresql://nobody@127.0.0.1:9/x", "token_encryption_key": TOKEN_KEY,
         "config_warnings": settings.config_warnings},
        environ={},
    )  # fmt: skip
    assert app
    logged = capsys.readouterr().out
    assert "did you mean CRON_SECRET?" in logged and '"level": "warning"' in logged


@pytest.fixture(scope="module")
def local_only_app():
    """An app with DATABASE_URL unset: the embedded Postgres, in a data dir of its own
    (never the shared .data/ server), stopped and removed at the end. Not under pytest's
    basetemp: the server runs as another user, and pytest keeps that folder private."""
    data_dir = Path(tempfile.mkdtemp(prefix="cli-safety-")) / "data"
    app = create_app(environ={"DATA_DIR": str(data_dir), "CRON_SECRET": "x" * 16})
    yield app
    app.extensions["strava_sync"].db.close()
    subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "stop"],
        env={**os.environ, "DATA_DIR": str(data_dir)},
        capture_output=True,
        timeout=90,
    )
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.mark.parametrize(
    "args",
    [
        ["rotate-token-key"],
        ["strava-webhook", "create"],
        ["strava-webhook", "delete"],
        ["strava-webhook", "show"],
    ],
)
def test_commands_refuse_the_embedded_database_unless_local(local_only_app, args):
    """`rotate-token-key` against the embedded database once sealed 0 rows and said
    "done: every row is under 'k2'": the rotation steps then dropped production's key."""
    result = local_only_app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, result.output
    err = result.stderr.splitlines()
    assert err[0].startswith("Target: the embedded Postgres of local runs (database ")
    assert "DATABASE_URL is not set" in result.stderr and "--local" in result.stderr
    assert result.stdout == ""  # nothing was done, nothing reported as done
    assert local_only_app.extensions["strava_sync"].db._pool is None  # never even opened


def test_local_means_the_local_database(local_only_app):
    result = local_only_app.test_cli_runner().invoke(args=["rotate-token-key", "--local"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Target: the embedded Postgres of local runs")
    assert "connections: 0" in result.stdout


def clean_env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHON_DOTENV_DISABLED": "1",
        **more,
    }


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TOKEN_ENCRYPTION_KEY", "k1:abc", "TOKEN_ENCRYPTION_KEY is invalid: must be <key id>:"),
        ("SYNC_WORKERS", "lots", "SYNC_WORKERS is invalid: must be an integer from 1 to 32"),
    ],
)
def test_a_configuration_error_is_one_line_without_a_traceback(tmp_path, variable, value, says):
    env = clean_env(tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:9/x", **{variable: value})
    for command in (["-c", "import api.index"], ["-m", "flask", "--app", "api.index", "routes"]):
        result = subprocess.run(
            [sys.executable, *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"ConfigError: {says}")
        assert value not in result.stderr.replace(f"got {value!r}", "")  # no key echoed
