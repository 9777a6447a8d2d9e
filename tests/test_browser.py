"""The widget on the club's page and the operator's dashboard, in headless Chromium
(Debian's chromium, driven by Playwright) against the service on loopback, with the
club's page on other loopback ports so that CORS is real. Screenshots go to
SCREENSHOTS (.ci/artifacts/screenshots/ by default), which .ci/run prints."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from app_factory import create_app
from fake_strava import FakeStrava, make_activities
from tests.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    ROOT,
    SCREENSHOTS,
    Club,
    Consent,
    Deferred,
    Served,
    accessibility_failures,
    jwks_app,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, CRON_SECRET, _clean, settings_for
from tests.factories import connect_rider, execute, query

pytest_plugins = ["tests.jwks_fixture"]

# Playwright's waits, in milliseconds.
WAIT = 10_000


class Stack:
    """Everything one module's tests share: servers, the app, the browser."""

    fake: FakeStrava
    consent: Consent
    issuer: Any
    iss: str
    club: Club
    other: Club
    service: str
    club_url: str
    other_url: str
    database_url: str
    browser: Any

    def token(self, user: uuid.UUID) -> str:
        return self.issuer.es256(user, iss=self.iss)


@pytest.fixture(scope="module")
def stack(database_url: str, keys) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests need Debian's package "
            "(apt-get install -y chromium; .ci/run installs it), or set CHROMIUM to its path."
        )
    from playwright.sync_api import sync_playwright

    from tests.jwks_fixture import Issuer  # loaded as this module's plugin

    s = Stack()
    s.database_url = database_url
    s.fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    s.consent = Consent(s.fake)
    s.issuer = Issuer(keys)
    jwks = Served(jwks_app(s.issuer.jwks))
    s.iss = f"{jwks.url}/auth/v1"
    s.club, s.other = Club(), Club()
    club, other = Served(s.club), Served(s.other)
    s.club_url, s.other_url = club.url, other.url
    deferred = Deferred()
    service = Served(deferred)
    s.service = service.url
    s.club.service = s.other.service = service.url
    strava = Served(s.consent)
    app = create_app(
        settings_for(
            database_url,
            strava_api_url=strava.url + "/api/v3",
            strava_oauth_url=strava.url + "/oauth",
            supabase_url=jwks.url,
            public_base_url=service.url,
            app_return_url=club.url + "/",
            allowed_origins=(club.url,),
        ),
        environ={},
    )
    deferred.app = app
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        s.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield s
        finally:
            s.browser.close()
            for server in (service, club, other, jwks, strava):
                server.stop()
            app.extensions["strava_sync"].db.close()


@pytest.fixture
def clean(stack: Stack) -> Stack:
    _clean(stack.database_url)
    # The fake's rate-limit windows are real time and shared by the session's tests: each
    # test starts with nothing used, as its database starts empty.
    stack.fake.set_usage(usage_15min=0, usage_daily=0, read_usage_15min=0, read_usage_daily=0)
    return stack


@pytest.fixture
def page(stack: Stack) -> Iterator[Any]:
    context = stack.browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.console_messages: list[str] = []  # type: ignore[misc]
    page.on("console", lambda message: page.console_messages.append(message.text))
    yield page
    context.close()


def rider(stack: Stack, athlete_id: int, **options: Any) -> tuple[int, uuid.UUID]:
    user = uuid.uuid4()
    rider_id = connect_rider(stack.database_url, stack.fake, athlete_id, **options)
    execute(stack.database_url, "update riders set auth_user_id = %s where id = %s", user, rider_id)
    stack.club.token = stack.token(user)
    return rider_id, user


def widget_text(page: Any) -> str:
    return page.inner_text("#strava-sync")


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def shoot(page: Any, name: str) -> None:
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        assert png_size(path)[0] == size["width"], path  # the width it was taken at
    page.set_viewport_size(DESKTOP)


def test_ci_prints_the_screenshot_folder_and_the_readme_shows_one_of_each():
    run = (ROOT / ".ci" / "run").read_text()
    printed = re.search(r'echo "Browser screenshots[^"]*\$\{SCREENSHOT_DIR:-([^}]+)\}', run)
    assert printed, "the .ci/run line printing the screenshots' folder"
    assert ROOT / printed[1] == ROOT / ".ci/artifacts/screenshots"
    if "SCREENSHOT_DIR" not in os.environ:
        assert SCREENSHOTS == ROOT / printed[1]  # where the tests above save them
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\((docs/(widget|dashboard)-(phone|desktop)\.png)\)", readme)
    assert {(page, width) for _, page, width in shown} == {
        (page, width) for page in ("widget", "dashboard") for width in ("phone", "desktop")
    }
    for path, _, width in shown:
        expected = (PHONE if width == "phone" else DESKTOP)["width"]
        assert png_size(ROOT / path)[0] == expected, path


# --- the widget ----------------------------------------------------------------------


def test_widget_connects_a_rider_and_syncs_now(clean, page):
    stack = clean
    user = uuid.uuid4()
    stack.club.token = stack.token(user)
    stack.consent.athlete_id = 7301
    page.goto(stack.club_url + "/")
    page.get_by_text("not connected yet").wait_for()
    connect = page.get_by_role("button", name="Connect Strava")
    connect.focus()
    page.keyboard.press("Enter")  # a real button: the keyboard works
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*"))
    assert "Authorize application" in page.content()
    page.click("#approve")
    page.wait_for_url(stack.club_url + "/?strava=connected")
    page.get_by_text("Strava is connected").wait_for()
    row = query(stack.database_url, "select * from strava_connections")[0]
    assert row["athlete_id"] == 7301 and row["status"] == "active"

    now = datetime.now(UTC)
    stack.fake.add_activities(
        7301,
        make_activities(
            7301, 12, start=now - timedelta(days=3), end=now - timedelta(hours=1), seed=3
        ),
    )
    stack.fake.latency_s = 0.4  # slow enough to see the progress state
    try:
        sync = page.get_by_role("button", name="Sync now")
        sync.click()
        page.get_by_role("button", name="Syncing…").wait_for()
        assert page.get_attribute(".clubsync-sync", "aria-busy") == "true"
        status = page.get_by_role("status")
        assert "Syncing your activities" in status.inner_text()
        assert status.get_attribute("aria-live") == "polite"
        page.get_by_text("Done: 12 new activities added").wait_for()
    finally:
        stack.fake.latency_s = 0.0
    assert "12 new activities" in page.inner_text(".clubsync-last-sync")
    # Races and the Eddington number in plain words.
    assert re.fullmatch(
        r"none found yet|\d+ races?, each with its details.*", page.inner_text(".clubsync-races")
    )
    assert re.search(
        r"(\d+) km: you have ridden at least \1 km on \1 different days \(in miles: \d+\)",
        page.inner_text(".clubsync-eddington"),
    )
    # The history walk has not started: said in words, no bar at 0% beside 12 activities.
    assert "Older activities: not started yet" in widget_text(page)
    assert page.locator(".clubsync-history-bar").is_hidden()
    # The cooldown starts at once, as a countdown.
    assert re.search(r"available again in [45]:\d\d", page.inner_text(".clubsync-countdown"))
    assert page.get_by_role("button", name="Sync now").is_disabled()
    assert not [m for m in page.console_messages if "Content Security Policy" in m]
    shoot(page, "widget")


