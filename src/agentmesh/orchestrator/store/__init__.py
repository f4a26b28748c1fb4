"""Durable state in SQL (SQLite by default, PostgreSQL in production)."""

from agentmesh.orchestrator.store.database import (
    Answer,
    Claim,
    Lease,
    LeaseLost,
    Refusal,
    Store,
    StoredOutput,
)

__all__ = ["Answer", "Claim", "Lease", "LeaseLost", "Refusal", "Store", "StoredOutput"]
