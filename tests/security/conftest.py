"""Fixtures of the security tests: orchestrators with policy and revocation files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """Every structlog entry logged during the test (as dicts)."""
    with structlog.testing.capture_logs() as entries:
        yield entries


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """Where the test's policy file goes (written by the test)."""
    return tmp_path / "policy.yaml"


@pytest.fixture
def revocation_file(tmp_path: Path) -> Path:
    """Where the test's revocation list goes (absent until the test revokes something)."""
    return tmp_path / "revoked.yaml"


@pytest.fixture
def secure_settings(settings: Settings, revocation_file: Path) -> Settings:
    """Settings watching a revocation list, reloading security files quickly."""
    return settings.model_copy(
        update={"revocation_file": str(revocation_file), "security_reload_seconds": 0.1}
    )


@pytest.fixture
async def mesh(
    secure_settings: Settings, captured: list[dict[str, Any]]
) -> AsyncIterator[Orchestrator]:
    """A running orchestrator with the built-in policy and a (so far empty) revocation list."""
    async with Orchestrator(secure_settings) as running:
        yield running
