"""agents1000: a thousand connected agents and ten thousand steps in flight at once.

``AGENTS`` agents are served ``PER_PROCESS`` to a process by ``benchmarks.agent_host`` (each
agent with its own certificate, gRPC server, registration and Session). Then ``STEPS``
gated no-op steps are submitted, in tasks of ``TASK_STEPS`` independent steps, one after the
other, each watched to its final event. Every step waits on its agent's gate, so once the
orchestrator has assigned them all (the sum of ``active`` over ListAgents) they are truly
in flight together; then the gate opens and they all finish.

Measured: registration time of every agent, time until every step is assigned, the
orchestrator's resident memory with them all in flight (target <= 256 MiB), its CPU time
per step (submission to final event) and the time from opening the gate to the last final
event. The baseline is the same run scaled down 100 times (10 agents, 100 steps), first,
on its own orchestrator. ``--agents`` and ``--steps`` change the counts.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

from agentmesh.client import Client
from agentmesh.errors import DeadlineExceeded
from agentmesh.models import AgentStatus, Plan, StepSpec
from benchmarks.agent_host import GATE_SIGNAL
from benchmarks.mesh import Mesh, Profiling, TaskRun, cpu_seconds, memory_of, watch_task
from benchmarks.report import Measurement, share

NAME = "agents1000"
#: Changed by the runner's --agents and --steps.
AGENTS = 1000
STEPS = 10_000
PER_PROCESS = 100
#: Steps in one task (at most the plan limit, PlanLimits.max_steps = 1,000): with a thousand
#: agents connected, one SubmitTask of 1,000 steps outlasted the client's 30 s deadline on
#: this busy machine; tasks of 100 steps are accepted one after the other.
TASK_STEPS = 100
#: The baseline is the same run with this many times fewer agents and steps.
SCALE_DOWN = 100
TARGET_RSS_MB = 256.0
#: Generous: a thousand agents start on two busy cores.
REGISTER_TIMEOUT = 900.0
RUN_TIMEOUT = 900.0
#: How often ListAgents is read while waiting, per 1,000 agents (it lists every agent, and
#: at a thousand a listing every 0.2 s kept a busy orchestrator from doing anything else).
POLL_SECONDS_PER_1000 = 2.0
MIN_POLL_SECONDS = 0.2


def _poll_seconds(agents: int) -> float:
    return max(MIN_POLL_SECONDS, POLL_SECONDS_PER_1000 * agents / 1000)


#: The orchestrator's settings for this many agents on a busy machine: pings less often and
#: an agent is dropped only after a minute of silence (a thousand Sessions share two cores
#: with the agents themselves), and a step waits at its gate for as long as the run may take.
SETTINGS = {
    "AGENTMESH_PING_INTERVAL_SECONDS": "5",
    "AGENTMESH_AGENT_TIMEOUT_SECONDS": "60",
    "AGENTMESH_DEFAULT_STEP_TIMEOUT_SECONDS": str(RUN_TIMEOUT),
}


@dataclass(frozen=True, slots=True)
class Run:
    """What one size of the workload measured."""

    agents: int
    steps: int
    register: float
    assign: float
    #: Orchestrator VmRSS once every step was assigned, and its VmHWM then, MiB.
    rss: float
    peak: float
    cpu_per_step_ms: float
    complete_after_gate: float
    succeeded: int
    tasks: int
    streams_complete: int


def _plans(steps: int) -> list[Plan]:
    plans = []
    for first in range(0, steps, TASK_STEPS):
        count = min(TASK_STEPS, steps - first)
        plans.append(
            Plan(
                steps=tuple(
                    StepSpec(
                        id=f"s{i}",
                        capability="bench.work",
                        input={"seconds": 0, "gated": True},
                    )
                    for i in range(count)
                )
            )
        )
    return plans


async def _agents(client: Client) -> list[AgentStatus]:
    """ListAgents, or nothing when it timed out: an orchestrator flooded by a thousand
    registrations or ten thousand assignments may answer late, and this poll is how the
    benchmark watches, not what it measures."""
    try:
        return await client.list_agents()
    except DeadlineExceeded:
        print("  (ListAgents timed out; polling on)", flush=True)
        return []


async def _connected(mesh: Mesh, client: Client, count: int) -> None:
    async with asyncio.timeout(REGISTER_TIMEOUT):
        while True:
            agents = await _agents(client)
            if sum(a.connected for a in agents) >= count:
                return
            dead = mesh.dead_agents()
            if dead:
                raise RuntimeError(f"agent hosts exited: {dead}; see {mesh.folder / 'logs'}")
            await asyncio.sleep(_poll_seconds(count))


async def _assigned(
    client: Client, count: int, agents: int, watchers: list[asyncio.Task[None]]
) -> None:
    async with asyncio.timeout(RUN_TIMEOUT):
        while True:
            listed = await _agents(client)
            if sum(a.active for a in listed) >= count:
                return
            failed = [w for w in watchers if w.done()]
            if failed:
                # A task ended before its gate opened: a step failed; say how.
                await failed[0]
                raise RuntimeError(f"task {failed[0].get_name()} ended before the gate")
            await asyncio.sleep(_poll_seconds(agents))


async def measure(folder: Path, agents: int, steps: int, profiling: Profiling | None) -> Run:
    """One size of the workload on its own orchestrator."""
    per_agent = max(1, math.ceil(steps / agents))
    hosts = {
        f"host-{h:02d}": [f"a{i:04d}" for i in range(first, min(first + PER_PROCESS, agents))]
        for h, first in enumerate(range(0, agents, PER_PROCESS))
    }
    async with (
        Mesh(folder, profiling=profiling, settings=SETTINGS) as mesh,
        mesh.client() as client,
    ):
        started = time.time()
        await mesh.start_agent_hosts(
            hosts,
            # Twice the share of each: agents' capacity is not what is measured.
            concurrency=2 * per_agent,
            env={"AGENTMESH_BENCH_LOG_LEVEL": "warning"},
        )
        await _connected(mesh, client, agents)
        register = time.time() - started
        print(f"  {agents} agents ({len(hosts)} processes) connected in {register:.1f}s")
        cpu = cpu_seconds(mesh.orchestrator_pid)
        started = time.time()
        runs: list[TaskRun] = []
        watchers: list[asyncio.Task[None]] = []
        try:
            # One after the other: many large submissions at once on a busy orchestrator
            # outlast the client's 30 s SubmitTask deadline. Each is watched once accepted.
            for plan in _plans(steps):
                run = TaskRun(submitted=time.time())
                run.task_id = await client.submit(plan=plan)
                run.accepted = time.time()
                runs.append(run)
                watchers.append(
                    asyncio.create_task(watch_task(client, run), name=f"watch-{run.task_id}")
                )
            await _assigned(client, steps, agents, watchers)
            assign = time.time() - started
            memory = memory_of(mesh.orchestrator_pid)
            print(
                f"  {steps} steps assigned in {assign:.1f}s; orchestrator RSS "
                f"{memory['VmRSS']:.0f} MiB (peak {memory['VmHWM']:.0f} MiB)"
            )
            traced = await mesh.trace_memory()
            if traced is not None:
                print(f"  orchestrator's Python memory: {traced}")
            mesh.signal_agents(GATE_SIGNAL)
            opened = time.time()
            async with asyncio.timeout(RUN_TIMEOUT):
                await asyncio.gather(*watchers)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        complete = max(r.finished for r in runs) - opened
        used = cpu_seconds(mesh.orchestrator_pid) - cpu
    return Run(
        agents=agents,
        steps=steps,
        register=register,
        assign=assign,
        rss=memory["VmRSS"],
        peak=memory["VmHWM"],
        cpu_per_step_ms=used / steps * 1000,
        complete_after_gate=complete,
        succeeded=sum(r.succeeded for r in runs),
        tasks=len(runs),
        streams_complete=sum(r.complete for r in runs),
    )


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    small = max(1, AGENTS // SCALE_DOWN), max(1, STEPS // SCALE_DOWN)
    base = await measure(folder / "baseline", *small, None)
    print(f"  baseline done: {base.succeeded}/{base.tasks} tasks succeeded")
    full = await measure(folder / "full", AGENTS, STEPS, profiling)
    print(f"  full run done: {full.succeeded}/{full.tasks} tasks succeeded")
    baseline = f"{base.agents} agents, {base.steps} steps"
    return [
        Measurement(
            NAME,
            f"time to register {full.agents} agents",
            full.register,
            "s",
            base.register,
            baseline,
        ),
        Measurement(
            NAME, f"time to assign {full.steps} steps", full.assign, "s", base.assign, baseline
        ),
        Measurement(
            NAME,
            f"orchestrator RSS, {full.steps} steps in flight",
            full.rss,
            "MiB",
            base.rss,
            baseline,
            target=f"<= {TARGET_RSS_MB:.0f} MiB",
            ok=full.peak <= TARGET_RSS_MB,
        ),
        Measurement(NAME, "orchestrator peak RSS (VmHWM)", full.peak, "MiB", base.peak, baseline),
        Measurement(
            NAME,
            "orchestrator CPU per step",
            full.cpu_per_step_ms,
            "ms",
            base.cpu_per_step_ms,
            baseline,
        ),
        Measurement(
            NAME,
            "completion after the gate opened",
            full.complete_after_gate,
            "s",
            base.complete_after_gate,
            baseline,
        ),
        share(NAME, "tasks succeeded", full.succeeded, full.tasks),
        share(NAME, "event streams complete", full.streams_complete, full.tasks),
    ]
