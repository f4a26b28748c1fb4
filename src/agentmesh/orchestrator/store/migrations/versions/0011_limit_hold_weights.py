"""weighted holds on shared limits (a pool's tokens per minute)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("limit_holds") as batch_op:
        batch_op.add_column(sa.Column("weight", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("limit_holds") as batch_op:
        batch_op.drop_column("weight")
