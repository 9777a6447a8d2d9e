"""The operator's commands: `flask --app api.index <command>`."""

from __future__ import annotations

import json

import click
from flask import Flask, current_app

from services import push_subscription
from services.calls import Runtime


def _runtime() -> Runtime:
    return current_app.extensions["strava_sync"]  # type: ignore[no-any-return]


def register_commands(app: Flask) -> None:
    @app.cli.command("strava-webhook")
    @click.argument("action", type=click.Choice(["create", "show", "delete"]))
    def strava_webhook(action: str) -> None:
        """Manage Strava's push subscription: create (Strava validates the deployed
        callback), show (stored, at Strava, health), delete."""
        commands = {
            "create": push_subscription.create,
            "show": push_subscription.show,
            "delete": push_subscription.delete,
        }
        try:
            result = commands[action](_runtime())
        except push_subscription.SubscriptionError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps(result, indent=2))
