"""The step cache in the store: successful outputs kept for reuse across tasks."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agentmesh.models import JSON
from agentmesh.orchestrator.store.connection import Connection, utc
from agentmesh.orchestrator.store.tables import StepOutputRow


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """An output of the step cache, and where and when it was produced."""

    key: str
    version: str
    output: JSON
    task_id: str
    step_id: str
    stored_at: datetime


class StepOutputs(Connection):
    """Keeping and finding reusable step outputs."""

    async def keep_output(self, entry: StoredOutput, capability: str, *, older: datetime) -> None:
        """Keep ``entry`` (replacing an earlier one of its key) and forget every entry
        stored before ``older``, which no step may reuse any more."""
        values = {
            "key": entry.key,
            "capability": capability,
            "version": entry.version,
            "output": entry.output,
            "task_id": entry.task_id,
            "step_id": entry.step_id,
            "stored_at": entry.stored_at,
        }
        insert = sqlite_insert if self.is_sqlite else pg_insert
        statement = insert(StepOutputRow).values(**values)
        statement = statement.on_conflict_do_update(index_elements=["key"], set_=values)
        async with self._transaction() as session:
            await session.execute(delete(StepOutputRow).where(StepOutputRow.stored_at < older))
            await session.execute(statement)

    async def find_output(self, keys: Collection[str], *, since: datetime) -> StoredOutput | None:
        """The newest entry of one of ``keys`` stored at or after ``since``, or None."""
        if not keys:
            return None
        async with self._read() as session:
            row = (
                await session.scalars(
                    select(StepOutputRow)
                    .where(StepOutputRow.key.in_(list(keys)), StepOutputRow.stored_at >= since)
                    .order_by(StepOutputRow.stored_at.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return StoredOutput(
            key=row.key,
            version=row.version,
            output=row.output,
            task_id=row.task_id,
            step_id=row.step_id,
            stored_at=utc(row.stored_at) or row.stored_at,
        )
