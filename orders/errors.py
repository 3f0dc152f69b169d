"""The errors of the orders package: one type per thing that can go wrong, messages safe to log."""

from __future__ import annotations

import re

from orders.caller import mask

_LONG_DIGIT_RUN = re.compile(r"\+?\d{7,}")


class OrdersError(Exception):
    """Base class of every error raised by the orders package."""


class InvalidSnapshot(OrdersError, ValueError):
    """A ticket snapshot is malformed (missing field, wrong type, value out of range)."""


class InvalidFilter(OrdersError, ValueError):
    """A ticket search was asked with a filter value that cannot be used."""


class TicketLifecycleError(OrdersError, ValueError):
    """A ticket was asked to move to a status its current status does not lead to."""


class MoveNotAllowed(OrdersError, PermissionError):
    """The actor's role or department may not make this move on this ticket, whatever its status."""


class StaleTicket(OrdersError):
    """The ticket changed since the version the actor saw: read it again, then decide."""

    def __init__(self, message: str, current_version: int | None = None):
        super().__init__(message)
        self.current_version = current_version


class TicketNotFound(OrdersError, LookupError):
    """No ticket has this number."""


class InvalidMove(OrdersError, ValueError):
    """A move was asked with a missing or malformed field (a reason, a department, a category, ...)."""


class StorageError(OrdersError):
    """A database operation on tickets failed for a reason other than reachability."""


class StorageUnavailable(StorageError):
    """The ticket database cannot be reached right now; the operation may succeed later."""


class BatchNotApplied(StorageError):
    """A batch of snapshots was rolled back because one of them cannot go with the others: save each alone."""


class SnapshotConflict(StorageError):
    """A snapshot names a ticket number (or call) that already belongs to another call."""


class TicketNumberUnavailable(OrdersError):
    """No ticket number could be allocated (neither Redis nor the database answered)."""


class TicketNotKept(OrdersError):
    """A snapshot could be neither saved, nor queued for a retry, nor spooled to disk."""


def safe_error_text(exc: BaseException, limit: int = 200) -> str:
    """One line describing ``exc`` for an operator, without SQL parameters or phone numbers.

    SQLAlchemy's own messages carry the statement's parameters (a caller's number among them), so
    only the driver's first line is kept, and any long run of digits in it is masked.
    """
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    first = lines[0] if lines else ""
    first = _LONG_DIGIT_RUN.sub(lambda m: mask(m.group()), first)[:limit]
    return f"{type(original).__name__}: {first}" if first else type(original).__name__
