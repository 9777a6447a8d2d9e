"""The browser's pages, served from web/: the rider widget's script (/widget.js and its
default stylesheet) for the club's site, and the operator's dashboard (/admin).

The dashboard reads /api/admin/status with the cron bearer its script keeps in
sessionStorage; this page holds no secret. Every answer carries a Content Security
Policy: the dashboard loads nothing from another origin and talks only to its own.
"""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from routes.guards import runtime

WEB = Path(__file__).resolve().parent.parent / "web"

bp = Blueprint("web", __name__)

DASHBOARD_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
# widget.js and widget.css run inside the club's page (whose CSP is the club's); for
# the files themselves, fetched directly, nothing may run or load.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

# Assets: which file, its type, and whether other sites embed it.
ASSETS = {
    "widget.js": ("text/javascript; charset=utf-8", True),
    "widget.css": ("text/css; charset=utf-8", True),
    "admin.js": ("text/javascript; charset=utf-8", False),
    "admin.css": ("text/css; charset=utf-8", False),
}


@functools.cache
def _read(name: str) -> bytes:
    return (WEB / name).read_bytes()


def _file(name: str, content_type: str) -> Response:
    """A file of web/ (read once, kept in memory), with an ETag for revalidation."""
    response = Response(_read(name), content_type=content_type)
    response.add_etag()
    response.make_conditional(request)
    return response


def _asset(name: str) -> Response:
    mimetype, embedded = ASSETS[name]
    response = _file(name, mimetype)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = ASSET_CSP
    if embedded:
        # Public, credential-free files the club's page includes: any site may load them,
        # also with <script crossorigin> or under Cross-Origin-Embedder-Policy.
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        response.headers["Cache-Control"] = "public, max-age=300"
    else:
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/widget.js")
def widget_js() -> Response:
    """The rider widget: ClubSync.mount(element, { getAccessToken })."""
    return _asset("widget.js")


@bp.get("/widget.css")
def widget_css() -> Response:
    return _asset("widget.css")


@bp.get("/api/widget/origin")
def widget_origin() -> Response:
    """Whether the calling page's origin is in ALLOWED_ORIGINS, readable from any site.

    When the rider endpoints fail in the browser, the widget cannot tell a CORS refusal
    from an outage; this answer can always be read, so the widget says which it is. It
    tells a page only about its own origin (what any client could learn by sending that
    Origin header).
    """
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin.lower() in runtime().settings.allowed_origins
    response = jsonify({"origin": origin, "allowed": allowed})
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Origin")
    return response


@bp.get("/admin")
def dashboard() -> Response:
    """The operator's dashboard (asks for the cron bearer; holds no secret itself)."""
    response = _file("admin.html", "text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/admin/admin.js")
def dashboard_js() -> Response:
    return _asset("admin.js")


@bp.get("/admin/admin.css")
def dashboard_css() -> Response:
    return _asset("admin.css")
