"""Pure decisions of the history walk: the `before` bound, the cursor, the walk's end,
the reconciliation guard and the page-time check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.discovery import (
    listing_before,
    next_step,
    reconcile_allowed,
    time_for_another_page,
)

T = datetime(2024, 5, 1, 6, 12, 0, tzinfo=UTC)


def test_before_is_one_second_past_the_bound_so_the_boundary_second_is_listed_again():
    assert listing_before(T) == int(T.timestamp()) + 1
    # a walk's start has microseconds: its own second is still included
    assert listing_before(T + timedelta(microseconds=999_999)) == int(T.timestamp()) + 1
    assert listing_before(T - timedelta(microseconds=1)) == int(T.timestamp())


def test_an_empty_page_ends_the_walk_with_the_cursor_unchanged():
    for read_all in (True, False):
        step = next_step(0, None, cursor=T, read_all=read_all)
        assert step.ended and step.cursor == T


def test_the_cursor_is_the_oldest_start_of_the_page():
    oldest = T - timedelta(days=30)
    step = next_step(200, oldest, cursor=T, read_all=True)
    assert step.cursor == oldest and not step.ended


def test_a_page_with_nothing_older_than_the_cursor_ends_the_walk():
    # only the re-seen boundary row (or rows sharing its second)
    for size in (1, 2):
        step = next_step(size, T, cursor=T, read_all=False)
        assert step.ended and step.cursor == T


@pytest.mark.parametrize(
    "size, read_all, ended",
    [
        (200, True, False),
        (200, False, False),
        (199, True, True),  # a short page is the end only when nothing is hidden
        (199, False, False),  # without read_all private ones were dropped after paging
        (1, False, False),
    ],
)
def test_a_short_page_ends_the_walk_only_with_read_all(size, read_all, ended):
    step = next_step(size, T - timedelta(hours=1), cursor=T, read_all=read_all)
    assert step.ended is ended and step.cursor == T - timedelta(hours=1)


@pytest.mark.parametrize(
    "unseen, total, allowed",
    [
        (0, 0, True),
        (25, 30, True),  # a small history may lose up to 25
        (26, 30, False),
        (50, 1000, True),  # 5% of a large one
        (51, 1000, False),
        (500, 10_000, True),
        (10_000, 10_000, False),  # an empty listing must not wipe a rider
    ],
)
def test_reconciliation_refuses_to_delete_an_implausible_share(unseen, total, allowed):
    assert reconcile_allowed(unseen, total) is allowed


def test_a_page_is_started_only_if_it_can_finish_in_time():
    assert time_for_another_page(5.0, None)
    assert not time_for_another_page(0.0, None)
    assert time_for_another_page(2.0, 1.0)
    assert not time_for_another_page(1.4, 1.0)  # margin for a page slower than the slowest
