"""Fixtures of the planning tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentmesh.models import Capability
from tests.planning.support import DEMO_CAPABILITIES
from tests.support.chat import ChatServer


@pytest.fixture
def demo_capabilities() -> dict[str, Capability]:
    """The capabilities of the demo's text agents, by name."""
    return dict(DEMO_CAPABILITIES)


@pytest.fixture
async def chat_server() -> AsyncIterator[ChatServer]:
    """A scripted OpenAI-compatible chat-completions server on an ephemeral port."""
    async with ChatServer() as server:
        yield server
