"""The benchmark agent: ``bench.work`` sleeps as long as it is told and says when it ran.

Run as ``python -m benchmarks.agent`` with the usual ``AGENTMESH_AGENT_*`` variables;
``AGENTMESH_BENCH_CONCURRENCY`` sets how many assignments it runs at once (default 64, so
that agent capacity is not what a benchmark measures unless it means to).
``benchmarks.agent_host`` serves many of these agents in one process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from pydantic import BaseModel, Field

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.logs import configure_logging


class Work(BaseModel):
    """How long to work, and an optional label echoed back."""

    seconds: float = Field(default=0.0, ge=0, le=60)
    tag: str = ""
    #: Wait for the agent's gate to open first (see benchmarks/agent_host.py), so that a
    #: benchmark can hold many steps in flight at once and then let them all finish.
    gated: bool = False


class Done(BaseModel):
    """When the work really ran, by this machine's wall clock (``time.time()``)."""

    started: float
    finished: float
    agent: str
    tag: str = ""


class BenchAgent(Agent):
    """Offers ``bench.work``."""

    name = "bench"
    version = "1.0.0"
    max_concurrency = 64

    def __init__(self, registered_as: str = "", gate: asyncio.Event | None = None) -> None:
        #: The name reported in each result: many agents may share this process and class.
        self.agent_name = registered_as or os.environ.get("AGENTMESH_AGENT_NAME", self.name)
        self._gate = gate

    @capability("bench.work", description="Sleep for `seconds`, then report when it ran.")
    async def work(self, data: Work, ctx: AssignmentContext) -> Done:
        if data.gated:
            if self._gate is None:
                raise RuntimeError("a gated step reached an agent without a gate")
            await self._gate.wait()
        started = time.time()
        if data.seconds:
            await asyncio.sleep(data.seconds)
        return Done(started=started, finished=time.time(), agent=self.agent_name, tag=data.tag)


def main() -> None:
    """Serve one benchmark agent until SIGTERM."""
    BenchAgent.max_concurrency = int(os.environ.get("AGENTMESH_BENCH_CONCURRENCY", "64"))
    configure_logging(os.environ.get("AGENTMESH_BENCH_LOG_LEVEL", "info"), stream=sys.stderr)
    run(BenchAgent())


if __name__ == "__main__":
    main()
