"""The ticket's state machine: the moves people make on a case, who may make them, and where they lead.

A ticket opens while the caller is in the IVR and leaves it queued for an agent or abandoned; those
call-phase statuses belong to the call handler (its snapshots, orders.store). Then people work the case:

* the agent **registers** it (category, summary, address, the citizen's wish for confidentiality), then
  **resolves** it at first contact or **dispatches** it to one lead department (and supporting ones);
* the lead department **accepts** it or **returns** it with a reason (the hotline dispatches it again),
  works it with **progress** notes (supporting departments may add notes too) and **replies**;
* the hotline **closes** a resolved or replied case, **reopens** it when the citizen is not satisfied,
  **merges** a duplicate into another ticket, and a supervisor **archives** what is closed or merged.

Every move is checked here (the status it starts from, the actor's role, the actor's department) before
anything is written; orders.cases applies it with its audit event. ``PUBLIC_STATE`` maps every status to
the Open311 / FixMyStreet states citizens see.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from base.vocabulary import CallOutcome, Channel, Language, Role, TicketStatus, Urgency
from orders.errors import MoveNotAllowed, TicketLifecycleError

__all__ = [
    "CALL_PHASE",
    "CallOutcome",
    "Channel",
    "Language",
    "MOVES",
    "Move",
    "MoveNotAllowed",
    "MoveRule",
    "OPEN",
    "PUBLIC_STATE",
    "Role",
    "TicketLifecycleError",
    "TicketStatus",
    "Urgency",
    "allowed_next",
    "can_transition",
    "check_move",
    "check_transition",
    "moves_from",
]

_S = TicketStatus

#: Statuses while the call that opened the ticket owns it; after these an agent or department does.
CALL_PHASE = frozenset({_S.in_ivr, _S.queued, _S.abandoned_in_ivr, _S.abandoned_in_queue})


class Move(str, Enum):
    register = "register"
    resolve = "resolve"
    dispatch = "dispatch"
    accept = "accept"
    return_ = "return"
    progress = "progress"
    reply = "reply"
    close = "close"
    reopen = "reopen"
    merge = "merge"
    archive = "archive"


_HOTLINE = frozenset({Role.agent, Role.supervisor})
_DEPARTMENT = frozenset({Role.department})


@dataclass(frozen=True)
class MoveRule:
    """``move`` may start from ``sources`` and leads to ``target``; ``roles`` may make it. ``needs`` names the
    fields it requires. ``by`` says which departments may make a department move: the ticket's lead
    department only, or its lead and supporting departments."""

    move: Move
    sources: frozenset[TicketStatus]
    target: TicketStatus
    roles: frozenset[Role]
    needs: tuple[str, ...] = ()
    by: str = "lead"  # "lead" or "assigned" (lead or supporting); department moves only


_OPEN_AT_HOTLINE = frozenset({_S.registered, _S.returned, _S.reopened})
_WORKED = frozenset({_S.accepted, _S.in_progress})

MOVES: dict[Move, MoveRule] = {rule.move: rule for rule in (
    # A call's final snapshot may still be on its way when the agent, who has the caller on the line,
    # registers the case: in_ivr is a source too (the store never lets that snapshot undo the move).
    MoveRule(Move.register, CALL_PHASE, _S.registered, _HOTLINE, ("category", "summary")),
    MoveRule(Move.resolve, frozenset({_S.registered, _S.reopened}), _S.resolved, _HOTLINE, ("note",)),
    MoveRule(Move.dispatch, _OPEN_AT_HOTLINE, _S.dispatched, _HOTLINE, ("lead",)),
    MoveRule(Move.accept, frozenset({_S.dispatched}), _S.accepted, _DEPARTMENT),
    MoveRule(Move.return_, frozenset({_S.dispatched, _S.accepted}), _S.returned, _DEPARTMENT, ("reason",)),
    MoveRule(Move.progress, _WORKED, _S.in_progress, _DEPARTMENT, ("note",), by="assigned"),
    MoveRule(Move.reply, _WORKED, _S.replied, _DEPARTMENT, ("note",)),
    MoveRule(Move.close, frozenset({_S.resolved, _S.replied}), _S.closed, _HOTLINE),
    MoveRule(Move.reopen, frozenset({_S.resolved, _S.replied, _S.closed}), _S.reopened, _HOTLINE, ("reason",)),
    MoveRule(Move.merge, (CALL_PHASE - {_S.in_ivr}) | _OPEN_AT_HOTLINE | frozenset({_S.resolved}), _S.merged,
             _HOTLINE, ("into",)),
    MoveRule(Move.archive, frozenset({_S.closed, _S.merged}), _S.archived, frozenset({Role.supervisor})),
)}

# The call handler's own moves (its snapshots), then every move people make.
_CALL_TRANSITIONS = {
    _S.in_ivr: {_S.queued, _S.abandoned_in_ivr, _S.closed},  # closed: the caller only asked a status
    _S.queued: {_S.abandoned_in_queue},
}
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    status: frozenset(_CALL_TRANSITIONS.get(status, set())
                      | {rule.target for rule in MOVES.values() if status in rule.sources} - {status})
    for status in TicketStatus
}

#: Statuses in which the case is still someone's work (not closed, merged or archived).
OPEN = frozenset(TicketStatus) - {_S.closed, _S.merged, _S.archived}

#: Open311 / FixMyStreet public state of each status: (state, detail or None).
PUBLIC_STATE: dict[TicketStatus, tuple[str, str | None]] = {
    _S.in_ivr: ("open", None),
    _S.queued: ("open", None),
    _S.abandoned_in_ivr: ("open", None),
    _S.abandoned_in_queue: ("open", None),
    _S.registered: ("open", None),
    _S.dispatched: ("open", None),
    _S.returned: ("open", None),  # the department is not responsible; the hotline finds the right one
    _S.reopened: ("open", None),
    _S.accepted: ("in progress", None),
    _S.in_progress: ("in progress", None),
    _S.resolved: ("fixed", None),
    _S.replied: ("fixed", None),
    _S.closed: ("closed", None),
    _S.merged: ("closed", "duplicate"),
    _S.archived: ("closed", None),
}


def _status(value: TicketStatus | str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        raise TicketLifecycleError(f"unknown ticket status {value!r}") from None


def _move(value: Move | str) -> Move:
    try:
        return Move(value)
    except ValueError:
        known = ", ".join(m.value for m in Move)
        raise TicketLifecycleError(f"unknown move {value!r} (moves: {known})") from None


def allowed_next(status: TicketStatus | str) -> frozenset[TicketStatus]:
    """The statuses a ticket in ``status`` may move to (by anyone)."""
    return TRANSITIONS[_status(status)]


def can_transition(old: TicketStatus | str, new: TicketStatus | str) -> bool:
    old, new = _status(old), _status(new)
    return old == new or new in TRANSITIONS[old]


def check_transition(old: TicketStatus | str, new: TicketStatus | str) -> TicketStatus:
    """Return ``new`` as a status if a ticket in ``old`` may take it; staying put is always allowed."""
    old_status, new_status = _status(old), _status(new)
    if old_status != new_status and new_status not in TRANSITIONS[old_status]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[old_status])) or "none, it is final"
        raise TicketLifecycleError(
            f"a ticket cannot go from {old_status.value} to {new_status.value} (allowed: {allowed})"
        )
    return new_status


def moves_from(status: TicketStatus | str, role: Role | str | None = None, department: str | None = None,
               lead: str | None = None, supporting: frozenset[str] | set[str] | tuple[str, ...] = ()) -> list[Move]:
    """The moves a ticket in ``status`` allows (to ``role``, if given), in the order of MOVES. Given the
    acting department or the ticket's lead, a department's moves are only those its place on the ticket
    allows (``lead``, ``supporting``), as check_move decides."""
    status = _status(status)
    role = Role(role) if role is not None else None
    placed = role is Role.department and (department is not None or lead is not None)
    return [rule.move for rule in MOVES.values()
            if status in rule.sources and (role is None or role in rule.roles)
            and (not placed or _department_may(rule, department, lead, supporting))]


def _department_may(rule: MoveRule, department: str | None, lead: str | None, supporting) -> bool:
    mine = {lead} if rule.by == "lead" else {lead, *supporting}
    return department is not None and department in mine


def check_move(move: Move | str, status: TicketStatus | str, role: Role | str, department: str | None = None,
               lead: str | None = None, supporting: frozenset[str] | set[str] = frozenset()) -> MoveRule:
    """The rule of ``move`` if an actor with ``role`` (of ``department``) may make it on a ticket in
    ``status`` whose lead department is ``lead``. Raises MoveNotAllowed (the actor may not, whatever the
    status) or TicketLifecycleError (not from this status)."""
    rule = MOVES[_move(move)]
    status = _status(status)
    role = Role(role)
    if role not in rule.roles:
        raise MoveNotAllowed(f"{role.value} cannot {rule.move.value} a ticket "
                             f"(who can: {', '.join(sorted(r.value for r in rule.roles))})")
    if role is Role.department:
        if not _department_may(rule, department, lead, supporting):
            raise MoveNotAllowed(f"only the ticket's {'lead' if rule.by == 'lead' else 'assigned'} department can "
                                 f"{rule.move.value} it")
    if status not in rule.sources:
        allowed = ", ".join(m.value for m in moves_from(status, role)) or "none"
        raise TicketLifecycleError(f"a ticket that is {status.value} cannot be {_past(rule.move)} "
                                   f"(moves allowed now: {allowed})")
    return rule


def _past(move: Move) -> str:
    return {Move.register: "registered", Move.resolve: "resolved", Move.dispatch: "dispatched",
            Move.accept: "accepted", Move.return_: "returned", Move.progress: "given a progress note",
            Move.reply: "replied to", Move.close: "closed", Move.reopen: "reopened", Move.merge: "merged",
            Move.archive: "archived"}[move]
