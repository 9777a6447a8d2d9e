"""No token, client secret or cron secret in any log line or response."""

from __future__ import annotations

import logging

from tests.conftest import CLIENT_SECRET, CRON_SECRET, cron_headers
from tests.factories import connect_rider, query

LIST = "/athlete/activities"


def test_logs_and_responses_never_hold_secrets(make_app, strava, database, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    client = make_app(sync_workers=2).test_client()
    expiring = connect_rider(database, strava, 501, activities=3, expires_in=10)
    connect_rider(database, strava, 502, activities=3)
    revoked = connect_rider(database, strava, 503, activities=1, expires_in=10)
    strava.revoke_athlete(503)
    broken = connect_rider(database, strava, 504, activities=1)
    strava.fail_next(3, status=500, path_contains=LIST)
    tokens_before = query(database, "select access_token, refresh_token from strava_connections")

    responses = [
        client.post("/api/cron/sync-strava", headers=cron_headers()),
        client.post("/api/cron/sync-strava", headers=cron_headers("wrong-" + CRON_SECRET)),
        client.post("/api/cron/sync-strava?limit=abc", headers=cron_headers()),
        client.get("/api/health"),
    ]
    assert responses[0].status_code == 200
    tokens_after = query(database, "select access_token, refresh_token from strava_connections")
    secrets = {CRON_SECRET, CLIENT_SECRET}
    for row in tokens_before + tokens_after:
        secrets |= {row["access_token"], row["refresh_token"]}
    assert len(secrets) >= 8 + 2  # old and rotated tokens of several riders
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
