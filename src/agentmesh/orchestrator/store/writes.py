"""The hot writes (new tasks, and each task's state changes with their events) as Core
statements, many tasks' writes in one transaction.

Run by the store's :class:`~agentmesh.orchestrator.store.group.GroupWriter`: one
``executemany`` per kind of row for the whole batch instead of the ORM's unit of work per
task. Each write keeps its own guarantees inside the shared transaction: a task created
with an idempotency key that is already taken is skipped (its caller looks the winner up),
and a task whose lease another replica holds has nothing written (fencing).

On SQLite each statement is compiled once per set of columns and its rows go to the
driver's ``executemany`` as tuples, each value through its column type's own bind processor
(what SQLAlchemy stores, stored the same way): SQLAlchemy's per-execution work cost about
1.3 ms of a 1.5 ms transaction of one task's change, where sqlite3 itself took 0.15 ms
(issue 9). Elsewhere (asyncpg) the statements go through SQLAlchemy as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Insert, Update, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from agentmesh.models import StepRecord, TaskEvent, TaskRecord
from agentmesh.orchestrator.store.connection import JsonText, json_of
from agentmesh.orchestrator.store.leases import Lease, LeaseLost
from agentmesh.orchestrator.store.tables import BODIES, EVENTS, STEPS, TASKS


@dataclass(frozen=True, slots=True)
class Creation:
    """A new task with its steps; its outcome is True when written, False when its
    idempotency key was taken already."""

    task: TaskRecord
    idempotency_key: str
    fingerprint: str
    lease: Lease | None


@dataclass(frozen=True, slots=True)
class Change:
    """A task's new state, changed and added steps and new events; its outcome is None, or
    :class:`LeaseLost` when another replica holds the task."""

    task: TaskRecord
    steps: Sequence[StepRecord]
    events: Sequence[TaskEvent]
    new_steps: Sequence[tuple[int, StepRecord]]
    lease: Lease | None
    #: The plan changed with no step added (the end of a streamed plan): write it too.
    plan_changed: bool = False


Write = Creation | Change


class _Raced(Exception):
    """A lease changed hands between our check and our update: the batch is written again,
    each task on its own."""


# Where-clause parameters are named apart from the columns the same statement sets.
_UPDATE_TASK = update(TASKS).where(TASKS.c.id == bindparam("w_id"))
_UPDATE_LEASED_TASK = _UPDATE_TASK.where(TASKS.c.lease_owner == bindparam("w_owner"))
_UPDATE_STEP = update(STEPS).where(
    STEPS.c.task_id == bindparam("w_task"), STEPS.c.step_id == bindparam("w_step")
)
_UPDATE_PLAN = update(BODIES).where(BODIES.c.task_id == bindparam("w_task"))
_INSERT_TASK = insert(TASKS)
_INSERT_BODY = insert(BODIES)
_INSERT_STEP = insert(STEPS)
_INSERT_EVENT = insert(EVENTS)
_INSERT_TASK_UNLESS_KEY_TAKEN = {
    "postgresql": postgresql.insert(TASKS).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(TASKS).on_conflict_do_nothing(),
}

Statement = Insert | Update


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled for SQLite with one set of parameters: its SQL, and per
    position the parameter's name and its type's bind processor (None: as it is)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None else process(value)
            for value, process in zip(
                map(values.__getitem__, self.names), self.processors, strict=True
            )
        )


#: By driver, statement (module constants, alive for good) and parameter names; None when
#: the compiled statement wants parameters the rows do not give (a column default to apply):
#: such a statement goes through SQLAlchemy.
_PREPARED: dict[tuple[str, int, tuple[str, ...]], _Prepared | None] = {}


def _prepare(
    connection: Connection, statement: Statement, keys: tuple[str, ...]
) -> _Prepared | None:
    dialect = connection.dialect
    key = (dialect.driver, id(statement), keys)
    if key in _PREPARED:
        return _PREPARED[key]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    prepared = None
    if compiled.positional and sorted(names) == sorted(keys):
        processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )
        prepared = _Prepared(compiled.string, names, processors)
    _PREPARED[key] = prepared
    return prepared


def _execute(connection: Connection, statement: Statement, rows: list[dict[str, Any]]) -> int:
    """Run ``statement`` once per row of ``rows`` (all with the same keys); the rows it
    changed."""
    if connection.dialect.name == "sqlite":
        prepared = _prepare(connection, statement, tuple(rows[0]))
        if prepared is not None:
            cursor = connection.connection.cursor()
            try:
                cursor.executemany(prepared.sql, [prepared.row(row) for row in rows])
                return int(cursor.rowcount)
            finally:
                cursor.close()
    return int(connection.execute(statement, rows).rowcount)


def write(connection: Connection, writes: Sequence[Write]) -> list[object]:
    """Write ``writes`` in the connection's transaction; one outcome per write, in order."""
    outcomes: dict[int, object] = {}
    creations = [(i, w) for i, w in enumerate(writes) if isinstance(w, Creation)]
    if creations:
        outcomes.update(_create(connection, creations))
    changes = [(i, w) for i, w in enumerate(writes) if isinstance(w, Change)]
    if changes:
        outcomes.update(_change(connection, changes))
    return [outcomes[i] for i in range(len(writes))]


