"""What the broker hands out: frozen views, and the words they use.

Department-facing views (BindingView, Receipt, NumberView, PoolFigures) carry the citizen's number masked
only. Resolution carries a real number in ``target`` for the one leg that needs it (the dial towards the
citizen); its repr masks it, so logging the object cannot leak it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orders.caller import mask

# Pool states.
ACTIVE, RESERVED, REMOVED = "active", "reserved", "removed"
# Binding modes and allowed directions.
PAIR, EXTENSION = "pair", "extension"
BOTH, TO_CITIZEN, TO_DEPARTMENT = "both", "to_citizen", "to_department"
DIRECTIONS = (BOTH, TO_CITIZEN)
# Why a binding ended.
EXPIRED, REVOKED, TICKET_CLOSED = "expired", "revoked", "ticket_closed"
END_REASONS = (EXPIRED, REVOKED, TICKET_CLOSED)
# Outcomes of a resolution: connected, or the reason of a refusal.
CONNECTED = "connected"
UNKNOWN_NUMBER = "unknown_number"  # the dialled number is not in the pool
UNKNOWN_CALLER = "unknown_caller"  # withheld, invalid or short caller number
UNKNOWN_PAIR = "unknown_pair"  # the caller holds no binding on this number
UNKNOWN_EXTENSION = "unknown_extension"
NUMBER_RESERVED = "number_reserved"  # drained number, and the caller holds no binding on it
DIRECTION_NOT_ALLOWED = "direction_not_allowed"
AMBIGUOUS = "ambiguous"  # the caller is a party of several bindings on this number: never guess
EXTENSION_REQUIRED = "extension_required"  # not final: ask for the extension, then resolve again
NO_DEPARTMENT_PHONE = "no_department_phone"
REFUSALS = (UNKNOWN_NUMBER, UNKNOWN_CALLER, UNKNOWN_PAIR, UNKNOWN_EXTENSION, NUMBER_RESERVED, EXPIRED, REVOKED,
            TICKET_CLOSED, DIRECTION_NOT_ALLOWED, AMBIGUOUS, EXTENSION_REQUIRED, NO_DEPARTMENT_PHONE)
# Announcements (prompt names) the front ends play.
NOT_IN_SERVICE = "not-in-service"
ENTER_EXTENSION = "enter-extension"
CALL_RECORDED = "call-recorded"
HANGUP_BY = ("caller", "callee", "system")


@dataclass(frozen=True)
class NumberView:
    number: str  # E.164 of the pool's number (public)
    state: str
    added_at: datetime
    live_bindings: int = 0


@dataclass(frozen=True)
class PoolFigures:
    active: int  # numbers that take new bindings
    reserved: int  # drained numbers
    in_use: int  # active or reserved numbers carrying at least one live binding
    free: int  # active numbers carrying none
    live_bindings: int
    extension_bindings: int  # of the live ones


@dataclass(frozen=True)
class BindingView:
    id: int
    ticket_number: str
    citizen_masked: str
    department: str
    department_number: str | None  # None: the department's group of phones
    virtual_number: str
    extension: str | None
    mode: str
    direction: str
    record: bool
    created_at: datetime
    expires_at: datetime
    renew_on_use: bool
    ended_at: datetime | None = None
    end_reason: str | None = None

    @property
    def live(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True)
class Resolution:
    """The answer for one call to a virtual number.

    Connected: dial ``target`` presenting ``caller_id`` (always the virtual number), then keep
    ``call_id`` to complete the receipt. Refused: play ``announcement`` and hang up (``reason`` says why;
    ``extension_required`` asks for an extension, then resolve again with it).
    """

    refused: bool
    reason: str | None = None
    announcement: str | None = None
    call_id: str | None = None
    virtual_number: str | None = None
    caller_id: str | None = None
    target: str | None = None
    direction: str | None = None  # to_citizen | to_department
    binding_id: int | None = None
    ticket_number: str | None = None
    department: str | None = None
    record: bool = False

    @property
    def target_masked(self) -> str | None:
        return None if self.target is None else mask(self.target)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in (
            ("refused", self.refused), ("reason", self.reason), ("announcement", self.announcement),
            ("call_id", self.call_id), ("virtual_number", self.virtual_number), ("caller_id", self.caller_id),
            ("target", self.target_masked), ("direction", self.direction), ("binding_id", self.binding_id),
            ("ticket_number", self.ticket_number), ("department", self.department), ("record", self.record)))
        return f"Resolution({shown})"

    __str__ = __repr__


@dataclass(frozen=True)
class Receipt:
    call_id: str
    binding_id: int | None
    ticket_number: str | None
    department: str | None
    virtual_number: str
    caller_masked: str
    callee_masked: str | None
    direction: str | None
    outcome: str
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    hangup_by: str | None = None

    @property
    def seconds(self) -> float | None:
        """Talk time (answer to end), when both are known."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())
