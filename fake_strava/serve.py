"""Serve a FakeStrava over real HTTP on loopback, for the demo and the benchmarks."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from fake_strava.server import API_PREFIX, OAUTH_PREFIX, FakeStrava

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

# How often serve_forever() looks for a shutdown(): socketserver's default of 0.5 s is
# what every stop() would wait, and tests stop hundreds of servers.
SHUTDOWN_POLL_S = 0.01


class _QuietHandler(WSGIRequestHandler):
    """Request handler without werkzeug's access log: benchmarks make thousands of calls."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing."""


class ServedApp:
    """A running loopback server of a fake; stop() it, or use it as a context manager."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.url = f"http://{server.host}:{server.port}"

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_app(
    wsgi_app: WSGIApplication, *, name: str, host: str = "127.0.0.1", port: int = 0
) -> tuple[BaseWSGIServer, threading.Thread]:
    """Start a threaded HTTP server for a WSGI app in a daemon thread (port 0: any free)."""
    server = make_server(host, port, wsgi_app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_S},
        name=name,
        daemon=True,
    )
    thread.start()
    return server, thread


class ServedFake(ServedApp):
    """The fake Strava served: its API and OAuth base URLs."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread) -> None:
        super().__init__(server, thread)
        self.api_url = self.url + API_PREFIX
        self.oauth_url = self.url + OAUTH_PREFIX


def serve(fake: FakeStrava, host: str = "127.0.0.1", port: int = 0) -> ServedFake:
    """Serve the fake Strava on loopback (port 0: any free one)."""
    return ServedFake(*serve_app(fake.wsgi_app, name="fake-strava", host=host, port=port))
