"""One ride recorded twice, the rules without a database: what an operator's overrule
may say, what is stored for it, what it answers, and how copies are shown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.duplicates import (
    OverruleError,
    check_overrule,
    describe,
    overrule_answer,
    stored_overrule,
)


@pytest.mark.parametrize(
    ("ids", "verdict", "keep"),
    [
        ([41, 42], "distinct", None),
        ([41, 42], "duplicate", None),
        ([41, 42], "duplicate", 41),
        ([41, 42], "duplicate", 42),
        ([41, 42], "auto", None),
    ],
)
def test_an_overrule_of_two_activities_with_a_known_verdict_is_taken(ids, verdict, keep):
    check_overrule(ids, verdict, keep)  # no error


@pytest.mark.parametrize(
    ("ids", "verdict", "keep", "field"),
    [
        ([41, 42], "maybe", None, "verdict"),
        ([41, 42], "Distinct", None, "verdict"),
        ([41], "distinct", None, "activity_ids"),
        ([41, 42, 43], "distinct", None, "activity_ids"),
        ([41, 41], "distinct", None, "activity_ids"),
        ([41, 42], "duplicate", 43, "keep"),  # not one of the pair
        ([41, 42], "distinct", 41, "keep"),  # a copy to keep only for `duplicate`
        ([41, 42], "auto", 42, "keep"),
    ],
)
def test_an_overrule_is_refused_naming_the_field_at_fault(ids, verdict, keep, field):
    with pytest.raises(OverruleError) as refused:
        check_overrule(ids, verdict, keep)
    assert refused.value.field == field
    assert field in refused.value.message  # the route answers it as the error's message
    assert str(refused.value) == refused.value.message


def test_the_verdict_is_checked_before_the_pair():
    with pytest.raises(OverruleError) as refused:
        check_overrule([41], "maybe", None)
    assert refused.value.field == "verdict"


def test_what_is_stored_for_each_verdict():
    assert stored_overrule("distinct", None) == ("distinct", None)
    assert stored_overrule("duplicate", 42) == ("duplicate", 42)
    assert stored_overrule("auto", None) == (None, None)  # forgotten: back to the rule
    assert stored_overrule("distinct", 42) == ("distinct", None)


COPIES = [
    {"activity_id": 7, "duplicate_of": 8},
    {"activity_id": 42, "duplicate_of": 41},
]


def test_the_answer_names_the_pairs_mark_whichever_way_round_it_was_asked():
    for ids in ([41, 42], [42, 41]):
        answer = overrule_answer(9008, ids, "duplicate", COPIES, (5, 6))
        assert answer["duplicate"] == {"activity_id": 42, "duplicate_of": 41}
        assert answer["activity_ids"] == ids
    answer = overrule_answer(9008, [41, 42], "duplicate", COPIES, (5, 6))
    assert answer["rider_id"] == 9008 and answer["verdict"] == "duplicate"
    assert answer["eddington"] == {"miles": 5, "km": 6}


def test_the_answer_says_none_when_the_pair_is_not_marked():
    answer = overrule_answer(9008, [41, 43], "distinct", COPIES, (5, 6))
    assert answer["duplicate"] is None
    assert overrule_answer(9008, [41, 42], "distinct", [], (0, 0))["duplicate"] is None


def test_a_copy_is_shown_with_the_activity_kept():
    row = {
        "activity_id": 42,
        "duplicate_of": 41,
        "sport_type": "Ride",
        "start_date": datetime(2026, 6, 6, 7, 1, tzinfo=UTC),
        "distance_m": 82400.0,
        "kept_distance_m": 80000.0,
        "overruled": "duplicate",
        "name": "Morning Ride",
    }
    [shown] = describe([row])
    assert shown["activity_id"] == 42 and shown["duplicate_of"] == 41
    assert shown["sport_type"] == "Ride"
    assert shown["start_date"] == "2026-06-06T07:01:00Z"
    assert shown["distance_m"] == 82400.0 and shown["kept_distance_m"] == 80000.0
    assert shown["overruled"] == "duplicate"
    assert describe([]) == []
