"""The call-back list (missed calls to be called back by a free agent), and agent tokens tied to an agent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_backs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("ticket", sa.String(32), nullable=True),
        sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent", sa.String(20), nullable=True),
        sa.Column("originate_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("call_id", name="uq_call_backs_call_id"),
    )
    op.create_index("ix_call_backs_state_next", "call_backs", ["state", "next_try_at"])
    op.create_index("ix_call_backs_originate_id", "call_backs", ["originate_id"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("agent", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("agent")
    op.drop_table("call_backs")
