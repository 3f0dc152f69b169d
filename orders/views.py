"""What readers of tickets get (TicketView, CallView) and how they ask for a list (TicketFilter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orders.errors import InvalidFilter
from orders.lifecycle import Channel, Language, TicketStatus, Urgency

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class CallView:
    """One call of a ticket, as Asterisk reported it."""

    uniqueid: str
    linkedid: str | None
    channel: str | None
    dialed_number: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class TicketView:
    """A stored ticket with its calls (earliest first). Holds the caller's real number: mask it for
    anyone who must not see it (orders.caller.mask)."""

    number: str
    caller_raw: str
    caller_e164: str | None
    caller_kind: str
    channel: str
    language: str
    ivr_path: str
    category: str | None
    urgency: str
    confidential: bool
    status: str
    department: str | None
    created_at: datetime
    updated_at: datetime
    revision: int
    calls: tuple[CallView, ...] = ()
    # The case, as people work it (orders.cases).
    version: int = 1
    summary: str | None = None
    address: str | None = None
    district: str | None = None
    supporting: tuple[str, ...] = ()  # supporting departments; ``department`` is the lead
    merged_into: str | None = None
    dispatched_at: datetime | None = None
    due_at: datetime | None = None
    due_kind: str | None = None  # "accept" (urgent) or "answer"
    overdue_since: datetime | None = None

    @property
    def call(self) -> CallView | None:
        """The call that opened the ticket, if a call did."""
        return self.calls[0] if self.calls else None


@dataclass(frozen=True)
class TicketFilter:
    """Search criteria; every field left ``None`` matches everything. ``created_to`` is exclusive."""

    status: str | None = None
    category: str | None = None
    urgency: str | None = None
    language: str | None = None
    channel: str | None = None
    caller_e164: str | None = None
    department: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def __post_init__(self) -> None:
        enums = (("status", TicketStatus), ("urgency", Urgency), ("language", Language), ("channel", Channel))
        for name, enum in enums:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, enum(value).value)
            except ValueError:
                allowed = ", ".join(member.value for member in enum)
                raise InvalidFilter(f"{name} must be one of {allowed}, got {value!r}") from None
        for name in ("created_from", "created_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
                raise InvalidFilter(f"{name} must be a datetime with a time zone")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidFilter(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {self.limit!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise InvalidFilter(f"offset must be a whole number >= 0, got {self.offset!r}")