def test_an_unlisted_origin_is_blocked_by_the_browser(clean, page):
    stack = clean
    _, user = rider(clean, 7302, activities=2)
    stack.other.token = stack.token(user)
    page.goto(stack.other_url + "/")
    # Not an outage: the operator is told which setting to change.
    page.get_by_text("is not in the service's ALLOWED_ORIGINS").wait_for()
    assert "cannot be reached" not in widget_text(page)
    blocked = [m for m in page.console_messages if "CORS policy" in m]
    assert blocked and stack.other_url in blocked[0], page.console_messages
    assert "Access-Control-Allow-Origin" in blocked[0]


def test_widget_states_show_their_text(clean, page):
    stack = clean
    # Not signed in on the club's site.
    stack.club.token = ""
    page.goto(stack.club_url + "/")
    page.get_by_text("Sign in to the club's site").wait_for()
    # Cooldown: pressed a minute ago.
    rider_id, _ = rider(stack, 7303, activities=1)
    execute(
        stack.database_url,
        "update strava_connections set last_sync_now_at = now() - interval '60 seconds'"
        " where rider_id = %s",
        rider_id,
    )
    page.goto(stack.club_url + "/")
    page.locator(".clubsync-countdown").get_by_text(re.compile(r"again in 3:[45]\d")).wait_for()
    assert page.get_by_role("button", name="Sync now").is_disabled()
    # Rate limited: the club's budget is blocked for 7 minutes.
    execute(
        stack.database_url,
        "update strava_connections set last_sync_now_at = null where rider_id = %s",
        rider_id,
    )
    execute(
        stack.database_url,
        "update strava_rate_budget set blocked_until = now() + interval '7 minutes'",
    )
    page.goto(stack.club_url + "/")
    page.get_by_role("button", name="Sync now").click()
    page.get_by_text(
        re.compile(r"allowance for now\. Sync now works again in [67]:\d\d")
    ).wait_for()
    assert "UTC" in page.get_by_role("status").inner_text()
    execute(stack.database_url, "update strava_rate_budget set blocked_until = null")
    # needs_reauth: a reconnect button with the reason in plain words.
    execute(
        stack.database_url,
        "update strava_connections set status = 'needs_reauth' where rider_id = %s",
        rider_id,
    )
    page.goto(stack.club_url + "/")
    page.get_by_role("button", name="Reconnect Strava").wait_for()
    assert "expired or was withdrawn" in widget_text(page)
    assert page.get_by_role("button", name="Sync now").count() == 0
    # Not connected.
    stack.club.token = stack.token(uuid.uuid4())
    page.goto(stack.club_url + "/")
    page.get_by_text("Your Strava account is not connected yet").wait_for()
    assert page.get_by_role("button", name="Connect Strava").is_visible()


# --- the dashboard -------------------------------------------------------------------


