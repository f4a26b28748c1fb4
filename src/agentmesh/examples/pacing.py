"""Simulated work: progress spaced by a configurable latency, so that a demo shows parallelism."""

from __future__ import annotations

import asyncio
import os

from agentmesh.agent import AssignmentContext

LATENCY_ENV = "AGENTMESH_DEMO_LATENCY"
DEFAULT_LATENCY = 0.3


def latency_for(size: int) -> float:
    """Seconds of simulated work for ``size`` characters of input.

    The base comes from ``AGENTMESH_DEMO_LATENCY`` (default 0.3 s, 0 turns it off)
    and is scaled by input size between half and three times the base.
    """
    try:
        base = float(os.environ.get(LATENCY_ENV, DEFAULT_LATENCY))
    except ValueError:
        base = DEFAULT_LATENCY
    return max(base, 0.0) * min(3.0, max(0.5, size / 600))


async def step(ctx: AssignmentContext, fraction: float, message: str, seconds: float) -> None:
    """Report ``message`` at ``fraction``, then work (sleep) for ``seconds``."""
    await ctx.progress(fraction, message)
    await asyncio.sleep(seconds)
