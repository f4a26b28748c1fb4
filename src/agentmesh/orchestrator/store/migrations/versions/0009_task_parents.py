"""sub-tasks: the task and step that submitted a task

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_task_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("parent_step_id", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_tasks_parent", ["parent_task_id"])


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_parent")
        batch_op.drop_column("parent_step_id")
        batch_op.drop_column("parent_task_id")
