"""The benchmark agent: ``bench.work`` sleeps as long as it is told and says when it ran.

Run as ``python -m benchmarks.agent`` with the usual ``AGENTMESH_AGENT_*`` variables;
``AGENTMESH_BENCH_CONCURRENCY`` sets how many assignments it runs at once (default 64, so
that agent capacity is not what a benchmark measures unless it means to).
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

    @capability("bench.work", description="Sleep for `seconds`, then report when it ran.")
    async def work(self, data: Work, ctx: AssignmentContext) -> Done:
        started = time.time()
        if data.seconds:
            await asyncio.sleep(data.seconds)
        return Done(
            started=started,
            finished=time.time(),
            agent=os.environ.get("AGENTMESH_AGENT_NAME", self.name),
            tag=data.tag,
        )


def main() -> None:
    """Serve one benchmark agent until SIGTERM."""
    BenchAgent.max_concurrency = int(os.environ.get("AGENTMESH_BENCH_CONCURRENCY", "64"))
    configure_logging(os.environ.get("AGENTMESH_BENCH_LOG_LEVEL", "info"), stream=sys.stderr)
    run(BenchAgent())


if __name__ == "__main__":
    main()
