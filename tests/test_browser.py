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
    assert page.inner_text(".clubsync-races-waiting") == "0"
    assert re.search(r"\d+ km · \d+ mi", page.inner_text(".clubsync-eddington"))
    assert page.get_attribute(".clubsync-progress", "max") == "100"
    assert page.get_by_label("History discovered").count() == 1
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
    page.get_by_text("cannot be reached").wait_for()
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
    reconnect, one revoked, one paused, and a sync-strava run that failed."""
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
