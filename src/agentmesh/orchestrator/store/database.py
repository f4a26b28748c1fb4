"""The SQL store: tasks, steps, events and agents through SQLAlchemy 2 async.

One :class:`Store` made of its parts, one idea each: the connection
(:mod:`~agentmesh.orchestrator.store.connection`), tasks with their steps and events
(:mod:`~agentmesh.orchestrator.store.tasks`), registered agents
(:mod:`~agentmesh.orchestrator.store.agents`) and replicas' leases
(:mod:`~agentmesh.orchestrator.store.leases`).
"""

from __future__ import annotations

from agentmesh.orchestrator.store.agents import Agents
from agentmesh.orchestrator.store.leases import Lease, LeaseLost, Leases
from agentmesh.orchestrator.store.tasks import Tasks

__all__ = ["Lease", "LeaseLost", "Store"]


class Store(Tasks, Agents, Leases):
    """Async persistence of the mesh's state; use as ``async with Store(url) as store``."""
