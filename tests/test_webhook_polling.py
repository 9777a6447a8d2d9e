"""Polling steps back while webhooks work, on virtual time: days of a small club with
the workflows' schedule (events every 5 minutes, sync-strava hourly), events lost at
5%; the safety net's polls (just after each rider's usual uploads, daily at least)
still bring every rider to Strava's state, and when
events stop, polling resumes its cadence and the status says why."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest
import responses

from fake_strava import FakeStrava, make_activities
from services import suspicion
from tests.conftest import API_URL, CLIENT_ID, CLIENT_SECRET, OAUTH_URL, cron_headers, sizes
from tests.factories import connect_rider, query
from tests.test_one_clock import START, VirtualClock, on_virtual_time

HOOK = "/api/strava/webhook"
RIDERS = 8
LIST = "/athlete/activities"
HOUR_S = 3600


@pytest.fixture
def club(request, make_app, database):
    """The club; indirect parameters override the app's settings (a shorter silence)."""
    clock = VirtualClock(START)
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock.time, seed=3)
    app = make_app(
        strava_webhook_verify_token="verify-me",
        public_base_url="https://sync.club.example",
        sync_min_interval_s=1800,
        **getattr(request, "param", {}),
    )
    client = on_virtual_time(app, clock).test_client()

    def validate(url: str) -> tuple[int, Any]:
        answer = client.get(url.removeprefix("https://sync.club.example"))
        return answer.status_code, answer.get_json()

    fake.push.validator = validate
    fake.push.transport = lambda url, event: client.post(HOOK, json=event).status_code
    fake.push.timer = clock.monotonic  # Strava's 2 s for an answer, on the service's clock
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        riders = {
            athlete: connect_rider(database, fake, athlete, activities=5)
            for athlete in range(9101, 9101 + RIDERS)
        }
        result = app.test_cli_runner().invoke(args=["strava-webhook", "create"])
        assert result.exit_code == 0, result.output
        yield Club(clock, fake, client, riders, database)


