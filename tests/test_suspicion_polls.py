"""Polls on suspicion and the weekly look back against the real Postgres, on virtual time:
a club whose events arrive (the workflows' schedule: events every 5 minutes, sync-strava
hourly), one rider's event lost; the poll placed just after the rider's usual upload
finds the ride within the hour, not at a daily poll hours later, and a manual entry
dated weeks back whose event was lost is found by the rider's look back within the
week."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fake_strava.data import make_activity
from tests.factories import connect_rider, execute, query
from tests.test_webhook_polling import LIST, club  # noqa: F401  (the fixture)

HABIT_RIDER = 9401


def _reader(club, athlete: int):  # noqa: F811
    def row() -> dict:
        [found] = query(
            club.database,
            "select c.rider_id, c.next_poll_at, c.poll_reason, c.last_synced_at,"
            " c.last_look_back_at from strava_connections c where c.athlete_id = %s",
            athlete,
        )
        return found

    return row


def _daily_rider(club, athlete: int, *, first_id: int, hour_utc: int | tuple[int, ...]) -> int:  # noqa: F811
    """A rider who rode every day of the last four weeks at `hour_utc` (an hour each;
    several hours: a ride at each), connected now; their rides go in with the first
    listing."""
    hours = (hour_utc,) if isinstance(hour_utc, int) else hour_utc
    now = club.clock.now()
    rider = connect_rider(club.database, club.fake, athlete, sync_cursor=now - timedelta(days=29))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rides = [
        make_activity(
            first_id + 100 * index + day,
            athlete_id=athlete,
            start_date=midnight - timedelta(days=day) + timedelta(hours=hour),
            zone="Etc/UTC",
            elapsed_time=3600,
            moving_time=3300,
        )
        for day in range(1, 29)
        for index, hour in enumerate(hours)
    ]
    # Uploaded long ago: their events are not news now.
    club.fake.push.loss = 1.0
    club.fake.add_activities(athlete, rides)
    club.fake.push.loss = 0.0
    club.riders[athlete] = rider
    return rider


def test_a_ride_whose_event_was_lost_is_found_by_the_poll_after_the_usual_upload(club):  # noqa: F811
    _daily_rider(club, HABIT_RIDER, first_id=8_100_000, hour_utc=17)
    club.cron("sync-strava")  # everyone's first listing: the habit is known
    row = _reader(club, HABIT_RIDER)
    busy = next(a for a in club.riders if a != HABIT_RIDER)
    # Events arrive (another rider uploads) until just before the habit's hour.
    now = club.clock.now()
    usual = datetime(now.year, now.month, now.day, 18, 20, tzinfo=UTC)
    club.live(int((usual - now).total_seconds() // 3600), uploads_per_hour=0.5, only=busy)
    club.clock.advance(seconds=(usual - club.clock.now()).total_seconds())
    planned = row()
    # The plan says why: rides end at 18:00, uploaded about 20 minutes later, every day.
    assert "polls just after this rider's usual uploads" in planned["poll_reason"]
    assert "weekdays 18:20 (" in planned["poll_reason"], planned["poll_reason"]
    assert "after a usual upload" in planned["poll_reason"], planned["poll_reason"]
    assert planned["next_poll_at"] == usual, planned["poll_reason"]

    # The ride ends at 18:05 and is uploaded at 18:20: its event is lost.
    uploaded_at = club.clock.now()
    ride = make_activity(
        8_200_000, athlete_id=HABIT_RIDER, start_date=uploaded_at - timedelta(minutes=80),
        zone="Etc/UTC", elapsed_time=3600, moving_time=3300,
    )  # fmt: skip
    club.fake.push.loss = 1.0
    club.fake.add_activities(HABIT_RIDER, [ride])
    club.fake.push.loss = 0.0
    assert club.fake.push.log.lost >= 1

    found_at = None
    for _ in range(4 * 12):  # four hours in the workflows' steps
        club.live(1, uploads_per_hour=0.5, only=busy)
        if ride["id"] in club.stored(HABIT_RIDER):
            found_at = club.clock.now()
            break
    assert found_at is not None, "the poll after the usual upload did not find the ride"
    # The next sync-strava run after 18:20 (hourly, at 17 past): within the hour.
    assert found_at - uploaded_at <= timedelta(hours=1, minutes=5)
    # Once: the next poll is the next day's, not another that evening.
    after = row()
    assert after["next_poll_at"] == usual + timedelta(days=1), after


def _weekdays(reason: str) -> str:
    """The weekdays' polls a reason names ("weekdays 07:20 (19 of 20 days), ...")."""
    return reason.split("weekdays ", 1)[1].split("; weekends", 1)[0]


