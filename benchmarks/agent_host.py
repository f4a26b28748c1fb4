"""Many benchmark agents in one process: ``python -m benchmarks.agent_host``.

``AGENTMESH_BENCH_AGENT_NAMES`` (comma-separated) names the agents; each is a
:class:`~benchmarks.agent.BenchAgent` served by its own
:class:`~agentmesh.agent.server.AgentServer`: its own certificate, gRPC server,
registration and Session, as if it were its own process, but sharing this event loop (a
thousand Python processes would not fit two cores). The rest of the ``AGENTMESH_AGENT_*``
variables apply to every one (``name`` excepted), as does ``AGENTMESH_BENCH_CONCURRENCY``.

``gated`` steps wait until the process gets SIGUSR1, so that a benchmark holds its steps in
flight and then releases them all at once (:meth:`benchmarks.mesh.Mesh.signal_agents`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from agentmesh.agent.server import AgentServer
from agentmesh.agent.settings import AgentSettings
from agentmesh.logs import configure_logging
from benchmarks.agent import BenchAgent

#: The signal that opens the gate of every agent of the process.
GATE_SIGNAL = signal.SIGUSR1


async def serve(names: list[str]) -> None:
    """Serve one agent per name until SIGTERM/SIGINT, then drain them all together."""
    stop = asyncio.Event()
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(GATE_SIGNAL, gate.set)
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for name in names:
            settings = AgentSettings(name=name)
            server = AgentServer(BenchAgent(name, gate), settings)
            servers.append(await stack.enter_async_context(server))
            if stop.is_set():
                break
        await stop.wait()
        # Together: one by one, a hundred drains (each deregistering) would take long.
        await asyncio.gather(*(s.drain() for s in servers))


def main() -> None:
    """Entry point; see the module docstring."""
    BenchAgent.max_concurrency = int(os.environ.get("AGENTMESH_BENCH_CONCURRENCY", "64"))
    configure_logging(os.environ.get("AGENTMESH_BENCH_LOG_LEVEL", "info"), stream=sys.stderr)
    names = [n for n in os.environ["AGENTMESH_BENCH_AGENT_NAMES"].split(",") if n]
    asyncio.run(serve(names))


if __name__ == "__main__":
    main()
