"""The fake Strava answering on the service's virtual clock, for time budgets judged on
the service's own clock rather than the machine's: each request takes `latency_s` of
bench/fleet_clock.py's VirtualClock, spent by the thread that made it (so a call's
workers overlap as on a network), and a request whose timeout (the call's, capped at its
time left) is shorter than that ends at its timeout with a ReadTimeout, as a real
client's would. In process, through `responses`, on Strava's real URLs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import requests
import responses
from urllib3.util import Timeout

from bench.fleet_clock import VirtualClock
from fake_strava import FakeStrava
from fake_strava.errors import ConnectionDropped
from tests.conftest import API_URL, OAUTH_URL

if TYPE_CHECKING:
    from requests import PreparedRequest

# Strava's URLs are https://www.strava.com/api/v3/... and /oauth/...: the fake's own paths.
STRAVA = re.compile(f"(?:{re.escape(API_URL)}|{re.escape(OAUTH_URL)})(?=[/?#]|$)")


def read_timeout_s(timeout: Any) -> float | None:
    """The read timeout a request was made with (requests' forms: a number, a pair, or a
    urllib3 Timeout, whose read_timeout the service computes from its deadline)."""
    if isinstance(timeout, Timeout):
        read = timeout.read_timeout
        return None if read is None else float(read)  # type: ignore[arg-type]
    if isinstance(timeout, tuple):
        return None if timeout[1] is None else float(timeout[1])
    return None if timeout is None else float(timeout)


class _AnyMethod(responses.CallbackResponse):
    def matches(self, request: PreparedRequest) -> tuple[bool, str]:
        return (bool(STRAVA.match(str(request.url))), "")


def install_on_clock(
    fake: FakeStrava, clock: VirtualClock, rsps: responses.RequestsMock, *, latency_s: float
) -> None:
    """Route every request to Strava's URLs through fake.handle(), `latency_s` of the
    clock each."""

    def callback(request: PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        read_s = read_timeout_s(getattr(request, "req_kwargs", {}).get("timeout"))
        if read_s is not None and read_s < latency_s:
            clock.advance(read_s)
            raise requests.ReadTimeout("no answer within the read timeout (virtual time)")
        clock.advance(latency_s)
        url = urlsplit(str(request.url))
        body = request.body or b""
        try:
            return fake.handle(
                request.method or "GET",
                url.path,
                dict(parse_qsl(url.query, keep_blank_values=True)),
                request.headers,
                body.encode() if isinstance(body, str) else body,
            )
        except ConnectionDropped:
            raise requests.ConnectionError("Connection reset by peer") from None

    rsps.add(_AnyMethod(method="ANY", url=STRAVA, callback=callback))
