"""Riders' tokens sealed at rest, against the real Postgres: rows from before sealing
upgrade in place, old keys re-seal on first use and with `rotate-token-key` (safe beside
a token refresh in flight), and no client role reads even the ciphertext."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import responses
from psycopg.rows import dict_row

import models
from fake_strava import FakeStrava
from services.sealing import Sealer, key_id_of
from services.tokens import rotate_token_key, seal_tokens
from tests.conftest import (
    API_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    OAUTH_URL,
    ROOT,
    SEALER,
    TOKEN_KEY,
    cron_headers,
)
from tests.factories import connect_rider, execute, query, stored_tokens
from token_keys import new_key

K1 = new_key("k1")  # the key before a rotation to the session's key ("test")
MIGRATION = ROOT / "supabase" / "migrations" / "20261202003000_tokens_sealed.sql"


def sync(client):
    response = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def raw(database, rider_id):
    return query(
        database,
        "select access_token, refresh_token from strava_connections where rider_id = %s",
        rider_id,
    )[0]


def store_plain(database, rider_id, tokens):
    """The row as a deployment from before sealing wrote it: the tokens in plain text."""
    execute(
        database,
        "update strava_connections set access_token = %s, refresh_token = %s where rider_id = %s",
        tokens["access_token"],
        tokens["refresh_token"],
        rider_id,
    )


def key_ids(database):
    rows = query(database, "select access_token, refresh_token from strava_connections")
    return sorted({key_id_of(v) or "plain" for r in rows for v in r.values()})


# --- upgrading in place ----------------------------------------------------------------


def test_a_row_from_before_sealing_is_read_and_sealed_on_first_use(client, strava, database):
    rider = connect_rider(database, strava, 201, activities=3)
    tokens = stored_tokens(database, rider)
    store_plain(database, rider, tokens)
    assert raw(database, rider)["access_token"] == tokens["access_token"]

    body = sync(client)
    assert body["succeeded"] == 1 and body["items"][0]["added"] == 3
    assert strava.refresh_count(201) == 0  # the plain token worked as it was
    assert all(v.startswith("enc1:test:") for v in raw(database, rider).values())
    assert stored_tokens(database, rider) == tokens  # the same tokens, now sealed


def test_a_plain_row_whose_token_expired_is_refreshed_and_stored_sealed(client, strava, database):
    rider = connect_rider(database, strava, 202, activities=2, expires_in=10)
    store_plain(database, rider, stored_tokens(database, rider))
    assert sync(client)["succeeded"] == 1
    assert strava.refresh_count(202) == 1
    assert all(v.startswith("enc1:test:") for v in raw(database, rider).values())
    assert stored_tokens(database, rider)["refresh_token"] == strava.current_refresh_token(202)


def test_rows_under_an_old_key_are_sealed_under_the_new_one_on_first_use(
    make_app, strava, database
):
    riders = [
        connect_rider(database, strava, 210 + i, activities=1, sealer=Sealer(K1)) for i in range(3)
    ]
    assert key_ids(database) == ["k1"]
    client = make_app(token_encryption_old_keys=(K1,)).test_client()
    assert sync(client)["succeeded"] == 3
    assert key_ids(database) == ["test"]
    assert all(stored_tokens(database, r)["access_token"] for r in riders)


def test_a_token_under_a_missing_key_fails_its_rider_only_and_is_left_as_it_is(
    client, strava, database, caplog, capsys
):
    caplog.set_level(logging.INFO)
    lost = connect_rider(database, strava, 220, activities=1, sealer=Sealer(K1))
    fine = connect_rider(database, strava, 221, activities=2)
    before = raw(database, lost)
    items = {i["rider_id"]: i for i in sync(client)["items"]}
    assert items[fine]["status"] == "succeeded"
    assert items[lost]["status"] == "failed" and items[lost]["error"] == "TokenUnreadable"
    assert raw(database, lost) == before  # never rewritten
    logged = caplog.text + capsys.readouterr().out
    assert "sealed under key id 'k1'" in logged
    for value in before.values():
        assert value not in logged and value.split(":")[2] not in logged


# --- compare-and-set ---------------------------------------------------------------------


def test_a_stale_reseal_never_overwrites_a_refresh(strava, database):
    rider = connect_rider(database, strava, 230)
    plain = stored_tokens(database, rider)
    store_plain(database, rider, plain)
    with (
        psycopg.connect(database, row_factory=dict_row) as reader,
        psycopg.connect(database, row_factory=dict_row) as refresher,
    ):
        reader.execute("set lock_timeout = '5s'")  # waiting would fail the test, not hang it
        stale = models.tokens.read_tokens(reader, rider_id=rider)
        assert stale is not None
        reader.commit()
        # a refresh stores new tokens between the reader's read and its reseal
        new_access, new_refresh = seal_tokens(SEALER, rider, "a" * 40, "b" * 40)
        models.tokens.store_tokens(
            refresher,
            rider_id=rider,
            access_sealed=new_access,
            refresh_sealed=new_refresh,
            expires_at=stale.expires_at,
            now=stale.expires_at,
        )
        refresher.commit()
        access, refresh = seal_tokens(SEALER, rider, plain["access_token"], plain["refresh_token"])
        args = {"access_sealed": access, "refresh_sealed": refresh}
        stale_args = {"stored_access": stale.access_token, "stored_refresh": stale.refresh_token}
        assert not models.tokens.reseal_tokens(reader, rider_id=rider, **stale_args, **args)
        reader.commit()
        assert raw(database, rider) == {"access_token": new_access, "refresh_token": new_refresh}

        # a refresh in flight holds the row: the reseal skips it at once instead of waiting
        current = models.tokens.read_tokens(refresher, rider_id=rider, for_update=True)
        assert current is not None
        held = {"stored_access": current.access_token, "stored_refresh": current.refresh_token}
        assert not models.tokens.reseal_tokens(reader, rider_id=rider, **held, **args)
        reader.commit()
        refresher.rollback()
        assert models.tokens.reseal_tokens(reader, rider_id=rider, **held, **args)  # free: written


# --- rotate-token-key --------------------------------------------------------------------


def seed_mixed(database, strava):
    """One rider stored in plain text, two under K1, one under the current key, one under
    a key nobody has any more; their tokens (opened) by rider."""
    gone = Sealer(new_key("k0"))
    plan = [None, Sealer(K1), Sealer(K1), SEALER, gone]
    riders = {}
    for i, sealer in enumerate(plan):
        rider = connect_rider(database, strava, 240 + i, sealer=sealer or SEALER)
        opened = stored_tokens(database, rider, sealer=sealer or SEALER)
        riders[rider] = None if sealer is gone else opened
        if sealer is None:
            store_plain(database, rider, opened)
    return riders


def dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def test_rotate_token_key_seals_every_row_under_the_current_key(make_app, strava, database):
    riders = seed_mixed(database, strava)
    lost = next(r for r, t in riders.items() if t is None)
    lost_before = raw(database, lost)
    app = make_app(token_encryption_old_keys=(K1,))
    result = app.test_cli_runner().invoke(args=["rotate-token-key", "--batch-size", "2"])
    assert result.exit_code == 1  # one row cannot be opened
    logged = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(logged) == 1 and "sealed under key id 'k0'" in logged[0]  # the JSON log line
    # First, on stderr, the database it changes (never the password).
    assert result.stderr.splitlines()[0].startswith(f"Target: database {dbname(database)} on ")
    lines = [line for line in result.stdout.splitlines() if not line.startswith("{")]
    assert (
        lines[0] == "Sealing every rider's tokens under key 'test' (old keys still read: 'k1') ..."
    )
    assert lines[1:7] == [
        "connections: 5",
        "already under 'test': 1",
        "sealed from plain text: 1",
        "sealed anew from key 'k1': 2",
        "batches: 2",
        f"cannot be opened: 1 (riders {lost}); their key is not in TOKEN_ENCRYPTION_OLD_KEYS,"
        " or the value was altered. Left as they are.",
    ]
    assert lines[-1] == "not done"
    for rider, tokens in riders.items():
        if tokens is not None:
            assert all(v.startswith("enc1:test:") for v in raw(database, rider).values())
            assert stored_tokens(database, rider) == tokens
    assert raw(database, lost) == lost_before
    sealed = query(database, "select access_token, refresh_token from strava_connections")
    for secret in [*(v for r in sealed for v in r.values()), *TOKEN_KEY.secret_texts()]:
        assert secret not in result.output
    for tokens in riders.values():
        assert tokens is None or tokens["refresh_token"] not in result.output

    execute(database, "delete from strava_connections where rider_id = %s", lost)
    again = app.test_cli_runner().invoke(args=["rotate-token-key"])
    assert again.exit_code == 0, again.output
    assert "already under 'test': 4" in again.output and "batches: 0" in again.output
    assert again.output.splitlines()[-1] == "done: every row is under 'test'"


def test_rotation_skips_a_row_a_refresh_holds_and_never_overwrites_it(make_app, strava, database):
    """A refresh in flight holds its row: the rotation passes it by, comes back, and finds
    the refresh's own tokens (sealed under the current key), which it leaves alone."""
    riders = [connect_rider(database, strava, 250 + i, sealer=Sealer(K1)) for i in range(4)]
    runtime = make_app(token_encryption_old_keys=(K1,)).extensions["strava_sync"]
    held = riders[1]
    refreshed = seal_tokens(SEALER, held, "c" * 40, "d" * 40)
    with psycopg.connect(database, row_factory=dict_row) as refresh:
        assert models.tokens.read_tokens(refresh, rider_id=held, for_update=True) is not None
        waits = []

        def sleep(seconds):  # the refresh ends while the rotation waits for its row
            waits.append(seconds)
            if len(waits) == 1:
                execute_in(refresh, held, refreshed)
                refresh.commit()

        rotation = rotate_token_key(
            runtime.db,
            runtime.sealer,
            batch_size=1,
            busy_wait_s=10,
            timer=time.monotonic,
            sleep=sleep,
        )
    assert len(waits) == 1 and rotation.done and rotation.busy == 0
    assert rotation.resealed == {"k1": 3}  # the held row was never resealed from k1
    assert raw(database, held) == dict(
        zip(("access_token", "refresh_token"), refreshed, strict=True)
    )
    assert key_ids(database) == ["test"]


