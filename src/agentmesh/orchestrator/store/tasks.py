"""Tasks, their steps and their events in the store.

State changes of a task and the events that announce them are written in one
transaction, so a watcher never sees an event whose state was lost, or a state
no event announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import select

from agentmesh.errors import AlreadyExists
from agentmesh.models import (
    Budget,
    EventKind,
    ParentStep,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
    Usage,
)
from agentmesh.orchestrator.store import writes
from agentmesh.orchestrator.store.connection import Connection, utc
from agentmesh.orchestrator.store.group import GroupWriter
from agentmesh.orchestrator.store.leases import Lease
from agentmesh.orchestrator.store.tables import BODIES, EVENTS, STEPS, TASKS, TaskRow
from agentmesh.orchestrator.store.writes import Change, Creation, Write


class Tasks(Connection):
    """Creating, reading and committing tasks with their steps and events.

    Creations and commits go through one :class:`GroupWriter` per store: many tasks'
    writes share a transaction (see :mod:`~agentmesh.orchestrator.store.group`).
    """

    _writer: GroupWriter[Write] | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._writer = GroupWriter(self._write_batch)
        self._writer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            await self._writer.aclose()
            self._writer = None
        await super().__aexit__(exc_type, exc, tb)

    async def _write_batch(self, batch: Sequence[Write]) -> list[object]:
        return await self._run_write(writes.write, batch)

    async def _submit(self, write: Write) -> object:
        if self._writer is None:
            raise RuntimeError("Store used outside `async with`")
        return await self._writer.submit(write)

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

        Returns once the task is durable. Of two submissions racing with one key, the
        unique constraint lets exactly one in; the other gets the winner's task, or
        AlreadyExists when its request differs.
        """
        created = await self._submit(Creation(task, idempotency_key, fingerprint, lease))
        if created:
            return task
        found = await self.task_for_key(task.owner, idempotency_key, fingerprint)
        if found is None:  # the winner is gone again (deleted): nothing to hand back
            raise AlreadyExists(
                f"idempotency key {idempotency_key!r} is taken", field="idempotency_key"
            )
        return found

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
        return await self._run_read(_get_task, task_id)

    async def list_tasks(
        self,
        *,
        owner: str | None = None,
        states: Sequence[TaskState] = (),
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks newest first, optionally of one owner and in some states (without steps)."""
        query = _WITH_BODY.order_by(TASKS.c.created_at.desc(), TASKS.c.id)
        if owner is not None:
            query = query.where(TASKS.c.owner == owner)
        if states:
            query = query.where(TASKS.c.state.in_([s.value for s in states]))
        async with self._read() as session:
            rows = (await session.execute(query.limit(limit).offset(offset))).all()
        return [_task_record(r, ()) for r in rows]

    async def live_children(self, task_id: str) -> list[str]:
        """The ids of the sub-tasks of ``task_id`` that are not final yet, oldest first."""
        live = [s.value for s in TaskState if not s.final]
        async with self._read() as session:
            rows = await session.scalars(
                select(TaskRow.id)
                .where(TaskRow.parent_task_id == task_id, TaskRow.state.in_(live))
                .order_by(TaskRow.created_at)
            )
            return list(rows.all())

    async def last_sequence(self, task_id: str) -> int:
        """The sequence number of the task's newest event (0 when none)."""
        end = await self.stream_end(task_id)
        return 0 if end is None else end[1]

    async def stream_end(self, task_id: str) -> tuple[bool, int] | None:
        """Whether the task is final, and its newest event's sequence; None when no such task.

        One row read: state and sequence are committed together, so a final state here
        comes with its final event's sequence.
        """
        return await self._run_read(_stream_end, task_id)

    async def commit(
        self,
        task: TaskRecord,
        steps: Iterable[StepRecord] = (),
        events: Sequence[TaskEvent] = (),
        *,
        new_steps: Iterable[tuple[int, StepRecord]] = (),
        lease: Lease | None = None,
        plan_changed: bool = False,
    ) -> None:
        """Write the task's state, changed steps and new events in one transaction
        (shared with other tasks' writes); returns once they are durable.

        The plan is written with new steps, or when ``plan_changed`` says it changed alone.

        With ``lease``, nothing is written unless this replica still owns the task
        (fencing): :class:`LeaseLost` is raised instead.
        """
        await self._submit(
            Change(task, list(steps), list(events), list(new_steps), lease, plan_changed)
        )

    async def events_after(self, task_id: str, sequence: int, limit: int = 500) -> list[TaskEvent]:
        """The task's events with a sequence above ``sequence``, in order."""
        return await self._run_read(_events_after, (task_id, sequence, limit))


# The hot reads, as Core statements run whole on one connection (see Connection._run_read).

#: A task's row with its input and plan (a task stored whole has a body row).
_WITH_BODY = select(TASKS, BODIES.c.input, BODIES.c.plan).join(
    BODIES, BODIES.c.task_id == TASKS.c.id
)


def _get_task(connection: SyncConnection, task_id: str) -> TaskRecord | None:
    row = connection.execute(_WITH_BODY.where(TASKS.c.id == task_id)).first()
    if row is None:
        return None
    steps = connection.execute(
        select(STEPS).where(STEPS.c.task_id == task_id).order_by(STEPS.c.position)
    ).all()
    return _task_record(row, steps)


def _stream_end(connection: SyncConnection, task_id: str) -> tuple[bool, int] | None:
    row = connection.execute(
        select(TASKS.c.state, TASKS.c.last_sequence).where(TASKS.c.id == task_id)
    ).first()
    if row is None:
        return None
    return TaskState(row.state).final, row.last_sequence or 0


def _events_after(connection: SyncConnection, cursor: tuple[str, int, int]) -> list[TaskEvent]:
    task_id, sequence, limit = cursor
    rows = connection.execute(
        select(EVENTS)
        .where(EVENTS.c.task_id == task_id, EVENTS.c.sequence > sequence)
        .order_by(EVENTS.c.sequence)
        .limit(limit)
    )
    return [
        TaskEvent(
            task_id=r.task_id,
            sequence=r.sequence,
            time=utc(r.time) or r.time,
            kind=EventKind(r.kind),
            **r.payload,
        )
        for r in rows
    ]


def _task_record(row: Any, steps: Iterable[Any]) -> TaskRecord:
    """The task of a tasks row joined with its body (see ``_WITH_BODY``) and its steps'
    rows."""
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
                started_at=utc(s.started_at),
                finished_at=utc(s.finished_at),
            )
            for s in steps
        },
        result=row.result,
        error=row.error,
        partial=row.partial,
        trace_context=row.trace_context or {},
        planning=row.planning,
        budget=Budget.model_validate(row.budget) if row.budget else Budget(),
        usage=Usage.model_validate(row.usage) if row.usage else Usage(),
        parent=(
            ParentStep(task_id=row.parent_task_id, step_id=row.parent_step_id or "")
            if row.parent_task_id
            else None
        ),
        created_at=utc(row.created_at) or row.created_at,
        updated_at=utc(row.updated_at) or row.updated_at,
    )
