"""Durable state in SQL (SQLite by default, PostgreSQL in production)."""

from agentmesh.orchestrator.store.database import Claim, Lease, LeaseLost, Refusal, Store

__all__ = ["Claim", "Lease", "LeaseLost", "Refusal", "Store"]
