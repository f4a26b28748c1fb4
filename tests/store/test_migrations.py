"""Migrations: the newest revision builds exactly the schema the models describe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentmesh.orchestrator.store import Store
from agentmesh.orchestrator.store.tables import Base


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def _opened(database: dict[str, str]) -> AsyncEngine:
    """Open (and so migrate) a Store on ``database``; an engine on the same schema."""
    schema = database.get("database_schema", "")
    async with Store(database["database_url"], schema=schema):
        pass
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(database["database_url"], connect_args=connect_args)


async def test_migrated_schema_matches_the_models(database: dict[str, str]) -> None:
    engine = await _opened(database)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
    await engine.dispose()


async def test_opening_twice_migrates_once(database: dict[str, str]) -> None:
    schema = database.get("database_schema", "")
    for _ in range(2):
        async with Store(database["database_url"], schema=schema) as store:
            assert await store.agents() == []


def test_the_head_read_off_the_file_names_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from agentmesh.orchestrator.store import migrate

    assert (
        migrate.head() == ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    )


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    from agentmesh.orchestrator.store import migrate

    command.downgrade(migrate.alembic_config(connection), revision)


async def test_a_schema_behind_is_brought_to_the_head(database: dict[str, str]) -> None:
    from agentmesh.orchestrator.store import migrate

    engine = await _opened(database)
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade, "0010")
        assert await conn.run_sync(migrate.current) == "0010"
    await (await _opened(database)).dispose()
    async with engine.connect() as conn:
        assert await conn.run_sync(migrate.current) == migrate.head()
        assert await conn.run_sync(_differences) == []
    await engine.dispose()


async def test_tasks_keep_their_input_and_plan_across_revision_0012(
    database: dict[str, str],
) -> None:
    # 0012 moved a task's input and plan out of the tasks row into task_bodies.
    from datetime import UTC, datetime

    from sqlalchemy import text

    from agentmesh.models import Plan, StepRecord, StepSpec, TaskRecord

    schema = database.get("database_schema", "")
    now = datetime.now(UTC)
    plan = Plan(steps=(StepSpec(id="a", capability="echo", input={"q": "ü"}),))
    task = TaskRecord(
        id="t-0012",
        owner="spiffe://x/client/alice",
        input={"n": 1, "text": "ß"},
        plan=plan,
        steps={"a": StepRecord(spec=plan.steps[0])},
        created_at=now,
        updated_at=now,
    )
    async with Store(database["database_url"], schema=schema) as store:
        await store.create_task(task)
    engine = await _opened(database)
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade, "0011")
        row = (await conn.execute(text("SELECT input, plan FROM tasks"))).one()
    await engine.dispose()
    stored = [json.loads(v) if isinstance(v, str) else v for v in row]
    assert stored == [task.input, plan.model_dump(mode="json")]
    async with Store(database["database_url"], schema=schema) as store:
        again = await store.get_task(task.id)
        listed = await store.list_tasks()
    assert again is not None
    assert (again.input, again.plan) == (task.input, plan)
    assert [(t.id, t.input, t.plan) for t in listed] == [(task.id, task.input, plan)]


def test_an_orchestrator_on_a_current_schema_never_loads_alembic(tmp_path: Path) -> None:
    # Loaded, Alembic stays in every orchestrator's memory for good (ten MiB).
    url = f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"
    script = (
        "import asyncio, sys\n"
        "from agentmesh.orchestrator.store import Store\n"
        "async def main():\n"
        f"    async with Store({url!r}) as store:\n"
        "        await store.agents()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True"]  # a new database is migrated
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["False"]
