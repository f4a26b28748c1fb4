"""Migrations: the newest revision builds exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.orchestrator.store import Store
from agentmesh.orchestrator.store.tables import Base


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def test_migrated_schema_matches_the_models(database: dict[str, str]) -> None:
    schema = database.get("database_schema", "")
    async with Store(database["database_url"], schema=schema):
        pass
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(database["database_url"], connect_args=connect_args)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
    await engine.dispose()


async def test_opening_twice_migrates_once(database: dict[str, str]) -> None:
    schema = database.get("database_schema", "")
    for _ in range(2):
        async with Store(database["database_url"], schema=schema) as store:
            assert await store.agents() == []
