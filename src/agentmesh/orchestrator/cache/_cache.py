"""The cache itself: memory and Redis written together, outages absorbed and caught up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript

from agentmesh._tasks import TaskSet
from agentmesh.errors import Unavailable
from agentmesh.models import JSON
from agentmesh.orchestrator.cache._fanout import LocalFanout, Subscription
from agentmesh.orchestrator.cache._link import RedisCallFailed, RedisLink
from agentmesh.orchestrator.cache._memory import MemoryStore
from agentmesh.orchestrator.cache._remote import RemoteChannels

_REPLAY_BATCH = 500
_SCAN_COUNT = 500
_UNDECODABLE = object()
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")

_Kind = Literal["set", "delete"]
#: One replayed write: Redis key, JSON text (None for a delete) and milliseconds to live.
_Op = tuple[str, str | None, int]


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _dumps(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"))


class Cache:
    """A JSON key/value cache and pub/sub hub on Redis that keeps working when Redis does not.

    Every write lands in process memory (with its own expiry) and in Redis; reads ask Redis
    first while it is reachable, since another replica may have written, and fall back to
    memory. No Redis failure ever reaches the caller: each call is bounded by ``op_timeout``,
    the first failure trips a circuit breaker and marks Redis unavailable, and a background
    loop reconnects with backoff, replays the writes made in the meantime (latest value per
    key, remaining TTL kept, expired ones skipped) and only then uses Redis again.

    With an empty ``redis_url`` it is a single-process cache with the same API. Use it as an
    async context manager; Redis is connected on entry and closed on exit.
    """

    def __init__(
        self,
        redis_url: str | None,
        *,
        namespace: str = "agentmesh",
        default_ttl: float = 30.0,
        op_timeout: float = 0.5,
        reconnect_interval: float = 0.5,
    ) -> None:
        for name, value in (
            ("default_ttl", default_ttl),
            ("op_timeout", op_timeout),
            ("reconnect_interval", reconnect_interval),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._url = redis_url or None
        self._namespace = namespace
        #: What keys start with: the namespace, in braces on a Redis Cluster (a hash tag, so
        #: that every key is in one slot and multi-key reads and transactions keep working).
        self._keyspace = namespace
        self._default_ttl = default_ttl
        self._op_timeout = op_timeout
        self._reconnect_interval = reconnect_interval
        # Capped so a Redis that returns after a long outage is taken back within seconds.
        self._max_backoff = reconnect_interval * 10
        self._instance_id = uuid.uuid4().hex
        # A lazy logger, so logging configured after construction still applies.
        self._log = structlog.get_logger(
            __name__, namespace=namespace, instance=self._instance_id[:8]
        )
        self._memory = MemoryStore(sweep_interval=min(default_ttl, 1.0))
        self._fanout = LocalFanout()
        #: Keys written while Redis could not take them, with the kind of the latest write.
        self._dirty: dict[str, _Kind] = {}
        #: Bumped on every local write so a Redis read that raced one does not refresh memory.
        self._writes = 0
        self._entered = False
        self._link: RedisLink | None = None
        self._remote: RemoteChannels | None = None
        #: Lua scripts registered with Redis, by source (their SHA is cached by redis-py).
        self._scripts: dict[str, AsyncScript] = {}
        #: The supervisor (see :meth:`_supervise`); a crash of it is logged with its name.
        self._tasks = TaskSet()

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Cache can be entered only once")
        self._entered = True
        if self._url is None:
            return self
        link = self._link = RedisLink(
            self._url,
            op_timeout=self._op_timeout,
            reconnect_interval=self._reconnect_interval,
            log=self._log,
        )
        if link.target.kind == "cluster":
            self._keyspace = f"{{{self._namespace}}}"
        self._remote = RemoteChannels(
            link,
            self._fanout,
            namespace=self._namespace,
            instance_id=self._instance_id,
            op_timeout=self._op_timeout,
            poll_interval=min(self._reconnect_interval, 1.0),
            log=self._log,
        )
        try:
            # One attempt inline, so a healthy Redis is in use as soon as we return;
            # a dead one costs a few op_timeouts here and is retried in the background.
            pubsub = await self._attempt(link, self._remote)
        except BaseException:
            await link.aclose()
            raise
        self._tasks.spawn(
            self._supervise(link, self._remote, pubsub), name=f"agentmesh.cache[{self._namespace}]"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Subscriptions still open end now; they need not (un)subscribe in Redis on the way out.
        self._remote = None
        self._fanout.close_all()
        try:
            await self._tasks.aclose()
        finally:
            if self._link is not None:
                self._link.up = False
                await self._link.aclose()

    @property
    def available(self) -> bool:
        """True while Redis is reachable and up to date with this process's writes."""
        return self._usable() is not None

    @property
    def outages(self) -> int:
        """How many times Redis stopped answering since the cache started (each outage
        once): after one, Redis may have lost writes it had taken (a restart, a failover to
        a replica that was behind)."""
        return 0 if self._link is None else self._link.outages

    @property
    def shared(self) -> bool:
        """True when a Redis URL is configured (replicas share this cache through it)."""
        return self._url is not None

    # -- scripts -----------------------------------------------------------------------------

    async def script(self, source: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run the Lua ``source`` atomically in Redis on ``keys`` (namespaced here).

        Unlike every other call, a script has no in-memory stand-in: raises
        :class:`~agentmesh.errors.Unavailable` while Redis cannot run it, and the caller
        decides what holds instead.
        """
        link = self._usable()
        if link is None:
            raise Unavailable("Redis is not available")
        names = [self._key(k) for k in keys]
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = link.client.register_script(source)
        try:
            return await link.call(lambda r: script(keys=names, args=list(args), client=r))
        except RedisCallFailed as exc:
            raise Unavailable(f"Redis failed: {exc}") from None

    # -- key/value ---------------------------------------------------------------------------

    async def get(self, key: str) -> JSON | None:
        """The value under ``key``, or None if absent or expired."""
        return (await self.get_many([key])).get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSON]:
        """The values under ``keys``; absent or expired keys are left out."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        if (link := self._usable()) is not None:
            writes = self._writes
            names = [self._key(k) for k in wanted]
            try:
                raws, pttls = await link.call(partial(_mget_with_pttl, names))
            except RedisCallFailed:
                pass  # logged by the link; memory answers instead
            else:
                if writes == self._writes:
                    for key, raw, pttl in zip(wanted, raws, pttls, strict=True):
                        self._refresh(key, raw, pttl)
                return self._found(wanted, raws)
        return self._found(wanted, [self._memory.get(k) for k in wanted])

    async def set(self, key: str, value: JSON, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``default_ttl`` when None).

        Raises TypeError for a value that is not JSON-shaped and ValueError for a bad ttl;
        never raises because Redis is unreachable.
        """
        seconds = self._default_ttl if ttl is None else ttl
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError("ttl must be a positive number of seconds")
        raw = _dumps(value)
        self._memory.put(key, raw, seconds)
        self._writes += 1
        name = self._key(key)
        await self._write(key, "set", lambda r: r.set(name, raw, px=_millis(seconds)))

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        self._memory.discard(key)
        self._writes += 1
        name = self._key(key)
        await self._write(key, "delete", lambda r: r.delete(name))

    async def keys(self, prefix: str) -> list[str]:
        """Live keys starting with ``prefix`` (without the namespace), sorted."""
        if (link := self._usable()) is not None:
            pattern = _GLOB_SPECIAL.sub(r"\\\1", self._key(prefix)) + "*"
            try:
                names = await link.call(partial(_scan, pattern))
            except RedisCallFailed:
                pass  # logged by the link; memory answers instead
            else:
                start = len(self._keyspace) + 1
                return sorted(n[start:] for n in names)
        return self._memory.keys(prefix)

    # -- pub/sub -----------------------------------------------------------------------------

    async def publish(self, channel: str, message: JSON) -> None:
        """Deliver ``message`` to this process's subscribers now and to other processes' via Redis.

        Each subscriber anywhere gets it once; while Redis is down only local ones get it
        (nothing is queued for later: a late event is worse than a missed wake-up).
        """
        raw = _dumps(message)
        self._fanout.deliver(channel, raw)
        if (link := self._usable()) is not None and self._remote is not None:
            name, envelope = f"{self._namespace}:{channel}", self._remote.envelope(message)
            with contextlib.suppress(RedisCallFailed):  # logged by the link; local delivery stands
                await link.call(lambda r: r.publish(name, envelope))

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, max_pending: int = 1000
    ) -> AsyncIterator[Subscription]:
        """Receive the messages published on ``channel`` while the block runs.

        ``async with cache.subscribe("task:1") as messages: async for m in messages: ...``.
        The subscription is dropped (locally and in Redis) when the block exits or is cancelled.
        """
        subscription, first = self._fanout.add(channel, max_pending=max_pending)
        try:
            if first and self._remote is not None:
                await self._remote.subscribe(channel)
            yield subscription
        finally:
            if self._fanout.remove(subscription) and self._remote is not None:
                await self._remote.unsubscribe(channel)

    # -- internals: reads and writes ----------------------------------------------------------

    def _usable(self) -> RedisLink | None:
        link = self._link
        return link if link is not None and link.up else None

    def _key(self, key: str) -> str:
        return f"{self._keyspace}:{key}"

    async def _write(self, key: str, kind: _Kind, op: Callable[[Redis], Awaitable[object]]) -> None:
        if self._url is None:
            return
        if (link := self._usable()) is not None:
            try:
                await link.call(op)
                return
            except RedisCallFailed:
                pass  # logged by the link; the journal below makes up for it
        # Latest write per key wins; the value itself is read from memory at replay time.
        self._dirty[key] = kind

    def _refresh(self, key: str, raw: str | None, pttl: int) -> None:
        # Keep memory as fresh as Redis, so a later outage serves what other replicas wrote.
        if raw is None:
            self._memory.discard(key)
        elif pttl > 0:
            self._memory.put(key, raw, pttl / 1000)
        elif pttl == -1:  # written without expiry by someone else
            self._memory.put(key, raw, self._default_ttl)

    def _found(self, keys: list[str], raws: list[str | None]) -> dict[str, JSON]:
        found: dict[str, JSON] = {}
        for key, raw in zip(keys, raws, strict=True):
            # A stored JSON null is present; text that is not JSON counts as absent.
            if raw is not None and (value := self._decode(key, raw)) is not _UNDECODABLE:
                found[key] = value
        return found

    def _decode(self, key: str, raw: str) -> JSON:
        try:
            return json.loads(raw)
        except ValueError:
            self._log.warning("cache.bad_value", key=key)
            return _UNDECODABLE

    # -- internals: reconnect and catch-up ----------------------------------------------------

    async def _supervise(
        self, link: RedisLink, remote: RemoteChannels, pubsub: PubSub | None
    ) -> None:
        """Own the link for the cache's lifetime: listen while Redis is up, restore it when not."""
        delay = self._reconnect_interval
        while True:
            if pubsub is None:
                await asyncio.sleep(delay)
                pubsub = await self._attempt(link, remote)
                delay = self._reconnect_interval if pubsub else min(delay * 2, self._max_backoff)
            else:
                await remote.listen(pubsub)
                pubsub = None

    async def _attempt(self, link: RedisLink, remote: RemoteChannels) -> PubSub | None:
        """One try at bringing Redis back: ping, reopen pub/sub, replay the journal."""
        link.went_down.clear()
        try:
            await link.call(lambda r: r.ping())
            pubsub = await link.call(remote.open)
        except RedisCallFailed as exc:
            self._log.debug("cache.reconnect_failed", error=str(exc))
            return None
        try:
            replayed = await self._catch_up(link)
        except BaseException as exc:
            await remote.close(pubsub)
            if isinstance(exc, RedisCallFailed):
                self._log.debug("cache.catch_up_failed", error=str(exc))
                return None
            raise
        # No await since the journal ran dry: no write can slip between replay and going live.
        link.mark_up(replayed)
        return pubsub

    async def _catch_up(self, link: RedisLink) -> int:
        """Replay the journal into Redis until it is empty; returns the writes sent."""
        replayed = 0
        while self._dirty:
            batch = dict(itertools.islice(self._dirty.items(), _REPLAY_BATCH))
            for key in batch:
                del self._dirty[key]
            ops = self._replay_ops(batch)
            try:
                if ops:
                    await link.call(partial(_replay, ops))
            except BaseException:
                for key, kind in batch.items():
                    # A newer write made during the replay stays as it is.
                    self._dirty.setdefault(key, kind)
                raise
            replayed += len(ops)
        return replayed

    def _replay_ops(self, batch: dict[str, _Kind]) -> list[_Op]:
        ops: list[_Op] = []
        for key, kind in batch.items():
            if kind == "delete":
                ops.append((self._key(key), None, 0))
            elif (live := self._memory.get_with_ttl(key)) is not None:
                raw, left = live
                ops.append((self._key(key), raw, _millis(left)))
            # else: it expired while Redis was away; nothing to tell Redis
        return ops


async def _mget_with_pttl(names: list[str], client: Redis) -> tuple[list[str | None], list[int]]:
    # One transaction, so value and remaining TTL belong together. GET per key rather than
    # MGET: a Redis Cluster's pipelines refuse MGET (its keys share one slot all the same).
    async with client.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.get(name)
        for name in names:
            pipe.pttl(name)
        answers = await pipe.execute()
    return answers[: len(names)], answers[len(names) :]


async def _scan(pattern: str, client: Redis) -> list[str]:
    return [name async for name in client.scan_iter(match=pattern, count=_SCAN_COUNT)]


async def _replay(ops: list[_Op], client: Redis) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for name, raw, px in ops:
            if raw is None:
                pipe.delete(name)
            else:
                pipe.set(name, raw, px=px)
        await pipe.execute()
