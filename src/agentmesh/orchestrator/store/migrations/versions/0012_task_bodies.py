"""task bodies: a task's input and plan in a table of their own

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN: batch mode would rebuild the tasks table on SQLite,
    # and dropping the old one would delete every step and event (ON DELETE CASCADE).
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"agentmesh needs SQLite 3.35 or newer for this database; "
            f"this Python has {sqlite3.sqlite_version}"
        )
    op.create_table(
        "task_bodies",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.execute("INSERT INTO task_bodies (task_id, input, plan) SELECT id, input, plan FROM tasks")
    op.drop_column("tasks", "plan")
    op.drop_column("tasks", "input")


def downgrade() -> None:
    op.add_column("tasks", sa.Column("input", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("tasks", sa.Column("plan", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE tasks SET"
        " input = (SELECT b.input FROM task_bodies b WHERE b.task_id = tasks.id),"
        " plan = (SELECT b.plan FROM task_bodies b WHERE b.task_id = tasks.id)"
        " WHERE id IN (SELECT task_id FROM task_bodies)"
    )
    op.drop_table("task_bodies")