def seed_fleet(stack: Stack) -> dict[str, int]:
    now = datetime.now(UTC)
    ids = {}
    for n, name in enumerate(["walking", "new", "racer", "reauth"]):
        ids[name] = connect_rider(
            stack.database_url,
            stack.fake,
            7400 + n,
            activities=30 + 10 * n,
            start=now - timedelta(days=400),
            end=now - timedelta(days=1),
            history_complete=name != "racer",
            seed=n,
            race_fraction=0.3,
        )
    # Riders the old view (incomplete histories and stuck riders only) never listed:
    # complete histories, nothing stuck, and one rider who never connected.
    for n in range(6):
        ids[f"settled{n}"] = connect_rider(
            stack.database_url,
            stack.fake,
            7410 + n,
            activities=3,
            name=f"Settled rider {n}",
            start=now - timedelta(days=30),
            end=now - timedelta(days=2),
            seed=10 + n,
        )
    ids["unconnected"] = query(
        stack.database_url, "insert into riders (name) values ('Never connected') returning id"
    )[0]["id"]
    execute(
        stack.database_url,
        "update strava_connections set status = 'needs_reauth' where rider_id = %s",
        ids["reauth"],
    )
    execute(
        stack.database_url,
        "update strava_connections set history_complete_at = null where rider_id in (%s, %s)",
        ids["walking"],
        ids["new"],
    )
    headers = {"Authorization": f"Bearer {CRON_SECRET}"}
    for endpoint in ("sync-strava", "discover", "enrich"):
        answer = requests.post(f"{stack.service}/api/cron/{endpoint}", headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
    # Two histories mid-walk (as a long history would be), for the backfill bars.
    for name, days in (("walking", 200), ("new", 40)):
        execute(
            stack.database_url,
            "update strava_connections set history_complete_at = null,"
            " history_walk_started_at = now() - interval '1 hour',"
            " history_cursor = now() - make_interval(days => %s),"
            " history_pages = 3, history_activities = 420 where rider_id = %s",
            days,
            ids[name],
        )
    # Earlier windows of the day, as the budget would have counted them.
    window = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    for back, cls, n in ((1, "incremental", 12), (1, "discover", 30), (5, "enrich_old", 8)):
        execute(
            stack.database_url,
            "insert into strava_request_windows (window_start, work_class, requests)"
            " values (%s, %s, %s) on conflict (window_start, work_class)"
            " do update set requests = excluded.requests",
            window - timedelta(minutes=15 * back),
            cls,
            n,
        )
    return ids


def status(stack: Stack) -> dict[str, Any]:
    answer = requests.get(
        f"{stack.service}/api/admin/status",
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
        timeout=30,
    )
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def sign_in(page: Any, stack: Stack, bearer: str) -> None:
    page.goto(stack.service + "/admin")
    page.get_by_label("Cron bearer").fill(bearer)
    page.get_by_role("button", name="Open the dashboard").click()


def number(page: Any, key: str) -> str:
    return page.inner_text(f'[data-key="{key}"] dd')  # type: ignore[no-any-return]


def test_the_dashboard_shows_the_fleet_and_acts(clean, page):
    stack = clean
    ids = seed_fleet(stack)
    expected = status(stack)
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    riders = expected["riders"]
    assert number(page, "total") == str(riders["total"]) == str(len(ids)) == "11"
    assert number(page, "due_now") == str(riders["due_now"])
    assert number(page, "connection.needs_reauth") == "1"
    races = expected["backlog"]["races"]
    for key in ("total", "waiting", "pending", "failed", "done"):
        assert number(page, f"races.{key}") == str(races[key])
    history = expected["backlog"]["history"]
    assert number(page, "riders_incomplete") == str(history["riders_incomplete"])
    rate = expected["rate_limit"]
    assert page.get_attribute("#gauge-window", "value") == str(rate["read_usage_15min"])
    assert page.get_attribute("#gauge-window", "max") == str(rate["read_limit_15min"])
    assert page.get_attribute("#gauge-day", "value") == str(rate["read_usage_daily"])
    # One point per window with requests, each as tall as its total.
    windows = [w for w in expected["requests"]["windows"]]
    assert len(windows) >= 3
    drawn = page.locator("#chart g.window")
    assert drawn.count() == len(windows)
    totals = {
        w["window_start"]: sum(v for k, v in w.items() if k != "window_start") for w in windows
    }
    for i in range(drawn.count()):
        group = drawn.nth(i)
        assert int(group.get_attribute("data-total")) == totals[group.get_attribute("data-window")]
    # Runs: the three cron calls, each a mark on its timeline.
    for kind in ("sync-strava", "discover", "enrich"):
        marks = page.locator(f'[data-kind="{kind}"] .timeline li[data-outcome]')
        assert marks.count() == len(expected["runs"][kind]["last"]) >= 1
    # The rider table: every rider of the status's list, row for row, with its bar.
    listed = expected["riders"]["list"]
    assert listed["count"] == len(listed["items"]) == len(ids)
    old_view = {h["rider_id"] for h in history["riders"]} | {
        i["rider_id"] for i in expected["stuck"]["items"] if i.get("rider_id") is not None
    }
    assert len(old_view) < len(listed["items"])  # what the table showed before
    rows = page.locator("#riders tbody tr[data-rider]")
    assert rows.count() == len(listed["items"])
    drawn_rows = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        drawn_rows[int(row.get_attribute("data-rider"))] = {
            "status": row.get_attribute("data-status"),
            "percent": int(row.locator("progress").get_attribute("value")),
            "waiting": int(row.locator(".races-waiting").inner_text()),
            "failed": int(row.locator(".races-failed").inner_text()),
            "activities": int(row.locator("td.num").first.inner_text()),
        }
    assert drawn_rows == {
        r["rider_id"]: {
            "status": r["sync_state"] if r["connection"] == "active" else r["connection"],
            "percent": r["history"]["percent"],
            "waiting": r["races"]["waiting"],
            "failed": r["races"]["failed"],
            "activities": r["activities"],
        }
        for r in listed["items"]
    }
    assert drawn_rows[ids["unconnected"]]["status"] == "not_connected"
    assert drawn_rows[ids["reauth"]]["status"] == "needs_reauth"
    assert page.inner_text("#rider-count") == "11 riders"
    # Sortable: by history, ascending then descending.
    history_button = page.locator("#riders thead").get_by_role("button", name="History")
    history_button.click()
    assert page.get_attribute("#riders th:nth-child(3)", "aria-sort") == "ascending"

    def shown_percents():
        values = rows.locator("progress").evaluate_all("bars => bars.map(b => b.value)")
        return [int(v) for v in values]

    assert shown_percents() == sorted(r["history"]["percent"] for r in listed["items"])
    history_button.click()
    assert page.get_attribute("#riders th:nth-child(3)", "aria-sort") == "descending"
    assert shown_percents() == sorted(
        (r["history"]["percent"] for r in listed["items"]), reverse=True
    )
    # Filterable by status.
    page.select_option("#filter", "needs_reauth")
    assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.rider)")] == [
        ids["reauth"]
    ]
    page.select_option("#filter", "")
    assert rows.count() == len(listed["items"])
    shoot(page, "dashboard")
    # An operator action, confirmed, and its result.
    target = int(rows.first.get_attribute("data-rider"))
    assert target in ids.values()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Pause rider {target}").click()
    page.get_by_text(f"Pause rider {target}: done (200).").wait_for()
    paused = query(stack.database_url, "select auto_sync from riders where id = %s", target)
    assert paused == [{"auto_sync": False}]
    # A locator's wait, not wait_for_function: the page's CSP forbids the eval that a
    # string predicate needs once Playwright has to poll it.
    expect(page.locator('[data-key="sync.paused"] dd')).to_have_text("1")
    # A dismissed confirmation does nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name=f"Resume rider {target}").click()
    assert query(stack.database_url, "select auto_sync from riders where id = %s", target) == [
        {"auto_sync": False}
    ]


def test_a_club_of_more_riders_than_a_page_is_paged(clean, page):
    stack = clean
    execute(
        stack.database_url,
        "insert into riders (name) select 'Rider ' || n from generate_series(1, 512) n",
    )
    expected = status(stack)["riders"]["list"]
    assert (expected["count"], len(expected["items"]), expected["limit"]) == (512, 500, 500)
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    rows = page.locator("#riders tbody tr[data-rider]")
    assert page.inner_text("#rider-count") == "Riders 1–500 of 512"
    assert rows.count() == 500
    assert page.get_by_role("button", name="Previous riders").is_disabled()
    page.get_by_role("button", name="Next riders").click()
    expect(page.locator("#rider-count")).to_have_text("Riders 501–512 of 512")
    ids = [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.rider)")]
    assert len(ids) == 12 and min(ids) > max(r["rider_id"] for r in expected["items"])
    assert page.get_by_role("button", name="Next riders").is_disabled()
    page.get_by_role("button", name="Previous riders").click()
    expect(page.locator("#rider-count")).to_have_text("Riders 1–500 of 512")


def test_a_wrong_bearer_and_where_the_bearer_goes(clean, page):
    stack = clean
    seen: list[Any] = []
    page.on("request", lambda request: seen.append(request))
    sign_in(page, stack, "not-the-secret")
    alert = page.get_by_role("alert")
    alert.get_by_text("refused that bearer").wait_for()
    assert "401" in alert.inner_text()
    assert page.evaluate("sessionStorage.getItem('clubsync.bearer')") is None
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_load_state("networkidle")
    assert page.evaluate("sessionStorage.getItem('clubsync.bearer')") == CRON_SECRET
    assert page.context.cookies() == []
    assert CRON_SECRET not in page.url and CRON_SECRET not in page.content()
    carried = []
    for request in seen:
        assert CRON_SECRET not in request.url
        headers = request.all_headers()
        if any(CRON_SECRET in value for value in headers.values()):
            carried.append(request.url)
            assert request.url.startswith(stack.service + "/api/admin/")
    assert carried, "the bearer was never sent"
    # Nothing is loaded from, or sent to, another origin.
    assert {r.url.split("/", 3)[2] for r in seen} == {stack.service.split("/", 3)[2]}
    assert not [m for m in page.console_messages if "Content Security Policy" in m]
    # A reload keeps the session (the tab's storage), without asking again.
    page.reload()
    page.locator("#dashboard").wait_for()
    page.get_by_role("button", name="Forget the bearer").click()
    assert page.evaluate("sessionStorage.getItem('clubsync.bearer')") is None


