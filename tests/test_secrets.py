"""No token (plain or sealed), token key, client secret or cron secret in any log line or
response."""

from __future__ import annotations

import logging

from services.sealing import Sealer
from tests.conftest import CLIENT_SECRET, CRON_SECRET, TOKEN_KEY, cron_headers
from tests.factories import connect_rider, query, stored_tokens
from token_keys import new_key

LIST = "/athlete/activities"


def tokens(database, riders, old):
    """Every rider's tokens as stored (sealed) and opened."""
    sealer = Sealer(TOKEN_KEY, [old])
    rows = query(database, "select access_token, refresh_token from strava_connections")
    return rows + [stored_tokens(database, r, sealer=sealer) for r in riders]


def test_logs_and_responses_never_hold_secrets(make_app, strava, database, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    old = new_key("old")
    client = make_app(sync_workers=2, token_encryption_old_keys=(old,)).test_client()
    expiring = connect_rider(database, strava, 501, activities=3, expires_in=10)
    steady = connect_rider(database, strava, 502, activities=3, sealer=Sealer(old))
    revoked = connect_rider(database, strava, 503, activities=1, expires_in=10)
    strava.revoke_athlete(503)
    broken = connect_rider(database, strava, 504, activities=1)
    strava.fail_next(3, status=500, path_contains=LIST)
    riders = [expiring, steady, revoked, broken]
    tokens_before = tokens(database, riders, old)

    responses = [
        client.post("/api/cron/sync-strava", headers=cron_headers()),
        client.post("/api/cron/sync-strava", headers=cron_headers("wrong-" + CRON_SECRET)),
        client.post("/api/cron/sync-strava?limit=abc", headers=cron_headers()),
        client.get("/api/health"),
    ]
    assert responses[0].status_code == 200
    tokens_after = tokens(database, riders, old)
    secrets = {CRON_SECRET, CLIENT_SECRET, *TOKEN_KEY.secret_texts(), *old.secret_texts()}
    for row in tokens_before + tokens_after:
        for value in (row["access_token"], row["refresh_token"]):
            secrets |= {value, value.rsplit(":", 1)[-1]}  # a sealed one's ciphertext alone too
    assert len(secrets) >= 8 * 3 + 2  # sealed, resealed, rotated, opened tokens of 4 riders
    logged = (
        caplog.text
        + capsys.readouterr().out
        + "\n".join(r.getMessage() + str(vars(r)) for r in caplog.records)
    )
    answers = "\n".join(r.get_data(as_text=True) for r in responses)
    for secret in secrets:
        assert secret not in logged
        assert secret not in answers
    assert "call finished" in logged  # the scan did see the logs
    assert {expiring, revoked, broken} <= {i["rider_id"] for i in responses[0].get_json()["items"]}


def test_the_log_formatter_masks_what_slips_through():
    from logging_setup import RedactingJsonFormatter

    formatter = RedactingJsonFormatter(["s3cret-value"])
    record = logging.makeLogRecord(
        {
            "msg": "Authorization: Bearer abc.def-123 refresh_token=xyz789 s3cret-value",
            "levelname": "INFO",
            "name": "t",
        }
    )
    line = formatter.format(record)
    assert "abc.def-123" not in line and "xyz789" not in line and "s3cret-value" not in line


def test_the_log_formatter_masks_sealed_tokens_and_the_keys():
    from logging_setup import RedactingJsonFormatter

    key = new_key("k7")
    sealed = Sealer(key).seal("f" * 40, rider_id=3, column="refresh_token")
    ciphertext = sealed.rsplit(":", 1)[1]
    formatter = RedactingJsonFormatter(Sealer(key).secret_texts())
    record = logging.makeLogRecord(
        {
            "msg": f"row {sealed!r} stored; env TOKEN_ENCRYPTION_KEY={key.text()}",
            "levelname": "INFO",
            "name": "t",
            "row": {"token": sealed, "token_encryption_old_keys": key.text()},
            "key_alone": key.text().split(":", 1)[1],
        }
    )
    line = formatter.format(record)
    assert ciphertext not in line and not any(t in line for t in key.secret_texts())
    assert "enc1:k7:***" in line  # the key id stays: it says which key, not what it is


def test_settings_repr_for_logs_masks_secrets():
    from config import load_settings

    settings = load_settings(
        {
            "CRON_SECRET": "cron-abcdef",
            "STRAVA_CLIENT_SECRET": "cs-abcdef",
            "DATABASE_URL": "postgresql://u:pw@h/db",
        }
    )
    redacted = str(settings.redacted())
    assert "cron-abcdef" not in redacted and "cs-abcdef" not in redacted and "pw@" not in redacted
