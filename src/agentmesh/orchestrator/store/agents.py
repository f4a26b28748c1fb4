"""Registered agents in the store: their cards, identities and registration times, and what
operators said of them (overrides)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agentmesh.models import AgentCard, AgentOverride
from agentmesh.orchestrator.store.connection import Connection, utc
from agentmesh.orchestrator.store.tables import AgentOverrideRow, AgentRow


class Agents(Connection):
    """The directory of registered agents, kept across restarts."""

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
            (AgentCard.model_validate(r.card), r.identity, utc(r.registered_at) or r.registered_at)
            for r in rows
        ]

    async def save_override(self, override: AgentOverride) -> None:
        """Insert or replace an operator's override of an agent."""
        values = {
            "name": override.name,
            "drained": override.drained,
            "weight": override.weight,
            "updated_by": override.updated_by,
            "updated_at": override.updated_at,
        }
        insert = sqlite_insert if self.is_sqlite else pg_insert
        statement = insert(AgentOverrideRow).values(**values)
        statement = statement.on_conflict_do_update(index_elements=["name"], set_=values)
        async with self._transaction() as session:
            await session.execute(statement)

    async def overrides(self) -> dict[str, AgentOverride]:
        """Every agent's override, by agent name."""
        async with self._read() as session:
            rows = (await session.scalars(select(AgentOverrideRow))).all()
        return {
            r.name: AgentOverride(
                name=r.name,
                drained=r.drained,
                weight=r.weight,
                updated_by=r.updated_by,
                updated_at=utc(r.updated_at),
            )
            for r in rows
        }
