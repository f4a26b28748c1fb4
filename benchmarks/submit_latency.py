"""submit_latency: how long ``SubmitTask`` takes to answer, one caller and 20 at once.

``N`` submissions of a small plan (three ``bench.work`` steps, a fan-in) over mTLS, first
from one caller one at a time, then from ``CLIENTS`` callers (each its own channel, hence
its own TLS connection) at once. The tasks really run on agents meanwhile. The baseline is a
``grpc.health.v1`` ``Check`` over the same channels, measured the same way in the same run:
what gRPC, TLS and Python cost before any agentmesh code runs. Target: p99 under 200 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.models import Plan, StepSpec, TaskState
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from agentmesh.wire.tasks import plan_to_proto
from benchmarks.mesh import CLIENT, Mesh, Profiling, cpu_seconds, settle
from benchmarks.report import Measurement, percentile

NAME = "submit_latency"
N = 300
CLIENTS = 20
WARM_UP = 20
AGENTS = ("sl-1", "sl-2")
TARGET_MS = 200.0

PLAN = Plan(
    steps=(
        StepSpec(id="a", capability="bench.work", input={"seconds": 0.01, "tag": "a"}),
        StepSpec(id="b", capability="bench.work", input={"seconds": 0.01, "tag": "b"}),
        StepSpec(
            id="c", capability="bench.work", input={"seconds": 0.01, "tag": "c"}, needs=("a", "b")
        ),
    )
)

Call = Callable[[], Awaitable[object]]


class Caller:
    """One mTLS channel with the two stubs measured on it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._orchestrator = pb_grpc.OrchestratorStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._submit = pb.SubmitTaskRequest(plan=plan_to_proto(PLAN))
        self._check = health_pb2.HealthCheckRequest(service="")

    async def submit(self) -> object:
        """One SubmitTask."""
        return await self._orchestrator.SubmitTask(self._submit, timeout=30)

    async def check(self) -> object:
        """One health Check."""
        return await self._health.Check(self._check, timeout=30)


async def _timed(call: Call, count: int) -> list[float]:
    """Seconds each of ``count`` back-to-back calls took."""
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        durations.append(time.perf_counter() - started)
    return durations


async def _concurrently(calls: list[Call], total: int) -> tuple[list[float], float]:
    """``total`` calls spread over ``calls`` running at once; durations and wall time."""
    share = [total // len(calls) + (i < total % len(calls)) for i in range(len(calls))]
    started = time.perf_counter()
    results = await asyncio.gather(*(_timed(c, n) for c, n in zip(calls, share, strict=True)))
    return [d for r in results for d in r], time.perf_counter() - started


def _ms(durations: list[float], p: float) -> float:
    return percentile(durations, p) * 1000


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    async with Mesh(folder, profiling=profiling) as mesh:
        await mesh.start_agents(AGENTS, concurrency=64)
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, len(AGENTS))
        credentials = channel_credentials(CertFiles.of(mesh.certs, IdentityKind.CLIENT, CLIENT))
        callers = [
            Caller(grpc.aio.secure_channel(mesh.address, credentials)) for _ in range(CLIENTS)
        ]
        try:
            for caller in callers:  # connect every channel and warm both paths up
                await _timed(caller.check, 2)
            await _timed(callers[0].submit, WARM_UP)
            one = callers[0]
            results = {
                ("sequential", "health"): await _timed(one.check, N),
                ("sequential", "submit"): await _timed(one.submit, N),
            }
            walls: dict[str, float] = {}
            cpu: dict[str, float] = {}
            for kind in ("health", "submit"):
                calls: list[Call] = [c.check if kind == "health" else c.submit for c in callers]
                before = cpu_seconds(mesh.orchestrator_pid)
                durations, wall = await _concurrently(calls, N)
                cpu[kind] = cpu_seconds(mesh.orchestrator_pid) - before
                results[(f"{CLIENTS} clients", kind)] = durations
                walls[kind] = wall
        finally:
            await asyncio.gather(*(c.channel.close() for c in callers))
        async with mesh.client() as client:
            states = await settle(client)
    submitted = sum(states.values())
    succeeded = states.get(TaskState.SUCCEEDED, 0)
    print(f"  the {submitted} tasks submitted ended: { {str(s): n for s, n in states.items()} }")

    print(
        f"  {CLIENTS} clients: orchestrator CPU {cpu['submit'] / N * 1000:.1f} ms per SubmitTask "
        f"(including the tasks it started, run meanwhile; {cpu['submit'] / walls['submit']:.0%} "
        f"of one core), {cpu['health'] / N * 1000:.2f} ms per health Check"
    )
    measurements = []
    for mode in ("sequential", f"{CLIENTS} clients"):
        submit, health = results[(mode, "submit")], results[(mode, "health")]
        for p in (50, 95, 99):
            measurements.append(
                Measurement(
                    NAME,
                    f"SubmitTask p{p}, {mode}",
                    _ms(submit, p),
                    "ms",
                    _ms(health, p),
                    "health Check",
                    target=f"< {TARGET_MS:.0f} ms" if p == 99 else "",
                    ok=_ms(submit, p) < TARGET_MS if p == 99 else None,
                )
            )
    measurements.append(
        Measurement(
            NAME,
            "submitted tasks that succeeded",
            100 * succeeded / submitted,
            "%",
            target="= 100%",
            ok=succeeded == submitted,
        )
    )
    measurements.append(
        Measurement(
            NAME,
            f"SubmitTask throughput, {CLIENTS} clients",
            N / walls["submit"],
            "/s",
            N / walls["health"],
            "health Check",
        )
    )
    return measurements
