"""What the browser tests serve on loopback besides the service: the club's page (on its
own origin, so CORS is real), Supabase's JWKS, and a consent button on the fake Strava's
authorize page; and headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from werkzeug.wrappers import Request, Response

from fake_strava import FakeStrava
from fake_strava.serve import ServedApp, serve_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")
# Flags for a closed network: without the background-networking ones Chromium calls out.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / (os.environ.get("SCREENSHOT_DIR") or ".ci/artifacts/screenshots")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Served(ServedApp):
    """A WSGI app on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: WsgiApp) -> None:
        super().__init__(*serve_app(app, name="browser-test-server"))


class Deferred:
    """A WSGI app set later (the service's URL must exist before its app is built)."""

    def __init__(self) -> None:
        self.app: WsgiApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


def jwks_app(jwks: Callable[[], dict[str, Any]]) -> WsgiApp:
    """Supabase's JWKS at <SUPABASE_URL>/auth/v1/.well-known/jwks.json."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path != "/auth/v1/.well-known/jwks.json":
            return Response("not found", status=404)
        return Response(json.dumps(jwks()), content_type="application/json")

    return app  # type: ignore[no-any-return]


class Consent:
    """The fake Strava with an "Authorize" button on its authorize page: the fake checks the
    request, and the button sends the browser back to redirect_uri with a code for the
    athlete the test chose, as Strava does when the rider approves."""

    def __init__(self, fake: FakeStrava) -> None:
        self.fake = fake
        self.athlete_id = 0
        self.scope = "read,activity:read_all"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/oauth/authorize":
            return self.fake.wsgi_app(environ, start_response)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        checked: list[Any] = []
        body = b"".join(
            self.fake.wsgi_app(environ, lambda status, headers, *a: checked.append(status))
        )
        if not checked[0].startswith("200"):
            start_response(checked[0], [("Content-Type", "text/plain")])
            return [body]
        code = self.fake.add_authorization_code(self.athlete_id, scope=self.scope)
        back = (
            query["redirect_uri"]
            + "?"
            + urlencode({"state": query.get("state", ""), "code": code, "scope": self.scope})
        )
        page = body.decode() + f'<p><a id="approve" href="{back}">Authorize</a></p>'
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page.encode()]


CLUB_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Velo Club: my rides</title>
<link rel="stylesheet" href="/club.css">
<script src="{service}/widget.js" defer></script>
<script src="/club.js" defer></script>
</head><body><header><h1>Velo Club</h1></header>
<main><p>Welcome back. Your rides come in from Strava on their own.</p>
<div id="strava-sync"></div></main></body></html>
"""
CLUB_JS = """document.addEventListener("DOMContentLoaded", function () {
  ClubSync.mount(document.getElementById("strava-sync"), {
    // On a real club page: (await supabase.auth.getSession()).data.session?.access_token
    getAccessToken: function () {
      return fetch("/token", { cache: "no-store" }).then(function (r) { return r.text(); });
    },
  });
});
"""
# The club's page with a stand-in for a supabase-js client (what `createClient(url, key)`
# gives, signed in): only what the widget uses of its Realtime API, in supabase-js's
# shapes (realtime.setAuth(token); channel(topic, {config: {private: true}})
# .on("broadcast", {event}, callback).subscribe(callback); removeChannel(channel)).
# The test plays Realtime: window.stubRealtime.deliver(topic, payload) hands a broadcast
# to the channels joined on that topic, as the Realtime server does; `refuse` makes
# joins fail as an unauthorized private channel does (CHANNEL_ERROR).
CLUB_REALTIME_JS = """(function () {
  var stub = window.stubRealtime = { auth: [], joins: [], refuse: false };
  function Channel(topic, options) {
    this.topic = topic;
    this.options = options || {};
    this.handlers = [];
    this.joined = false;
  }
  Channel.prototype.on = function (type, filter, callback) {
    this.handlers.push({ type: type, filter: filter || {}, callback: callback });
    return this;
  };
  Channel.prototype.subscribe = function (callback) {
    var channel = this;
    stub.joins.push({ topic: channel.topic, private: !!(channel.options.config &&
      channel.options.config.private) });
    setTimeout(function () {
      channel.joined = !stub.refuse;
      if (callback) callback(stub.refuse ? "CHANNEL_ERROR" : "SUBSCRIBED");
    }, 0);
    return this;
  };
  var channels = [];
  stub.deliver = function (topic, payload) {
    var delivered = 0;
    channels.forEach(function (channel) {
      if (!channel.joined || channel.topic !== topic) return;
      channel.handlers.forEach(function (h) {
        if (h.type === "broadcast" && (h.filter.event === "progress" || h.filter.event === "*")) {
          h.callback({ type: "broadcast", event: "progress", payload: payload });
          delivered += 1;
        }
      });
    });
    return delivered;
  };
  var supabase = {
    realtime: { setAuth: function (token) { stub.auth.push(token); return Promise.resolve(); } },
    channel: function (topic, options) {
      var channel = new Channel(topic, options);
      channels.push(channel);
      return channel;
    },
    removeChannel: function (channel) {
      channel.joined = false;
      return Promise.resolve("ok");
    },
  };
  document.addEventListener("DOMContentLoaded", function () {
    ClubSync.mount(document.getElementById("strava-sync"), {
      getAccessToken: function () {
        return fetch("/token", { cache: "no-store" }).then(function (r) { return r.text(); });
      },
      supabase: supabase,
    });
  });
})();
"""
CLUB_CSS = """body { font-family: Georgia, serif; margin: 0; background: #fbfaf7; }
header { background: #14452f; color: #fff; padding: 0.5rem 1rem; }
main { padding: 1rem; }
.clubsync-card { background: #fff; }
"""


class Club:
    """The club's site: its page embeds the widget from the service; /token stands for
    the page's Supabase session (the signed-in rider's current access token)."""

    def __init__(self) -> None:
        self.token = ""
        self.service = ""
        self.realtime = False  # hand the widget a stand-in supabase-js client

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.app(environ, start_response)

    @Request.application
    def app(self, request: Request) -> Response:
        csp = (
            f"default-src 'none'; script-src 'self' {self.service}; style-src 'self' "
            f"{self.service}; connect-src 'self' {self.service}; img-src 'self'"
        )
        if request.path == "/":
            response = Response(CLUB_PAGE.format(service=self.service), content_type="text/html")
            response.headers["Content-Security-Policy"] = csp
            return response
        if request.path == "/club.js":
            script = CLUB_REALTIME_JS if self.realtime else CLUB_JS
            return Response(script, content_type="text/javascript")
        if request.path == "/club.css":
            return Response(CLUB_CSS, content_type="text/css")
        if request.path == "/token":
            return Response(
                self.token, content_type="text/plain", headers={"Cache-Control": "no-store"}
            )
        return Response("not found", status=404)


# axe-core's rules for WCAG 2.0 and 2.1, levels A and AA (colour contrast among them).
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def accessibility_failures(page: Any, context: str | None = None) -> list[str]:
    """axe-core's serious and critical WCAG AA violations on the page as it is now (or
    within the `context` selector), one line each: rule, impact, and the first nodes."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": WCAG_AA}, "resultTypes": ["violations"]}
    results = Axe().run(page, context=context, options=options)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
