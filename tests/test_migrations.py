"""The migrations: idempotent, safe when two processes start at once, and RLS holds."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

import db as dbmod
from tests.factories import connect_rider


@pytest.fixture
def empty_database(scratch_database):
    return scratch_database("strava_sync_mig")


def test_migrations_apply_twice_and_concurrently(empty_database):
    results, errors = [], []

    def run():
        try:
            results.append(dbmod.migrate(empty_database))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = [m.version for m in dbmod.load_migrations()]
    assert sorted(results, key=len)[-1] == versions  # one process applied them all
    assert sum(len(r) for r in results) == len(versions)
    assert dbmod.migrate(empty_database) == []  # and again: nothing to do
    with psycopg.connect(empty_database) as conn:
        recorded = [
            r[0]
            for r in conn.execute(
                "select version from supabase_migrations.schema_migrations order by version"
            )
        ]
    assert recorded == versions


def test_migration_names_follow_the_supabase_cli_layout():
    for migration in dbmod.load_migrations():
        assert len(migration.version) == 14 and migration.version.isdigit()


def as_role(conn, role, user_id=None):
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    if user_id:
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{user_id}", "role": "{role}"}}',),
        )


def test_rls_riders_read_their_own_rows_and_nobody_reads_tokens(database, fake):
    me, other = uuid.uuid4(), uuid.uuid4()
    mine = connect_rider(database, fake, 601, activities=3)
    theirs = connect_rider(database, fake, 602, activities=2)
    with psycopg.connect(database) as conn:
        conn.execute("update riders set auth_user_id = %s where id = %s", (me, mine))
        conn.execute("update riders set auth_user_id = %s where id = %s", (other, theirs))
        conn.execute(
            "insert into activities (strava_id, rider_id, sport_type, start_date)"
            " values (1, %s, 'Ride', now()), (2, %s, 'Ride', now()), (3, %s, 'Ride', now())",
            (mine, mine, theirs),
        )
        conn.commit()
        with conn.transaction():
            as_role(conn, "authenticated", me)
            assert [r[0] for r in conn.execute("select id from riders")] == [mine]
            assert {r[0] for r in conn.execute("select strava_id from activities")} == {1, 2}
            assert {r[0] for r in conn.execute("select strava_id from races")} == set()
        for role in ("authenticated", "anon"):
            for table in ("strava_connections", "strava_rate_budget", "cron_runs"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    with conn.transaction():
                        as_role(conn, role, me)
                        conn.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                as_role(conn, "anon")
                conn.execute("select * from riders")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                as_role(conn, "authenticated", me)
                conn.execute("update riders set name = 'x'")
        with conn.transaction():
            as_role(conn, "service_role")
            assert conn.execute("select count(*) from strava_connections").fetchone()[0] == 2
        with conn.transaction():
            rls = dict(
                conn.execute(
                    "select relname, relrowsecurity from pg_class"
                    " where relnamespace = 'public'::regnamespace and relkind = 'r'"
                ).fetchall()
            )
    assert rls and all(rls.values()), rls
