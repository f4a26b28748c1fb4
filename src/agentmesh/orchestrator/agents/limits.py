"""Limits that hold across orchestrator replicas: an agent's concurrency, resource pools.

One primitive: a :class:`~agentmesh.orchestrator.store.Claim` asks for a hold on a key that
at most ``limit`` holders may hold at once; a step acquires all of its claims or none
(:meth:`Limits.acquire`), holds them while it runs (renewed in the background) and releases
them when it ends. A hold runs out unless renewed, so a dead replica's holds free themselves
after ``hold_seconds``. A rate is the same with holds that are never released: each use
holds the key for one window. A token window weighs its holds: a run only checks that the
window is not spent (a claim of weight 0), and what it used is charged when its result
arrives (:meth:`Limits.charge`), a hold of that weight for one window.

Holds live in Redis when it is configured and reachable (:class:`RedisHolds`, one Lua script
per acquisition, Redis's own clock), else in the database
(:class:`~agentmesh.orchestrator.store.holds.Holds`). Claims marked ``redis_only`` (an
agent's concurrency: every step would pay a SQL transaction for it) are kept only in Redis;
without it each replica counts its own slots, as it always did.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import structlog

from agentmesh._tasks import TaskSet
from agentmesh.errors import Unavailable
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.store import Claim, Refusal, Store

log = structlog.get_logger(__name__)

#: Published (on the cache's pub/sub) when a full limit got room: waiters anywhere retry.
FREED_CHANNEL = "limits-freed"
#: Longest a refused step waits before it asks again without being told of room.
MAX_RETRY_SECONDS = 1.0

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local weight = tonumber(ARGV[3 * i + 1])
  local used = 0
  if weight == 1 then
    used = redis.call('ZCARD', key)
  else
    -- Weighted holds are members "holder#weight" (a token window's charges).
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      used = used + (tonumber(string.match(member, '#(%d+)$')) or 1)
    end
  end
  if used >= tonumber(ARGV[3 * i - 1]) then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {i, tonumber(first[2]) - now}
  end
end
for i, key in ipairs(KEYS) do
  local ms = tonumber(ARGV[3 * i])
  local weight = tonumber(ARGV[3 * i + 1])
  if weight > 0 then
    local member = ARGV[1]
    if weight ~= 1 then member = member .. '#' .. weight end
    redis.call('ZADD', key, now + ms, member)
    if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
  end
end
return {0, 0}
"""

_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ms, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end
return 0
"""

_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local full = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 1]) then full = full + 1 end
  redis.call('ZREM', key, ARGV[1])
end
return full
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ms, ARGV[i + 1])
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
return 0
"""

_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return counts
"""


def _key(key: str) -> str:
    # One hash tag for every limit: a script may touch several keys, which Redis Cluster
    # allows only within one slot.
    return "limits:{mesh}:" + key


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisHolds:
    """The Redis half of the primitive: a sorted set per key, holders scored by expiry."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def acquire(self, claims: Sequence[Claim], holder: str) -> Refusal | None:
        """All of ``claims`` for ``holder`` or none; Unavailable when Redis cannot answer."""
        args: list[str | int] = [holder]
        for claim in claims:
            args += [claim.limit, _ms(claim.seconds), claim.weight]
        index, left = await self._cache.script(_ACQUIRE, [_key(c.key) for c in claims], args)
        if int(index) == 0:
            return None
        return Refusal(claims[int(index) - 1], max(0.0, int(left) / 1000))

    async def charge(self, claim: Claim, holder: str) -> None:
        """Record ``claim``'s weight for its ``seconds``, full or not."""
        member = f"{holder}#{claim.weight}"
        await self._cache.script(_CHARGE, [_key(claim.key)], [member, _ms(claim.seconds)])

    async def release(self, claims: Sequence[Claim], holder: str) -> bool:
        """Give the holds up; True when one of the keys was full (someone may be waiting)."""
        args: list[str | int] = [holder, *(c.limit for c in claims)]
        full = await self._cache.script(_RELEASE, [_key(c.key) for c in claims], args)
        return int(full) > 0

    async def renew(self, holds: Sequence[tuple[str, str]], seconds: float) -> None:
        """Extend the ``(key, holder)`` holds (lost ones stay lost)."""
        keys = [_key(k) for k, _ in holds]
        await self._cache.script(_RENEW, keys, [_ms(seconds), *(h for _, h in holds)])

    async def counts(self, keys: Sequence[str]) -> dict[str, int]:
        """Live holds per key."""
        found = await self._cache.script(_COUNT, [_key(k) for k in keys], [])
        return {k: int(n) for k, n in zip(keys, found, strict=True) if int(n)}


