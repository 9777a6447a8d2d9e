"""Glue between the `responses` library and FakeStrava.handle()."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import requests
import responses

from fake_strava.errors import ConnectionDropped

if TYPE_CHECKING:
    from requests import PreparedRequest

Handler = Callable[
    [str, str, dict[str, str], Mapping[str, str], bytes], tuple[int, dict[str, str], bytes]
]


class _AnyMethodCallback(responses.CallbackResponse):
    """A callback response matching every HTTP method, like a real server's routes."""

    def matches(self, request: PreparedRequest) -> tuple[bool, str]:
        """Match on the URL pattern alone."""
        if isinstance(self.url, re.Pattern) and self.url.match(str(request.url)):
            return True, ""
        return False, "URL does not match"


def install(handler: Handler, rsps: responses.RequestsMock, mounts: Mapping[str, str]) -> None:
    """Register one callback sending requests under each base URL to handler.

    `mounts` maps a base URL to the path prefix the handler expects in its place, e.g.
    {"https://www.strava.com/oauth": "/oauth"}; the longest matching base wins.
    """
    stripped = ((base.rstrip("/"), prefix) for base, prefix in mounts.items())
    bases = sorted(stripped, key=lambda item: len(item[0]), reverse=True)
    alternatives = "|".join(f"(?P<m{i}>{re.escape(base)})" for i, (base, _) in enumerate(bases))
    pattern = re.compile(f"(?:{alternatives})(?=[/?#]|$)")

    def callback(request: PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        url = str(request.url)
        match = pattern.match(url)
        assert match is not None and match.lastgroup is not None  # guaranteed by matches()
        prefix = bases[int(match.lastgroup[1:])][1]
        rest = urlsplit(url[match.end() :])
        query = dict(parse_qsl(rest.query, keep_blank_values=True))
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        try:
            return handler(
                request.method or "GET", prefix + rest.path, query, request.headers, body
            )
        except ConnectionDropped:
            raise requests.ConnectionError("Connection reset by peer") from None

    rsps.add(_AnyMethodCallback(method="ANY", url=pattern, callback=callback))
