"""The guarded connection to Redis: every call bounded in time and behind a circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pybreaker
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from agentmesh.errors import describe
from agentmesh.orchestrator.cache._connect import connect, parse

T = TypeVar("T")

#: What a dead, restarting, stalled or refusing Redis looks like from here. The built-in
#: TimeoutError (raised by ``asyncio.timeout``) is an OSError.
FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, pybreaker.CircuitBreakerError)


class RedisCallFailed(Exception):
    """Redis could not serve a call; the caller serves it from memory instead.

    Internal to the cache (never raised to its callers), unlike the mesh's own
    :class:`agentmesh.errors.Unavailable`.
    """


class RedisLink:
    """One Redis client and the answer to "may we use it right now?".

    ``up`` turns True only through :meth:`mark_up`, which the cache calls once everything
    written during an outage has been replayed; any failed call turns it False at once.
    The breaker trips on the first failure (``fail_max=1``) so that calls already on their
    way fail fast instead of each waiting out ``op_timeout`` against a dead server; its
    reset timeout is half the reconnect interval so the reconnect loop's probes are always
    let through.
    """

    def __init__(
        self,
        url: str,
        *,
        op_timeout: float,
        reconnect_interval: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        # The cache is the retry policy (reconnect loop and replay); retries inside
        # redis-py would only stretch every failed call towards op_timeout. A Sentinel URL
        # gives a client whose every new connection goes to the primary of the moment: after
        # a failover the reconnect loop's ping reaches the promoted replica, and the replay
        # catches it up.
        self.target = parse(url)
        self.client = connect(
            self.target,
            decode_responses=True,
            socket_timeout=op_timeout,
            socket_connect_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=1,
            reset_timeout=reconnect_interval / 2,
            # A caller giving up on us says nothing about Redis.
            exclude=[asyncio.CancelledError],
            throw_new_error_on_trip=False,
            name="redis",
        )
        self.up = False
        #: Set whenever Redis is found down; the pub/sub listener watches it.
        self.went_down = asyncio.Event()
        self._op_timeout = op_timeout
        self._log = log
        self._down_logged = False
        #: Times Redis went from answering to failing (each outage once).
        self.outages = 0

    async def call(self, op: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``op`` on the client within ``op_timeout``; :class:`RedisCallFailed` on failure.

        A cancellation of the caller always ends in :class:`asyncio.CancelledError`, even
        when redis-py swallows it (seen with redis-py 8.1 on Python 3.11: a script call
        returned normally with the cancel request still counted on the task): the caller's
        loop would otherwise go round again and whoever cancelled it wait for ever.
        """
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            # pybreaker's own async support needs Tornado; its context manager works for
            # asyncio because the state check and the bookkeeping are synchronous.
            with self.breaker.calling():
                async with asyncio.timeout(self._op_timeout):
                    result = await op(self.client)
        except FAILURES as exc:
            self.mark_down(exc)
            raise RedisCallFailed(describe(exc)) from exc
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError
        return result

    def mark_down(self, exc: BaseException) -> None:
        """Record that Redis failed; logs ``cache.redis_down`` once per outage."""
        if self.up:
            self.outages += 1
        self.up = False
        self.went_down.set()
        if self.breaker.current_state == pybreaker.STATE_CLOSED:
            # Failures seen by the pub/sub listener did not pass through the breaker.
            self.breaker.open()
        if not self._down_logged:
            self._down_logged = True
            self._log.warning("cache.redis_down", error=describe(exc))

    def mark_up(self, replayed: int) -> None:
        """Record that Redis answers and has caught up with ``replayed`` writes."""
        self.up = True
        if self._down_logged:
            self._down_logged = False
            self._log.info("cache.redis_restored", replayed=replayed)
        else:
            self._log.info("cache.redis_connected", replayed=replayed)

    async def aclose(self) -> None:
        """Close the client's connections, giving up after ``op_timeout``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                await self.client.aclose()
        except FAILURES as exc:
            self._log.warning("cache.close_failed", error=describe(exc))
