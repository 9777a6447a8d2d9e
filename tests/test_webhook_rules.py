"""The webhook decisions without I/O: what a delivery says, which deliveries are one
event, Strava's validation, the subscription's health, and the safety-net polls and
their listings' overlap."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services import schedule
from services.sync import OVERLAP_EVERY_DAYS, ListingNeed, listing_overlap
from services.webhooks import (
    CONFIRM_EVERY,
    EARLIEST_EVENT,
    FIRST_EVENT_GRACE,
    FUTURE_SLACK,
    MAX_UPDATE_TEXT,
    MAX_UPDATES,
    Malformed,
    Subscription,
    confirmation_due,
    event_backoff,
    health,
    parse_event,
    privacy_hint,
    validation_answer,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOOD = {
    "aspect_type": "create",
    "event_time": int((NOW - timedelta(seconds=5)).timestamp()),
    "object_id": 1360128428,
    "object_type": "activity",
    "owner_id": 134815,
    "subscription_id": 120475,
    "updates": {},
}


def test_a_documented_event_is_read_as_strava_sends_it():
    event = parse_event(GOOD, NOW)
    assert (event.object_type, event.aspect_type, event.object_id) == (
        "activity",
        "create",
        GOOD["object_id"],
    )
    assert event.event_time == NOW - timedelta(seconds=5)
    assert not event.deauthorization
    deauth = parse_event(
        {**GOOD, "object_type": "athlete", "aspect_type": "update", "object_id": 134815,
         "updates": {"authorized": "false"}},
        NOW,
    )  # fmt: skip
    assert deauth.deauthorization


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"object_type": "club"}, "object_type"),
        ({"aspect_type": "rename"}, "aspect_type"),
        ({"object_id": "1360128428"}, "object_id"),
        ({"object_id": True}, "object_id"),
        ({"owner_id": 0}, "owner_id"),
        ({"subscription_id": -1}, "subscription_id"),
        ({"subscription_id": 2**63}, "out of range"),
        ({"event_time": 1_000}, "plausible"),
        ({"event_time": int((NOW + timedelta(days=2)).timestamp())}, "plausible"),
        ({"updates": ["title"]}, "updates"),
        ({"updates": {"title": "x" * 600}}, "short"),
        ({"updates": {f"k{i}": "v" for i in range(17)}}, "updates"),
        ({"object_type": "athlete", "object_id": 5}, "owner_id"),
    ],
)
def test_anything_else_is_malformed_with_the_reason(change, reason):
    with pytest.raises(Malformed, match=reason):
        parse_event({**GOOD, **change}, NOW)
    with pytest.raises(Malformed):
        parse_event([GOOD], NOW)


def test_repeated_deliveries_share_a_key_and_different_events_do_not():
    key = parse_event(GOOD, NOW).delivery_key
    assert parse_event(dict(reversed(GOOD.items())), NOW).delivery_key == key
    others = [
        {**GOOD, "aspect_type": "update", "updates": {"title": "A"}},
        {**GOOD, "aspect_type": "update", "updates": {"title": "B"}},
        {**GOOD, "event_time": GOOD["event_time"] + 1},
        {**GOOD, "object_id": GOOD["object_id"] + 1},
        {**GOOD, "subscription_id": 9},
    ]
    keys = {parse_event(o, NOW).delivery_key for o in others}
    assert len(keys) == len(others) and key not in keys
    # Strava's strings; a boolean or number sent instead means the same.
    assert (
        parse_event({**GOOD, "updates": {"private": True}}, NOW).delivery_key
        == parse_event({**GOOD, "updates": {"private": "true"}}, NOW).delivery_key
    )


def test_validation_fails_closed_and_compares_the_token():
    query = {"hub.mode": "subscribe", "hub.challenge": "abc", "hub.verify_token": "t0k"}
    assert validation_answer(query, "t0k") == (200, {"hub.challenge": "abc"})
    assert validation_answer(query, None)[0] == 503
    assert validation_answer(query, "")[0] == 503
    assert validation_answer({**query, "hub.verify_token": "t0K"}, "t0k")[0] == 403
    assert validation_answer({**query, "hub.mode": "unsubscribe"}, "t0k")[0] == 403
    assert (
        validation_answer({k: v for k, v in query.items() if k != "hub.challenge"}, "t0k")[0] == 403
    )
    assert validation_answer({**query, "hub.challenge": "x" * 1000}, "t0k")[1] == {
        "hub.challenge": "x" * 256
    }


def test_every_field_of_an_event_is_read_into_its_own_place():
    event = parse_event({**GOOD, "updates": {"title": "Lunch Ride"}}, NOW)
    assert event.owner_id == 134815
    assert event.subscription_id == 120475
    assert event.object_id == 1360128428
    assert event.updates == {"title": "Lunch Ride"}


def test_one_is_the_smallest_id_an_event_may_carry():
    ones = {**GOOD, "object_id": 1, "owner_id": 1, "subscription_id": 1}
    event = parse_event(ones, NOW)
    assert (event.object_id, event.owner_id, event.subscription_id) == (1, 1, 1)


def test_an_event_may_be_dated_from_2015_to_a_day_ahead_and_no_further():
    earliest = int(EARLIEST_EVENT.timestamp())
    latest = int((NOW + FUTURE_SLACK).timestamp())
    assert parse_event({**GOOD, "event_time": earliest}, NOW).event_time == EARLIEST_EVENT
    assert parse_event({**GOOD, "event_time": latest}, NOW).event_time == NOW + FUTURE_SLACK
    for outside in (earliest - 1, latest + 1):
        with pytest.raises(Malformed, match="plausible"):
            parse_event({**GOOD, "event_time": outside}, NOW)


def test_updates_hold_up_to_16_fields_of_up_to_512_characters_under_names_up_to_64():
    widest = {f"field{i}": "v" for i in range(MAX_UPDATES)}
    assert len(parse_event({**GOOD, "updates": widest}, NOW).updates) == 16
    with pytest.raises(Malformed, match="at most 16 fields"):
        parse_event({**GOOD, "updates": {**widest, "one more": "v"}}, NOW)
    longest = {"title": "x" * MAX_UPDATE_TEXT, "n" * 64: "v"}
    assert parse_event({**GOOD, "updates": longest}, NOW).updates == longest
    for too_long in ({"title": "x" * (MAX_UPDATE_TEXT + 1)}, {"n" * 65: "v"}):
        with pytest.raises(Malformed, match="short"):
            parse_event({**GOOD, "updates": too_long}, NOW)


def test_updates_take_booleans_and_numbers_as_strava_s_text_and_refuse_anything_else():
    sent = {"private": False, "authorized": True, "count": 3, "ratio": 0.5}
    updates = parse_event({**GOOD, "updates": sent}, NOW).updates
    assert updates == {"private": "false", "authorized": "true", "count": "3", "ratio": "0.5"}
    for odd in (["Lunch Ride"], {"text": "Lunch Ride"}, None):
        with pytest.raises(Malformed, match="short"):
            parse_event({**GOOD, "updates": {"title": odd}}, NOW)


def test_a_validation_without_the_verify_token_is_refused():
    query = {"hub.mode": "subscribe", "hub.challenge": "abc"}
    assert validation_answer(query, "t0k") == (403, {})


def test_only_an_activity_s_deletion_or_change_of_who_sees_it_is_a_privacy_hint():
    def hint(**change) -> bool:
        return privacy_hint(parse_event({**GOOD, **change}, NOW))

    assert hint(aspect_type="delete")
    assert hint(aspect_type="update", updates={"private": "true"})
    assert hint(aspect_type="update", updates={"title": "Lunch Ride", "private": "false"})
    assert not hint(aspect_type="update", updates={"title": "Lunch Ride"})
    assert not hint(aspect_type="update", updates={})
    assert not hint(aspect_type="create")
    assert not hint(aspect_type="create", updates={"private": "true"})
    # An athlete's event is never about one activity, whatever it carries.
    athlete = {"object_type": "athlete", "object_id": GOOD["owner_id"]}
    assert not hint(**athlete, aspect_type="update", updates={"private": "true"})
    assert not hint(**athlete, aspect_type="delete")


def subscription(**change) -> Subscription:
    values = {
        "subscription_id": 120475,
        "callback_url": "https://club.example/api/strava/webhook",
        "created_at": NOW - timedelta(days=3),
        "confirmed_at": NOW - timedelta(hours=1),
        "missing_since": None,
    }
    return Subscription(**{**values, **change})


SILENCE = 12 * 3600


def test_healthy_while_the_subscription_exists_and_events_arrive():
    state = health(subscription(), NOW - timedelta(hours=2), NOW, silence_s=SILENCE)
    assert state.healthy and "safety net" in state.reason


@pytest.mark.parametrize(
    ("sub", "last_event", "words"),
    [
        (None, None, "no push subscription"),
        (subscription(missing_since=NOW - timedelta(hours=1)), NOW, "no longer lists"),
        (subscription(confirmed_at=None), NOW, "not confirmed"),
        (
            subscription(confirmed_at=NOW - 2 * CONFIRM_EVERY - timedelta(seconds=1)),
            NOW,
            "not confirmed",
        ),
        (subscription(), NOW - timedelta(hours=13), "no event for 13 h"),
        (subscription(), None, "no event since subscription 120475 was made 72 h ago"),
    ],
)
def test_unhealthy_says_why(sub, last_event, words):
    state = health(sub, last_event, NOW, silence_s=SILENCE, uploaded_since_created=True)
    assert not state.healthy
    assert words in state.reason and "polling" in state.reason


def test_health_says_in_plain_words_why_polling_does_or_does_not_step_back():
    healthy = health(subscription(), NOW - timedelta(hours=2), NOW, silence_s=SILENCE)
    assert healthy.as_dict() == {
        "healthy": True,
        "state": "healthy",
        "reason": "events arriving: riders are polled after their usual uploads, daily at"
        " least, as a safety net",
    }
    unhealthy = [
        health(None, None, NOW, silence_s=SILENCE),
        health(subscription(missing_since=NOW), NOW, NOW, silence_s=SILENCE),
        health(subscription(confirmed_at=None), NOW, NOW, silence_s=SILENCE),
        health(subscription(), NOW - timedelta(hours=13), NOW, silence_s=SILENCE),
    ]
    for state in unhealthy:
        assert state.as_dict()["healthy"] is False
        assert state.reason.endswith("at the normal cadence"), state.reason
    assert unhealthy[0].reason == "no push subscription: polling at the normal cadence"
    assert "not confirmed at Strava for over 12 h" in unhealthy[2].reason
    assert unhealthy[3].reason.endswith(": polling resumed at the normal cadence")


def test_hours_are_whole_from_ten_and_tenths_below():
    ten = health(subscription(), NOW - timedelta(hours=10), NOW, silence_s=9 * 3600 + 1800)
    assert "no event for 10 h (threshold 9.5 h)" in ten.reason
    under = health(subscription(), NOW - timedelta(hours=9.5), NOW, silence_s=9 * 3600)
    assert "no event for 9.5 h (threshold 9.0 h)" in under.reason


def test_a_confirmation_or_an_event_exactly_at_its_threshold_still_counts():
    confirmed = subscription(confirmed_at=NOW - 2 * CONFIRM_EVERY)
    assert health(confirmed, NOW, NOW, silence_s=SILENCE).healthy
    assert health(subscription(), NOW - timedelta(seconds=SILENCE), NOW, silence_s=SILENCE).healthy


def test_a_subscription_waits_for_its_first_event_a_whole_day_and_says_so():
    made = NOW - FIRST_EVENT_GRACE
    just_under = subscription(created_at=made + timedelta(seconds=1), confirmed_at=NOW)
    assert health(just_under, None, NOW, silence_s=SILENCE).as_dict() == {
        "healthy": False,
        "state": "waiting_for_first_event",
        "reason": "subscription 120475 has had no event yet (made 24 h ago): polling at the"
        " normal cadence until the first arrives",
    }
    uploaded = health(just_under, None, NOW, silence_s=SILENCE, uploaded_since_created=True)
    assert uploaded.as_dict() == {
        "healthy": False,
        "state": "waiting_for_first_event",
        "reason": "no event since subscription 120475 was made 24 h ago, though riders have"
        " uploaded since (is its callback this deployment's? see strava-webhook show):"
        " polling at the normal cadence",
    }
    quiet = health(subscription(created_at=made, confirmed_at=NOW), None, NOW, silence_s=SILENCE)
    assert quiet.healthy and quiet.state == "healthy"
    assert quiet.reason == (
        "no event yet, and no rider has uploaded since the subscription was made:"
        " riders are polled after their usual uploads, daily at least, as a safety net"
    )


def test_a_subscription_without_an_event_waits_for_its_first():
    """A new subscription with no event ever was reported healthy: polling stepped back
    on nothing but its existence."""
    fresh = subscription(created_at=NOW - timedelta(hours=1), confirmed_at=NOW)
    waiting = health(fresh, None, NOW, silence_s=SILENCE)
    assert not waiting.healthy and waiting.state == "waiting_for_first_event"
    assert waiting.as_dict()["state"] == "waiting_for_first_event"
    # Riders uploaded since it was made, and still nothing: waiting, and says so.
    day_old = subscription(created_at=NOW - timedelta(hours=30), confirmed_at=NOW)
    stale = health(day_old, None, NOW, silence_s=SILENCE, uploaded_since_created=True)
    assert not stale.healthy and stale.state == "waiting_for_first_event"
    assert "riders have uploaded since" in stale.reason
    # A day with no upload by anyone: nothing was there to announce.
    quiet = health(day_old, None, NOW, silence_s=SILENCE, uploaded_since_created=False)
    assert quiet.healthy and quiet.state == "healthy"
    assert not health(
        subscription(created_at=NOW - timedelta(hours=23)), None, NOW, silence_s=SILENCE
    ).healthy
    # The first event makes it healthy; silence afterwards does not.
    heard = health(fresh, NOW - timedelta(minutes=5), NOW, silence_s=SILENCE)
    assert heard.healthy and heard.state == "healthy"
    silent = health(fresh, NOW - timedelta(hours=13), NOW, silence_s=SILENCE)
    assert silent.state == "silent"


def test_every_state_has_its_word():
    states = {
        health(None, None, NOW, silence_s=SILENCE).state,
        health(subscription(missing_since=NOW), NOW, NOW, silence_s=SILENCE).state,
        health(subscription(confirmed_at=None), NOW, NOW, silence_s=SILENCE).state,
        health(subscription(), None, NOW, silence_s=SILENCE, uploaded_since_created=True).state,
        health(subscription(), NOW - timedelta(days=2), NOW, silence_s=SILENCE).state,
        health(subscription(), NOW, NOW, silence_s=SILENCE).state,
    }
    assert states == {
        "none", "missing", "unconfirmed", "waiting_for_first_event", "silent", "healthy"
    }  # fmt: skip


def test_the_subscription_is_confirmed_every_few_hours():
    assert not confirmation_due(None, NOW)
    assert not confirmation_due(subscription(), NOW)
    assert confirmation_due(subscription(confirmed_at=NOW - CONFIRM_EVERY), NOW)
    assert confirmation_due(subscription(confirmed_at=None), NOW)
    missing = subscription(
        confirmed_at=NOW - timedelta(days=2), missing_since=NOW - timedelta(hours=1)
    )
    assert not confirmation_due(missing, NOW)


def test_failed_events_back_off_doubling_to_an_hour():
    waits = [event_backoff(n) for n in range(10)]
    assert waits[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert waits[-1] == timedelta(hours=1)
    assert waits == sorted(waits)


def habit(rider_id: int, last_poll: datetime | None, *, found: bool = False) -> schedule.RiderHabit:
    return schedule.RiderHabit(
        rider_id=rider_id,
        uploads=tuple(NOW - timedelta(hours=h) for h in range(0, 48, 3)),  # a busy rider
        utc_offset_s=3600,
        last_poll_at=last_poll,
        last_poll_found=found,
    )


def test_safety_net_polls_every_rider_once_a_day_spread_through_the_day():
    riders = [habit(i, NOW - timedelta(hours=1), found=True) for i in range(1, 201)]
    plan = schedule.safety_net_plan(riders, 600, 3600, NOW, "events arriving")
    assert plan.expected_per_day == 200 and plan.fits
    assert "events arriving" in plan.note
    for decision in plan.decisions.values():
        assert decision.polls_per_day == 1 and decision.found_per_day == 0
        # never sooner than the floor after the last poll (a find brings none forward),
        # never more than a day after it
        assert (
            timedelta(hours=1)
            <= decision.next_poll_at - (NOW - timedelta(hours=1))
            <= timedelta(days=1)
        )
        assert decision.reason.startswith("events arriving; this rider's daily poll at ")
    hours = [d.local_times_s[0] // 3600 for d in plan.decisions.values()]
    per_hour = [hours.count(h) for h in range(24)]
    assert max(per_hour) - min(per_hour) <= 3  # evenly spread: 200/24 is 8.3 an hour
    assert (
        sum(
            schedule.polls_between(d, NOW, NOW + timedelta(days=1)) for d in plan.decisions.values()
        )
        == 200
    )


def test_a_rider_never_polled_is_polled_now_under_the_safety_net():
    plan = schedule.safety_net_plan([habit(7, None)], 600, 3600, NOW, "events arriving")
    assert plan.decisions[7].next_poll_at == NOW


WEEK = timedelta(days=7)


@pytest.mark.parametrize("read_all", [True, False])
@pytest.mark.parametrize("first_listing", [True, False])
def test_without_healthy_events_every_listing_takes_the_overlap(read_all, first_listing):
    for day in range(OVERLAP_EVERY_DAYS):
        need = ListingNeed(False, first_listing, read_all, rider_id=41)
        assert listing_overlap(need, 7.0, NOW + timedelta(days=day)) == WEEK


def test_with_healthy_events_the_overlap_is_kept_where_it_is_free_or_first():
    for day in range(OVERLAP_EVERY_DAYS):
        now = NOW + timedelta(days=day)
        assert listing_overlap(ListingNeed(True, False, True, 41), 7.0, now) == WEEK
        assert listing_overlap(ListingNeed(True, True, False, 41), 7.0, now) == WEEK


def test_without_read_all_the_overlap_comes_one_day_in_seven_spread_over_riders():
    days_with = {}
    for rider_id in range(1, 71):
        need = ListingNeed(True, False, False, rider_id)
        kept = [
            day
            for day in range(OVERLAP_EVERY_DAYS)
            if listing_overlap(need, 7.0, NOW + timedelta(days=day)) == WEEK
        ]
        others = {
            listing_overlap(need, 7.0, NOW + timedelta(days=day))
            for day in range(OVERLAP_EVERY_DAYS)
            if day not in kept
        }
        assert len(kept) == 1 and others == {timedelta(0)}
        days_with[rider_id] = kept[0]
    # the riders' overlap days are spread: each day of the week has a seventh of them
    assert sorted(Counter(days_with.values()).values()) == [10] * OVERLAP_EVERY_DAYS


# Every JSON type, nested ones included: what a fuzzer (or a forger) sends in any field.
JSON_VALUES = [
    None, True, False, 0, -1, 1.5, 2**64, "", "activity", "create",
    [], ["activity"], [1, 2], {}, {"activity": 1}, {"a": [1, {"b": None}]},
]  # fmt: skip


@pytest.mark.parametrize("field", sorted(GOOD))
@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_any_json_value_in_any_field_is_an_event_or_malformed(field, value):
    """A list or an object where a word belongs raised TypeError (unhashable) from the
    membership test: the callback answered 500 instead of ignoring it."""
    try:
        event = parse_event({**GOOD, field: value}, NOW)
    except Malformed:
        return
    assert isinstance(event.object_type, str) and isinstance(event.aspect_type, str)