# --- the dashboard explains, steers and reads on a phone --------------------------------

PANELS = [
    "#panel-attention", "#panel-riders", "#panel-webhooks", "#panel-weather", "#panel-budget",
    "#panel-backfill", "#panel-races", "#panel-alerts", "#panel-runs", "#panel-stuck",
]  # fmt: skip


def troubled_fleet(stack: Stack) -> dict[str, int]:
    """A club with something to explain: a rider failing with its reason, one who must
    reconnect, one revoked, one paused, and a sync-strava run that failed.

    Athletes 7500-7504 on the module's fake Strava: no other test may use them, as the
    fake keeps its athletes' activities from test to test."""
    ids = {}
    for n, name in enumerate(["Anna B.", "Ben C.", "Chloé D.", "Dev E.", "Eve F."]):
        ids[name] = connect_rider(stack.database_url, stack.fake, 7500 + n, activities=3, name=name)
    execute(
        stack.database_url,
        "update strava_connections set last_error = 'Strava answered 502 (its servers failed)',"
        " error_class = 'strava_unavailable', failure_count = 3,"
        " next_attempt_at = now() + interval '40 minutes' where rider_id = %s",
        ids["Anna B."],
    )
    execute(
        stack.database_url,
        "update strava_connections set status = 'needs_reauth',"
        " last_error = 'rider must reconnect Strava' where rider_id = %s",
        ids["Ben C."],
    )
    execute(
        stack.database_url,
        "update strava_connections set status = 'revoked', last_error = 'deauthorized at Strava',"
        " access_token = null, refresh_token = null where rider_id = %s",
        ids["Chloé D."],
    )
    execute(stack.database_url, "update riders set auto_sync = false where id = %s", ids["Dev E."])
    execute(
        stack.database_url,
        "insert into cron_runs (kind, started_at, finished_at, processed, succeeded, failed,"
        " skipped, remaining, rate_limited, items, error_summary) values ('sync-strava',"
        " now() - interval '2 minutes', now() - interval '1 minute', 2, 0, 2, 0, 0, false,"
        " '[]', 'strava_unavailable')",
    )
    return ids


def inside(page: Any, locator: Any, width: int) -> bool:
    """The element is on screen horizontally at this width (not cut off, no scrolling)."""
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5


def test_the_dashboard_explains_why_on_a_phone(clean, page):
    """A red run badge hid its error_summary, a rider's last_error lived in a hover
    tooltip (nothing on a phone), and "Nothing is stuck" stood beside a failed run."""
    stack = clean
    ids = troubled_fleet(stack)
    page.set_viewport_size(PHONE)
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    attention = page.locator("#attention")
    expect(attention).to_contain_text("The last sync-strava call failed")
    expect(attention).to_contain_text("2 of 2 failed: strava_unavailable")
    expect(attention).to_contain_text(f"Ben C. (rider {ids['Ben C.']}) must reconnect Strava")
    expect(attention).to_contain_text("press Reconnect Strava")
    expect(attention).to_contain_text(f"Anna B. (rider {ids['Anna B.']}) is failing")
    # The run's reason is on its badge, in words, not in a tooltip.
    failed = page.locator('[data-kind="sync-strava"] .timeline li[data-outcome="failed"]')
    expect(failed.first).to_contain_text("2 of 2 · strava_unavailable")
    # Each rider's reason in its row, on screen at 390 px, and its actions too.
    for name, words in (
        ("Anna B.", "Last error: Strava answered 502 (its servers failed)"),
        ("Ben C.", "ask them to press Reconnect Strava"),
    ):
        row = page.locator(f'#riders tr[data-rider="{ids[name]}"]')
        reason = row.locator(".reason")
        expect(reason).to_contain_text(words)
        assert reason.is_visible() and inside(page, reason, PHONE["width"])
        for button in row.locator("button").all():
            assert button.is_visible() and inside(page, button, PHONE["width"]), name
        assert row.locator(".rider-name").inner_text() == name
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for panel in PANELS:
        assert accessibility_failures(page, panel) == [], panel
    shoot(page, "dashboard-reasons")
    page.set_viewport_size(DESKTOP)
    for panel in PANELS:
        assert accessibility_failures(page, panel) == [], panel
    assert accessibility_failures(page) == []


def test_actions_are_offered_only_where_they_help(clean, page):
    """Reset was offered on a revoked rider (it answered 200 and changed nothing), and
    Pause and Resume both on every row."""
    stack = clean
    ids = troubled_fleet(stack)
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()

    def offered(name: str) -> list[str]:
        row = page.locator(f'#riders tr[data-rider="{ids[name]}"]')
        return row.locator("button").evaluate_all("bs => bs.map(b => b.dataset.action)")

    assert offered("Anna B.") == ["full-refresh", "reset", "pause", "name"]  # failing
    assert offered("Ben C.") == ["pause", "name"]  # must reconnect: no walk, no failures
    assert offered("Chloé D.") == ["name"]  # revoked: nothing to reset or pause
    assert offered("Dev E.") == ["full-refresh", "resume", "name"]  # paused
    assert offered("Eve F.") == ["full-refresh", "pause", "name"]  # fine: no reset
    # Renaming, through the prompt: the name shows everywhere at once.
    page.once("dialog", lambda dialog: dialog.accept("Eve (tandem)"))
    page.get_by_role("button", name=f"Rename rider {ids['Eve F.']}").click()
    expect(page.locator(f'#riders tr[data-rider="{ids["Eve F."]}"] .rider-name')).to_have_text(
        "Eve (tandem)"
    )
    assert query(stack.database_url, "select name, named_by_operator_at is not null as kept"
                 " from riders where id = %s", ids["Eve F."]) == [
        {"name": "Eve (tandem)", "kept": True}
    ]  # fmt: skip


