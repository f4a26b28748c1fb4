"""The cache while Redis dies, stalls or is not there yet: memory serves, Redis catches up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from agentmesh.orchestrator.cache import Cache, Subscription
from tests.cache.cache_support import FAST, stored, until
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@pytest.fixture
async def running(redis_server: RedisServer) -> RedisServer:
    await redis_server.start()
    return redis_server


@pytest.fixture
async def plain(running: RedisServer) -> AsyncIterator[Redis]:
    """A plain client on the private server, to look at what really is in Redis."""
    async with running.client() as client:
        yield client


def replica(server: RedisServer, namespace: str = "mesh") -> Cache:
    return Cache(server.url, namespace=namespace, **FAST)


async def next_message(messages: Subscription) -> object:
    async with asyncio.timeout(10):
        return await anext(messages)


async def test_writes_made_during_an_outage_reach_redis_after_a_restart(
    running: RedisServer, plain: Redis
) -> None:
    with capture_logs() as logs:
        async with (
            replica(running) as a,
            replica(running) as b,
            AsyncExitStack() as stack,
            b.subscribe("events") as at_b,
        ):
            await running.kill()
            async with asyncio.timeout(5):
                await a.set("card", {"v": 1}, ttl=60)
                await a.set("card", {"v": 2}, ttl=60)  # only the latest is replayed
                await a.set("fleeting", 1, ttl=0.2)  # expires before Redis returns
                await a.set("doomed", 1, ttl=60)
                await a.delete("doomed")
                assert await a.get("card") == {"v": 2}
                assert await a.keys("") == ["card", "fleeting"]
                for _ in range(20):  # many failing ops, still one log line
                    await a.get("card")
                    await a.publish("events", "lost for other replicas")
            await until(lambda: not a.available and not b.available)

            async def fleeting_expired() -> bool:
                return await a.get("fleeting") is None

            await eventually(fleeting_expired, bool, interval=0.02)

            async with a.subscribe("local") as at_a:
                await a.publish("local", "still delivered")
                assert await next_message(at_a) == "still delivered"

            # Subscribed while Redis is away: must be set up in Redis once it is back.
            at_b_late = await stack.enter_async_context(b.subscribe("late"))
            await running.start()
            await until(lambda: a.available and b.available)

            assert await stored(plain, "mesh:card") == {"v": 2}
            assert 0 < await plain.pttl("mesh:card") <= 60_000
            assert await plain.exists("mesh:doomed", "mesh:fleeting") == 0

            # b's subscriptions were re-established, exactly once each.
            await a.publish("events", "after")
            await a.publish("late", "after")
            assert await next_message(at_b) == "after"
            assert await next_message(at_b_late) == "after"
            await a.publish("events", "barrier")
            assert await next_message(at_b) == "barrier"  # not a second "after"
    downs = [e for e in logs if e["event"] == "cache.redis_down"]
    restored = {e["instance"]: e["replayed"] for e in logs if e["event"] == "cache.redis_restored"}
    assert len(downs) == 2  # once per replica, not once per failed operation
    assert sorted(restored.values()) == [0, 2]  # a: card and doomed; b: nothing


async def test_reads_fall_back_to_what_memory_last_saw(running: RedisServer) -> None:
    async with replica(running) as a, replica(running) as b:
        await a.set("agent:1", {"endpoint": "10.0.0.1:7000"}, ttl=60)
        await a.set("agent:2", {"endpoint": "10.0.0.2:7000"}, ttl=60)
        assert await b.get_many(["agent:1", "agent:2"]) == {
            "agent:1": {"endpoint": "10.0.0.1:7000"},
            "agent:2": {"endpoint": "10.0.0.2:7000"},
        }
        await running.kill()
        async with asyncio.timeout(5):
            # b never wrote these; it serves what it last read from Redis.
            assert await b.get("agent:1") == {"endpoint": "10.0.0.1:7000"}
            assert await b.keys("agent:") == ["agent:1", "agent:2"]
        assert not b.available


async def test_a_stalled_redis_costs_at_most_an_op_timeout_and_is_caught_up(
    running: RedisServer, plain: Redis
) -> None:
    async with replica(running) as a:
        await a.set("stale", "old", ttl=60)
        await a.set("gone", "old", ttl=60)
        running.pause()  # connections stay open, nothing answers
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(5):
                await a.set("stale", "new", ttl=60)
                await a.delete("gone")
                assert await a.get("stale") == "new"
                await a.publish("events", "nobody")
            # The first call waits out op_timeout (0.3 s); the breaker makes the rest instant.
            assert loop.time() - started < 3
            assert not a.available
        finally:
            running.resume()
        await until(lambda: a.available)
        # Redis kept its data through the stall; the replay overwrote and deleted over it.
        assert await stored(plain, "mesh:stale") == "new"
        assert await plain.exists("mesh:gone") == 0
        assert await a.get("stale") == "new"


async def test_cache_starts_without_redis_and_catches_up_when_it_appears(
    redis_server: RedisServer,
) -> None:
    namespace = f"cold-{uuid.uuid4().hex[:8]}"
    with capture_logs() as logs:
        async with asyncio.timeout(5):
            cache = await Cache(redis_server.url, namespace=namespace, **FAST).__aenter__()
        try:
            assert not cache.available
            await cache.set("early", [1, 2], ttl=60)
            assert await cache.get("early") == [1, 2]
            await redis_server.start()
            await until(lambda: cache.available)
            async with redis_server.client() as plain:
                assert await stored(plain, f"{namespace}:early") == [1, 2]
        finally:
            await cache.__aexit__(None, None, None)
    events = [e["event"] for e in logs if e["event"].startswith("cache.redis_")]
    assert events == ["cache.redis_down", "cache.redis_restored"]


async def test_writes_redis_refuses_stay_in_memory_until_it_takes_them(
    running: RedisServer, plain: Redis
) -> None:
    async def refusals() -> int:
        stats = await plain.info("errorstats")
        return int(stats.get("errorstat_OOM", {}).get("count", 0))

    async with replica(running) as a:
        await a.set("k", "before", ttl=60)
        # Redis keeps answering PING but refuses every write: not an outage you can ping away.
        await plain.config_set("maxmemory", 1)
        async with asyncio.timeout(5):
            await a.set("k", "refused at first", ttl=60)
            assert await a.get("k") == "refused at first"
        assert not a.available
        # The reconnect loop gets through to Redis but its replay is refused as well...
        await eventually(refusals, lambda n: n >= 3, interval=0.02)
        assert not a.available
        assert await stored(plain, "mesh:k") == "before"
        # ...and the write is kept until Redis takes it.
        await plain.config_set("maxmemory", 0)
        await until(lambda: a.available)
        assert await stored(plain, "mesh:k") == "refused at first"