def _create(connection: Connection, creations: list[tuple[int, Creation]]) -> dict[int, bool]:
    outcomes: dict[int, bool] = {}
    keyed = [(i, c) for i, c in creations if c.idempotency_key]
    if keyed:
        # Skips a row whose key is taken (the caller finds the winner).
        statement = _INSERT_TASK_UNLESS_KEY_TAKEN[connection.dialect.name]
        for index, creation in keyed:  # one by one: each needs its own row count
            outcomes[index] = _execute(connection, statement, [_task_row(creation)]) == 1
    plain = [(i, c) for i, c in creations if not c.idempotency_key]
    if plain:
        _execute(connection, _INSERT_TASK, [_task_row(c) for _, c in plain])
        outcomes.update((i, True) for i, _ in plain)
    bodies = [_body_row(c.task) for i, c in creations if outcomes[i]]
    if bodies:
        _execute(connection, _INSERT_BODY, bodies)
    steps = [
        step_row(c.task.id, position, step)
        for i, c in creations
        if outcomes[i]
        for position, step in enumerate(c.task.steps.values())
    ]
    if steps:
        _execute(connection, _INSERT_STEP, steps)
    return outcomes


def _change(connection: Connection, changes: list[tuple[int, Change]]) -> dict[int, object]:
    # Where row counts are exact, the update itself checks each lease (its WHERE names the
    # owner, and the row it updates stays locked until the commit): with SQLite always, with
    # asyncpg for one task (one row is a plain execute, whose count is exact). Elsewhere
    # (several tasks on asyncpg) a locking read finds the tasks still ours first. One task a
    # transaction is a chain of steps: the read was a round trip and a statement per step,
    # much of why a chain on PostgreSQL took twice SQLite's time a step (issue 9).
    counted = _counted(connection, len(changes))
    fenced = set() if counted else _fenced(connection, [c for _, c in changes])
    written = [c for _, c in changes if c.task.id not in fenced]
    if not _update_tasks(connection, written):
        if len(written) > 1:
            raise _Raced("a lease changed hands while the batch was written")
        fenced |= {c.task.id for c in written}  # the one task of this batch is not ours
        written = []
    # Added steps (fan-out instances, follow-ups, streamed steps) change the plan, and so
    # does the end of a streamed plan.
    plans = [
        {"w_task": c.task.id, "plan": _plan(c.task)}
        for c in written
        if c.new_steps or c.plan_changed
    ]
    if plans:
        _execute(connection, _UPDATE_PLAN, plans)
    new_steps = [step_row(c.task.id, p, s) for c in written for p, s in c.new_steps]
    if new_steps:
        _execute(connection, _INSERT_STEP, new_steps)
    steps = [
        {"w_task": c.task.id, "w_step": s.spec.id, **step_values(s)}
        for c in written
        for s in c.steps
    ]
    if steps:
        _execute(connection, _UPDATE_STEP, steps)
    events = [_event_row(e) for c in written for e in c.events]
    if events:
        _execute(connection, _INSERT_EVENT, events)
    return {i: LeaseLost(c.task.id) if c.task.id in fenced else None for i, c in changes}


