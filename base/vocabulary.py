"""The hotline's shared words: ticket statuses, roles, urgencies, channels, languages and call outcomes.

Defined once here; the domain packages (the IVR's menus, the ticket lifecycle, queue choice) and the
drivers all check against these, so a status or language cannot be spelled two ways.
"""

from __future__ import annotations

from enum import Enum
from zoneinfo import ZoneInfo

__all__ = ["HOTLINE_TZ", "CallOutcome", "Channel", "Language", "Role", "TicketStatus", "Urgency"]

#: The hotline's day: ticket numbers carry its date, deadlines count its working days.
HOTLINE_TZ = ZoneInfo("Asia/Shanghai")


class TicketStatus(str, Enum):
    """Where a ticket stands. The first four belong to the call that opened it (orders.lifecycle.CALL_PHASE);
    the rest to the people who work the case (orders.lifecycle.MOVES)."""

    in_ivr = "in_ivr"
    queued = "queued"
    abandoned_in_ivr = "abandoned_in_ivr"
    abandoned_in_queue = "abandoned_in_queue"
    registered = "registered"  # an agent wrote the case down
    resolved = "resolved"  # answered by the hotline at first contact
    dispatched = "dispatched"  # sent to a lead department, not yet accepted
    accepted = "accepted"
    returned = "returned"  # the department disputes the dispatch; the hotline reassigns
    in_progress = "in_progress"  # the department works it (progress notes)
    replied = "replied"  # the department answered
    reopened = "reopened"  # the citizen is not satisfied
    closed = "closed"
    merged = "merged"  # a duplicate, folded into another ticket
    archived = "archived"


class Role(str, Enum):
    """Who acts: API tokens carry one, the audit trail records it."""

    admin = "admin"
    supervisor = "supervisor"
    agent = "agent"
    department = "department"


class Urgency(str, Enum):
    normal = "normal"
    high = "high"


class Channel(str, Enum):
    phone = "phone"


class Language(str, Enum):
    zh_CN = "zh-CN"
    en = "en"


class CallOutcome(str, Enum):
    """How the call that opened a ticket left the backend."""

    routed = "routed"  # sent to an agent queue
    abandoned_in_ivr = "abandoned_in_ivr"
    status_given = "status_given"  # the caller only asked for a ticket's status
    fallback = "fallback"  # the backend could not decide; the default queue took the call
