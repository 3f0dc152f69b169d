"""The hotline's shared words: ticket statuses, urgencies, channels, languages and call outcomes.

Defined once here; the domain packages (the IVR's menus, the ticket lifecycle, queue choice) and the
drivers all check against these, so a status or language cannot be spelled two ways.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["CallOutcome", "Channel", "Language", "TicketStatus", "Urgency"]


class TicketStatus(str, Enum):
    in_ivr = "in_ivr"
    queued = "queued"
    abandoned_in_ivr = "abandoned_in_ivr"
    abandoned_in_queue = "abandoned_in_queue"
    in_progress = "in_progress"
    dispatched = "dispatched"
    resolved = "resolved"
    closed = "closed"


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
