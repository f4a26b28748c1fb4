"""Pub/sub across processes: one Redis subscription connection feeding the local fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from agentmesh.errors import describe
from agentmesh.models import JSON
from agentmesh.orchestrator.cache._fanout import LocalFanout
from agentmesh.orchestrator.cache._link import FAILURES, RedisCallFailed, RedisLink


class RemoteChannels:
    """Carries published messages between this process and every other one on the namespace.

    Messages travel as ``{"src": <instance id>, "msg": <message>}`` so a process can skip its
    own messages when Redis echoes them back: it has delivered them locally already. One
    :class:`PubSub` connection at a time, subscribed to exactly the channels that have local
    subscribers; it is rebuilt after every outage by :meth:`open`.
    """

    def __init__(
        self,
        link: RedisLink,
        fanout: LocalFanout,
        *,
        namespace: str,
        instance_id: str,
        op_timeout: float,
        poll_interval: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._link = link
        self._fanout = fanout
        self._prefix = f"{namespace}:"
        self._instance_id = instance_id
        self._op_timeout = op_timeout
        self._poll_interval = poll_interval
        self._log = log
        #: The live subscription connection; None while Redis is down.
        self._pubsub: PubSub | None = None
        #: Subscribers waiting for Redis to confirm their channel, by Redis channel name.
        self._acks: dict[str, asyncio.Event] = {}

    def envelope(self, message: JSON) -> str:
        """The wire form of ``message``, tagged with this process."""
        return json.dumps({"src": self._instance_id, "msg": message}, separators=(",", ":"))

    async def open(self, client: Redis) -> PubSub:
        """Connect and subscribe every channel that has local subscribers, confirmed by Redis."""
        pubsub = client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
            # From here on subscribe() sends its own SUBSCRIBE; the channel list is taken in
            # the same step, so no channel falls between the two.
            self._pubsub = pubsub
            pending = {self._prefix + c for c in self._fanout.channels()}
            if pending:
                await pubsub.subscribe(*pending)
            # Only then may the cache call Redis available: remote messages flow from now on.
            while pending:
                message = await pubsub.get_message(timeout=self._poll_interval)
                if message is not None:
                    self._handle(message)
                    if message["type"] == "subscribe":
                        pending.discard(message["channel"])
        except BaseException:
            self._pubsub = None
            await self.close(pubsub)
            raise
        return pubsub

    async def listen(self, pubsub: PubSub) -> None:
        """Deliver other processes' messages until Redis fails or is found down elsewhere."""
        try:
            while not self._link.went_down.is_set():
                message = await pubsub.get_message(timeout=self._poll_interval)
                if message is not None:
                    self._handle(message)
        except FAILURES as exc:
            self._link.mark_down(exc)
        finally:
            self._pubsub = None
            await self.close(pubsub)

    async def subscribe(self, channel: str) -> None:
        """Subscribe ``channel`` in Redis and wait (briefly) for the confirmation."""
        pubsub = self._pubsub
        if pubsub is None:
            return  # Redis is down; open() subscribes every local channel when it is back
        name = self._prefix + channel
        ack = self._acks.setdefault(name, asyncio.Event())
        try:
            await self._link.call(lambda _: pubsub.subscribe(name))
            # Confirmed means a message published right after we return reaches us.
            async with asyncio.timeout(self._op_timeout):
                await ack.wait()
        except RedisCallFailed:
            pass  # logged by the link; resubscribed by open() after the outage
        except TimeoutError:
            self._log.debug("cache.subscribe_unconfirmed", channel=channel)
        finally:
            if self._acks.get(name) is ack:
                del self._acks[name]

    async def unsubscribe(self, channel: str) -> None:
        """Drop ``channel`` in Redis; while Redis is down there is nothing to drop."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        name = self._prefix + channel
        with contextlib.suppress(RedisCallFailed):  # logged by the link
            await self._link.call(lambda _: pubsub.unsubscribe(name))

    async def close(self, pubsub: PubSub) -> None:
        """Close a subscription connection, giving up after ``op_timeout``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                # Typed from redis-py 8.2 on; untyped before (the project allows redis>=5).
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        except FAILURES as exc:
            self._log.debug("cache.pubsub_close_failed", error=describe(exc))

    def _handle(self, message: dict[str, Any]) -> None:
        kind, name = message.get("type"), str(message.get("channel"))
        if kind == "subscribe":
            if (ack := self._acks.get(name)) is not None:
                ack.set()
            return
        if kind != "message":
            return
        channel = name.removeprefix(self._prefix)
        try:
            envelope = json.loads(message["data"])
            source, body = envelope["src"], envelope["msg"]
        except (ValueError, TypeError, KeyError):
            self._log.warning("cache.bad_message", channel=channel)
            return
        if source == self._instance_id:
            return  # delivered locally when it was published
        self._fanout.deliver(channel, json.dumps(body, separators=(",", ":")))
