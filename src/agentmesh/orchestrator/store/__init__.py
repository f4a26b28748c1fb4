"""Durable state in SQL (SQLite by default, PostgreSQL in production)."""

from agentmesh.orchestrator.store.database import Lease, LeaseLost, Store

__all__ = ["Lease", "LeaseLost", "Store"]
