"""scale: 50 agent processes on one orchestrator, 200 tasks submitted at once.

Each agent is its own ``python -m benchmarks.agent`` process with its own certificate and
gRPC server (real processes, not servers sharing one). Measured: how long until all 50 are
registered (baseline: one agent alone, in the same run), then ``TASKS`` tasks of a 3-step
plan (two parallel steps and a fan-in) submitted together over ``CHANNELS`` client
connections and each watched to its final event: throughput, success rate, per-task
latency (baseline: the same plan alone on the same mesh), and the orchestrator's resident
memory (baseline: right after it started) and CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

from agentmesh.models import Plan, StepSpec
from benchmarks.mesh import Mesh, Profiling, TaskRun, cpu_seconds, log_times, memory_of, run_task
from benchmarks.report import Measurement, median, percentile, share

NAME = "scale"
AGENTS = tuple(f"sc-{i:02d}" for i in range(50))
CONCURRENCY = 8
TASKS = 200
CHANNELS = 10
STEP_SECONDS = 0.1
TARGET_RSS_MB = 512.0
BATCH_TIMEOUT = 120.0

PLAN = Plan(
    steps=(
        StepSpec(id="a", capability="bench.work", input={"seconds": STEP_SECONDS, "tag": "a"}),
        StepSpec(id="b", capability="bench.work", input={"seconds": STEP_SECONDS, "tag": "b"}),
        StepSpec(
            id="c",
            capability="bench.work",
            input={"seconds": STEP_SECONDS, "tag": "c"},
            needs=("a", "b"),
        ),
    )
)


async def _register(mesh: Mesh, names: tuple[str, ...]) -> float:
    """Spawn agents ``names``; seconds until every one is connected."""
    async with mesh.client() as client:
        started = time.time()
        await mesh.start_agents(names, concurrency=CONCURRENCY)
        await mesh.wait_for_agents(client, len(names), within=120)
        return time.time() - started


def _registration_breakdown(mesh: Mesh, spawned: float) -> str:
    starts, waits = [], []
    for name in AGENTS:
        times = log_times(mesh.agent_log(name), "agent.serving", "registration.registered")
        if len(times) == 2:
            starts.append(times["agent.serving"] - spawned)
            waits.append(times["registration.registered"] - times["agent.serving"])
    if not starts:
        return "no agent logs to break registration down"
    return (
        f"spawn->serving median {median(starts):.2f}s (last {max(starts):.2f}s: Python start-up "
        f"of {len(AGENTS)} processes on this machine); serving->registered median "
        f"{median(waits) * 1000:.0f} ms (max {max(waits) * 1000:.0f} ms)"
    )


async def _batch(mesh: Mesh) -> tuple[list[TaskRun | BaseException], float, float]:
    """Submit every task at once; their runs, the batch's wall time and orchestrator CPU."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(mesh.client()) for _ in range(CHANNELS)]
        for client in clients:  # connect each channel before the clock starts
            await client.list_agents()
        cpu = cpu_seconds(mesh.orchestrator_pid)
        started = time.time()
        async with asyncio.timeout(BATCH_TIMEOUT):
            runs = await asyncio.gather(
                *(run_task(clients[i % CHANNELS], PLAN) for i in range(TASKS)),
                return_exceptions=True,
            )
        wall = time.time() - started
        return list(runs), wall, cpu_seconds(mesh.orchestrator_pid) - cpu


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    async with Mesh(folder, profiling=profiling) as mesh:
        idle_rss = memory_of(mesh.orchestrator_pid)["VmRSS"]
        one_agent = await _register(mesh, ("sc-probe",))
        await mesh.stop_agents(["sc-probe"])
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, 0)
        spawned = time.time()
        all_agents = await _register(mesh, AGENTS)
        print(f"  {len(AGENTS)} agents registered in {all_agents:.2f}s")
        print(f"  {_registration_breakdown(mesh, spawned)}")
        agent_rss = [memory_of(pid)["VmRSS"] for pid in mesh.agent_pids()]
        print(
            f"  agent processes: {len(agent_rss)}, RSS median {median(agent_rss):.0f} MiB, "
            f"total {sum(agent_rss):.0f} MiB"
        )
        async with mesh.client() as client:
            alone = []
            for _ in range(3):
                result = await run_task(client, PLAN)
                alone.append(result.makespan)
        runs, wall, cpu = await _batch(mesh)
        memory = memory_of(mesh.orchestrator_pid)

    done = [r for r in runs if isinstance(r, TaskRun)]
    errors = Counter(type(r).__name__ for r in runs if not isinstance(r, TaskRun))
    succeeded = [r for r in done if r.succeeded]
    latencies = [r.makespan for r in succeeded]
    used = {t.agent for r in succeeded for t in r.steps.values()}
    print(
        f"  batch: {len(succeeded)}/{TASKS} succeeded in {wall:.2f}s"
        + (f"; errors {dict(errors)}" if errors else "")
        + f"; {len(used)} agents took work; orchestrator CPU {cpu:.1f}s "
        f"({cpu / wall:.0%} of one core, {cpu / TASKS * 1000:.0f} ms per task); "
        f"task latency p50 {percentile(latencies, 50):.2f}s p95 {percentile(latencies, 95):.2f}s"
    )
    alone_median = median(alone)
    return [
        Measurement(
            NAME, f"time to register {len(AGENTS)} agents", all_agents, "s", one_agent, "1 agent"
        ),
        Measurement(
            NAME,
            f"throughput, {TASKS} tasks at once",
            len(succeeded) / wall,
            "tasks/s",
            TASKS / alone_median,
            "200 / one task's makespan",
        ),
        share(NAME, "tasks succeeded", len(succeeded), TASKS),
        share(NAME, "event streams complete", sum(r.complete for r in done), TASKS),
        Measurement(
            NAME,
            "task latency p50 in the batch",
            percentile(latencies, 50),
            "s",
            alone_median,
            "one task alone",
        ),
        Measurement(
            NAME,
            "orchestrator RSS after the batch",
            memory["VmRSS"],
            "MiB",
            idle_rss,
            "idle orchestrator",
            target=f"< {TARGET_RSS_MB:.0f} MiB",
            ok=memory["VmHWM"] < TARGET_RSS_MB,
        ),
        Measurement(NAME, "orchestrator peak RSS (VmHWM)", memory["VmHWM"], "MiB"),
    ]
