"""TOKEN_ENCRYPTION_KEY and TOKEN_ENCRYPTION_OLD_KEYS: validated, required where the
database is shared, made once under DATA_DIR for local runs."""

from __future__ import annotations

import base64
import random
import subprocess
import sys

import pytest

from app_factory import create_app
from config import ConfigError, load_settings
from services.sealing import sealer_for
from tests.conftest import ROOT
from token_keys import new_key, parse_key

K1, K2, K3 = new_key("k1"), new_key("k2"), new_key("k3")
URL = "postgresql://u:pw@127.0.0.1:1/x"  # never connected to: the app opens its pool lazily


# The parameters are fixed at collection: the same in every run and in each of
# pytest-xdist's workers (which must collect the same tests), hence seeded bytes.
@pytest.mark.parametrize(
    "value",
    [
        "k1",
        "k1:" + base64.urlsafe_b64encode(random.Random(1).randbytes(16)).decode(),
        "k 1:" + base64.urlsafe_b64encode(random.Random(2).randbytes(32)).decode(),
        "k1:" + "%" * 43,
    ],
    ids=["no-id", "16-bytes-aes-128", "id-with-space", "not-base64"],
)
def test_a_malformed_key_is_refused_with_its_format_and_never_echoed(value):
    with pytest.raises(ConfigError) as refused:
        load_settings({"TOKEN_ENCRYPTION_KEY": value})
    message = str(refused.value)
    assert message.startswith("TOKEN_ENCRYPTION_KEY is invalid: must be <key id>:<32 random")
    assert value.partition(":")[2] not in message or len(value.partition(":")[2]) < 4


def test_old_keys_are_checked_too():
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_OLD_KEYS is invalid: .*'k2'"):
        load_settings({"TOKEN_ENCRYPTION_OLD_KEYS": f"{K2.text()},{new_key('k2').text()}"})
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_OLD_KEYS is invalid: must be"):
        load_settings({"TOKEN_ENCRYPTION_OLD_KEYS": f"{K2.text()},junk"})
    with pytest.raises(ConfigError, match="'k1' is also TOKEN_ENCRYPTION_KEY's"):
        load_settings(
            {"TOKEN_ENCRYPTION_KEY": K1.text(), "TOKEN_ENCRYPTION_OLD_KEYS": new_key("k1").text()}
        )
    with pytest.raises(ConfigError, match="override token_encryption_key is invalid"):
        load_settings({}, {"token_encryption_key": K1.text()})


def test_the_current_key_seals_and_the_old_ones_still_open():
    settings = load_settings(
        {
            "TOKEN_ENCRYPTION_KEY": K3.text(),
            "TOKEN_ENCRYPTION_OLD_KEYS": f"{K1.text()}, {K2.text()}",
            "DATABASE_URL": URL,
        }
    )
    sealer, made = sealer_for(settings)
    assert made is None and sealer.current == K3 and sealer.key_ids == ("k3", "k1", "k2")
    old = sealer_for(load_settings({"TOKEN_ENCRYPTION_KEY": K1.text(), "DATABASE_URL": URL}))[0]
    stored = old.seal("abc123", rider_id=1, column="access_token")
    assert sealer.open(stored, rider_id=1, column="access_token") == "abc123"


def test_the_keys_never_show_in_the_settings_shown():
    settings = load_settings(
        {"TOKEN_ENCRYPTION_KEY": K1.text(), "TOKEN_ENCRYPTION_OLD_KEYS": K2.text()}
    )
    shown = str(settings.redacted()) + repr(settings)
    for key in (K1, K2):
        assert not any(text in shown for text in key.secret_texts())
    assert settings.redacted()["token_encryption_key"] == "***"


@pytest.mark.parametrize(
    ("environ", "where"),
    [
        ({"VERCEL": "1", "DATABASE_URL": URL}, "on Vercel"),
        ({"DATABASE_URL": URL}, "with DATABASE_URL set"),
    ],
)
def test_without_the_key_a_shared_database_refuses_to_start(environ, where, tmp_path):
    with pytest.raises(ConfigError) as refused:
        create_app(environ={**environ, "DATA_DIR": str(tmp_path), "CRON_SECRET": "x" * 16})
    message = str(refused.value)
    assert message.startswith(f"TOKEN_ENCRYPTION_KEY is not set, and {where} it is required")
    assert "python3 -c" in message  # how to make one
    assert not (tmp_path / "token-key").exists()  # no key made where one must be given


def test_the_deployed_entry_point_names_the_missing_key(tmp_path):
    """What Vercel runs (api/index.py), in a clean process: it fails, naming the variable."""
    result = subprocess.run(
        [sys.executable, "-c", "import api.index"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHON_DOTENV_DISABLED": "1",
            "VERCEL": "1",
            "DATABASE_URL": URL,
            "CRON_SECRET": "x" * 16,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ConfigError: TOKEN_ENCRYPTION_KEY is not set, and on Vercel" in result.stderr


def test_a_local_run_makes_its_key_once_under_the_data_dir(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path / "data")})
    sealer, made = sealer_for(settings)
    assert made == tmp_path / "data" / "token-key" and sealer.current.id == "local"
    again, made_again = sealer_for(settings)
    assert made_again is None and again.current == sealer.current  # reused
    assert parse_key((tmp_path / "data" / "token-key").read_text()) == sealer.current
    # and a configured key wins over the local one
    configured = load_settings(
        {"DATA_DIR": str(tmp_path / "data"), "TOKEN_ENCRYPTION_KEY": K1.text()}
    )
    assert sealer_for(configured)[0].current == K1