class Club:
    def __init__(self, clock, fake, client, riders, database) -> None:
        self.clock, self.fake, self.client = clock, fake, client
        self.riders, self.database = riders, database
        self.rng = random.Random(11)
        self.next_id = 7_000_000

    def cron(self, kind: str) -> dict[str, Any]:
        while True:
            answer = self.client.post(f"/api/cron/{kind}", headers=cron_headers())
            assert answer.status_code == 200, answer.get_data(as_text=True)
            if answer.get_json()["done"]:
                return answer.get_json()

    def upload(self, athlete: int) -> None:
        now = self.clock.now()
        self.next_id += 1
        [ride] = make_activities(
            athlete, 1, start=now - timedelta(hours=2), end=now - timedelta(hours=1),
            first_id=self.next_id, seed=self.next_id,
        )  # fmt: skip
        self.fake.add_activities(athlete, [ride])

    def live(
        self, hours: int, *, uploads_per_hour: float, only: int | None = None, step_min: int = 5
    ) -> None:
        """Hours of the club in steps (5 minutes): uploads at random (by anyone, or `only`
        one rider), deliveries as they fall due, the events workflow each step,
        sync-strava hourly (each step, for steps of an hour or more)."""
        per_hour = max(1, 60 // step_min)
        for step in range(hours * 60 // step_min):
            if self.rng.random() < uploads_per_hour * step_min / 60:
                self.upload(only or self.rng.choice(list(self.riders)))
            self.fake.push.deliver_due()
            self.cron("events")
            if step % per_hour == min(3, per_hour - 1):
                self.cron("sync-strava")
            self.clock.advance(minutes=step_min)

    def stored(self, athlete: int) -> set[int]:
        rows = query(
            self.database,
            "select strava_id from activities where rider_id = %s",
            self.riders[athlete],
        )
        return {r["strava_id"] for r in rows}

    def status(self) -> dict[str, Any]:
        return self.client.get("/api/admin/status", headers=cron_headers()).get_json()


# Small: a day of uploads as many as two days' at full size, the events workflow every
# 15 minutes (every 5 at full size).
@pytest.mark.parametrize(
    ("lossy_hours", "uploads_per_hour", "step_min"), sizes((24, 4, 15), (48, 2, 5))
)
def test_the_daily_safety_net_brings_every_rider_to_stravas_state_with_events_lost(
    club, lossy_hours, uploads_per_hour, step_min
):
    club.cron("sync-strava")  # everyone's first listing
    club.fake.push.loss = 0.05
    club.fake.reset_log()
    club.live(lossy_hours, uploads_per_hour=uploads_per_hour, step_min=step_min)
    log = club.fake.push.log
    assert log.lost >= 2, "the seed must lose some events for this test to mean anything"
    missed = sum(
        len({a["id"] for a in club.fake.activities_of(athlete)} - club.stored(athlete))
        for athlete in club.riders
    )
    # A day more, events still arriving (one rider riding): every rider's daily poll.
    club.fake.push.loss = 0.0
    club.live(25, uploads_per_hour=1, only=next(iter(club.riders)), step_min=step_min)
    for athlete in club.riders:
        assert club.stored(athlete) == {a["id"] for a in club.fake.activities_of(athlete)}
    listings = club.fake.count(path_contains=LIST)
    # At most WATCH_MAX polls a rider a day begun, each just after a usual upload (these
    # busy riders upload at any hour), not polling by need's several a day.
    days = math.ceil((lossy_hours + 25) / 24)
    assert listings <= RIDERS * suspicion.WATCH_MAX * days, (listings, missed)
    fetches = club.fake.count(path_contains="/activities/")
    assert fetches <= log.emitted  # about one request per delivered event, none per poll
    reasons = {
        r["poll_reason"] for r in query(club.database, "select poll_reason from strava_connections")
    }
    assert all("safety net" in reason for reason in reasons)
    status = club.status()["webhooks"]
    assert status["healthy"] is True
    assert status["events_24h"]["processed"] >= 1
    assert status["lag_s"]["p95"] is not None and status["lag_s"]["p95"] <= 600


# Small: WEBHOOK_SILENCE_S at 3 hours (the least is 1), the default 12 at full size.
@pytest.mark.parametrize(
    ("club", "healthy_hours", "silent_hours"),
    sizes(({"webhook_silence_s": 3 * HOUR_S}, 2, 5), ({}, 6, 14)),
    indirect=["club"],
)
def test_when_events_stop_polling_resumes_its_cadence_and_the_status_says_why(
    club, healthy_hours, silent_hours
):
    club.cron("sync-strava")
    club.live(healthy_hours, uploads_per_hour=3)
    assert club.status()["webhooks"]["healthy"] is True
    club.fake.push.loss = 1.0  # the subscription silently stops delivering
    club.live(silent_hours, uploads_per_hour=3)
    webhooks = club.status()["webhooks"]
    assert webhooks["healthy"] is False
    assert "no event for" in webhooks["reason"] and "polling resumed" in webhooks["reason"]
    reasons = [
        r["poll_reason"] for r in query(club.database, "select poll_reason from strava_connections")
    ]
    assert not any("safety net" in reason for reason in reasons)
    club.fake.reset_log()
    club.live(6, uploads_per_hour=3)
    # Back to polling by habit: more than the one daily listing per rider in 6 hours.
    assert club.fake.count(path_contains=LIST) > RIDERS * 6 / 24


# Small: the club's workflows called every 4 hours (the events and sync-strava at once);
# at full size the events every 30 minutes and sync-strava hourly.
@pytest.mark.parametrize("step_min", sizes(240, 30))
def test_safety_net_polls_drop_the_overlap_where_it_costs_a_page(club, step_min):
    """Without activity:read_all a listing ends only on an empty page: with the overlap
    (7 days) a quiet rider's poll costs two listings. While events arrive, its daily
    safety-net poll lists after the cursor (one empty page) on six days of seven; when
    events stop, every poll takes the overlap again."""
    quiet = 9301
    now = club.clock.now()
    rider = connect_rider(
        club.database, club.fake, quiet, activities=3, scope="read,activity:read",
        start=now - timedelta(days=3), end=now - timedelta(days=1),
    )  # fmt: skip
    club.riders[quiet] = rider
    club.cron("sync-strava")  # first listings, with the overlap
    assert len(club.stored(quiet)) == 3
    [row] = query(
        club.database, "select sync_cursor from strava_connections where rider_id = %s", rider
    )
    cursor = int(row["sync_cursor"].timestamp())  # the connection time: no ride since
    week_back = str(cursor - 7 * 86400)
    busy = next(a for a in club.riders if a != quiet)

    def quiet_listings(hours: int, *, loss: float) -> list[dict[str, str]]:
        club.fake.push.loss = loss
        club.fake.reset_log()
        club.live(hours, uploads_per_hour=0.5, only=busy, step_min=step_min)
        return [
            r.query for r in club.fake.requests if r.path.endswith(LIST) and r.athlete_id == quiet
        ]

    healthy = quiet_listings(8 * 24, loss=0.0)
    assert club.status()["webhooks"]["healthy"] is True
    firsts = [q["after"] for q in healthy if q.get("page", "1") == "1"]
    assert 7 <= len(firsts) <= 9, firsts  # one poll a day
    # The weekly look back lists 60 days (once in the 8 days, or twice).
    looks = [a for a in firsts if int(a) < cursor - 8 * 86400]
    assert len(looks) in (1, 2), firsts
    # The overlap one day in seven, unless the look back fell on that day. The period's
    # first poll may come before the subscription's first event, while its health is
    # still unknown: it keeps the overlap.
    assert firsts[1:].count(week_back) + len(looks) >= 1, firsts
    assert set(firsts) - set(looks) <= {str(cursor), week_back}, firsts
    # Only those with rides after them take page 2.
    assert len(healthy) == len(firsts) + firsts.count(week_back) + len(looks)

    quiet_listings(14, loss=1.0)  # events stop: polling resumes after WEBHOOK_SILENCE_S
    assert club.status()["webhooks"]["healthy"] is False
    resumed = quiet_listings(24, loss=1.0)
    assert resumed, "polling by habit polls the quiet rider too"
    assert {q["after"] for q in resumed} == {week_back}
    assert {q.get("page", "1") for q in resumed} == {"1", "2"}
