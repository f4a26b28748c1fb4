"""A private redis-server that a test may kill, pause and restart, on a free fixed port."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.support.waiting import eventually


class RedisServer:
    """A redis-server of the test's own, on a fixed port, that the test may stop and restart."""

    def __init__(self, port: int, *extra: str) -> None:
        """``extra``: more redis-server arguments (e.g. ``--replicaof 127.0.0.1 6380``)."""
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._extra = extra
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start (or restart) the server on the same port and wait until it answers."""
        assert self._proc is None, "already running"
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            *self._extra,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with self.client() as client:

            async def answers() -> bool:
                try:
                    return bool(await client.ping())
                except (RedisError, OSError):
                    return False

            await eventually(answers, bool, interval=0.02)

    async def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye, taking its data with it."""
        if self._proc is None:
            return
        self._proc.kill()
        await self._proc.wait()
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def client(self) -> Redis:
        """A plain client, independent of the cache under test."""
        return Redis.from_url(self.url, decode_responses=True, socket_timeout=2)
