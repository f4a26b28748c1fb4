"""Fixtures of the planning tests."""

from __future__ import annotations

import pytest

from agentmesh.models import Capability
from tests.planning.support import DEMO_CAPABILITIES


@pytest.fixture
def demo_capabilities() -> dict[str, Capability]:
    """The capabilities of the demo's text agents, by name."""
    return dict(DEMO_CAPABILITIES)
