"""Fixtures for the cache tests: the shared test Redis and private redis-servers to kill."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.cache.cache_support import SHARED_REDIS_URL
from tests.support.network import free_port
from tests.support.redis_server import RedisServer


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or test run) uses."""
    return f"test-cache-{uuid.uuid4().hex}"


@pytest.fixture
async def plain(namespace: str) -> AsyncIterator[Redis]:
    """A plain client on the shared test Redis; removes the test's keys afterwards."""
    async with Redis.from_url(SHARED_REDIS_URL, decode_responses=True) as client:
        await client.ping()
        try:
            yield client
        finally:
            names = [n async for n in client.scan_iter(match=f"{namespace}:*")]
            if names:
                await client.delete(*names)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A private redis-server on a free port, not yet started; killed afterwards."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = RedisServer(free_port())
    try:
        yield server
    finally:
        await server.kill()