def _fenced(connection: Connection, changes: list[Change]) -> set[str]:
    """The tasks of ``changes`` whose lease this replica no longer holds.

    The rows still ours stay locked until the transaction ends, so no other replica can
    take them over between this check and the update.
    """
    fenced: set[str] = set()
    leased = sorted((c for c in changes if c.lease is not None), key=_lease_owner)
    for owner, group in groupby(leased, key=_lease_owner):
        ids = {c.task.id for c in group}
        held = connection.execute(
            select(TASKS.c.id)
            .where(TASKS.c.id.in_(ids), TASKS.c.lease_owner == owner)
            .with_for_update()
        ).scalars()
        fenced |= ids - set(held)
    return fenced


def _lease_owner(change: Change) -> str:
    return change.lease.owner if change.lease is not None else ""


def _update_tasks(connection: Connection, changes: list[Change]) -> bool:
    """One executemany per shape of update (which columns change, whether leased); False
    when a leased row was not ours to update (where row counts say so)."""
    rows = sorted((_task_update(c) for c in changes), key=_shape)
    ours = True
    for (leased, _), group in groupby(rows, key=_shape):
        values = list(group)
        changed = _execute(connection, _UPDATE_LEASED_TASK if leased else _UPDATE_TASK, values)
        if leased and _counted(connection, len(values)):
            ours = ours and changed == len(values)
    return ours


def _counted(connection: Connection, rows: int) -> bool:
    """Whether a statement run for ``rows`` rows says exactly how many it changed."""
    dialect = connection.dialect
    return bool(
        dialect.supports_sane_multi_rowcount or (rows == 1 and dialect.supports_sane_rowcount)
    )


def _shape(row: dict[str, Any]) -> tuple[bool, tuple[str, ...]]:
    return "w_owner" in row, tuple(sorted(row))


def _task_update(change: Change) -> dict[str, Any]:
    task = change.task
    values: dict[str, Any] = {
        "w_id": task.id,
        "state": task.state.value,
        "result": task.result,
        "error": task.error,
        "partial": task.partial,
        "updated_at": task.updated_at,
        "planning": task.planning,
        "usage": json_of(task.usage),
    }
    if change.events:
        values["last_sequence"] = change.events[-1].sequence
    if change.lease is not None:
        values["w_owner"] = change.lease.owner
        if task.state.final:  # a finished task gives its lease back
            values.update(lease_owner=None, lease_expires_at=None)
    return values


def _task_row(creation: Creation) -> dict[str, Any]:
    task, key, lease = creation.task, creation.idempotency_key, creation.lease
    return {
        "id": task.id,
        "owner": task.owner,
        "state": task.state.value,
        "priority": task.priority,
        "labels": task.labels,
        "timeout_seconds": task.timeout_seconds,
        "result": task.result,
        "error": task.error,
        "partial": task.partial,
        "idempotency_key": key or None,
        "request_fingerprint": (creation.fingerprint or None) if key else None,
        "trace_context": task.trace_context or None,
        "planning": task.planning,
        "budget": json_of(task.budget),
        "usage": json_of(task.usage),
        "parent_task_id": task.parent.task_id if task.parent else None,
        "parent_step_id": task.parent.step_id if task.parent else None,
        "last_sequence": 0,
        "lease_owner": lease.owner if lease else None,
        "lease_expires_at": lease.expires_at() if lease else None,
        "cancel_reason": None,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }


def _body_row(task: TaskRecord) -> dict[str, Any]:
    return {"task_id": task.id, "input": task.input, "plan": _plan(task)}


def _plan(task: TaskRecord) -> JsonText | None:
    return json_of(task.plan) if task.plan else None


#: An event's fields with columns of their own, left out of its payload.
_IN_COLUMNS = frozenset({"task_id", "sequence", "time", "kind"})


def _event_row(event: TaskEvent) -> dict[str, Any]:
    return {
        "task_id": event.task_id,
        "sequence": event.sequence,
        "time": event.time,
        "kind": event.kind.value,
        "payload": json_of(event, exclude=_IN_COLUMNS),
    }


def step_values(step: StepRecord) -> dict[str, Any]:
    """The columns of a step row that change as it runs."""
    return {
        "state": step.state.value,
        "agent": step.agent,
        "attempts": step.attempts,
        "output": step.output,
        "error": step.error,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def step_row(task_id: str, position: int, step: StepRecord) -> dict[str, Any]:
    """The column values of a new step row."""
    return {
        "task_id": task_id,
        "step_id": step.spec.id,
        "position": position,
        "spec": json_of(step.spec),
        **step_values(step),
    }
