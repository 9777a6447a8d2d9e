"""Serve a FakeWeather over real HTTP on loopback, for the tests, the demo and the bench."""

from __future__ import annotations

import threading

from werkzeug.serving import BaseWSGIServer

from fake_strava.serve import ServedApp, serve_app
from fake_weather.server import ARCHIVE_PATH, FORECAST_PATH, FakeWeather


class ServedWeather(ServedApp):
    """The fake served: its archive URL (WEATHER_API_URL) and its forecast archive's
    (WEATHER_FORECAST_URL)."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread) -> None:
        super().__init__(server, thread)
        self.archive_url = self.url + ARCHIVE_PATH
        self.forecast_url = self.url + FORECAST_PATH


def serve(fake: FakeWeather, host: str = "127.0.0.1", port: int = 0) -> ServedWeather:
    """Serve the fake archive on loopback (port 0: any free one)."""
    return ServedWeather(*serve_app(fake.wsgi_app, name="fake-weather", host=host, port=port))
