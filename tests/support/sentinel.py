"""A Redis primary, its replica and three sentinels of the test's own, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.support.network import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

SERVICE = "mesh"


class SentinelGroup:
    """redis-server primary and replica watched by three ``redis-server --sentinel``
    processes (quorum 2) that fail over one second after the primary stops answering."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # In the folder: a replica's full sync writes dump.rdb to the server's working
        # directory, which is otherwise the checkout.
        here = ("--dir", str(folder))
        self.primary = RedisServer(free_port(), *here)
        self.replica = RedisServer(
            free_port(), "--replicaof", "127.0.0.1", str(self.primary.port), *here
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[asyncio.subprocess.Process] = []

    @property
    def url(self) -> str:
        """The mesh's AGENTMESH_REDIS_URL for this group."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    async def start(self) -> None:
        """Start the servers and sentinels; return once the replica is in sync and every
        sentinel knows the primary."""
        await self.primary.start()
        await self.replica.start()
        async with self.replica.client() as replica:

            async def synced() -> str:
                info = await replica.info("replication")
                return str(info.get("master_link_status"))

            await eventually(synced, lambda status: status == "up", within=30)
        for port in self.sentinel_ports:
            self._sentinels.append(await self._start_sentinel(port))
        for index in range(len(self.sentinel_ports)):
            await eventually(
                lambda index=index: self._view_or_restart(index),  # type: ignore[misc]
                lambda view: view == (self.primary.port, 1, 2),
                within=30,
            )

    async def _start_sentinel(self, port: int) -> asyncio.subprocess.Process:
        config = self.folder / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return await asyncio.create_subprocess_exec(
            "redis-server",
            str(config),
            "--sentinel",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def _view_or_restart(self, index: int) -> tuple[int, int, int] | None:
        """The view of sentinel ``index``; one that has exited is started again on another
        port (None meanwhile): another process may take a port between free_port() finding
        it and the sentinel listening on it, and the sentinel then exits (a CI run's setup
        waited 30 s for one that never answered)."""
        if self._sentinels[index].returncode is not None:
            self.sentinel_ports[index] = free_port()
            self._sentinels[index] = await self._start_sentinel(self.sentinel_ports[index])
            return None
        return await self._sentinel_view(self.sentinel_ports[index])

    async def _sentinel_view(self, port: int) -> tuple[int, int, int] | None:
        """(primary port, replicas, other sentinels) as the sentinel on ``port`` sees them."""
        try:
            async with Redis(port=port, decode_responses=True, socket_timeout=2) as sentinel:
                master = await sentinel.execute_command("SENTINEL", "MASTER", SERVICE)
        except (RedisError, OSError):
            return None
        fields = (
            dict(zip(master[::2], master[1::2], strict=False))
            if isinstance(master, list)
            else master
        )
        return (
            int(fields["port"]),
            int(fields["num-slaves"]),
            int(fields["num-other-sentinels"]),
        )

    async def primary_port(self) -> int | None:
        """Where the sentinels say the primary is now."""
        view = await self._sentinel_view(self.sentinel_ports[0])
        return None if view is None else view[0]

    async def stop(self) -> None:
        for process in self._sentinels:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await self.primary.kill()
        await self.replica.kill()


@contextlib.asynccontextmanager
async def sentinel_group(folder: Path) -> AsyncIterator[SentinelGroup]:
    """A started :class:`SentinelGroup`, stopped at the end."""
    group = SentinelGroup(folder)
    try:
        await group.start()
        yield group
    finally:
        await group.stop()
