"""Initial schema: API tokens, tickets, their calls, and the fallback ticket-number counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column(
            "role",
            sa.Enum("admin", "supervisor", "agent", "department", name="api_role", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("department", sa.String(100), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)

    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("caller_raw", sa.String(64), nullable=False),
        sa.Column("caller_e164", sa.String(16), nullable=True),
        sa.Column("caller_kind", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("language", sa.String(10), nullable=False),
        sa.Column("ivr_path", sa.Text(), nullable=False),
        sa.Column("category", sa.String(50), nullable=True),
        sa.Column("urgency", sa.String(10), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("department", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tickets_number", "tickets", ["number"], unique=True)
    op.create_index("ix_tickets_created_at", "tickets", ["created_at"])
    op.create_index("ix_tickets_status_created_at", "tickets", ["status", "created_at"])
    op.create_index("ix_tickets_caller_e164_created_at", "tickets", ["caller_e164", "created_at"])
    op.create_index("ix_tickets_department_created_at", "tickets", ["department", "created_at"])

    op.create_table(
        "call_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uniqueid", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(128), nullable=True),
        sa.Column("dialed_number", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
    )
    op.create_index("ix_call_records_ticket_id", "call_records", ["ticket_id"])
    op.create_index("ix_call_records_uniqueid", "call_records", ["uniqueid"], unique=True)
    op.create_index("ix_call_records_linkedid", "call_records", ["linkedid"])

    op.create_table(
        "ticket_sequences",
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("last_value", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ticket_sequences")
    op.drop_table("call_records")
    op.drop_table("tickets")
    op.drop_table("api_tokens")
