"""The SQL store: tasks, steps, events and agents through SQLAlchemy 2 async.

SQLite (WAL) is the embedded default; PostgreSQL via asyncpg in production.
State changes of a task and the events that announce them are written in one
transaction, so a watcher never sees an event whose state was lost, or a state
no event announced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import delete, event, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agentmesh.errors import AlreadyExists
from agentmesh.models import (
    AgentCard,
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator.store import migrate
from agentmesh.orchestrator.store.tables import AgentRow, EventRow, StepRow, TaskRow

log = structlog.get_logger(__name__)


class LeaseLost(Exception):
    """Another replica owns the task now; this one must stop writing to it."""


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """This replica's claim on the tasks it runs: owner name and how long a claim lasts."""

    owner: str
    seconds: float

    def expires_at(self) -> datetime:
        """When a claim taken or renewed now runs out."""
        return datetime.now(UTC) + timedelta(seconds=self.seconds)


class Store:
    """Async persistence of the mesh's state; use as ``async with Store(url) as store``."""

    def __init__(self, url: str, *, schema: str = "") -> None:
        self.url = make_url(url)
        self._schema = schema
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        # SQLite has one writer at a time; queueing writers here beats "database is locked".
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded SQLite backend."""
        return self.url.get_backend_name() == "sqlite"

    async def __aenter__(self) -> Self:
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            if self._schema:
                kwargs["connect_args"] = {"server_settings": {"search_path": self._schema}}
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with engine.begin() as conn:
            if not self.is_sqlite:
                # Replicas starting together must not migrate the same schema at once.
                await conn.execute(text("SELECT pg_advisory_xact_lock(72635410)"))
            await conn.run_sync(migrate.upgrade)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("Store used outside `async with`")
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self._sessions.begin() as session:
            yield session

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("Store used outside `async with`")
        async with self._sessions() as session:
            yield session

    # -- agents -----------------------------------------------------------------------------

    async def save_agent(self, card: AgentCard, identity: str, registered_at: datetime) -> None:
        """Insert or replace a registered agent."""
        values = {
            "name": card.name,
            "identity": identity,
            "card": card.model_dump(mode="json"),
            "registered_at": registered_at,
            "last_seen": registered_at,
        }
        insert = sqlite_insert if self.is_sqlite else pg_insert
        statement = insert(AgentRow).values(**values)
        statement = statement.on_conflict_do_update(index_elements=["name"], set_=values)
        async with self._transaction() as session:
            await session.execute(statement)

    async def delete_agent(self, name: str) -> None:
        """Forget a registered agent."""
        async with self._transaction() as session:
            await session.execute(delete(AgentRow).where(AgentRow.name == name))

    async def agents(self) -> list[tuple[AgentCard, str, datetime]]:
        """Every registered agent: card, identity, registration time."""
        async with self._read() as session:
            rows = (await session.scalars(select(AgentRow).order_by(AgentRow.name))).all()
        return [
            (AgentCard.model_validate(r.card), r.identity, _utc(r.registered_at) or r.registered_at)
            for r in rows
        ]

    # -- tasks ------------------------------------------------------------------------------

    async def create_task(
        self,
        task: TaskRecord,
        idempotency_key: str = "",
        *,
        fingerprint: str = "",
        lease: Lease | None = None,
    ) -> TaskRecord:
        """Persist a new task (leased to ``lease`` when given); with a key already used by the
        same owner, return that task instead (see :meth:`task_for_key`).

        Of two submissions racing with one key, the unique constraint lets exactly one in;
        the other gets the winner's task, or AlreadyExists when its request differs.
        """
        row = TaskRow(
            id=task.id,
            owner=task.owner,
            state=task.state.value,
            priority=task.priority,
            input=task.input,
            labels=task.labels,
            timeout_seconds=task.timeout_seconds,
            plan=task.plan.model_dump(mode="json") if task.plan else None,
            result=task.result,
            error=task.error,
            partial=task.partial,
            idempotency_key=idempotency_key or None,
            request_fingerprint=(fingerprint or None) if idempotency_key else None,
            last_sequence=0,
            lease_owner=lease.owner if lease else None,
            lease_expires_at=lease.expires_at() if lease else None,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )
        try:
            async with self._transaction() as session:
                session.add(row)
                # No ORM relationship orders the inserts, so the task row goes first.
                await session.flush()
                for position, step in enumerate(task.steps.values()):
                    session.add(StepRow(**_step_row(task.id, position, step)))
        except IntegrityError:
            if not idempotency_key:
                raise
            found = await self.task_for_key(task.owner, idempotency_key, fingerprint)
            if found is None:
                raise
            return found
        return task

    async def task_for_key(
        self, owner: str, idempotency_key: str, fingerprint: str = ""
    ) -> TaskRecord | None:
        """The owner's task submitted with ``idempotency_key``, or None.

        AlreadyExists (field ``idempotency_key``) when that task was submitted with another
        request than the one ``fingerprint`` stands for. A task stored without a fingerprint
        (before revision 0003), or a lookup without one, matches any request.
        """
        async with self._read() as session:
            found = (
                await session.execute(
                    select(TaskRow.id, TaskRow.request_fingerprint).where(
                        TaskRow.owner == owner, TaskRow.idempotency_key == idempotency_key
                    )
                )
            ).first()
        if found is None:
            return None
        task_id, stored = found
        if stored and fingerprint and stored != fingerprint:
            raise AlreadyExists(
                f"already used for task {task_id} with a different request; "
                "a retry must repeat its request exactly, a new request needs a new key",
                field="idempotency_key",
            )
        return await self.get_task(task_id)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """The task with its steps, or None."""
        async with self._read() as session:
            row = await session.get(TaskRow, task_id)
            if row is None:
                return None
            steps = (
                await session.scalars(
                    select(StepRow).where(StepRow.task_id == task_id).order_by(StepRow.position)
                )
            ).all()
        return _task_record(row, steps)

    async def list_tasks(
        self,
        *,
        owner: str | None = None,
        states: Sequence[TaskState] = (),
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks newest first, optionally of one owner and in some states (without steps)."""
        query = select(TaskRow).order_by(TaskRow.created_at.desc(), TaskRow.id)
        if owner is not None:
            query = query.where(TaskRow.owner == owner)
        if states:
            query = query.where(TaskRow.state.in_([s.value for s in states]))
        async with self._read() as session:
            rows = (await session.scalars(query.limit(limit).offset(offset))).all()
        return [_task_record(r, ()) for r in rows]

    async def last_sequence(self, task_id: str) -> int:
        """The sequence number of the task's newest event (0 when none)."""
        async with self._read() as session:
            value = await session.scalar(select(TaskRow.last_sequence).where(TaskRow.id == task_id))
        return value or 0

    async def stream_end(self, task_id: str) -> tuple[bool, int] | None:
        """Whether the task is final, and its newest event's sequence; None when no such task.

        One row read: state and sequence are committed together, so a final state here
        comes with its final event's sequence.
        """
        async with self._read() as session:
            row = (
                await session.execute(
                    select(TaskRow.state, TaskRow.last_sequence).where(TaskRow.id == task_id)
                )
            ).first()
        if row is None:
            return None
        return TaskState(row.state).final, row.last_sequence or 0

    async def commit(
        self,
        task: TaskRecord,
        steps: Iterable[StepRecord] = (),
        events: Sequence[TaskEvent] = (),
        *,
        new_steps: Iterable[tuple[int, StepRecord]] = (),
        lease: Lease | None = None,
    ) -> None:
        """Write the task's state, changed steps and new events in one transaction.

        With ``lease``, nothing is written unless this replica still owns the task
        (fencing): :class:`LeaseLost` is raised instead.
        """
        new_steps = list(new_steps)
        steps = list(steps)
        # Bulk statements (executemany), not ORM objects: this runs for every batch of every
        # running task, and the unit of work doubled its CPU cost.
        values: dict[str, Any] = {
            "state": task.state.value,
            "result": task.result,
            "error": task.error,
            "partial": task.partial,
            "updated_at": task.updated_at,
        }
        if new_steps:  # only added steps (fan-out instances, follow-ups) change the plan
            values["plan"] = task.plan.model_dump(mode="json") if task.plan else None
        if events:
            values["last_sequence"] = events[-1].sequence
        statement = update(TaskRow).where(TaskRow.id == task.id)
        if lease is not None:
            statement = statement.where(TaskRow.lease_owner == lease.owner)
            if task.state.final:
                values.update(lease_owner=None, lease_expires_at=None)
        async with self._transaction() as session:
            result = await session.execute(statement.values(**values))
            if lease is not None and _rowcount(result) == 0:
                raise LeaseLost(task.id)
            if new_steps:
                await session.execute(
                    insert(StepRow),
                    [_step_row(task.id, position, step) for position, step in new_steps],
                )
            if steps:
                # Bulk UPDATE by primary key (task_id, step_id).
                await session.execute(
                    update(StepRow),
                    [
                        {"task_id": task.id, "step_id": step.spec.id, **_step_values(step)}
                        for step in steps
                    ],
                )
            if events:
                await session.execute(
                    insert(EventRow),
                    [
                        {
                            "task_id": e.task_id,
                            "sequence": e.sequence,
                            "time": e.time,
                            "kind": e.kind.value,
                            "payload": e.model_dump(
                                mode="json", exclude={"task_id", "sequence", "time", "kind"}
                            ),
                        }
                        for e in events
                    ],
                )

    # -- leases (orchestrator replicas) ------------------------------------------------------

    async def claim_tasks(
        self, lease: Lease, limit: int = 100, skip: Collection[str] = ()
    ) -> list[str]:
        """Take over unfinished tasks that are unowned, ours, or whose lease expired.

        ``skip``: tasks the caller runs already (never worth claiming again).
        """
        now = datetime.now(UTC)
        final = [s.value for s in TaskState if s.final]
        async with self._read() as session:
            candidates = list(
                await session.scalars(
                    select(TaskRow.id)
                    .where(
                        TaskRow.state.not_in(final),
                        TaskRow.id.not_in(list(skip)),
                        or_(
                            TaskRow.lease_owner.is_(None),
                            TaskRow.lease_owner == lease.owner,
                            TaskRow.lease_expires_at < now,
                        ),
                    )
                    .order_by(TaskRow.created_at)
                    .limit(limit)
                )
            )
        claimed = []
        for task_id in candidates:
            # The condition is checked again by the UPDATE itself: of two replicas
            # racing for one task, exactly one sees its row change.
            async with self._transaction() as session:
                result = await session.execute(
                    update(TaskRow)
                    .where(
                        TaskRow.id == task_id,
                        TaskRow.state.not_in(final),
                        or_(
                            TaskRow.lease_owner.is_(None),
                            TaskRow.lease_owner == lease.owner,
                            TaskRow.lease_expires_at < now,
                        ),
                    )
                    .values(lease_owner=lease.owner, lease_expires_at=lease.expires_at())
                )
                if _rowcount(result) == 1:
                    claimed.append(task_id)
        return claimed

    async def renew_leases(self, lease: Lease, task_ids: Iterable[str]) -> set[str]:
        """Extend our leases on ``task_ids``; returns those we still own."""
        ids = list(task_ids)
        if not ids:
            return set()
        async with self._transaction() as session:
            await session.execute(
                update(TaskRow)
                .where(TaskRow.id.in_(ids), TaskRow.lease_owner == lease.owner)
                .values(lease_expires_at=lease.expires_at())
            )
            owned = await session.scalars(
                select(TaskRow.id).where(TaskRow.id.in_(ids), TaskRow.lease_owner == lease.owner)
            )
            return set(owned)

    async def request_cancel(self, task_id: str, reason: str) -> None:
        """Record that the task should be cancelled, for whichever replica owns it."""
        async with self._transaction() as session:
            await session.execute(
                update(TaskRow).where(TaskRow.id == task_id).values(cancel_reason=reason)
            )

    async def cancel_requests(self, task_ids: Iterable[str]) -> dict[str, str]:
        """Cancellation reasons recorded for any of ``task_ids``."""
        ids = list(task_ids)
        if not ids:
            return {}
        async with self._read() as session:
            rows = await session.execute(
                select(TaskRow.id, TaskRow.cancel_reason).where(
                    TaskRow.id.in_(ids), TaskRow.cancel_reason.is_not(None)
                )
            )
            return {task_id: reason or "cancelled" for task_id, reason in rows}

    async def events_after(self, task_id: str, sequence: int, limit: int = 500) -> list[TaskEvent]:
        """The task's events with a sequence above ``sequence``, in order."""
        async with self._read() as session:
            rows = (
                await session.scalars(
                    select(EventRow)
                    .where(EventRow.task_id == task_id, EventRow.sequence > sequence)
                    .order_by(EventRow.sequence)
                    .limit(limit)
                )
            ).all()
        return [
            TaskEvent(
                task_id=r.task_id,
                sequence=r.sequence,
                time=_utc(r.time) or r.time,
                kind=EventKind(r.kind),
                **r.payload,
            )
            for r in rows
        ]


