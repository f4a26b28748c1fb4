"""Durable state in SQL (SQLite by default, PostgreSQL in production)."""

from agentmesh.orchestrator.store.database import Answer, Lease, LeaseLost, Store, StoredOutput

__all__ = ["Answer", "Lease", "LeaseLost", "Store", "StoredOutput"]
