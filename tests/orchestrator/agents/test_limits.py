"""The cross-replica limit primitive: holds in real Redis and in real SQLite/PostgreSQL.

Two :class:`Limits` on one backend stand for two replicas: two Cache clients on one Redis
namespace, or two Stores (two engines, two connection pools) on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from agentmesh.orchestrator.agents.limits import Grant, Limits
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.store import Claim, Refusal, Store
from tests.conftest import POSTGRES_URL, REDIS_URL, _postgres_schema
from tests.support.network import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

Pair = tuple[Limits, Limits]


@contextlib.asynccontextmanager
async def _replica(
    backend: str, database: dict[str, str], namespace: str, hold_seconds: float
) -> AsyncIterator[Limits]:
    redis = REDIS_URL if backend == "redis" else None
    async with (
        Store(database["database_url"], schema=database.get("database_schema", "")) as store,
        Cache(redis, namespace=namespace) as cache,
        Limits(store, cache, hold_seconds=hold_seconds) as limits,
    ):
        yield limits


@contextlib.asynccontextmanager
async def _pair(backend: str, tmp_path: Path, hold_seconds: float = 30.0) -> AsyncIterator[Pair]:
    namespace = f"test-limits-{uuid.uuid4().hex}"
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            database = await stack.enter_async_context(_postgres_schema())
        else:
            database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
        a = await stack.enter_async_context(_replica(backend, database, namespace, hold_seconds))
        b = await stack.enter_async_context(_replica(backend, database, namespace, hold_seconds))
        try:
            yield a, b
        finally:
            if backend == "redis":
                async with Redis.from_url(REDIS_URL) as plain:
                    names = [n async for n in plain.scan_iter(match=f"{namespace}:*")]
                    if names:
                        await plain.delete(*names)


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Where the holds live: a test using this runs on each backend."""
    assert POSTGRES_URL  # the postgresql case needs the test database
    return str(request.param)


async def test_no_more_than_the_limit_hold_a_key_at_once_across_two_replicas(
    backend: str, tmp_path: Path
) -> None:
    claim = Claim("pool:p:uses", 3, 30.0)
    async with _pair(backend, tmp_path) as (a, b):
        replicas = [a if i % 2 else b for i in range(12)]
        answers = await asyncio.gather(*(r.acquire([claim]) for r in replicas))
        granted = [(r, x) for r, x in zip(replicas, answers, strict=True) if isinstance(x, Grant)]
        refused = [x for x in answers if isinstance(x, Refusal)]
        assert len(granted) == 3
        assert len(refused) == 9
        assert all(r.claim == claim for r in refused)
        assert await a.counts([claim.key]) == {claim.key: 3}
        # Given back in the background; the other replica then gets the room.
        holder, grant = granted[0]
        holder.release(grant)
        other = b if holder is a else a
        answer = await eventually(lambda: other.acquire([claim]), lambda x: isinstance(x, Grant))
        assert isinstance(answer, Grant)


async def test_an_acquisition_takes_all_of_its_claims_or_none(backend: str, tmp_path: Path) -> None:
    full, free = Claim("agent:one", 1, 30.0), Claim("pool:p:uses", 5, 30.0)
    async with _pair(backend, tmp_path) as (a, b):
        assert isinstance(await a.acquire([full]), Grant)
        refused = await b.acquire([free, full])
        assert isinstance(refused, Refusal)
        assert refused.claim.key == full.key
        # The free pool was not taken on the way.
        assert free.key not in await b.counts([free.key])


async def test_the_holds_of_a_dead_replica_run_out(backend: str, tmp_path: Path) -> None:
    claim = Claim("pool:p:uses", 1, 1.0)
    async with _pair(backend, tmp_path, hold_seconds=1.0) as (a, b):
        assert isinstance(await a.acquire([claim]), Grant)
        await a.__aexit__(None, None, None)  # dies: no renewal, no release
        refused = await b.acquire([claim])
        assert isinstance(refused, Refusal)
        assert 0 <= refused.retry_after <= 1.0
        answer = await eventually(
            lambda: b.acquire([claim]), lambda x: isinstance(x, Grant), within=30
        )
        assert isinstance(answer, Grant)


