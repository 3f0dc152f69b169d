"""Ticket statuses and the moves between them, as a hotline works a case; plus urgency, channel, language.

A ticket opens while the caller is in the IVR and is either queued for an agent or abandoned there.
A caller who hangs up while waiting is ``abandoned_in_queue``: an agent calls back (``in_progress``) or
closes it. An agent resolves a case at once or dispatches it to a department; a department may send a
ticket back (``dispatched -> in_progress``) and a citizen unhappy with the answer reopens it
(``resolved -> in_progress``). ``closed`` is final. A call that only asked for the status of another
ticket goes straight from ``in_ivr`` to ``closed``.
"""

from __future__ import annotations

from base.vocabulary import CallOutcome, Channel, Language, TicketStatus, Urgency
from orders.errors import TicketLifecycleError

__all__ = [
    "CALL_PHASE",
    "CallOutcome",
    "Channel",
    "Language",
    "TicketLifecycleError",
    "TicketStatus",
    "Urgency",
    "allowed_next",
    "can_transition",
    "check_transition",
]


#: Statuses while the call that opened the ticket owns it; after these an agent or department does.
CALL_PHASE = frozenset(
    {TicketStatus.in_ivr, TicketStatus.queued, TicketStatus.abandoned_in_ivr, TicketStatus.abandoned_in_queue}
)

_S = TicketStatus
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    _S.in_ivr: frozenset({_S.queued, _S.abandoned_in_ivr, _S.closed}),
    _S.queued: frozenset({_S.in_progress, _S.abandoned_in_queue}),
    _S.abandoned_in_ivr: frozenset({_S.in_progress, _S.closed}),
    _S.abandoned_in_queue: frozenset({_S.in_progress, _S.closed}),
    _S.in_progress: frozenset({_S.dispatched, _S.resolved}),
    _S.dispatched: frozenset({_S.in_progress, _S.resolved}),
    _S.resolved: frozenset({_S.in_progress, _S.closed}),
    _S.closed: frozenset(),
}


def _status(value: TicketStatus | str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        raise TicketLifecycleError(f"unknown ticket status {value!r}") from None


def allowed_next(status: TicketStatus | str) -> frozenset[TicketStatus]:
    """The statuses a ticket in ``status`` may move to."""
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
