"""The service as it runs on a host other than Vercel: a real gunicorn serving
`api.index:app` in a process group of its own (so a test can kill -9 all of it at once),
configured only through its environment; and the fake Strava served on loopback with a
count of the requests it is answering at this instant (so a test can kill the service
while one is in flight)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from fake_strava import FakeStrava
from fake_strava.serve import ServedFake, serve_app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
HOLD_LIMIT_S = 60.0


class InFlight:
    """The fake Strava's WSGI app, counting requests begun and not yet answered (the
    fake's latency is slept inside, so a slow fake keeps requests in flight)."""

    def __init__(self, fake: FakeStrava) -> None:
        self.fake = fake
        self._lock = threading.Lock()
        self._now = 0

    @property
    def now(self) -> int:
        with self._lock:
            return self._now

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self._now += 1
        try:
            return self.fake.wsgi_app(environ, start_response)
        finally:
            with self._lock:
                self._now -= 1


class Held:
    """Answers held back: around(app) serves `app`, but while hold() lasts its answers to
    requests with `path_contains` in their path wait until release(). An answer later
    than any deadline with no clock in the test, which can then check what a call did
    without it. release() returns once the held requests are answered (a forgotten hold
    ends by itself after HOLD_LIMIT_S)."""

    def __init__(self, *, path_contains: str = "") -> None:
        self.path_contains = path_contains
        self._released = threading.Event()
        self._released.set()
        self._done = threading.Condition()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests held at this instant (or being answered just after a release)."""
        with self._done:
            return self._waiting

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()
        with self._done:
            self._done.wait_for(lambda: self._waiting == 0, timeout=HOLD_LIMIT_S)

    def around(self, app: WSGIApplication) -> WSGIApplication:
        def held(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if self._released.is_set() or self.path_contains not in environ.get("PATH_INFO", ""):
                return app(environ, start_response)
            with self._done:
                self._waiting += 1
            try:
                self._released.wait(HOLD_LIMIT_S)
                return app(environ, start_response)
            finally:
                with self._done:
                    self._waiting -= 1
                    self._done.notify_all()

        return held


def serve_counted(fake: FakeStrava) -> tuple[ServedFake, InFlight]:
    """Serve the fake on loopback (any free port) through an InFlight counter."""
    counted = InFlight(fake)
    return ServedFake(*serve_app(counted.app, name="fake-strava-counted")), counted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gunicorn:
    """`gunicorn api.index:app` on a loopback port: start(), then kill() (SIGKILL to the
    whole process group: the arbiter and its workers at once, mid-request or not)."""

    def __init__(self, environ: Mapping[str, str], log_path: Path, *, workers: int = 2) -> None:
        # Only what is given, plus PATH: nothing from the developer's shell or .env.
        self.environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHON_DOTENV_DISABLED": "1",
            **environ,
        }
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        assert self.process is None, "already running"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "api.index:app",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(self.workers),
                    "--worker-class",
                    "gthread",
                    "--threads",
                    "4",
                    "--timeout",
                    "60",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, as a host's service is
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}): {self.log()}")
            try:
                if requests.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"gunicorn not ready in {READY_TIMEOUT_S:.0f} s: {self.log()}")

    def kill(self) -> None:
        """kill -9 of the process group, then reap the arbiter."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-3000:]
