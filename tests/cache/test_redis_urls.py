"""AGENTMESH_REDIS_URL: one server, Sentinel or Cluster; a malformed one is refused by name."""

from __future__ import annotations

import asyncio
from asyncio import TaskGroup
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agentmesh.errors import ConfigError
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.cache._connect import parse
from tests.cache.cache_support import FAST
from tests.support.redis_cluster import redis_cluster
from tests.support.waiting import eventually


def test_a_plain_url_is_one_server() -> None:
    target = parse("redis://:secret@10.0.0.5:6380/2")
    assert target.kind == "single"
    assert target.describe() == "redis://10.0.0.5:6380/2"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = parse(
        "rediss+sentinel://mesh:p%40ss@10.0.0.5:26379,[::1]:26380/primary/3?sentinel_password=s"
    )
    assert target.kind == "sentinel"
    assert target.hosts == (("10.0.0.5", 26379), ("::1", 26380))
    assert (target.service, target.db, target.tls) == ("primary", 3, True)
    assert (target.username, target.password, target.sentinel_password) == ("mesh", "p@ss", "s")
    assert "p@ss" not in target.describe()


def test_a_cluster_url_names_its_startup_nodes() -> None:
    target = parse("redis+cluster://10.0.0.5:7000,10.0.0.6:7000")
    assert target.kind == "cluster"
    assert target.hosts == (("10.0.0.5", 7000), ("10.0.0.6", 7000))
    assert not target.tls


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://10.0.0.5:26379", "name the sentinels' service"),
        ("redis+sentinel://10.0.0.5:26379/mesh/x", "database 'x' is not a number"),
        ("redis+sentinel://10.0.0.5/mesh", "'10.0.0.5' is not host:port"),
        ("redis+sentinel://10.0.0.5:99999/mesh", "'10.0.0.5:99999' is not host:port"),
        ("redis+cluster://10.0.0.5:7000/1", "only database 0"),
    ],
)
def test_a_malformed_url_is_refused_naming_the_setting(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="AGENTMESH_REDIS_URL") as refused:
        parse(url)
    assert problem in str(refused.value)


@pytest.mark.slow  # starts a cluster of redis-servers
async def test_the_cache_works_on_a_redis_cluster(tmp_path: Path) -> None:
    async with (
        redis_cluster(tmp_path) as url,
        Cache(url, namespace="mesh", **FAST) as a,
        Cache(url, namespace="mesh", **FAST) as b,
    ):
        assert a.available
        for i in range(20):  # keys on every node's slots
            await a.set(f"agents:{i}", {"n": i}, ttl=20)
        async with b.subscribe("wake") as messages, TaskGroup() as group:
            receiving = group.create_task(anext(messages))
            await eventually(_published_until(receiving, a, "wake", "hello"), bool, within=60)
            received = receiving.result()
        values = [await b.get(f"agents:{i}") for i in range(20)]
        await a.delete("agents:3")
        gone = await b.get("agents:3")
    assert received == "hello"
    assert values == [{"n": i} for i in range(20)]
    assert gone is None


def _published_until(
    heard: asyncio.Future[object], cache: Cache, channel: str, message: str
) -> Callable[[], Awaitable[bool]]:
    # b's subscription reaches Redis a moment after its block is entered (on a busy machine
    # after its confirmation's short wait, too): a message published before then is lost,
    # so publish again until b has heard one.
    async def publish() -> bool:
        if not heard.done():
            await cache.publish(channel, message)
        return heard.done()

    return publish
