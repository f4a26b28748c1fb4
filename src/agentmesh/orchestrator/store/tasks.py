"""Tasks, their steps and their events in the store.

State changes of a task and the events that announce them are written in one
transaction, so a watcher never sees an event whose state was lost, or a state
no event announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

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
from agentmesh.orchestrator.store.connection import Connection, rowcount, utc
from agentmesh.orchestrator.store.leases import Lease, LeaseLost
from agentmesh.orchestrator.store.tables import EventRow, StepRow, TaskRow


class Tasks(Connection):
    """Creating, reading and committing tasks with their steps and events."""

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
            budget=task.budget.model_dump(mode="json"),
            usage=task.usage.model_dump(mode="json"),
            parent_task_id=task.parent.task_id if task.parent else None,
            parent_step_id=task.parent.step_id if task.parent else None,
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
            "usage": task.usage.model_dump(mode="json"),
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
            if lease is not None and rowcount(result) == 0:
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
                time=utc(r.time) or r.time,
                kind=EventKind(r.kind),
                **r.payload,
            )
            for r in rows
        ]


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
                started_at=utc(s.started_at),
                finished_at=utc(s.finished_at),
            )
            for s in steps
        },
        result=row.result,
        error=row.error,
        partial=row.partial,
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
