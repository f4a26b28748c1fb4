"""On SQLite the hot writes skip SQLAlchemy's execution (statements compiled once, rows
as tuples through each column type's bind processor): what they store must be, byte for
byte, what SQLAlchemy would have stored."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentmesh.models import (
    AgentChoice,
    AgentScore,
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
    Usage,
)
from agentmesh.orchestrator.store import Lease, Store, writes
from agentmesh.orchestrator.store.connection import _to_json, json_of

TABLES = {
    "tasks": "id",
    "task_bodies": "task_id",
    "steps": "task_id, step_id",
    "events": "task_id, sequence",
}


def _task(task_id: str, now: datetime) -> TaskRecord:
    plan = Plan(
        steps=(
            StepSpec(id="a", capability="echo", input={"q": "ü"}),
            StepSpec(id="b", capability="echo"),
        )
    )
    return TaskRecord(
        id=task_id,
        owner="spiffe://x/client/alice",
        input={"n": 1, "nested": {"list": [1, None, "ß"]}},
        labels={"team": "\u00e9quipe"},
        plan=plan,
        steps={s.id: StepRecord(spec=s) for s in plan.steps},
        created_at=now,
        updated_at=now,
    )


async def _write_everything(store: Store, now: datetime) -> None:
    lease = Lease("replica-1", 30.0)
    plain, keyed = _task("t-plain", now), _task("t-keyed", now)
    await store.create_task(plain)
    await store.create_task(keyed, idempotency_key="key-1", fingerprint="f" * 64, lease=lease)
    for task in (plain, keyed):
        step = task.steps["a"]
        step.state, step.agent, step.attempts = StepState.SUCCEEDED, "echo-1", 1
        step.output = {"text": "done", "none": None, "float": 1.5, "big": 2**53}
        step.started_at, step.finished_at = now, now + timedelta(milliseconds=1)
        task.state, task.result, task.partial = TaskState.SUCCEEDED, {"a": step.output}, True
        task.updated_at = now + timedelta(seconds=1)
        events = [
            TaskEvent(
                task_id=task.id, sequence=1, time=now, kind=EventKind.TASK_STATE, state="running"
            ),
            TaskEvent(
                task_id=task.id,
                sequence=2,
                time=now,
                kind=EventKind.STEP_STATE,
                step_id="a",
                state="succeeded",
                output=step.output,
            ),
        ]
        # The plain task's plan grows by a step (its body's plan is written again).
        added = StepRecord(spec=StepSpec(id="c", capability="echo", needs=("a",)))
        if task is plain:
            assert task.plan is not None
            task.plan = Plan(steps=(*task.plan.steps, added.spec))
            task.steps["c"] = added
        await store.commit(
            task,
            [step],
            events,
            lease=lease if task is keyed else None,
            new_steps=[(2, added)] if task is plain else [],
        )


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            for table, order in TABLES.items()
        }


async def test_prepared_writes_store_what_sqlalchemy_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'prepared.db'}") as store:
        await _write_everything(store, now)
    prepared = _rows(tmp_path / "prepared.db")
    # The same writes with every statement through SQLAlchemy's own execution.
    monkeypatch.setattr(writes, "_prepare", lambda *_: None)
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'sqlalchemy.db'}") as store:
        await _write_everything(store, now)
    through_sqlalchemy = _rows(tmp_path / "sqlalchemy.db")
    assert all(through_sqlalchemy[table] for table in TABLES)
    for table in TABLES:
        assert prepared[table] == through_sqlalchemy[table], table


def test_json_columns_hold_the_text_model_dump_would_give() -> None:
    """Models go into JSON columns serialised in one pass (``json_of``): the same text as
    their ``model_dump(mode="json")`` through the column's serialiser, which reads give back."""
    now = datetime(2026, 12, 4, 5, 6, 7, 89, tzinfo=UTC)
    choice = AgentChoice(
        strategy="learned",
        score=0.125,
        reason="lowest ü",
        alternatives=(AgentScore(agent="b", score=1.5), AgentScore(agent="c", score=0.0)),
    )
    usage = Usage(input_tokens=3, output_tokens=4, cost=0.25, seconds=1.5, steps=2)
    events = [
        TaskEvent(task_id="t", sequence=1, time=now, kind=EventKind.TASK_STATE, usage=usage),
        TaskEvent(
            task_id="t",
            sequence=2,
            time=now,
            kind=EventKind.STEP_STATE,
            step_id="a",
            state="running",
            agent="a-1",
            attempt=1,
            choice=choice,
        ),
        TaskEvent(
            task_id="t",
            sequence=3,
            time=now,
            kind=EventKind.STEP_STATE,
            step_id="a",
            state="succeeded",
            output={"x": [1, 2.5, None, "ß"], "big": 2**53},
            usage=usage,
        ),
    ]
    task = _task("t", now)
    assert task.plan is not None
    models: list[tuple[BaseModel, dict[str, Any]]] = [
        *((e, {"exclude": writes._IN_COLUMNS}) for e in events),
        (usage, {}),
        (task.budget, {}),
        *((step, {}) for step in task.plan.steps),
        (task.plan, {}),
    ]
    for model, dump in models:
        text = _to_json(json_of(model, **dump))
        assert text == _to_json(model.model_dump(mode="json", **dump))
        assert json.loads(text) == model.model_dump(mode="json", **dump)
