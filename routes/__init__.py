"""Thin Flask blueprints: parse, authorize, call one service, shape JSON."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from routes.cron import bp as cron
    from routes.health import bp as health

    app.register_blueprint(health)
    app.register_blueprint(cron)
