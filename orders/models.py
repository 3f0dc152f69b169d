"""The ticket tables: tickets, the calls that opened them, the fallback ticket-number counters, and the work
on a case: departments, their phones, assignments, the dispatch catalogue and the audit trail."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from base.db import Base


class UTCDateTime(TypeDecorator):
    """A timezone-aware datetime stored in UTC and read back aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a datetime stored in the ticket tables must carry a time zone")
        # SQLite drops the offset: storing UTC keeps the text comparable and the value exact.
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Ticket(Base):
    """A citizen's case. ``revision`` counts the call handler's snapshots (see orders.store), nothing else:
    other writers (agents, departments) must leave it alone."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status_created_at", "status", "created_at"),
        Index("ix_tickets_caller_e164_created_at", "caller_e164", "created_at"),
        Index("ix_tickets_department_created_at", "department", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True, index=True)
    caller_raw: Mapped[str] = mapped_column(String(64))
    caller_e164: Mapped[str | None] = mapped_column(String(16), nullable=True)
    caller_kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(10))
    ivr_path: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(50), nullable=True)
    urgency: Mapped[str] = mapped_column(String(10))
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    department: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revision: Mapped[int] = mapped_column(Integer)
    # The case, as people work it (orders.cases). ``version`` counts their moves: a move names the version it
    # saw and is refused if another came first.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    address: Mapped[str | None] = mapped_column(String(300), nullable=True)
    district: Mapped[str | None] = mapped_column(String(50), nullable=True)
    merged_into: Mapped[str | None] = mapped_column(String(20), nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The deadline running now (accepting an urgent ticket, or answering), NULL when none runs: the overdue
    # scan reads only the index on due_at.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    due_kind: Mapped[str | None] = mapped_column(String(10), nullable=True)  # "accept" or "answer"
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    overdue_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CallRecord(Base):
    """One call about a ticket, keyed by Asterisk's uniqueid."""

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    uniqueid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    linkedid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    channel: Mapped[str | None] = mapped_column(String(128), nullable=True)
    dialed_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)


class TicketSequence(Base):
    """The per-day counter used to number tickets while Redis is unreachable (orders.ticket_numbers)."""

    __tablename__ = "ticket_sequences"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_value: Mapped[int] = mapped_column(Integer)


class Department(Base):
    """A department tickets are dispatched to (a water company, a district's city management, ...)."""

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True, index=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    parent_code: Mapped[str | None] = mapped_column(String(50), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DepartmentPhone(Base):
    """A number of a department that may call citizens back (through the masking broker)."""

    __tablename__ = "department_phones"
    __table_args__ = (UniqueConstraint("department_id", "e164", name="uq_department_phones"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100), default="")


class TicketAssignment(Base):
    """A department a ticket was dispatched to: its lead, or a supporting one. A new dispatch ends the
    current ones (``ended_at``) and adds its own, so each department's lateness stays with its dispatch."""

    __tablename__ = "ticket_assignments"
    __table_args__ = (
        Index("ix_ticket_assignments_department_ticket", "department", "ticket_id"),
        Index("ix_ticket_assignments_lead_assigned_at", "lead", "assigned_at"),
        Index("ix_ticket_assignments_lead_overdue_since", "lead", "overdue_since"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    department: Mapped[str] = mapped_column(String(50))
    lead: Mapped[bool] = mapped_column(Boolean)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # NULL: the current dispatch
    overdue_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # this dispatch ran late


class TicketEvent(Base):
    """One move on a ticket, for the audit trail: who, when, from, to, why, what they wrote."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    actor_department: Mapped[str | None] = mapped_column(String(50), nullable=True)
    move: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: departments, merged_into, ...


class DispatchRule(Base):
    """The dispatch catalogue: which departments handle a category (in a district, or anywhere: district
    ''), and how many working days the answer may take."""

    __tablename__ = "dispatch_rules"
    __table_args__ = (UniqueConstraint("category", "district", name="uq_dispatch_rules"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(50))
    district: Mapped[str] = mapped_column(String(50), default="")
    kind: Mapped[str] = mapped_column(String(20))  # consultation, help, suggestion, complaint, report
    lead: Mapped[str] = mapped_column(String(50))
    supporting: Mapped[str] = mapped_column(String(500), default="")  # department codes, comma-separated
    answer_days: Mapped[int] = mapped_column(Integer)
