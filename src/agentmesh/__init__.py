"""agentmesh: a gRPC service mesh for AI agents.

The names most users need::

    from agentmesh import Agent, AssignmentContext, capability, run     # write an agent
    from agentmesh import Client, Plan, StepSpec                        # submit and watch tasks
    from agentmesh import Orchestrator, Settings                        # run the orchestrator

Names are imported on first use, so an agent process never loads the orchestrator's
database and cache libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmesh.agent import (
        Agent,
        AgentServer,
        AgentSettings,
        AssignmentContext,
        capability,
        run,
    )
    from agentmesh.client import Client
    from agentmesh.config import Settings
    from agentmesh.errors import (
        AgentMeshError,
        AgentUnavailable,
        NotFound,
        PermissionDenied,
        StepFailed,
        Unavailable,
        ValidationError,
    )
    from agentmesh.models import (
        Budget,
        Capability,
        Plan,
        RetryPolicy,
        StepSpec,
        StepState,
        TaskState,
    )
    from agentmesh.orchestrator import Orchestrator

_HOMES = {
    "agentmesh.agent": (
        "Agent",
        "AgentServer",
        "AgentSettings",
        "AssignmentContext",
        "capability",
        "run",
    ),
    "agentmesh.client": ("Client",),
    "agentmesh.config": ("Settings",),
    "agentmesh.errors": (
        "AgentMeshError",
        "AgentUnavailable",
        "NotFound",
        "PermissionDenied",
        "StepFailed",
        "Unavailable",
        "ValidationError",
    ),
    "agentmesh.models": (
        "Budget",
        "Capability",
        "Plan",
        "RetryPolicy",
        "StepSpec",
        "StepState",
        "TaskState",
    ),
    "agentmesh.orchestrator": ("Orchestrator",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Agent",
    "AgentMeshError",
    "AgentServer",
    "AgentSettings",
    "AgentUnavailable",
    "AssignmentContext",
    "Budget",
    "Capability",
    "Client",
    "NotFound",
    "Orchestrator",
    "PermissionDenied",
    "Plan",
    "RetryPolicy",
    "Settings",
    "StepFailed",
    "StepSpec",
    "StepState",
    "TaskState",
    "Unavailable",
    "ValidationError",
    "capability",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'agentmesh' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
