"""The cache on a healthy Redis: write-through, expiry, and pub/sub across two replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from agentmesh.orchestrator.cache import Cache, Subscription
from agentmesh.orchestrator.cache._link import RedisLink
from tests.cache.cache_support import FAST, SHARED_REDIS_URL, stored
from tests.support.waiting import eventually


@pytest.fixture
async def replicas(namespace: str, plain: Redis) -> AsyncIterator[tuple[Cache, Cache]]:
    """Two caches on the shared Redis and one namespace, like two orchestrator replicas."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Cache(SHARED_REDIS_URL, namespace=namespace, **FAST))
        b = await stack.enter_async_context(Cache(SHARED_REDIS_URL, namespace=namespace, **FAST))
        assert a.available
        assert b.available
        yield a, b


async def collect_until(messages: Subscription, *stops: object) -> list[object]:
    """Everything received until every one of ``stops`` has arrived (bounded in time)."""
    received: list[object] = []
    async with asyncio.timeout(10):
        while not all(stop in received for stop in stops):
            received.append(await anext(messages))
    return received


def canonical(messages: list[object]) -> list[str]:
    return sorted(json.dumps(m, sort_keys=True) for m in messages)


async def test_writes_go_through_to_redis_with_their_ttl(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    await a.set("agent:x", {"load": 3}, ttl=20)
    assert await stored(plain, f"{namespace}:agent:x") == {"load": 3}
    assert 0 < await plain.pttl(f"{namespace}:agent:x") <= 20_000
    await a.delete("agent:x")
    assert await plain.exists(f"{namespace}:agent:x") == 0


async def test_entries_expire_in_redis(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, b = replicas
    await a.set("short", "v", ttl=0.3)
    assert await b.get("short") == "v"

    async def gone_everywhere() -> bool:
        return (
            await plain.exists(f"{namespace}:short") == 0
            and await a.get("short") is None
            and await b.get("short") is None
        )

    await eventually(gone_everywhere, bool, interval=0.02)


async def test_replicas_see_each_others_writes_and_deletes(
    replicas: tuple[Cache, Cache],
) -> None:
    a, b = replicas
    await a.set("agent:1", {"v": 1})
    await b.set("agent:2", {"v": 2})
    assert await b.get("agent:1") == {"v": 1}
    assert await a.get_many(["agent:1", "agent:2", "agent:3"]) == {
        "agent:1": {"v": 1},
        "agent:2": {"v": 2},
    }
    assert await a.keys("agent:") == ["agent:1", "agent:2"]
    await b.delete("agent:1")
    assert await a.get("agent:1") is None  # Redis is asked first, so a's own copy is not served
    assert await a.keys("agent:") == ["agent:2"]


async def test_reads_take_what_redis_holds_over_this_process_memory(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    await a.set("k", "mine")
    await plain.set(f"{namespace}:k", json.dumps("someone else's"))  # no expiry at all
    assert await a.get("k") == "someone else's"
    assert a._memory.get("k") == json.dumps("someone else's")  # memory refreshed for outages


async def test_keys_strip_the_namespace_and_treat_the_prefix_literally(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    await a.set("weird*[key]?", 1)
    await a.set("weirdo", 2)
    await plain.set(f"{namespace}-other:weird*[key]?", 3)  # a different namespace
    assert await a.keys("weird*") == ["weird*[key]?"]
    assert await a.keys("weird") == ["weird*[key]?", "weirdo"]
    await plain.delete(f"{namespace}-other:weird*[key]?")


async def test_text_in_redis_that_is_not_json_reads_as_absent(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    await plain.set(f"{namespace}:broken", "{not json")
    with capture_logs() as logs:
        assert await a.get("broken") is None
        assert await a.get_many(["broken"]) == {}
    assert next(e for e in logs if e["event"] == "cache.bad_value")["key"] == "broken"


async def test_each_subscriber_gets_each_message_exactly_once_across_replicas(
    replicas: tuple[Cache, Cache],
) -> None:
    a, b = replicas
    async with a.subscribe("task:7") as at_a, b.subscribe("task:7") as at_b:
        await a.publish("task:7", {"from": "a"})
        await b.publish("task:7", {"from": "b"})
        await a.publish("task:7", "end-a")
        await b.publish("task:7", "end-b")
        # A message echoed back to its publisher would reach it before the other replica's
        # later "end" (Redis delivers in publish order), so it would show up here.
        expected = canonical([{"from": "a"}, {"from": "b"}, "end-a", "end-b"])
        assert canonical(await collect_until(at_a, "end-b")) == expected
        got_b = await collect_until(at_b, "end-a", "end-b")
        assert canonical(got_b) == expected


async def test_a_replica_without_local_subscribers_still_reaches_the_other(
    replicas: tuple[Cache, Cache],
) -> None:
    a, b = replicas
    async with b.subscribe("fanout") as at_b:
        await a.publish("fanout", 1)
        await a.publish("fanout", 2)
        assert await collect_until(at_b, 2) == [1, 2]


async def test_malformed_messages_from_outside_are_skipped(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    with capture_logs() as logs:
        async with a.subscribe("c") as at_a:
            await plain.publish(f"{namespace}:c", "not json")
            await plain.publish(f"{namespace}:c", json.dumps({"no": "envelope"}))
            await plain.publish(f"{namespace}:c", json.dumps({"src": "elsewhere", "msg": 42}))
            assert await collect_until(at_a, 42) == [42]
    assert sum(e["event"] == "cache.bad_message" for e in logs) == 2


async def test_leaving_a_subscription_unsubscribes_in_redis(
    replicas: tuple[Cache, Cache], plain: Redis, namespace: str
) -> None:
    a, _ = replicas
    subscribed = asyncio.Event()

    async def consume() -> None:
        async with a.subscribe("watch") as messages:
            subscribed.set()
            async for _ in messages:
                pass

    async def redis_subscribers() -> int:
        [(_, count)] = await plain.pubsub_numsub(f"{namespace}:watch")
        return int(count)

    task = asyncio.create_task(consume())
    await subscribed.wait()
    assert await redis_subscribers() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def unsubscribed() -> bool:
        return await redis_subscribers() == 0

    await eventually(unsubscribed, bool, interval=0.02)
    # Subscribing again afterwards works as the first time did.
    async with a.subscribe("watch") as messages:
        await plain.publish(f"{namespace}:watch", json.dumps({"src": "x", "msg": "again"}))
        assert await collect_until(messages, "again") == ["again"]


async def test_a_cache_is_entered_only_once(namespace: str) -> None:
    cache = Cache(SHARED_REDIS_URL, namespace=namespace, **FAST)
    async with cache:
        assert cache.available
        with pytest.raises(RuntimeError, match="once"):
            await cache.__aenter__()
    assert not cache.available


async def test_a_cancellation_a_redis_call_swallows_still_stops_the_caller() -> None:
    """redis-py can return normally from a call whose task was cancelled meanwhile (seen with
    redis-py 8.1 on Python 3.11); the link raises the cancellation again, so that a loop
    cancelled at shutdown stops instead of going round for ever."""
    link = RedisLink(
        SHARED_REDIS_URL, op_timeout=5, reconnect_interval=0.05, log=structlog.get_logger()
    )
    in_call = asyncio.Event()
    rounds = 0

    async def swallowing(client: Redis) -> object:
        # A real round trip, then what redis-py did: the cancel delivered while waiting is
        # caught and the call returns as if nothing had happened.
        await client.ping()
        if not in_call.is_set():
            in_call.set()
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(5)
        return "swallowed"

    async def loop() -> None:
        # Bounded, so that without the fix the test fails instead of hanging.
        nonlocal rounds
        while rounds < 3:
            rounds += 1
            await link.call(swallowing)

    try:
        runner = asyncio.create_task(loop())
        await in_call.wait()
        runner.cancel()
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await runner
        assert rounds == 1
        # The cancel says nothing about Redis: the link still counts it as answering.
        assert link.breaker.current_state == "closed"
    finally:
        await link.aclose()
