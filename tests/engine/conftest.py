"""Fixtures of the engine tests: orchestrators on either database or with an LLM planner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from tests.support.chat import ChatServer
from tests.support.journal import Journal


@pytest.fixture
async def orchestrator_on_database(
    settings: Settings, database: dict[str, str]
) -> AsyncIterator[Orchestrator]:
    """A running orchestrator on the parametrized database (SQLite, then PostgreSQL)."""
    async with Orchestrator(settings.model_copy(update=database)) as running:
        yield running


@pytest.fixture
async def llm_orchestrator(
    settings: Settings, chat_server: ChatServer
) -> AsyncIterator[Orchestrator]:
    """A running orchestrator that plans goals no workflow fits with ``chat_server``'s model."""
    configured = settings.model_copy(
        update={"llm_base_url": chat_server.base_url, "llm_model": "test-model"}
    )
    async with Orchestrator(configured) as running:
        yield running


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    """A journal file for test agents' runs (``test.work``, ``test.hang``)."""
    return Journal(tmp_path / "journal.jsonl")
