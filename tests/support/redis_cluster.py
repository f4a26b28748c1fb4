"""A three-node Redis Cluster of the test's own (no replicas), on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.network import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@contextlib.asynccontextmanager
async def redis_cluster(folder: Path) -> AsyncIterator[str]:
    """Start three cluster-enabled redis-servers, join them (``redis-cli --cluster create``),
    wait for ``cluster_state:ok`` and yield the mesh's ``redis+cluster://`` URL."""
    nodes = []
    while len(nodes) < 3:
        port = free_port()
        if port > 55000:  # a node also listens on port + 10000 (the cluster bus)
            continue
        nodes.append(
            RedisServer(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                str(folder),
            )
        )
    try:
        for node in nodes:
            await node.start()
        create = await asyncio.create_subprocess_exec(
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{n.port}" for n in nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert await create.wait() == 0, "redis-cli --cluster create failed"
        for node in nodes:
            async with node.client() as client:

                async def state(client: object = client) -> str:
                    info = await client.cluster("info")  # type: ignore[attr-defined]
                    return str(info.get("cluster_state"))

                await eventually(state, lambda s: s == "ok", within=30)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                await node.kill()
