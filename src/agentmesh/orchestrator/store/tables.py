"""SQLAlchemy tables: agents, tasks, steps and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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
    """A task: its request, plan, outcome and the last event sequence it used."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_tasks_owner_idempotency_key"),
        Index("ix_tasks_state", "state"),
        Index("ix_tasks_owner_created", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]
    timeout_seconds: Mapped[float]
    plan: Mapped[dict[str, Any] | None]
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
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


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
