"""The cache without Redis: a single-process cache and in-process pub/sub with the same API."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.cache._memory import MemoryStore
from tests.cache.cache_support import until
from tests.support.waiting import eventually


async def test_memory_only_cache_round_trips_json_values() -> None:
    async with Cache(None) as cache:
        assert not cache.available
        await cache.set("agent:a", {"name": "a", "caps": ["x", "y"], "load": 0.5})
        await cache.set("agent:b", [1, "two", None, True])
        assert await cache.get("agent:a") == {"name": "a", "caps": ["x", "y"], "load": 0.5}
        assert await cache.get("agent:b") == [1, "two", None, True]
        assert await cache.get("agent:missing") is None
        await cache.delete("agent:a")
        await cache.delete("agent:never-there")
        assert await cache.get("agent:a") is None


async def test_values_come_back_as_fresh_copies() -> None:
    async with Cache("") as cache:
        value = {"tags": ["a"]}
        await cache.set("k", value)
        value["tags"].append("mutated after set")
        first = await cache.get("k")
        assert isinstance(first, dict)
        first["tags"].append("mutated after get")
        assert await cache.get("k") == {"tags": ["a"]}


async def test_entries_expire_in_memory() -> None:
    async with Cache(None) as cache:
        await cache.set("short", 1, ttl=0.2)
        await cache.set("long", 2, ttl=60)
        assert await cache.get("short") == 1

        async def short_gone() -> bool:
            return await cache.get("short") is None

        await eventually(short_gone, bool, interval=0.02)
        assert await cache.get("long") == 2
        assert await cache.keys("") == ["long"]


async def test_default_ttl_applies_when_none_is_given() -> None:
    async with Cache(None, default_ttl=0.2) as cache:
        await cache.set("k", "v")
        assert await cache.get("k") == "v"

        async def gone() -> bool:
            return await cache.get("k") is None

        await eventually(gone, bool, interval=0.02)


async def test_get_many_leaves_out_missing_keys_but_keeps_stored_nulls() -> None:
    async with Cache(None) as cache:
        await cache.set("a", 1)
        await cache.set("n", None)
        assert await cache.get_many(["a", "n", "missing", "a"]) == {"a": 1, "n": None}
        assert await cache.get_many([]) == {}


async def test_keys_lists_live_keys_under_a_prefix_sorted() -> None:
    async with Cache(None) as cache:
        for key in ("task:2", "task:1", "agent:1", "taskx"):
            await cache.set(key, key)
        await cache.delete("task:2")
        assert await cache.keys("task:") == ["task:1"]
        assert await cache.keys("task") == ["task:1", "taskx"]
        assert await cache.keys("") == ["agent:1", "task:1", "taskx"]


async def test_bad_ttls_and_non_json_values_are_caller_errors() -> None:
    async with Cache(None) as cache:
        for ttl in (0, -1, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="ttl"):
                await cache.set("k", 1, ttl=ttl)
        with pytest.raises(TypeError):
            await cache.set("k", {"not": object()})
        async with cache.subscribe("c") as messages:
            with pytest.raises(TypeError):
                await cache.publish("c", {1, 2})
            await cache.publish("c", "after")
            assert await anext(messages) == "after"  # nothing half-delivered before it
        assert await cache.get("k") is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"default_ttl": 0}, "default_ttl"),
        ({"op_timeout": -1}, "op_timeout"),
        ({"reconnect_interval": float("nan")}, "reconnect_interval"),
        ({"namespace": ""}, "namespace"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cache(None, **kwargs)  # type: ignore[arg-type]


async def test_publish_reaches_every_local_subscriber_exactly_once() -> None:
    async with (
        Cache(None) as cache,
        cache.subscribe("task:1") as one,
        cache.subscribe("task:1") as two,
        cache.subscribe("task:2") as other,
    ):
        await cache.publish("task:1", {"seq": 1})
        await cache.publish("task:1", {"seq": 2})
        await cache.publish("task:2", "end")
        await cache.publish("nobody-listens", "x")
        await cache.publish("task:1", "end")
        async with asyncio.timeout(5):
            # "end" was published last, so a duplicate would have to come before it.
            for messages in (one, two):
                got = [await anext(messages) for _ in range(3)]
                assert got == [{"seq": 1}, {"seq": 2}, "end"]
            assert await anext(other) == "end"


async def test_subscription_is_dropped_when_its_consumer_is_cancelled() -> None:
    async with Cache(None) as cache:
        subscribed = asyncio.Event()
        received: list[object] = []

        async def consume() -> None:
            async with cache.subscribe("c") as messages:
                subscribed.set()
                async for message in messages:
                    received.append(message)

        task = asyncio.create_task(consume())
        await subscribed.wait()
        await cache.publish("c", 1)
        await until(lambda: received == [1])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await cache.publish("c", 2)
        # The channel still works for a new subscriber; the cancelled one heard nothing more.
        async with cache.subscribe("c") as messages:
            await cache.publish("c", 3)
            async with asyncio.timeout(5):
                assert await anext(messages) == 3
        assert received == [1]


async def test_closing_the_cache_ends_open_subscriptions() -> None:
    received: list[object] = []
    cache = Cache(None)
    async with cache:
        subscribed = asyncio.Event()

        async def consume() -> None:
            async with cache.subscribe("c") as messages:
                subscribed.set()
                async for message in messages:
                    received.append(message)

        task = asyncio.create_task(consume())
        await subscribed.wait()
        await cache.publish("c", "last")
    async with asyncio.timeout(5):
        await task  # iteration ended on its own
    assert received == ["last"]


async def test_slow_subscriber_loses_oldest_messages_beyond_max_pending() -> None:
    async with Cache(None) as cache, cache.subscribe("c", max_pending=2) as messages:
        for n in range(5):
            await cache.publish("c", n)
        assert [await anext(messages), await anext(messages)] == [3, 4]
        await cache.publish("c", 5)
        assert await anext(messages) == 5
    with pytest.raises(ValueError, match="max_pending"):
        async with cache.subscribe("c", max_pending=0):
            pass


def test_memory_store_purges_expired_entries_on_later_writes() -> None:
    now = [0.0]
    store = MemoryStore(sweep_interval=1.0, clock=lambda: now[0])
    for n in range(10):
        store.put(f"old{n}", "1", ttl=0.5)
    assert len(store) == 10
    now[0] = 2.0
    store.put("new", "2", ttl=10)
    assert len(store) == 1
    assert store.get_with_ttl("new") == ("2", 10.0)
    now[0] = 12.0
    assert store.get("new") is None
    assert len(store) == 0
