"""Durable state in SQL (SQLite by default, PostgreSQL in production)."""

from agentmesh.store.database import Store

__all__ = ["Store"]
