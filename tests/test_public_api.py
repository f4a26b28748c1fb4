"""The short public API of ``agentmesh``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentmesh


@pytest.mark.parametrize("name", agentmesh.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(agentmesh, name) is not None


def test_all_lists_exactly_the_lazily_exported_names() -> None:
    assert sorted(agentmesh.__all__) == sorted(agentmesh._HOME_OF)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = agentmesh.Nope  # type: ignore[attr-defined]


def test_an_agent_process_does_not_load_the_orchestrators_storage_libraries() -> None:
    probe = (
        "import sys, agentmesh.agent; print('sqlalchemy' in sys.modules, 'redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