def test_everyone_now_from_the_dashboard_says_what_it_costs(clean, page):
    stack = clean
    riders = [
        connect_rider(stack.database_url, stack.fake, 7600 + n, activities=2, name=f"R{n}")
        for n in range(3)
    ]
    headers = {"Authorization": f"Bearer {CRON_SECRET}"}
    assert requests.post(f"{stack.service}/api/cron/sync-strava", headers=headers,
                         timeout=30).json()["succeeded"] == 3  # fmt: skip
    # Two hours on, their next polls planned hours away: nothing is due as planned.
    execute(
        stack.database_url,
        "update strava_connections set last_synced_at = now() - interval '2 hours',"
        " next_poll_at = now() + interval '5 hours'",
    )
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    assert number(page, "due_now") == "0"
    cost = page.locator("#everyone-cost")
    expect(cost).to_contain_text("3 riders are not synced within SYNC_MIN_INTERVAL_S")
    expect(cost).to_contain_text("about 3 Strava requests")
    asked: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))  # a dismissed confirmation does nothing
    page.get_by_role("button", name="Sync everyone now").click()
    assert asked and "about 3 Strava requests" in asked[0]
    assert "3 riders not synced within SYNC_MIN_INTERVAL_S" in asked[0]
    assert re.search(r"\d+ requests are left in this 15-minute window and \d+ today", asked[0])
    synced_before = query(
        stack.database_url, "select max(last_synced_at) as t from strava_connections"
    )
    page.once("dialog", lambda d: answer(d, True))
    page.get_by_role("button", name="Sync everyone now").click()
    expect(page.locator("#action-result")).to_contain_text("Everyone now: 3 riders synced; done.")
    fresh = query(
        stack.database_url,
        "select count(*) as n from strava_connections where last_synced_at > %s",
        synced_before[0]["t"],
    )
    assert fresh[0]["n"] == len(riders)
    # The reloaded status: nobody left for everyone now, and the last call's reason shown.
    expect(cost).to_contain_text("nothing for everyone now to do")
    assert accessibility_failures(page, "#panel-riders") == []


def test_the_new_panels_webhooks_weather_backfill_and_alerts(clean, page):
    stack = clean
    ids = seed_fleet(stack)
    execute(
        stack.database_url,
        "insert into strava_push_subscription (id, subscription_id, callback_url, created_at,"
        " confirmed_at) values (1, 4242, 'https://sync.example/api/strava/webhook',"
        " now() - interval '2 hours', now())",
    )
    execute(
        stack.database_url,
        "insert into operator_alerts (kind, subject, title, detail, opened_at, sent_at)"
        " values ('needs_reauth', %s, 'Rider 7403 (rider 4) must reconnect Strava',"
        " 'Ask them to press Reconnect Strava.', now() - interval '1 hour', now())",
        f"rider:{ids['reauth']}",
    )
    expected = status(stack)
    sign_in(page, stack, CRON_SECRET)
    page.locator("#dashboard").wait_for()
    assert number(page, "webhooks.state") == "waiting for its first event"
    assert number(page, "webhooks.subscription") == "4242"
    assert number(page, "webhooks.last_event_at") == "never"
    assert number(page, "webhooks.pending") == str(expected["webhooks"]["pending"])
    expect(page.locator("#webhook-reason")).to_contain_text("has had no event yet")
    weather = expected["weather"]
    assert number(page, "weather.source") == "working"
    assert number(page, "weather.pending") == str(weather["activities"]["pending"])
    assert number(page, "weather.done") == str(weather["activities"]["done"])
    plan = expected["plan"]["backlog"]
    assert plan["requests"] > 0 and plan["completes_on"]
    assert number(page, "backlog_requests") == str(plan["requests"])
    completes = number(page, "completes_on")
    assert completes not in ("—", "complete") and re.search(r"\d{4}", completes)
    alerts_panel = page.locator("#alerts")
    expect(alerts_panel).to_contain_text("Rider 7403 (rider 4) must reconnect Strava")
    expect(page.locator("#alerts-note")).to_contain_text("ALERT_WEBHOOK_URL is not set")
    for panel in ("#panel-webhooks", "#panel-weather", "#panel-backfill", "#panel-alerts"):
        assert accessibility_failures(page, panel) == [], panel
    shoot(page, "dashboard-panels")


def test_the_budget_chart_reads_at_its_size(clean, page):
    """A 960-unit SVG squeezed into a half-width card: labels about 4 px, the last tick
    cut off, a y axis of 0 and its own maximum (284 of 600 looked full), no limit line."""
    stack = clean
    seed_fleet(stack)
    expected = status(stack)
    rate = expected["rate_limit"]
    limit = min(rate["limit_15min"], rate["read_limit_15min"])
    sign_in(page, stack, CRON_SECRET)
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        page.reload()  # drawn for this width (the bearer is kept in the tab's storage)
        page.locator("#chart svg").wait_for()
        chart = page.locator("#chart svg")
        geometry = chart.evaluate(
            """svg => {
                const box = svg.getBoundingClientRect();
                const body = parseFloat(getComputedStyle(document.body).fontSize);
                const texts = [...svg.querySelectorAll("text")].map(t => {
                    const r = t.getBoundingClientRect();
                    return {text: t.textContent, size: parseFloat(getComputedStyle(t).fontSize),
                            height: r.height, left: r.left, right: r.right, top: r.top};
                });
                return {width: box.width, viewBox: svg.viewBox.baseVal.width, body, texts,
                        left: box.left, right: box.right};
            }"""
        )
        # Drawn one unit a pixel: its text is as large as the page's.
        assert abs(geometry["width"] - geometry["viewBox"]) <= 1
        for text in geometry["texts"]:
            assert text["size"] >= geometry["body"] - 0.5, text
            assert (
                geometry["left"] - 0.5 <= text["left"] and text["right"] <= geometry["right"] + 0.5
            ), text
        ticks = sorted((t for t in geometry["texts"] if ":" in t["text"]), key=lambda t: t["left"])
        assert len(ticks) >= 2
        for a, b in zip(ticks, ticks[1:], strict=False):
            assert a["right"] <= b["left"], (a, b)  # time labels side by side, never overlapping
        labels = [t["text"] for t in geometry["texts"]]
        assert f"limit {limit}" in labels and str(limit) in labels and "0" in labels
        assert f"Sync-now reserve above {limit - rate['sync_now_reserve']}" in labels
        assert (
            chart.locator("line.limit").count() == 1 and chart.locator("line.reserve").count() == 1
        )
        # Scaled to the limit, not to its own maximum: a window's bar is its share of it.
        axis = chart.evaluate(
            """svg => {
                const y = l => parseFloat(svg.querySelector(l).getAttribute("y1"));
                return {zero: y("line.axis"), limit: y("line.limit")};
            }"""
        )
        for group in chart.locator("g.window").all():
            total = int(group.get_attribute("data-total"))
            tops = group.locator("rect").evaluate_all("rs => rs.map(r => r.y.baseVal.value)")
            drawn = (axis["zero"] - min(tops)) / (axis["zero"] - axis["limit"])
            assert abs(drawn - total / limit) < 0.02, (total, drawn)
        gauge = page.locator("#gauges .gauge-text").first.inner_text()
        used = rate["read_usage_15min"]
        assert (
            f"{used} used, {rate['read_limit_15min'] - used} left of {rate['read_limit_15min']}"
            in gauge
        )
        assert accessibility_failures(page, "#panel-budget") == []


