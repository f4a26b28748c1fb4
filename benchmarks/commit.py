"""commit: one task's change made durable by the store, one commit after the other.

What a chain of steps asks of the database: each step's success is committed before the
next step starts, so a chain step waits for one transaction of one task (the task row, a
step row and an event). The store runs in this process, on the database of ``--database``
(a SQLite file, or a fresh schema on the PostgreSQL server of the benchmarks), with a lease
(fencing, as a replica writes). ``COMMITS`` commits one after the other, each changing a
step and adding an event, and the task's usage and time as a running task's do; once for
a task of 3 steps and once for one of ``LARGE`` (what a commit costs must not grow with
the plan: before revision 0012 SQLite wrote the whole plan again with every commit).

The baseline is the bare driver on the same database, in the same run: ``COMMITS``
transactions of one INSERT each (sqlite3 in a thread with the store's pragmas; asyncpg),
the least any durable write can cost there.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from agentmesh import models
from agentmesh.orchestrator.store import Lease, Store
from benchmarks import mesh
from benchmarks.mesh import POSTGRES_URL, Profiling
from benchmarks.report import Measurement

NAME = "commit"
COMMITS = 500
LARGE = 1000


def _task(steps: int) -> models.TaskRecord:
    now = datetime.now(UTC)
    plan = models.Plan(
        steps=tuple(models.StepSpec(id=f"s{i}", capability="bench.work") for i in range(steps))
    )
    return models.TaskRecord(
        id=str(uuid.uuid4()),
        owner="spiffe://agentmesh.bench/client/bench",
        input={"n": 1},
        plan=plan,
        steps={s.id: models.StepRecord(spec=s) for s in plan.steps},
        created_at=now,
        updated_at=now,
    )


async def _store_commits(url: str, schema: str, steps: int = 3) -> tuple[float, float]:
    """CPU and wall seconds per commit of one change of a task of ``steps`` steps."""
    async with Store(url, schema=schema) as store:
        lease = Lease("bench-replica", 60)
        task = _task(steps)
        await store.create_task(task, lease=lease)
        task.state = models.TaskState.RUNNING
        cpu, wall = time.process_time(), time.perf_counter()
        for sequence in range(1, COMMITS + 1):
            step = task.steps[f"s{sequence % steps}"]
            step.state, step.output = models.StepState.SUCCEEDED, {"n": sequence}
            task.usage = models.Usage(seconds=sequence / 7, steps=sequence)
            task.updated_at = datetime.now(UTC)
            event = models.TaskEvent(
                task_id=task.id,
                sequence=sequence,
                time=datetime.now(UTC),
                kind=models.EventKind.STEP_STATE,
                step_id=step.spec.id,
                state="succeeded",
                output=step.output,
            )
            await store.commit(task, [step], [event], lease=lease)
        return (time.process_time() - cpu) / COMMITS, (time.perf_counter() - wall) / COMMITS


def _sqlite_floor(path: Path) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
        connection.execute(f"PRAGMA {pragma}")
    connection.execute("CREATE TABLE floor (n INTEGER, body TEXT)")
    started = time.perf_counter()
    for n in range(COMMITS):
        connection.execute("BEGIN")
        connection.execute("INSERT INTO floor VALUES (?, ?)", (n, '{"n": 1}'))
        connection.execute("COMMIT")
    connection.close()
    return (time.perf_counter() - started) / COMMITS


async def _postgres_floor(schema: str) -> float:
    import asyncpg

    connection = await asyncpg.connect(
        POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"),
        server_settings={"search_path": schema},
    )
    try:
        await connection.execute("CREATE TABLE floor (n INTEGER, body JSONB)")
        started = time.perf_counter()
        for n in range(COMMITS):
            async with connection.transaction():
                await connection.execute("INSERT INTO floor VALUES ($1, $2)", n, '{"n": 1}')
        return (time.perf_counter() - started) / COMMITS
    finally:
        await connection.close()


def _fresh(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db*"):
        old.unlink()


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements (``profiling`` does not apply: no
    orchestrator process)."""
    await asyncio.to_thread(_fresh, folder)
    if mesh.default_database == "postgresql":
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        await mesh.postgres_execute(f'CREATE SCHEMA "{schema}"')
        try:
            cpu, wall = await _store_commits(POSTGRES_URL, schema)
            large_cpu, large_wall = await _store_commits(POSTGRES_URL, schema, LARGE)
            floor = await _postgres_floor(schema)
        finally:
            await mesh.postgres_execute(f'DROP SCHEMA "{schema}" CASCADE')
        driver = "asyncpg"
    else:
        cpu, wall = await _store_commits(f"sqlite+aiosqlite:///{folder / 'store.db'}", "")
        large_cpu, large_wall = await _store_commits(
            f"sqlite+aiosqlite:///{folder / 'store.db'}", "", LARGE
        )
        floor = await asyncio.to_thread(_sqlite_floor, folder / "floor.db")
        driver = "sqlite3"
    print(
        f"  {COMMITS} commits: {wall * 1000:.3f} ms each, {cpu * 1000:.3f} ms of CPU; "
        f"with {LARGE} steps: {large_wall * 1000:.3f} ms, {large_cpu * 1000:.3f} ms of CPU"
    )
    return [
        Measurement(
            NAME,
            "one task's change committed, one after the other",
            wall * 1000,
            "ms",
            floor * 1000,
            f"{driver}: one INSERT a transaction",
        ),
        Measurement(NAME, "CPU per commit (this process)", cpu * 1000, "ms"),
        Measurement(
            NAME,
            f"the same, a task of {LARGE} steps",
            large_wall * 1000,
            "ms",
            wall * 1000,
            "a task of 3 steps",
        ),
        Measurement(
            NAME,
            f"CPU per commit, a task of {LARGE} steps",
            large_cpu * 1000,
            "ms",
            cpu * 1000,
            "a task of 3 steps",
        ),
    ]
