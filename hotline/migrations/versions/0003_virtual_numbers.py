"""Virtual numbers: the pool, bindings with their live parties and extensions, and resolution records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "virtual_numbers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_virtual_numbers_number", "virtual_numbers", ["number"], unique=True)

    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_number", sa.String(20), nullable=False),
        sa.Column("citizen_e164", sa.String(16), nullable=False),
        sa.Column("department", sa.String(50), nullable=False),
        sa.Column("department_number", sa.String(16), nullable=True),
        sa.Column("virtual_number_id", sa.Integer(), sa.ForeignKey("virtual_numbers.id"), nullable=False),
        sa.Column("extension", sa.String(8), nullable=True),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("direction", sa.String(12), nullable=False),
        sa.Column("record", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renew_on_use", sa.Boolean(), nullable=False),
        sa.Column("last_department_caller", sa.String(16), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(20), nullable=True),
    )
    op.create_index("ix_bindings_ticket_number", "bindings", ["ticket_number"])
    op.create_index("ix_bindings_virtual_number_id_ended_at", "bindings", ["virtual_number_id", "ended_at"])
    op.create_index("ix_bindings_ended_at_expires_at", "bindings", ["ended_at", "expires_at"])
    op.create_index("ix_bindings_department_created_at", "bindings", ["department", "created_at"])

    op.create_table(
        "binding_parties",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("virtual_number_id", sa.Integer(), sa.ForeignKey("virtual_numbers.id"), nullable=False),
        sa.Column("party", sa.String(60), nullable=False),
        sa.Column("binding_id", sa.Integer(), sa.ForeignKey("bindings.id", ondelete="CASCADE"), nullable=False),
        sa.UniqueConstraint("virtual_number_id", "party", name="uq_binding_parties"),
    )
    op.create_index("ix_binding_parties_binding_id", "binding_parties", ["binding_id"])

    op.create_table(
        "binding_extensions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("virtual_number_id", sa.Integer(), sa.ForeignKey("virtual_numbers.id"), nullable=False),
        sa.Column("extension", sa.String(8), nullable=False),
        sa.Column("binding_id", sa.Integer(), sa.ForeignKey("bindings.id", ondelete="CASCADE"), nullable=False),
        sa.UniqueConstraint("virtual_number_id", "extension", name="uq_binding_extensions"),
        sa.UniqueConstraint("binding_id"),
    )

    op.create_table(
        "resolution_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("binding_id", sa.Integer(), sa.ForeignKey("bindings.id", ondelete="SET NULL"), nullable=True),
        sa.Column("virtual_number", sa.String(32), nullable=False),
        sa.Column("caller_masked", sa.String(32), nullable=False),
        sa.Column("callee_masked", sa.String(32), nullable=True),
        sa.Column("direction", sa.String(14), nullable=True),
        sa.Column("outcome", sa.String(30), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hangup_by", sa.String(10), nullable=True),
        sa.UniqueConstraint("call_id"),
    )
    op.create_index("ix_resolution_records_binding_id", "resolution_records", ["binding_id"])
    op.create_index("ix_resolution_records_started_at", "resolution_records", ["started_at"])


def downgrade() -> None:
    op.drop_table("resolution_records")
    op.drop_table("binding_extensions")
    op.drop_table("binding_parties")
    op.drop_table("bindings")
    op.drop_table("virtual_numbers")
