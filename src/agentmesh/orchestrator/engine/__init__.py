"""The scheduler: dependency-driven parallel execution, retries, failover, rollback, recovery."""

from agentmesh.orchestrator.engine.engine import Engine

__all__ = ["Engine"]
