"""The SQL store: tasks, steps, events and agents through SQLAlchemy 2 async.

One :class:`Store` made of its parts, one idea each: the connection
(:mod:`~agentmesh.orchestrator.store.connection`), tasks with their steps and events
(:mod:`~agentmesh.orchestrator.store.tasks`), registered agents
(:mod:`~agentmesh.orchestrator.store.agents`), replicas' leases
(:mod:`~agentmesh.orchestrator.store.leases`), holds on shared limits
(:mod:`~agentmesh.orchestrator.store.holds`), the step cache
(:mod:`~agentmesh.orchestrator.store.outputs`) and answers to input steps
(:mod:`~agentmesh.orchestrator.store.answers`).
"""

from __future__ import annotations

from agentmesh.orchestrator.store.agents import Agents
from agentmesh.orchestrator.store.answers import Answer, Answers
from agentmesh.orchestrator.store.holds import Claim, Holds, Refusal
from agentmesh.orchestrator.store.leases import Lease, LeaseLost, Leases
from agentmesh.orchestrator.store.outputs import StepOutputs, StoredOutput
from agentmesh.orchestrator.store.tasks import Tasks

__all__ = ["Answer", "Claim", "Lease", "LeaseLost", "Refusal", "Store", "StoredOutput"]


class Store(Tasks, Agents, Leases, Holds, StepOutputs, Answers):
    """Async persistence of the mesh's state; use as ``async with Store(url) as store``."""
