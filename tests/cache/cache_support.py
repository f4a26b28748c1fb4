"""Helpers for the cache tests: polling with a deadline, values as Redis holds them.

The private, killable redis-server lives in :mod:`tests.support.redis_server`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from redis.asyncio import Redis

from tests.support.waiting import eventually

SHARED_REDIS_URL = os.environ.get("AGENTMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: Short enough that outages are noticed and healed quickly in tests.
FAST = {"op_timeout": 0.3, "reconnect_interval": 0.05}


async def until(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Wait for a synchronous ``condition``, failing the test after ``within`` seconds."""

    async def probe() -> bool:
        return condition()

    await eventually(probe, bool, within=within, interval=0.02)


async def stored(client: Redis, name: str) -> object:
    """The JSON value under the full Redis key ``name``, read without the cache; None if absent."""
    raw = await client.get(name)
    return None if raw is None else json.loads(raw)
