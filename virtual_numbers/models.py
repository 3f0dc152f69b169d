"""The broker's tables: the pool of virtual numbers, bindings, and the audit of every resolution.

How the reuse rule is enforced (never two live bindings with the same (party, X)):

* ``binding_parties`` holds one row per party of a *live* binding, UNIQUE (virtual_number_id, party).
  A party is the citizen's E.164, ``dept:<code>`` (the department side as one party, whether it calls
  from its group G or from one number B) and, for a binding on one number B, B itself too (so a phone
  shared by two departments cannot hold two bindings on one X either). The binding's row and its party
  rows are inserted in one transaction: it commits, or raises IntegrityError and the allocator tries the
  next X in a fresh transaction. The database decides, so threads and processes cannot both win.
* In extension mode one X carries many bindings of the same department, told apart by the extension the
  caller keys. Such a binding has a party row for its citizen only (a citizen still holds at most one
  binding per X, so calling X back needs no extension), and a row in ``binding_extensions``, UNIQUE
  (virtual_number_id, extension). A separate table rather than a nullable column in binding_parties:
  each table then has one plain unique constraint, the same on SQLite and PostgreSQL, no partial index.
* Ending a binding (expiry, revocation, ticket closed) sets ``ended_at`` and deletes its party and
  extension rows, which frees X for those parties; the binding row stays for the audit.

``bindings.citizen_e164`` is the only copy of the citizen's number outside the ticket;
``resolution_records`` holds masked numbers only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from base.db import Base
from orders.models import UTCDateTime


class VirtualNumber(Base):
    """A number of the pool. ``state``: active, reserved (drained: no new bindings, live ones go on) or
    removed (kept for the history of the bindings that used it)."""

    __tablename__ = "virtual_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True, index=True)  # E.164
    state: Mapped[str] = mapped_column(String(10))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Binding(Base):
    """A citizen and a department side joined on a virtual number for a ticket, until ``expires_at``.

    ``department_number`` NULL: the department's group G (its phones) is the department side; else that
    one number B. Live while ``ended_at`` is NULL."""

    __tablename__ = "bindings"
    __table_args__ = (
        Index("ix_bindings_virtual_number_id_ended_at", "virtual_number_id", "ended_at"),
        Index("ix_bindings_ended_at_expires_at", "ended_at", "expires_at"),
        Index("ix_bindings_department_created_at", "department", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[str] = mapped_column(String(20), index=True)
    citizen_e164: Mapped[str] = mapped_column(String(16))
    department: Mapped[str] = mapped_column(String(50))
    department_number: Mapped[str | None] = mapped_column(String(16), nullable=True)
    virtual_number_id: Mapped[int] = mapped_column(ForeignKey("virtual_numbers.id"))
    extension: Mapped[str | None] = mapped_column(String(8), nullable=True)
    mode: Mapped[str] = mapped_column(String(10))  # pair | extension
    direction: Mapped[str] = mapped_column(String(12))  # both | to_citizen
    record: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renew_on_use: Mapped[bool] = mapped_column(Boolean)
    last_department_caller: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)  # expired | revoked | ticket_closed


class BindingParty(Base):
    """A party of a live binding on a virtual number; the unique pair is the reuse rule itself."""

    __tablename__ = "binding_parties"
    __table_args__ = (UniqueConstraint("virtual_number_id", "party", name="uq_binding_parties"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    virtual_number_id: Mapped[int] = mapped_column(ForeignKey("virtual_numbers.id"))
    party: Mapped[str] = mapped_column(String(60))  # +E.164 or dept:<code>
    binding_id: Mapped[int] = mapped_column(ForeignKey("bindings.id", ondelete="CASCADE"), index=True)


class BindingExtension(Base):
    """The extension of a live extension-mode binding on its virtual number."""

    __tablename__ = "binding_extensions"
    __table_args__ = (UniqueConstraint("virtual_number_id", "extension", name="uq_binding_extensions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    virtual_number_id: Mapped[int] = mapped_column(ForeignKey("virtual_numbers.id"))
    extension: Mapped[str] = mapped_column(String(8))
    binding_id: Mapped[int] = mapped_column(ForeignKey("bindings.id", ondelete="CASCADE"), unique=True)


class ResolutionRecord(Base):
    """One resolution of a call to a virtual number (the receipt), once per call id; numbers masked."""

    __tablename__ = "resolution_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    binding_id: Mapped[int | None] = mapped_column(ForeignKey("bindings.id", ondelete="SET NULL"), nullable=True,
                                                   index=True)
    virtual_number: Mapped[str] = mapped_column(String(32))  # the pool's number, or the dialled text masked
    caller_masked: Mapped[str] = mapped_column(String(32))
    callee_masked: Mapped[str | None] = mapped_column(String(32), nullable=True)
    direction: Mapped[str | None] = mapped_column(String(14), nullable=True)  # to_citizen | to_department
    outcome: Mapped[str] = mapped_column(String(30))  # connected, or the refusal's reason
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    hangup_by: Mapped[str | None] = mapped_column(String(10), nullable=True)  # caller | callee | system
