"""A task's input and plan live apart from the row each commit rewrites (revision 0012).

SQLite writes an updated row anew, overflow pages included: with the plan in the tasks row,
every commit of a task wrote its whole plan again, and a chain of n steps wrote n plans.
What is measured is what SQLite itself writes (``wchar`` of ``/proc/self/io``: the bytes this
process hands to write calls), on a real database file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmesh.models import (
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator.store import Lease, Store

COMMITS = 20


def _written() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def _task(steps: int) -> TaskRecord:
    now = datetime.now(UTC)
    plan = Plan(
        steps=tuple(
            StepSpec(id=f"s{i}", capability="echo", input={"text": "x" * 200}) for i in range(steps)
        )
    )
    return TaskRecord(
        id=f"t-{steps}",
        owner="spiffe://x/client/alice",
        input={"n": 1},
        plan=plan,
        steps={s.id: StepRecord(spec=s) for s in plan.steps},
        created_at=now,
        updated_at=now,
    )


async def _bytes_per_commit(path: Path, steps: int) -> float:
    """What SQLite writes per commit of one step's success, with a plan of ``steps``."""
    async with Store(f"sqlite+aiosqlite:///{path}") as store:
        lease = Lease("replica-1", 60.0)
        task = _task(steps)
        await store.create_task(task, lease=lease)
        task.state = TaskState.RUNNING
        before = _written()
        for sequence in range(1, COMMITS + 1):
            step = task.steps[f"s{sequence}"]
            step.state, step.output = StepState.SUCCEEDED, {"n": sequence}
            # The row changes size with each commit, as a running task's does.
            task.error = "e" * sequence
            event = TaskEvent(
                task_id=task.id,
                sequence=sequence,
                time=datetime.now(UTC),
                kind=EventKind.STEP_STATE,
                step_id=step.spec.id,
                state="succeeded",
                output=step.output,
            )
            await store.commit(task, [step], [event], lease=lease)
        return (_written() - before) / COMMITS


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc")
async def test_a_commit_writes_as_much_whatever_the_size_of_the_plan(tmp_path: Path) -> None:
    small = await _bytes_per_commit(tmp_path / "small.db", 30)
    large = await _bytes_per_commit(tmp_path / "large.db", 3000)  # a plan of about 1.3 MB
    # With the plan in the tasks row, each commit wrote it again: 1.3 MB against 50 KB.
    assert large < small + 100_000, (small, large)
    task = await _read(tmp_path / "large.db")
    assert task.plan is not None
    assert len(task.plan.steps) == 3000
    assert [task.steps[f"s{i}"].state for i in (1, COMMITS, COMMITS + 1)] == [
        StepState.SUCCEEDED,
        StepState.SUCCEEDED,
        StepState.PENDING,
    ]


async def _read(path: Path) -> TaskRecord:
    async with Store(f"sqlite+aiosqlite:///{path}") as store:
        task = await store.get_task("t-3000")
    assert task is not None
    return task
