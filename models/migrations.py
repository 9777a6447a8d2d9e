"""Applying the schema's migration files, once each, under a lock."""

from __future__ import annotations

from models.base import Conn

# Transaction-level, so it holds through Supabase's transaction pooler.
_MIGRATION_LOCK = 7_226_101_842


def apply_migrations(conn: Conn, migrations: list[tuple[str, str, str]]) -> list[str]:
    """Apply the (version, name, sql) migrations not yet recorded; return those applied.

    Uses the Supabase CLI's own history table, so `supabase db push` and the service agree.
    """
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        done = {
            row["version"] if isinstance(row, dict) else row[0]
            for row in conn.execute("select version from supabase_migrations.schema_migrations")
        }
        applied = []
        for version, name, sql in migrations:
            if version in done:
                continue
            conn.execute(sql.encode())  # a whole file: several statements, no parameters
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                (version, name),
            )
            applied.append(version)
    return applied
