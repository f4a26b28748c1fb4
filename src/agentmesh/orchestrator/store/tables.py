"""SQLAlchemy tables: agents, tasks, steps and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every agentmesh table."""

    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, Any: JSON}


class AgentRow(Base):
    """A registered agent and the card it registered with."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(512))
    card: Mapped[dict[str, Any]]
    registered_at: Mapped[datetime]
    last_seen: Mapped[datetime]


class AgentOverrideRow(Base):
    """What operators said of an agent (drained, weight); kept apart from :class:`AgentRow`
    so that it outlives the agent's registrations and every replica reads the same."""

    __tablename__ = "agent_overrides"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    drained: Mapped[bool] = mapped_column(default=False)
    weight: Mapped[float] = mapped_column(default=1.0)
    updated_by: Mapped[str] = mapped_column(String(512))
    updated_at: Mapped[datetime]


class TaskRow(Base):
    """A task: its request, state, outcome and the last event sequence it used (its input
    and plan are in :class:`TaskBodyRow`)."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_tasks_owner_idempotency_key"),
        Index("ix_tasks_state", "state"),
        Index("ix_tasks_owner_created", "owner", "created_at"),
        Index("ix_tasks_parent", "parent_task_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[dict[str, Any]]
    timeout_seconds: Mapped[float]
    result: Mapped[Any | None]
    error: Mapped[str] = mapped_column(Text, default="")
    partial: Mapped[bool] = mapped_column(default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    #: sha256 of the request submitted with ``idempotency_key``; NULL for tasks from before
    #: revision 0003 (any request with their key gets them).
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)
    #: The orchestrator replica running the task, until ``lease_expires_at``.
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[datetime | None]
    #: Set by any replica to ask the owner to cancel the task.
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    #: W3C trace context of the task's span; NULL for tasks from before revision 0004.
    trace_context: Mapped[dict[str, Any] | None]
    #: True while the planner still streams the plan's steps (revision 0004).
    planning: Mapped[bool] = mapped_column(default=False, server_default="0")
    #: The task's :class:`~agentmesh.models.Budget` and :class:`~agentmesh.models.Usage`;
    #: NULL for older tasks (no budget, nothing counted); added by revision 0006.
    budget: Mapped[dict[str, Any] | None]
    usage: Mapped[dict[str, Any] | None]
    #: For a sub-task: the task and step whose agent submitted it (revision 0009).
    parent_task_id: Mapped[str | None] = mapped_column(String(36))
    parent_step_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class TaskBodyRow(Base):
    """The large part of a task that seldom changes: its input and its plan (revision 0012).

    Kept out of the tasks row, which every commit of the task updates: SQLite writes an
    updated row anew, overflow pages and all, so a plan in it made each commit of a task
    cost in proportion to the plan's size (a chain of 600 steps wrote 200 KB per step).
    Written when the task is created, and again when its plan changes.
    """

    __tablename__ = "task_bodies"

    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    input: Mapped[dict[str, Any]]
    plan: Mapped[dict[str, Any] | None]


class StepRow(Base):
    """One step of a task (fan-out instances are steps of their own, e.g. ``analyze[2]``)."""

    __tablename__ = "steps"

    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(32))
    agent: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[Any | None]
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class EventRow(Base):
    """One task event; ``sequence`` counts 1, 2, 3... per task without gaps."""

    __tablename__ = "events"

    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]


class HoldRow(Base):
    """One hold on a shared limit (an agent's concurrency, a pool): who, until when.

    Holds run out at ``expires_at`` unless renewed, so a dead replica's holds free
    themselves (see :mod:`agentmesh.orchestrator.store.holds`).
    """

    __tablename__ = "limit_holds"
    __table_args__ = (Index("ix_limit_holds_key_expires", "key", "expires_at"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]
    #: What the hold counts for against the key's limit (tokens, for a token window).
    weight: Mapped[int] = mapped_column(default=1, server_default="1")


# The Core tables behind the rows, for the statements the hot write path runs without the ORM.
TASKS = cast(Table, TaskRow.__table__)
BODIES = cast(Table, TaskBodyRow.__table__)
STEPS = cast(Table, StepRow.__table__)
EVENTS = cast(Table, EventRow.__table__)


class StepOutputRow(Base):
    """A successful step output kept for reuse: the step cache, keyed by a hash of the
    capability, the version that produced it and the resolved input."""

    __tablename__ = "step_outputs"
    __table_args__ = (Index("ix_step_outputs_stored_at", "stored_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    capability: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    output: Mapped[Any | None]
    #: The task and step that produced it (for the event that says where it came from).
    task_id: Mapped[str] = mapped_column(String(36))
    step_id: Mapped[str] = mapped_column(String(128))
    stored_at: Mapped[datetime]


class StepAnswerRow(Base):
    """A person's answer to a step of kind ``input``, kept until the run that waits takes it
    (the run may be on another replica, or not started yet after a restart)."""

    __tablename__ = "step_answers"

    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any | None]
    answered_by: Mapped[str] = mapped_column(String(512))
    answered_at: Mapped[datetime]
