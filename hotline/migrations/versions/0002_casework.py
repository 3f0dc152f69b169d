"""Casework after the call: the ticket's version, case fields and running deadline; departments and their
phones, assignments, the dispatch catalogue and the audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TICKET_COLUMNS = [
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("summary", sa.Text(), nullable=True),
    sa.Column("address", sa.String(300), nullable=True),
    sa.Column("district", sa.String(50), nullable=True),
    sa.Column("merged_into", sa.String(20), nullable=True),
    sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("due_kind", sa.String(10), nullable=True),
    sa.Column("warn_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:  # SQLite cannot ALTER in place
        for column in _TICKET_COLUMNS:
            batch.add_column(column._copy())
        batch.create_index("ix_tickets_due_at", ["due_at"])
        batch.create_index("ix_tickets_warn_at", ["warn_at"])

    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(50), nullable=False),
        sa.Column("name_zh", sa.String(200), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("parent_code", sa.String(50), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_departments_code", "departments", ["code"], unique=True)

    op.create_table(
        "department_phones",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("department_id", sa.Integer(), sa.ForeignKey("departments.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("e164", sa.String(16), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.UniqueConstraint("department_id", "e164", name="uq_department_phones"),
    )
    op.create_index("ix_department_phones_department_id", "department_phones", ["department_id"])

    op.create_table(
        "ticket_assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("department", sa.String(50), nullable=False),
        sa.Column("lead", sa.Boolean(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_ticket_assignments_ticket_id", "ticket_assignments", ["ticket_id"])
    op.create_index("ix_ticket_assignments_department_ticket", "ticket_assignments", ["department", "ticket_id"])
    op.create_index("ix_ticket_assignments_lead_assigned_at", "ticket_assignments", ["lead", "assigned_at"])
    op.create_index("ix_ticket_assignments_lead_overdue_since", "ticket_assignments", ["lead", "overdue_since"])

    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("actor_department", sa.String(50), nullable=True),
        sa.Column("move", sa.String(20), nullable=False),
        sa.Column("from_status", sa.String(20), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])

    op.create_table(
        "dispatch_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("category", sa.String(50), nullable=False),
        sa.Column("district", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("lead", sa.String(50), nullable=False),
        sa.Column("supporting", sa.String(500), nullable=False),
        sa.Column("answer_days", sa.Integer(), nullable=False),
        sa.UniqueConstraint("category", "district", name="uq_dispatch_rules"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_rules")
    op.drop_table("ticket_events")
    op.drop_table("ticket_assignments")
    op.drop_table("department_phones")
    op.drop_table("departments")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_warn_at")
        batch.drop_index("ix_tickets_due_at")
        for column in reversed(_TICKET_COLUMNS):
            batch.drop_column(column.name)
