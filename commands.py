"""The app's command line: `flask --app api.index <command>`, run where the service's
environment is (DATABASE_URL and the token keys)."""

from __future__ import annotations

import json
import time

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from services import push_subscription
from services.calls import Runtime
from services.tokens import Rotation, rotate_token_key


def register_commands(app: Flask) -> None:
    app.cli.add_command(rotate_token_key_command)
    app.cli.add_command(strava_webhook_command)


# Every command that changes data takes this: without it, the embedded Postgres (what a
# missing or misspelt DATABASE_URL silently falls back to) is refused.
local_option = click.option(
    "--local",
    is_flag=True,
    help="Allow the embedded Postgres of local runs (DATABASE_URL unset) as the target.",
)


def target_or_refuse(runtime: Runtime, *, local: bool) -> None:
    """Say which database the command will change (and any odd setting), before
    anything is done; refuse the embedded Postgres unless `--local` was given."""
    for warning in runtime.settings.config_warnings:
        click.echo(f"warning: {warning}", err=True)
    embedded = not runtime.settings.database_url
    where = runtime.db.describe()
    if embedded:
        click.echo(f"Target: the embedded Postgres of local runs ({where}).", err=True)
        if not local:
            raise click.ClickException(
                "DATABASE_URL is not set (check the environment and .env for a misspelt"
                " name), so this would change the embedded local database, not the"
                " club's. Set DATABASE_URL, or pass --local to mean the local one."
            )
    else:
        click.echo(f"Target: {where} (DATABASE_URL).", err=True)


@click.command("strava-webhook")
@click.argument("action", type=click.Choice(["create", "show", "delete"]))
@local_option
@with_appcontext
def strava_webhook_command(action: str, local: bool) -> None:
    """Manage Strava's push subscription: create (Strava validates the deployed
    callback, so deploy first), show (stored, at Strava, health), delete."""
    commands = {
        "create": push_subscription.create,
        "show": push_subscription.show,
        "delete": push_subscription.delete,
    }
    runtime: Runtime = current_app.extensions["strava_sync"]
    target_or_refuse(runtime, local=local)
    try:
        result = commands[action](runtime)
    except push_subscription.SubscriptionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2))


@click.command("rotate-token-key")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Rows sealed anew in one transaction.",
)
@click.option(
    "--wait",
    "busy_wait_s",
    type=click.FloatRange(0, 600),
    default=30.0,
    show_default=True,
    help="Seconds to keep retrying rows a token refresh holds.",
)
@local_option
@with_appcontext
def rotate_token_key_command(batch_size: int, busy_wait_s: float, local: bool) -> None:
    """Seal every rider's Strava tokens under TOKEN_ENCRYPTION_KEY.

    Rows sealed under a key of TOKEN_ENCRYPTION_OLD_KEYS, or stored in plain text before
    tokens were sealed, are sealed again in batches; safe while cron calls run. Exits 1
    if any row could not be opened or stayed busy.
    """
    runtime: Runtime = current_app.extensions["strava_sync"]
    target_or_refuse(runtime, local=local)
    sealer = runtime.sealer
    old = [k for k in sealer.key_ids if k != sealer.current.id]
    click.echo(
        f"Sealing every rider's tokens under key {sealer.current.id!r}"
        f" (old keys still read: {', '.join(repr(k) for k in old) or 'none'}) ..."
    )
    rotation = rotate_token_key(
        runtime.db,
        sealer,
        batch_size=batch_size,
        busy_wait_s=busy_wait_s,
        timer=runtime.timer,
        sleep=time.sleep,
    )
    for line in report(rotation):
        click.echo(line)
    if not rotation.done:
        raise SystemExit(1)


def report(rotation: Rotation) -> list[str]:
    """The command's counts, one a line."""
    key = repr(rotation.key_id)
    lines = [
        f"connections: {rotation.connections}",
        f"already under {key}: {rotation.already_current}",
        f"sealed from plain text: {rotation.sealed_from_plain}",
    ]
    for old, count in sorted(rotation.resealed.items()):
        lines.append(f"sealed anew from key {old!r}: {count}")
    lines.append(f"batches: {rotation.batches}")
    if rotation.unreadable:
        shown = ", ".join(str(r) for r in rotation.unreadable[:20])
        more = " ..." if len(rotation.unreadable) > 20 else ""
        lines.append(
            f"cannot be opened: {len(rotation.unreadable)} (riders {shown}{more}); their key "
            "is not in TOKEN_ENCRYPTION_OLD_KEYS, or the value was altered. Left as they are."
        )
    if rotation.busy:
        lines.append(f"still held by a token refresh: {rotation.busy}; run the command again.")
    lines.append("done: every row is under " + key if rotation.done else "not done")
    return lines