# --- the rider's widget: live progress, every state, no contradictions --------------------


def contradictions(text: str, buttons: dict[str, bool]) -> list[str]:
    """What the widget's whole text (and its visible buttons, name -> enabled) says
    against itself. Empty when it is consistent."""
    found = []
    new = [int(n) for n in re.findall(r"\b(\d+) new activit", text)]
    nothing = re.search(r"\b0 (?:new )?activit|\bno new activit|\bnothing new", text)
    if nothing and any(n > 0 for n in new):
        found.append("no new activities, and some new ones")
    if re.search(r"first sync is on its way", text) and re.search(
        r"Last sync|Up to date|last synced", text
    ):
        found.append("a first sync to come, and a sync done")
    if "Up to date" in text and re.search(
        r"Syncing|Checking Strava|Bringing in|still coming in|not started yet", text
    ):
        found.append("up to date, and still working")
    for name in re.findall(r"[Pp]ress ((?:Re)?[Cc]onnect Strava|Sync now)", text):
        if name not in buttons:
            found.append(f"names the {name!r} button, which is not there")
    if "cannot be reached" in text and re.search(
        r"Activities here|Last sync|ALLOWED_ORIGINS|Up to date", text
    ):
        found.append("unreachable, and showing what it read")
    if re.search(r"not connected yet|withdrew", text) and (
        "Sync now" in buttons or "Disconnect Strava" in buttons
    ):
        found.append("not connected, and offering to sync or disconnect")
    complete = re.search(r"all your older activities are in|Older activities\s+all in", text)
    partial = [int(p) for p in re.findall(r"\((\d+)%\)", text)]
    if complete and any(p < 100 for p in partial):
        found.append("history complete, and not")
    if re.search(r"available again in \d|works again in \d", text) and buttons.get("Sync now"):
        found.append("Sync now waits, and is enabled")
    return found


def test_the_contradiction_check_refuses_the_old_widgets_texts():
    # What the widget said before (the examples): each is caught.
    after_sync_now = (
        "Last synced 6 Dec 2026. Done: 12 new activities added. History discovered 0% "
        "(0 activities so far)"
    )
    assert contradictions(after_sync_now, {"Sync now": True}) == [
        "no new activities, and some new ones"
    ]
    before_any = "Connected. Your first sync is on its way. Last sync added 0 new activities"
    assert contradictions(before_any, {"Sync now": True}) == [
        "a first sync to come, and a sync done"
    ]
    reauth = "Strava access has expired or was withdrawn: press Connect Strava to reconnect."
    assert contradictions(reauth, {"Reconnect Strava": True}) == [
        "names the 'Connect Strava' button, which is not there"
    ]
    assert contradictions("Sync now is available again in 4:12.", {"Sync now": True})
    assert contradictions("Up to date: last synced today. Syncing with Strava…", {})
    assert contradictions("Older activities all in. back to May 2019 (40%)", {})
    assert contradictions(reauth.replace("Connect", "Reconnect"), {"Reconnect Strava": True}) == []


def widget_buttons(page: Any) -> dict[str, bool]:
    """The widget's visible buttons, by name, and whether each is enabled."""
    buttons = page.locator("#strava-sync").get_by_role("button")
    return {
        buttons.nth(i).inner_text().strip(): buttons.nth(i).is_enabled()
        for i in range(buttons.count())
    }


def assert_consistent(page: Any, name: str) -> str:
    """The state's whole text says one thing, passes axe-core, and is photographed."""
    text = widget_text(page)
    assert not contradictions(text, widget_buttons(page)), (name, text)
    assert accessibility_failures(page, "#strava-sync") == [], name
    shoot(page, f"widget-{name}")
    return text


def open_widget(page: Any, url: str, state: str) -> None:
    page.goto(url)
    page.locator(f'#strava-sync[data-state="{state}"]').wait_for()


def messages(stack: Stack, user: uuid.UUID) -> list[dict[str, Any]]:
    """What the service sent on the rider's channel, oldest first (Realtime's queue)."""
    rows = query(
        stack.database_url,
        "select payload from realtime.messages where topic = %s and event = 'progress'"
        " order by payload->>'at', inserted_at",
        f"rider:{user}",
    )
    return [r["payload"] for r in rows]


def deliver(page: Any, user: uuid.UUID, payload: dict[str, Any]) -> int:
    """Realtime delivering one broadcast to the page's joined channels on the topic."""
    return int(
        page.evaluate(
            "([topic, payload]) => window.stubRealtime.deliver(topic, payload)",
            [f"rider:{user}", payload],
        )
    )


def history_walk(stack: Stack, athlete_id: int, **options: Any) -> tuple[int, uuid.UUID]:
    """A rider with a history of several pages, not yet walked."""
    now = datetime.now(UTC)
    return rider(
        stack,
        athlete_id,
        activities=430,
        start=now - timedelta(days=900),
        end=now - timedelta(days=1),
        history_complete=False,
        **options,
    )


