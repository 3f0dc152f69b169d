"""Agents: their softphones, languages and topics, and the queues they serve with penalties.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(20), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("interface", sa.String(80), nullable=False),
        sa.Column("languages", sa.String(40), nullable=False),
        sa.Column("topics", sa.String(400), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_agents_code", "agents", ["code"], unique=True)
    op.create_index("ix_agents_interface", "agents", ["interface"], unique=True)

    op.create_table(
        "agent_queues",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("penalty", sa.Integer(), nullable=False),
        sa.UniqueConstraint("agent_id", "queue", name="uq_agent_queues"),
    )


def downgrade() -> None:
    op.drop_table("agent_queues")
    op.drop_table("agents")
