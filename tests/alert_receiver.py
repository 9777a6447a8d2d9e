"""A fake alert receiver on loopback, as Slack's, Discord's or ntfy's incoming webhooks
answer: it takes JSON POSTs, keeps each (path and body), and answers 200 (Slack's
"ok", Discord's 204, ntfy's JSON); it can be told to fail, or to hold its answers
until the test releases them (a receiver slower than any budget, whatever this
machine's speed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Received:
    path: str
    content_type: str
    body: Any


@dataclass
class AlertReceiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    waiting: int = 0  # requests being held (see hold())
    _gate: threading.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        if request.method != "POST":
            return Response("method not allowed", status=405)
        gate = self._gate
        if gate is not None:
            with self._lock:
                self.waiting += 1
            gate.wait(timeout=120)
            # Answered after the sender gave up: nothing was received.
            return Response("held too long", status=503)
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return Response("invalid JSON", status=400)
        with self._lock:
            self.received.append(Received(request.path, request.content_type or "", body))
        if self.status != 200:
            return Response("failing on purpose", status=self.status)
        if request.path.startswith("/api/webhooks/"):
            return Response(status=204)  # Discord
        return Response("ok", content_type="text/plain")  # Slack, and most receivers

    def hold(self) -> None:
        """Hold every request until release(); a held one is never recorded."""
        self._gate = threading.Event()

    def held(self, count: int, *, within_s: float = 30.0) -> bool:
        """Whether `count` requests reached the held receiver (waiting up to within_s: a
        request the sender gave up on may reach the server's thread late)."""
        for _ in range(int(within_s / 0.05)):
            with self._lock:
                if self.waiting >= count:
                    return self.waiting == count
            time.sleep(0.05)
        return False

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received]

    def texts(self) -> str:
        """Everything received, as one text (to look for what must never be sent)."""
        return json.dumps(self.bodies(), ensure_ascii=False)


@contextmanager
def serve_receiver() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    receiver.url = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
        thread.join()
