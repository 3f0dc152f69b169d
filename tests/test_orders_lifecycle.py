"""The ticket's state machine: statuses, moves, who may make them."""

from __future__ import annotations

from collections import deque

import pytest

from base.vocabulary import Role
from orders.lifecycle import (
    CALL_PHASE,
    MOVES,
    PUBLIC_STATE,
    TRANSITIONS,
    Move,
    MoveNotAllowed,
    TicketLifecycleError,
    TicketStatus,
    allowed_next,
    can_transition,
    check_move,
    check_transition,
    moves_from,
)

S = TicketStatus
M = Move

#: The hotline's flow, written out by hand: (move, from, to).
FLOW = {
    (M.register, S.in_ivr, S.registered), (M.register, S.queued, S.registered),
    (M.register, S.abandoned_in_ivr, S.registered), (M.register, S.abandoned_in_queue, S.registered),
    (M.resolve, S.registered, S.resolved), (M.resolve, S.reopened, S.resolved),
    (M.dispatch, S.registered, S.dispatched), (M.dispatch, S.returned, S.dispatched),
    (M.dispatch, S.reopened, S.dispatched),
    (M.accept, S.dispatched, S.accepted),
    (M.return_, S.dispatched, S.returned), (M.return_, S.accepted, S.returned),
    (M.progress, S.accepted, S.in_progress), (M.progress, S.in_progress, S.in_progress),
    (M.reply, S.accepted, S.replied), (M.reply, S.in_progress, S.replied),
    (M.close, S.resolved, S.closed), (M.close, S.replied, S.closed),
    (M.reopen, S.resolved, S.reopened), (M.reopen, S.replied, S.reopened), (M.reopen, S.closed, S.reopened),
    (M.merge, S.queued, S.merged), (M.merge, S.abandoned_in_ivr, S.merged),
    (M.merge, S.abandoned_in_queue, S.merged), (M.merge, S.registered, S.merged),
    (M.merge, S.returned, S.merged), (M.merge, S.reopened, S.merged), (M.merge, S.resolved, S.merged),
    (M.archive, S.closed, S.archived), (M.archive, S.merged, S.archived),
}
HOTLINE = {Role.agent, Role.supervisor}


def test_the_moves_are_exactly_the_hotline_flow():
    table = {(rule.move, source, rule.target) for rule in MOVES.values() for source in rule.sources}
    assert table == FLOW


def test_the_status_transitions_are_the_calls_and_the_moves():
    calls = {(S.in_ivr, S.queued), (S.in_ivr, S.abandoned_in_ivr), (S.in_ivr, S.closed), (S.queued, S.abandoned_in_queue)}
    expected = calls | {(source, target) for _move, source, target in FLOW if source != target}
    assert {(old, new) for old, targets in TRANSITIONS.items() for new in targets} == expected


@pytest.mark.parametrize("move, source, target", sorted(FLOW, key=str))
def test_every_allowed_move(move, source, target):
    role = next(iter(MOVES[move].roles))
    rule = check_move(move, source, role, department="water", lead="water")
    assert rule.target is target
    assert move in moves_from(source, role)


@pytest.mark.parametrize("move", list(Move))
@pytest.mark.parametrize("status", list(TicketStatus))
def test_every_refused_move_names_what_is_allowed(move, status):
    if status in MOVES[move].sources:
        return
    role = next(iter(MOVES[move].roles))
    with pytest.raises(TicketLifecycleError) as err:
        check_move(move, status, role, department="water", lead="water")
    assert status.value in str(err.value) and "moves allowed now" in str(err.value)


def test_roles():
    for move, rule in MOVES.items():
        for role in Role:
            if role in rule.roles:
                continue
            with pytest.raises(MoveNotAllowed):
                check_move(move, next(iter(rule.sources)), role, department="water", lead="water")
    assert MOVES[M.archive].roles == {Role.supervisor}
    assert MOVES[M.accept].roles == MOVES[M.reply].roles == {Role.department}
    assert MOVES[M.dispatch].roles == HOTLINE


def test_only_the_lead_department_accepts_returns_and_replies_supporting_ones_add_notes():
    for move in (M.accept, M.return_, M.reply):
        with pytest.raises(MoveNotAllowed):
            check_move(move, S.accepted if move is not M.accept else S.dispatched, Role.department,
                       department="power", lead="water", supporting={"power"})
    check_move(M.progress, S.in_progress, Role.department, department="power", lead="water", supporting={"power"})
    with pytest.raises(MoveNotAllowed):  # not assigned at all
        check_move(M.progress, S.in_progress, Role.department, department="police", lead="water",
                   supporting={"power"})
    with pytest.raises(MoveNotAllowed):  # a department token without its department
        check_move(M.accept, S.dispatched, Role.department, department=None, lead="water")


def test_the_role_is_checked_before_the_status_so_a_stranger_learns_nothing():
    with pytest.raises(MoveNotAllowed):
        check_move(M.accept, S.closed, Role.department, department="police", lead="water")


def test_unknown_names():
    with pytest.raises(TicketLifecycleError, match="unknown move"):
        check_move("fly", S.registered, Role.agent)
    with pytest.raises(TicketLifecycleError, match="unknown ticket status"):
        check_move(M.register, "lost", Role.agent)


def test_every_status_is_reachable_and_every_open_one_can_end():
    seen, todo = {S.in_ivr}, deque([S.in_ivr])
    while todo:
        for new in TRANSITIONS[todo.popleft()]:
            if new not in seen:
                seen.add(new)
                todo.append(new)
    assert seen == set(TicketStatus)
    final = {status for status, targets in TRANSITIONS.items() if not targets}
    assert final == {S.archived}


def test_public_states_are_open311s():
    assert set(PUBLIC_STATE) == set(TicketStatus)
    assert {state for state, _ in PUBLIC_STATE.values()} == {"open", "in progress", "fixed", "closed"}
    assert PUBLIC_STATE[S.merged] == ("closed", "duplicate")
    assert all(PUBLIC_STATE[s][0] == "open" for s in CALL_PHASE)


def test_status_helpers():
    assert allowed_next("archived") == frozenset()
    assert can_transition(S.queued, S.registered) and not can_transition(S.queued, S.closed)
    with pytest.raises(TicketLifecycleError, match="none, it is final"):
        check_transition("archived", "closed")
    for status in S:
        assert check_transition(status, status) is status
