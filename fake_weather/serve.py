"""Serve a FakeWeather over real HTTP on loopback, for the tests, the demo and the bench."""

from __future__ import annotations

import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from fake_weather.server import ARCHIVE_PATH, FakeWeather


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing."""


class ServedWeather:
    """A running fake archive; stop() it, or use it as a context manager."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.url = f"http://{server.host}:{server.port}"
        self.archive_url = self.url + ARCHIVE_PATH

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> ServedWeather:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(fake: FakeWeather, host: str = "127.0.0.1", port: int = 0) -> ServedWeather:
    """Start a threaded HTTP server for the fake in a daemon thread (port 0: any free one)."""
    server = make_server(host, port, fake.wsgi_app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="fake-weather", daemon=True)
    thread.start()
    return ServedWeather(server, thread)
