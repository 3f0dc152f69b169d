"""Ticket statuses and the moves between them."""

from __future__ import annotations

from collections import deque

import pytest

from orders.lifecycle import (
    TRANSITIONS,
    TicketLifecycleError,
    TicketStatus,
    allowed_next,
    can_transition,
    check_transition,
)

S = TicketStatus

ALLOWED = [
    (S.in_ivr, S.queued), (S.in_ivr, S.abandoned_in_ivr), (S.in_ivr, S.closed),
    (S.queued, S.in_progress), (S.queued, S.abandoned_in_queue),
    (S.abandoned_in_queue, S.in_progress), (S.abandoned_in_queue, S.closed),
    (S.abandoned_in_ivr, S.in_progress), (S.abandoned_in_ivr, S.closed),
    (S.in_progress, S.dispatched), (S.in_progress, S.resolved),
    (S.dispatched, S.resolved), (S.dispatched, S.in_progress),
    (S.resolved, S.closed), (S.resolved, S.in_progress),
]


def test_the_transition_table_is_exactly_the_hotline_flow():
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == set(ALLOWED)


@pytest.mark.parametrize("old, new", ALLOWED)
def test_allowed(old, new):
    assert check_transition(old, new) is new
    assert check_transition(old.value, new.value) is new
    assert can_transition(old, new)


@pytest.mark.parametrize(
    "old, new",
    [(S.in_ivr, S.in_progress), (S.queued, S.in_ivr), (S.queued, S.resolved), (S.resolved, S.queued),
     (S.closed, S.in_progress), (S.dispatched, S.closed), (S.abandoned_in_ivr, S.queued)],
)
def test_refused(old, new):
    assert not can_transition(old, new)
    with pytest.raises(TicketLifecycleError) as err:
        check_transition(old, new)
    assert f"from {old.value} to {new.value}" in str(err.value)


def test_closed_is_final_and_staying_put_is_allowed():
    assert allowed_next("closed") == frozenset()
    with pytest.raises(TicketLifecycleError, match="none, it is final"):
        check_transition("closed", "resolved")
    for status in S:
        assert check_transition(status, status) is status


def test_unknown_status():
    with pytest.raises(TicketLifecycleError, match="unknown ticket status 'lost'"):
        check_transition("lost", "queued")
    assert issubclass(TicketLifecycleError, ValueError)


def test_every_status_is_reachable_from_in_ivr_and_every_path_can_end_closed():
    seen, todo = {S.in_ivr}, deque([S.in_ivr])
    while todo:
        for new in TRANSITIONS[todo.popleft()]:
            if new not in seen:
                seen.add(new)
                todo.append(new)
    assert seen == set(S)
    for status in S:
        reach, todo = {status}, deque([status])
        while todo:
            for new in TRANSITIONS[todo.popleft()]:
                if new not in reach:
                    reach.add(new)
                    todo.append(new)
        assert S.closed in reach