async def test_a_rate_admits_its_limit_per_window(backend: str, tmp_path: Path) -> None:
    rate = Claim("pool:p:rate", 2, 30.0, released=False)
    async with _pair(backend, tmp_path) as (a, b):
        first, second = await a.acquire([rate]), await b.acquire([rate])
        assert isinstance(first, Grant)
        assert isinstance(second, Grant)
        # A use is not given back when the run ends: the window frees it.
        a.release(first)
        third = await b.acquire([rate])
        assert isinstance(third, Refusal)
        assert 0 < third.retry_after <= 30.0


async def test_an_agents_concurrency_is_held_only_in_redis(backend: str, tmp_path: Path) -> None:
    # Without Redis each replica counts its agents' slots itself: no SQL per step.
    agent = Claim("agent:one", 1, 30.0, redis_only=True)
    async with _pair(backend, tmp_path) as (a, b):
        assert isinstance(await a.acquire([agent]), Grant)
        second = await b.acquire([agent])
        if backend == "redis":
            assert isinstance(second, Refusal)
        else:
            assert isinstance(second, Grant)
            assert second.backend == "none"


@pytest.mark.slow  # a redis-server process of its own
async def test_while_redis_is_away_pools_are_held_in_the_database(tmp_path: Path) -> None:
    server = RedisServer(free_port())
    await server.start()
    pool = Claim("pool:p:uses", 1, 30.0)
    agent = Claim("agent:one", 1, 30.0, redis_only=True)
    try:
        async with (
            Store(f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}") as store,
            Cache(server.url, namespace="test-limits", op_timeout=0.3) as cache,
            Limits(store, cache, hold_seconds=30.0) as limits,
        ):
            in_redis = await limits.acquire([pool, agent])
            assert isinstance(in_redis, Grant)
            assert in_redis.backend == "redis"
            await server.kill()
            # Redis fails under the call: the database holds the pool, the agent is let go.
            in_sql = await limits.acquire([pool, agent])
            assert isinstance(in_sql, Grant)
            assert in_sql.backend == "sql"
            assert in_sql.claims == (pool,)
            assert await limits.counts([pool.key]) == {pool.key: 1}
            assert isinstance(await limits.acquire([pool]), Refusal)
            # So is what a run used: charged to the database's token window.
            tokens = Claim("pool:t:tokens", 10, 30.0, released=False, weight=0)
            await limits.charge([dataclasses.replace(tokens, weight=25)])
            assert isinstance(await limits.acquire([tokens]), Refusal)
            # The Redis holds cannot be given back now; they run out there on their own.
            limits.release(in_redis)
            limits.release(in_sql)
            await eventually(lambda: limits.acquire([pool]), lambda x: isinstance(x, Grant))
    finally:
        await server.kill()


async def test_a_token_window_admits_runs_until_their_charged_tokens_spend_it(
    backend: str, tmp_path: Path
) -> None:
    check = Claim("pool:p:tokens", 100, 1.0, released=False, weight=0)
    charge = Claim("pool:p:tokens", 100, 1.0, released=False, weight=60)
    async with _pair(backend, tmp_path) as (a, b):
        # Checks take nothing: any number of runs start while the window has room.
        assert isinstance(await a.acquire([check]), Grant)
        assert isinstance(await b.acquire([check]), Grant)
        await a.charge([charge])
        assert isinstance(await b.acquire([check]), Grant)  # 60 of 100
        # A charge is recorded even past the limit: those tokens were spent.
        await b.charge([charge])
        refused = await a.acquire([check])
        assert isinstance(refused, Refusal)
        assert refused.claim == check
        assert 0 <= refused.retry_after <= 1.0
        # Other limits still count holders, not tokens.
        uses = Claim("pool:p:uses", 1, 30.0)
        assert isinstance(await b.acquire([uses]), Grant)
        assert isinstance(await b.acquire([uses]), Refusal)
        # A window later the charges are gone.
        answer = await eventually(
            lambda: b.acquire([check]), lambda x: isinstance(x, Grant), within=30
        )
        assert isinstance(answer, Grant)