def _rowcount(result: Any) -> int:
    # Result of an UPDATE: a CursorResult, whose rowcount the generic type hides.
    return int(result.rowcount)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (watchers) proceed while the engine writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _step_values(step: StepRecord) -> dict[str, Any]:
    return {
        "state": step.state.value,
        "agent": step.agent,
        "attempts": step.attempts,
        "output": step.output,
        "error": step.error,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def _step_row(task_id: str, position: int, step: StepRecord) -> dict[str, Any]:
    """The column values of a new step row."""
    return {
        "task_id": task_id,
        "step_id": step.spec.id,
        "position": position,
        "spec": step.spec.model_dump(mode="json"),
        **_step_values(step),
    }


def _task_record(row: TaskRow, steps: Iterable[StepRow]) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        owner=row.owner,
        state=TaskState(row.state),
        input=row.input,
        priority=row.priority,
        labels=row.labels,
        timeout_seconds=row.timeout_seconds,
        plan=Plan.model_validate(row.plan) if row.plan else None,
        steps={
            s.step_id: StepRecord(
                spec=StepSpec.model_validate(s.spec),
                state=StepState(s.state),
                agent=s.agent,
                attempts=s.attempts,
                output=s.output,
                error=s.error,
                started_at=_utc(s.started_at),
                finished_at=_utc(s.finished_at),
            )
            for s in steps
        },
        result=row.result,
        error=row.error,
        partial=row.partial,
        created_at=_utc(row.created_at) or row.created_at,
        updated_at=_utc(row.updated_at) or row.updated_at,
    )
