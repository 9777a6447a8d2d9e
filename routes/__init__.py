"""Thin Flask blueprints: parse, authorize, call one service, shape JSON."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from routes.admin import bp as admin
    from routes.cron import bp as cron
    from routes.health import bp as health
    from routes.riders import bp as riders
    from routes.strava_oauth import bp as strava_oauth
    from routes.web import bp as web
    from routes.webhook import bp as webhook

    for blueprint in (health, cron, admin, riders, strava_oauth, webhook, web):
        app.register_blueprint(blueprint)