def cron(stack: Stack, endpoint: str) -> dict[str, Any]:
    answer = requests.post(
        f"{stack.service}/api/cron/{endpoint}",
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_the_widget_hears_live_progress_and_reads_the_state_once(clean, page):
    stack = clean
    stack.club.realtime = True
    try:
        _, user = history_walk(stack, 7701)
        execute(stack.database_url, "update strava_connections set last_synced_at = now()")
        reads: list[str] = []
        page.on(
            "request",
            lambda r: reads.append(r.method) if r.url.endswith("/api/riders/me/sync") else None,
        )
        open_widget(page, stack.club_url + "/", "history")
        expect(page.locator("#strava-sync")).to_have_attribute("data-live", "on")
        joins = page.evaluate("window.stubRealtime.joins")
        assert joins == [{"topic": f"rider:{user}", "private": True}]
        assert page.evaluate("window.stubRealtime.auth") == [stack.club.token]
        # The schedule walks the rider's history (a call or more); Realtime brings what
        # it sent.
        for _ in range(10):
            if cron(stack, "discover")["items"][0]["complete"]:
                break
        sent = messages(stack, user)
        running = [m for m in sent if not m["finished"]]
        assert running and sent[-1]["finished"] is True
        first = running[0]
        assert deliver(page, user, first) == 1
        live = page.locator(".clubsync-live-text")
        expect(live).to_have_text(first["message"])
        assert page.get_attribute("#strava-sync", "data-state") == "syncing"
        bar = page.locator(".clubsync-live-bar")
        assert bar.get_attribute("value") == str(first["done"])
        assert bar.get_attribute("max") == "100"
        assert page.get_by_role("progressbar", name=first["message"]).count() == 1
        assert page.get_by_role("button", name="Syncing…").is_disabled()
        text = assert_consistent(page, "syncing-live")
        assert "Up to date" not in text and "Last sync" not in text
        # Another rider's topic never reaches this page.
        assert deliver(page, uuid.uuid4(), sent[-1]) == 0
        # The last message: said, and the state read once to show where things stand.
        deliver(page, user, sent[-1])
        page.get_by_text("History complete: all your older activities are in.").wait_for()
        page.locator('#strava-sync[data-state="up_to_date"]').wait_for()
        # A late message of the finished run changes nothing.
        deliver(page, user, first)
        assert page.get_attribute("#strava-sync", "data-state") == "up_to_date"
        assert reads.count("GET") == 2  # on mount, and once the run finished: no polling
    finally:
        stack.club.realtime = False


@pytest.mark.timeout(300)
def test_sync_now_shows_its_progress_live(clean, page):
    stack = clean
    stack.club.realtime = True
    now = datetime.now(UTC)
    try:
        _, user = rider(stack, 7702)
        execute(stack.database_url, "update strava_connections set last_synced_at = now()")
        stack.fake.add_activities(
            7702, make_activities(7702, 250, start=now - timedelta(days=5), end=now, seed=2)
        )
        open_widget(page, stack.club_url + "/", "up_to_date")
        expect(page.locator("#strava-sync")).to_have_attribute("data-live", "on")
        stack.fake.latency_s = 0.8  # two pages, seconds apart: long enough to watch
        seen: list[str] = []
        delivered = 0
        try:
            page.get_by_role("button", name="Sync now").click()
            # Play Realtime: deliver what the service sends while the request runs.
            for _ in range(200):
                for payload in messages(stack, user)[delivered:]:
                    deliver(page, user, payload)
                    delivered += 1
                    if not payload["finished"]:
                        seen.append(page.inner_text(".clubsync-live-text"))
                if page.get_by_text(re.compile(r"Done: \d+ new activities added")).count():
                    break
                page.wait_for_timeout(150)
        finally:
            stack.fake.latency_s = 0.0
        assert any(re.search(r"Checking Strava .* \d+ looked at", s) for s in seen), seen
        assert "250 new activities" in page.inner_text(".clubsync-last-sync")
        assert page.get_attribute("#strava-sync", "data-state") != "syncing"
    finally:
        stack.club.realtime = False


# Each state: its text read whole and checked for contradictions, axe-core, and a
# screenshot at 390 and 1280 px. A few states a test, so each stays short on a busy
# machine (the bound below is for a loaded runner, not a measure of speed).


@pytest.mark.timeout(300)
def test_widget_states_before_a_connection(clean, page):
    stack = clean
    stack.club.token = stack.token(uuid.uuid4())
    open_widget(page, stack.club_url + "/", "not_connected")
    text = assert_consistent(page, "not-connected")
    assert "not connected yet" in text and "Powered by Strava" in text
    assert list(widget_buttons(page)) == ["Connect Strava"]
    # Connecting: the service's answer is held here, so the widget stays on it.
    held = re.compile(re.escape(stack.service) + r"/api/strava/connect")
    holding: list[Any] = []
    page.route(held, lambda route: holding.append(route))
    page.get_by_role("button", name="Connect Strava").click()
    page.locator('#strava-sync[data-state="connecting"]').wait_for()
    assert "Taking you to Strava" in assert_consistent(page, "connecting")
    assert page.get_by_role("button", name="Connect Strava").is_disabled()
    for route in holding:
        route.abort()
    page.unroute(held)
    # The service unreachable (the network fails every call to it).
    api = re.compile(re.escape(stack.service) + r"/api/.*")
    page.route(api, lambda route: route.abort())
    open_widget(page, stack.club_url + "/", "unreachable")
    text = assert_consistent(page, "unreachable")
    assert "cannot be reached right now" in text and "ALLOWED_ORIGINS" not in text
    page.unroute(api)
    # A club page on an origin missing from ALLOWED_ORIGINS: a setting, not an outage.
    stack.other.token = stack.club.token
    open_widget(page, stack.other_url + "/", "origin_not_allowed")
    text = assert_consistent(page, "origin-not-allowed")
    assert f"This site ({stack.other_url}) is not in the service's ALLOWED_ORIGINS" in text
    assert "cannot be reached" not in text


@pytest.mark.timeout(300)
def test_widget_states_of_a_connected_rider(clean, page):
    stack = clean
    now = datetime.now(UTC)
    # First sync: connected, nothing synced yet, history not walked.
    rider_id, _ = rider(stack, 7511, activities=3, history_complete=False)
    open_widget(page, stack.club_url + "/", "first_sync")
    text = assert_consistent(page, "first-sync")
    assert "first sync is on its way" in text and "Older activities: not started yet" in text
    assert "Last sync" not in text and not re.search(r"\b0 (new )?activit", text)
    # History walking, with its estimated completion day (from the backfill plan).
    execute(
        stack.database_url,
        "insert into activities (rider_id, strava_id, name, sport_type, start_date, distance_m)"
        " values (%s, 751101, 'Morning Ride', 'Ride', now() - interval '2 days', 42000)",
        rider_id,
    )
    execute(
        stack.database_url,
        "update strava_connections set last_synced_at = now(), last_sync_added = 1,"
        " history_walk_started_at = now() - interval '1 hour',"
        " history_cursor = now() - interval '700 days', history_activities = 380,"
        " history_estimated_complete_on = current_date + 3 where rider_id = %s",
        rider_id,
    )
    open_widget(page, stack.club_url + "/", "history")
    text = assert_consistent(page, "history")
    assert re.search(r"back to \w+ \d{4} \(\d+%\)", text)
    assert "Expected complete around" in text
    assert (now + timedelta(days=3)).strftime("%B") in text
    assert "1 new activity" in text and "View on Strava" in text
    bar = page.get_by_role("progressbar", name=re.compile("Older activities: back to"))
    assert bar.get_attribute("max") == "100" and 0 < int(bar.get_attribute("value")) < 100
    # Up to date.
    execute(
        stack.database_url,
        "update strava_connections set history_complete_at = now(), history_cursor = null,"
        " history_walk_started_at = null where rider_id = %s",
        rider_id,
    )
    open_widget(page, stack.club_url + "/", "up_to_date")
    text = assert_consistent(page, "up-to-date")
    assert re.match(r"Your Strava activities\s+Up to date: last synced", text)
    assert re.search(r"Older activities\s+all in", text)
    # Cooldown: Sync now pressed a minute ago.
    execute(
        stack.database_url,
        "update strava_connections set last_sync_now_at = now() - interval '60 seconds'"
        " where rider_id = %s",
        rider_id,
    )
    open_widget(page, stack.club_url + "/", "up_to_date")
    page.locator('#strava-sync[data-countdown="cooldown"]').wait_for()
    text = assert_consistent(page, "cooldown")
    assert re.search(r"Sync now is available again in [34]:\d\d", text)
    assert page.get_by_role("button", name="Sync now").is_disabled()


@pytest.mark.timeout(300)
def test_widget_states_when_sync_cannot_run(clean, page):
    stack = clean
    rider_id, _ = rider(stack, 7512, activities=2)
    execute(stack.database_url, "update strava_connections set last_synced_at = now()")
    # Rate limited: the club's budget is blocked; the rider presses Sync now.
    execute(
        stack.database_url,
        "update strava_rate_budget set blocked_until = now() + interval '7 minutes'",
    )
    open_widget(page, stack.club_url + "/", "up_to_date")
    page.get_by_role("button", name="Sync now").click()
    page.locator('#strava-sync[data-state="rate_limited"]').wait_for()
    text = assert_consistent(page, "rate-limited")
    assert re.search(r"allowance for now\. Sync now works again in [67]:\d\d", text)
    assert "UTC" in text
    execute(stack.database_url, "update strava_rate_budget set blocked_until = null")
    # Needs reauth: the words name the button shown.
    execute(
        stack.database_url,
        "update strava_connections set status = 'needs_reauth' where rider_id = %s",
        rider_id,
    )
    open_widget(page, stack.club_url + "/", "needs_reauth")
    text = assert_consistent(page, "needs-reauth")
    assert "press Reconnect Strava" in text and "Reconnect Strava" in widget_buttons(page)
    # Revoked at Strava: its data deleted, as the service does on the event.
    import psycopg
    from psycopg.rows import dict_row

    import models

    with psycopg.connect(stack.database_url, row_factory=dict_row) as conn:
        models.riders.revoke_connection(
            conn, rider_id=rider_id, message="deauthorized at Strava", now=datetime.now(UTC)
        )
    open_widget(page, stack.club_url + "/", "revoked")
    text = assert_consistent(page, "revoked")
    assert "You withdrew this club's access" in text and "Activities here" not in text
    assert list(widget_buttons(page)) == ["Reconnect Strava"]


@pytest.mark.timeout(300)
def test_sharing_switch_disconnect_and_a_full_club(clean, page):
    stack = clean
    rider_id, user = rider(stack, 7521, activities=4)
    cron(stack, "sync-strava")
    open_widget(page, stack.club_url + "/", "up_to_date")
    switch = page.get_by_role("switch", name="Share my activities with the club")
    assert switch.get_attribute("aria-checked") == "false"
    sentence = page.inner_text(".clubsync-share-text")
    assert sentence.startswith("Members signed in to the club's site will see your activities")
    assert "without its first and last 500 m" in sentence and sentence.count(". ") <= 1
    link = page.get_by_role("link", name="View on Strava")
    latest = query(
        stack.database_url,
        "select strava_id from activities where rider_id = %s order by start_date desc limit 1",
        rider_id,
    )[0]["strava_id"]
    assert link.get_attribute("href") == f"https://www.strava.com/activities/{latest}"
    switch.check()
    page.get_by_text("Sharing is on").wait_for()
    assert switch.get_attribute("aria-checked") == "true"
    shared = query(
        stack.database_url, "select share_with_club_at from riders where id = %s", rider_id
    )
    assert shared[0]["share_with_club_at"] is not None
    assert "On since" in page.inner_text(".clubsync-share-text")
    assert_consistent(page, "sharing-on")
    switch.uncheck()
    page.get_by_text("Sharing is off").wait_for()
    assert query(
        stack.database_url, "select share_with_club_at from riders where id = %s", rider_id
    ) == [{"share_with_club_at": None}]

    # Disconnect asks first; keeping it connected does nothing.
    page.get_by_role("button", name="Disconnect Strava").click()
    confirm = page.get_by_role("group", name=re.compile("Disconnect Strava?"))
    assert "deletes every activity" in confirm.inner_text()
    assert_consistent(page, "disconnect-confirm")
    page.get_by_role("button", name="Keep it connected").click()
    assert query(stack.database_url, "select count(*) as n from strava_connections")[0]["n"] == 1
    page.get_by_role("button", name="Disconnect Strava").click()
    page.get_by_role("button", name="Yes, disconnect").click()
    page.get_by_text(re.compile(r"Strava is disconnected; 4 activities deleted here")).wait_for()
    page.locator('#strava-sync[data-state="not_connected"]').wait_for()
    assert query(stack.database_url, "select count(*) as n from strava_connections")[0]["n"] == 0

    # A club at its athlete capacity: refused before Strava, and said so.
    original = stack.club.service
    app = create_app(
        settings_for(
            stack.database_url,
            supabase_url=stack.iss.rsplit("/auth/v1", 1)[0],
            allowed_origins=(stack.club_url,),
            strava_athlete_capacity=1,
        ),
        environ={},
    )
    from tests.browser_helpers import Deferred, Served

    deferred = Deferred()
    deferred.app = app
    full_service = Served(deferred)
    try:
        connect_rider(stack.database_url, stack.fake, 7522)
        stack.club.service = full_service.url
        open_widget(page, stack.club_url + "/", "not_connected")
        page.get_by_role("button", name="Connect Strava").click()
        page.locator('#strava-sync[data-state="club_full"]').wait_for()
        text = assert_consistent(page, "club-full")
        assert "already connected to 1 athletes" in text and "/oauth/authorize" not in page.url
    finally:
        stack.club.service = original
        full_service.stop()
        app.extensions["strava_sync"].db.close()


def test_the_dashboard_shows_the_athlete_capacity(clean, page):
    stack = clean
    for n in range(8):
        connect_rider(stack.database_url, stack.fake, 7621 + n)
    revoked = connect_rider(stack.database_url, stack.fake, 7631)
    execute(
        stack.database_url,
        "update strava_connections set status = 'revoked' where rider_id = %s",
        revoked,
    )
    app = create_app(settings_for(stack.database_url, strava_athlete_capacity=10), environ={})
    deferred = Deferred()
    deferred.app = app
    served = Served(deferred)
    try:
        answer = requests.get(
            f"{served.url}/api/admin/status",
            headers={"Authorization": f"Bearer {CRON_SECRET}"},
            timeout=30,
        ).json()
        assert answer["athletes"] == {"connected": 8, "capacity": 10, "full": False}
        page.goto(served.url + "/admin")
        page.get_by_label("Cron bearer").fill(CRON_SECRET)
        page.get_by_role("button", name="Open the dashboard").click()
        page.locator("#dashboard").wait_for()
        assert number(page, "athletes") == "8 of 10 athletes"
    finally:
        served.stop()
        app.extensions["strava_sync"].db.close()
