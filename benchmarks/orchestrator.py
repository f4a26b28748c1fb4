"""An orchestrator process for the benchmarks: ``python -m benchmarks.orchestrator``.

Configured like ``agentmesh serve`` (``AGENTMESH_*`` variables), but it may listen on
port 0: once serving it writes the bound port to ``AGENTMESH_BENCH_PORT_FILE`` (and that of
the HTTP API, when ``AGENTMESH_HTTP_LISTEN`` is set, to ``AGENTMESH_BENCH_HTTP_PORT_FILE``). With
``AGENTMESH_BENCH_PROFILE=<file>`` it runs under cProfile and writes the stats there
when it stops (SIGTERM or SIGINT).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import signal
import sys
from pathlib import Path

from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator


def _announce_http(port: int) -> None:
    http_port_file = os.environ.get("AGENTMESH_BENCH_HTTP_PORT_FILE", "")
    if http_port_file:
        Path(http_port_file).write_text(str(port))


async def serve(port_file: Path) -> None:
    """Serve until SIGTERM/SIGINT, announcing the port through ``port_file``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Orchestrator(Settings()) as orchestrator:
        _announce_http(orchestrator.http_port)  # first: the port file says both are there
        partial = port_file.with_suffix(".partial")
        partial.write_text(str(orchestrator.port))
        partial.replace(port_file)  # atomic: the parent never reads half a number
        await stop.wait()


def main() -> None:
    """Entry point; see the module docstring."""
    configure_logging(os.environ.get("AGENTMESH_BENCH_LOG_LEVEL", "info"), stream=sys.stderr)
    port_file = Path(os.environ["AGENTMESH_BENCH_PORT_FILE"])
    profile = os.environ.get("AGENTMESH_BENCH_PROFILE", "")
    if not profile:
        asyncio.run(serve(port_file))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(port_file))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    main()