@dataclass(frozen=True, slots=True)
class Grant:
    """Holds taken by one acquisition, and where they live."""

    holder: str
    claims: tuple[Claim, ...]
    backend: Literal["redis", "sql", "none"]

    @property
    def held(self) -> tuple[Claim, ...]:
        """The claims to renew and release (a rate's use is neither)."""
        return tuple(c for c in self.claims if c.released)


class Limits:
    """Acquires, renews and releases holds on shared limits, in Redis or else the database.

    ``async with Limits(store, cache, hold_seconds=...)`` renews every hold held here every
    third of ``hold_seconds`` and hears of room made on other replicas.
    """

    def __init__(self, store: Store, cache: Cache, *, hold_seconds: float) -> None:
        self._store = store
        self._cache = cache
        self._redis = RedisHolds(cache)
        self.hold_seconds = hold_seconds
        self._held: dict[str, Grant] = {}
        self._freed = asyncio.Event()
        self._tasks = TaskSet()

    async def __aenter__(self) -> Limits:
        self._tasks.spawn(self._renew(), name="limits-renew")
        self._tasks.spawn(self._listen(), name="limits-freed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.aclose()

    @property
    def shared_agents(self) -> bool:
        """True when agents' concurrency is held across replicas (Redis answers)."""
        return self._cache.available

    def freed(self) -> asyncio.Event:
        """An event set the next time a limit gets room (take it before acquiring)."""
        return self._freed

    async def acquire(self, claims: Iterable[Claim]) -> Grant | Refusal:
        """Hold every claim (deduplicated by key), or none: then the first full one."""
        unique = tuple({c.key: c for c in claims}.values())
        holder = uuid.uuid4().hex
        if self._cache.available:
            try:
                refused = await self._redis.acquire(unique, holder)
            except Unavailable as exc:
                log.warning("limits.redis_unavailable", error=str(exc))
            else:
                return refused or self._hold(Grant(holder, unique, "redis"))
        in_sql = tuple(c for c in unique if not c.redis_only)
        if not in_sql:
            return Grant(holder, (), "none")
        refused = await self._store.acquire_holds(in_sql, holder)
        return refused or self._hold(Grant(holder, in_sql, "sql"))

    async def charge(self, claims: Iterable[Claim]) -> None:
        """Record what a run used (claims weighted by it) where holds are kept now.

        Unlike :meth:`acquire` this never refuses: the run is over, what it used counts
        against the runs that start after it. A failure is logged, not raised (the window
        is only a little less full for it).
        """
        for claim in claims:
            if claim.weight <= 0 or (claim.redis_only and not self._cache.available):
                continue
            holder = uuid.uuid4().hex
            try:
                if self._cache.available:
                    try:
                        await self._redis.charge(claim, holder)
                        continue
                    except Unavailable as exc:
                        log.warning("limits.redis_unavailable", error=str(exc))
                await self._store.charge_hold(claim, holder)
            except Exception as exc:
                log.warning("limits.charge_failed", key=claim.key, error=repr(exc))

    def _hold(self, grant: Grant) -> Grant:
        if grant.held:
            self._held[grant.holder] = grant
        return grant

    def release(self, grant: Grant) -> None:
        """Give ``grant``'s holds up, in the background (a step's end need not wait for it)."""
        if self._held.pop(grant.holder, None) is None:
            return
        self._tasks.spawn(self._release(grant), name=f"limits-release-{grant.holder[:8]}")

    async def _release(self, grant: Grant) -> None:
        held = grant.held
        try:
            if grant.backend == "redis":
                if not await self._redis.release(held, grant.holder):
                    return  # nobody can be waiting for a limit that was not full
            else:
                await self._store.release_holds((c.key for c in held), grant.holder)
        except Exception as exc:  # the holds run out on their own
            log.warning("limits.release_failed", error=repr(exc))
        self._wake()
        await self._cache.publish(FREED_CHANNEL, "freed")

    def _wake(self) -> None:
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    async def counts(self, keys: Sequence[str]) -> dict[str, int]:
        """Live holds per key, mesh-wide, where holds are kept now (empty when unknown)."""
        if not keys:
            return {}
        if self._cache.available:
            try:
                return await self._redis.counts(keys)
            except Unavailable:
                return {}
        return await self._store.hold_counts(keys)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.hold_seconds / 3)
            grants = list(self._held.values())
            for backend in ("redis", "sql"):
                holds = [(c.key, g.holder) for g in grants if g.backend == backend for c in g.held]
                if not holds:
                    continue
                try:
                    if backend == "redis":
                        await self._redis.renew(holds, self.hold_seconds)
                    else:
                        await self._store.renew_holds(holds, self.hold_seconds)
                except Exception as exc:
                    # Renewed every third of their life: one missed round loses nothing.
                    log.warning("limits.renew_failed", backend=backend, error=repr(exc))

    async def _listen(self) -> None:
        async with self._cache.subscribe(FREED_CHANNEL) as messages:
            async for _ in messages:
                self._wake()