def execute_in(conn, rider, sealed):
    models.tokens.store_tokens(
        conn,
        rider_id=rider,
        access_sealed=sealed[0],
        refresh_sealed=sealed[1],
        expires_at=conn.execute("select now() + interval '6 hours' as t").fetchone()["t"],
        now=conn.execute("select now() as t").fetchone()["t"],
    )


def test_a_row_held_past_the_wait_is_reported_busy(make_app, strava, database):
    rider = connect_rider(database, strava, 260, sealer=Sealer(K1))
    app = make_app(token_encryption_old_keys=(K1,))
    with psycopg.connect(database) as refresh:
        refresh.execute("select 1 from strava_connections where rider_id = %s for update", (rider,))
        result = app.test_cli_runner().invoke(args=["rotate-token-key", "--wait", "0"])
    assert result.exit_code == 1
    assert "still held by a token refresh: 1; run the command again." in result.output
    assert key_ids(database) == ["k1"]  # untouched


def test_rotation_while_cron_refreshes_keeps_every_newest_token(make_app, database):
    """Refreshes rotating riders' tokens (each refresh invalidates the last refresh
    token) run on threads while the rotation re-seals in batches of one: every stored
    refresh token ends as the one Strava holds now, all under the new key."""
    from services.calls import Call

    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_ttl_s=600)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        riders = {
            connect_rider(database, fake, 270 + i, sealer=Sealer(K1)): 270 + i for i in range(12)
        }
        app = make_app(token_encryption_old_keys=(K1,))  # redeployed with the new key first
        runtime = app.extensions["strava_sync"]
        fake.latency_s = 0.1
        errors: list[BaseException] = []

        def refresh_riders(mine):
            call = Call(runtime, kind="sync-strava")
            try:
                for _ in range(3):
                    for rider in mine:
                        token = call.tokens.access_token(rider)
                        call.tokens.access_token(rider, stale_token=token)  # forces a refresh
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                call.close()

        ids = list(riders)
        threads = [threading.Thread(target=refresh_riders, args=(ids[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_for_a_held_row(database, ids)
        result = app.test_cli_runner().invoke(args=["rotate-token-key", "--batch-size", "1"])
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert result.exit_code == 0, result.output
    assert "sealed anew from key 'k1': 12" not in result.output  # a held row was passed by
    assert key_ids(database) == ["test"]
    for rider, athlete in riders.items():
        assert fake.refresh_count(athlete) == 3
        assert stored_tokens(database, rider)["refresh_token"] == fake.current_refresh_token(
            athlete
        )


def wait_for_a_held_row(database, riders):
    """Until some rider's row is locked (a refresh waiting on Strava holds it)."""
    with psycopg.connect(database, autocommit=True) as conn:
        for _ in range(500):
            for rider in riders:
                try:
                    with conn.transaction():
                        conn.execute(
                            "select 1 from strava_connections where rider_id = %s"
                            " for update nowait",
                            (rider,),
                        )
                except psycopg.errors.LockNotAvailable:
                    return
            time.sleep(0.01)
    raise AssertionError("no refresh ever held a row")


# --- client roles ----------------------------------------------------------------------

STATEMENTS = [
    "select access_token from strava_connections",
    "select refresh_token from strava_connections",
    "select * from strava_connections",
    "select count(*) from strava_connections",
    "update strava_connections set access_token = 'x'",
    "insert into strava_connections (rider_id, athlete_id, access_token, refresh_token,"
    " expires_at, scope) values (1, 1, 'x', 'x', now(), 'read')",
]


def refused_as(conn, role, statement, claims=None):
    with conn.transaction():
        conn.execute(f"set local role {role}")
        if claims:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                conn.execute(statement)


def test_no_client_role_reads_even_the_ciphertext(strava, database):
    rider = connect_rider(database, strava, 280)
    user = uuid.uuid4()
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    claims = f'{{"sub": "{user}", "role": "authenticated"}}'  # the rider themselves
    public = f"no_grants_{uuid.uuid4().hex[:8]}"  # a role with nothing but PUBLIC's rights
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"create role {public} nologin")
        try:
            for statement in STATEMENTS:
                refused_as(conn, "anon", statement)
                refused_as(conn, "authenticated", statement, claims)
                refused_as(conn, public, statement)
            for role in ("anon", "authenticated", public):
                for column in ("access_token", "refresh_token"):
                    row = conn.execute(
                        "select has_column_privilege(%s, 'public.strava_connections', %s,"
                        " 'SELECT, INSERT, UPDATE, REFERENCES')",
                        (role, column),
                    ).fetchone()
                    assert row == (False,), (role, column)
            # nor through a view over the token columns
            views = conn.execute(
                "select distinct view_schema || '.' || view_name from"
                " information_schema.view_column_usage where table_name = 'strava_connections'"
                " and column_name in ('access_token', 'refresh_token')"
            ).fetchall()
            for (view,) in views:
                for role in ("anon", "authenticated", public):
                    assert conn.execute(
                        "select has_table_privilege(%s, %s, 'SELECT')", (role, view)
                    ).fetchone() == (False,)
        finally:
            conn.execute(f"drop role {public}")


def test_the_migration_takes_back_a_column_grant_made_by_mistake(database):
    """A grant of the token columns (a dashboard click, say) is revoked by the migration,
    which is safe to apply again: here in a transaction rolled back at the end."""
    sql = Path(MIGRATION).read_text()
    with psycopg.connect(database) as conn:
        conn.execute("grant select (rider_id, access_token) on strava_connections to authenticated")
        conn.execute("grant select (refresh_token) on strava_connections to public")
        assert conn.execute(
            "select has_column_privilege('authenticated', 'public.strava_connections',"
            " 'access_token', 'SELECT')"
        ).fetchone() == (True,)
        conn.execute(sql.encode())
        for role, column in [("authenticated", "access_token"), ("anon", "refresh_token")]:
            assert conn.execute(
                "select has_column_privilege(%s, 'public.strava_connections', %s, 'SELECT')",
                (role, column),
            ).fetchone() == (False,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("set local role authenticated")
            conn.execute("select access_token from strava_connections")
        conn.rollback()


def test_the_command_runs_from_the_deployed_entry_point(strava, database, tmp_path):
    """`flask --app api.index rotate-token-key` in a clean process, configured as a
    deployment is (DATABASE_URL and the keys in the environment)."""
    import os
    import subprocess
    import sys

    riders = [connect_rider(database, strava, 290 + i, sealer=Sealer(K1)) for i in range(3)]
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api.index", "rotate-token-key"],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHON_DOTENV_DISABLED": "1",
            "DATABASE_URL": database,
            "TOKEN_ENCRYPTION_KEY": TOKEN_KEY.text(),
            "TOKEN_ENCRYPTION_OLD_KEYS": K1.text(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sealed anew from key 'k1': 3" in result.stdout
    assert result.stdout.splitlines()[-1] == "done: every row is under 'test'"
    assert key_ids(database) == ["test"]
    assert all(stored_tokens(database, r)["refresh_token"] for r in riders)
    for text in [*TOKEN_KEY.secret_texts(), *K1.secret_texts()]:
        assert text not in result.stdout + result.stderr
