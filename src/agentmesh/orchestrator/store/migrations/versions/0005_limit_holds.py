"""holds on shared limits (agents' concurrency, resource pools) across replicas

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01
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
        "limit_holds",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "holder"),
    )
    op.create_index("ix_limit_holds_key_expires", "limit_holds", ["key", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_limit_holds_key_expires", table_name="limit_holds")
    op.drop_table("limit_holds")