def test_while_a_history_is_walked_the_polls_keep_to_one_a_day(club):  # noqa: F811
    rider = _daily_rider(club, HABIT_RIDER, first_id=8_400_000, hour_utc=(6, 17))
    newcomer = 9402
    club.riders[newcomer] = connect_rider(
        club.database, club.fake, newcomer, activities=5, history_complete=False
    )
    club.cron("sync-strava")  # first listings; the newcomer's history is still to walk
    busy = next(a for a in club.riders if a not in (HABIT_RIDER, newcomer))
    club.live(3, uploads_per_hour=1, only=busy)  # events arrive: the safety net's plans
    row = _reader(club, HABIT_RIDER)
    during = row()
    assert "one a day while the backfill runs" in during["poll_reason"], during
    # One of the two stretches a day kind (the busier in the four weeks), not both.
    assert _weekdays(during["poll_reason"]).count(" of ") == 1, during
    [plan] = query(
        club.database, "select polls_per_day from strava_connections where rider_id = %s", rider
    )
    assert plan["polls_per_day"] == 1
    # The history walked and its races detailed: the rider's next plan has both stretches.
    execute(
        club.database,
        "update strava_connections set history_complete_at = %s where rider_id = %s",
        club.clock.now(),
        club.riders[newcomer],
    )
    club.cron("enrich")
    polled = during["last_synced_at"]
    for _ in range(30):
        club.live(1, uploads_per_hour=0.5, only=busy)
        if row()["last_synced_at"] != polled:
            break
    after = row()
    assert after["last_synced_at"] != polled, "the rider was not polled again in 30 hours"
    assert "one a day while the backfill runs" not in after["poll_reason"], after
    weekdays = _weekdays(after["poll_reason"])
    assert "07:20 (" in weekdays and "18:20 (" in weekdays, after


def test_a_backdated_entry_whose_event_was_lost_is_found_by_the_weekly_look_back(club):  # noqa: F811
    club.cron("sync-strava")  # first listings
    athlete = next(iter(club.riders))
    row = _reader(club, athlete)
    assert row()["last_look_back_at"] is None
    entered_at = club.clock.now()
    manual = make_activity(
        8_300_000, athlete_id=athlete, start_date=entered_at - timedelta(days=30),
        manual=True, distance_m=40_000,
    )  # fmt: skip
    club.fake.push.loss = 1.0
    club.fake.add_activities(athlete, [manual])
    club.fake.push.loss = 0.0
    club.fake.reset_log()
    found_at = None
    for _ in range(8 * 24 // 3):  # eight days, three hours at a time
        club.live(3, uploads_per_hour=0.3, step_min=30)
        if manual["id"] in club.stored(athlete):
            found_at = club.clock.now()
            break
    assert found_at is not None, "the look back did not find the entry dated back"
    assert found_at - entered_at <= timedelta(days=8)
    looked = row()["last_look_back_at"]
    assert looked is not None and entered_at < looked <= found_at
    # The listing that found it went 60 days back, and past a short read_all page to the
    # empty one.
    rider_id = club.riders[athlete]
    pages = [
        r.query
        for r in club.fake.requests
        if r.path.endswith(LIST)
        and r.athlete_id == athlete
        and int(r.query["after"]) <= int((looked - timedelta(days=59)).timestamp())
    ]
    assert {p.get("page", "1") for p in pages} >= {"1", "2"}, pages
    assert rider_id
