"""noop: the issue's no-op workloads, each beside a plain-asyncio scheduler of the same DAG.

Four ``benchmarks.agent`` processes (concurrency 256) run ``bench.work`` with ``seconds=0``,
so what is measured is the cost per step of the orchestrator and of the agent SDK, not any
work:

- **wide**: one task of ``WIDE`` independent steps (steps/s);
- **chain**: one task of ``CHAIN`` steps, each ``needs`` the one before (ms/step);
- **many**: ``MANY`` tasks of 3 steps (two in parallel and a fan-in) submitted at once over
  ``CHANNELS`` connections, each watched to its final event (tasks/s, latency p50/p99).

The floor (the baseline) is the same DAG scheduled in this process by :func:`floor`:
dependency counters, a ready queue and one asyncio task per step that does nothing. It
is what scheduling alone costs in Python on this machine, with no network, no TLS and
no durability. Also reported: the CPU time per step (from ``/proc``) of the orchestrator
and of the four agent processes together, and the orchestrator's CPU per task of the
batch beside what a bare gRPC server spends on one unary call and one three-message
stream (:mod:`benchmarks.grpc_floor`, measured first): the transport's share of a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from agentmesh.models import Plan, StepSpec
from benchmarks import grpc_floor
from benchmarks.mesh import Mesh, Profiling, TaskRun, cpu_seconds, run_task
from benchmarks.report import Measurement, percentile, share

NAME = "noop"
AGENTS = ("np-1", "np-2", "np-3", "np-4")
CONCURRENCY = 256
WIDE = 1000
CHAIN = 200
MANY = 500
CHANNELS = 10
TIMEOUT = 120.0

Dag = Sequence[tuple[str, tuple[str, ...]]]


def _noop(step_id: str, needs: tuple[str, ...] = ()) -> StepSpec:
    return StepSpec(id=step_id, capability="bench.work", input={"seconds": 0}, needs=needs)


def wide_dag() -> Dag:
    """``WIDE`` independent steps."""
    return [(f"s{i}", ()) for i in range(WIDE)]


def chain_dag() -> Dag:
    """``CHAIN`` steps, each after the one before."""
    return [(f"s{i}", (f"s{i - 1}",) if i else ()) for i in range(CHAIN)]


def small_dag() -> Dag:
    """Two parallel steps and a fan-in."""
    return [("a", ()), ("b", ()), ("c", ("a", "b"))]


def plan_of(dag: Dag) -> Plan:
    """The agentmesh plan of ``dag``: one no-op ``bench.work`` step per node."""
    return Plan(steps=tuple(_noop(step, needs) for step, needs in dag))


async def _nothing() -> None:
    await asyncio.sleep(0)


async def floor(dag: Dag) -> None:
    """Run ``dag`` in this process: dependency counters, a ready queue, a task per step."""
    waiting = {step: len(needs) for step, needs in dag}
    dependants: dict[str, list[str]] = {step: [] for step, _ in dag}
    for step, needs in dag:
        for need in needs:
            dependants[need].append(step)
    ready = [step for step, count in waiting.items() if not count]
    remaining = len(waiting)
    finished = asyncio.Event()

    def done(step: str) -> None:
        nonlocal remaining
        remaining -= 1
        for dependant in dependants[step]:
            waiting[dependant] -= 1
            if not waiting[dependant]:
                start(dependant)
        if not remaining:
            finished.set()

    def start(step: str) -> None:
        asyncio.create_task(_nothing()).add_done_callback(lambda _: done(step))

    for step in ready:
        start(step)
    await finished.wait()


async def _floor_seconds(dag: Dag, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of :func:`floor` on ``dag``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await floor(dag)
        times.append(time.perf_counter() - started)
    return min(times)


async def _floor_many(dag: Dag) -> tuple[float, list[float]]:
    """``MANY`` copies of ``dag`` at once in this process: wall time and each one's latency."""
    started = time.perf_counter()

    async def one() -> float:
        await floor(dag)
        return time.perf_counter() - started

    latencies = await asyncio.gather(*(one() for _ in range(MANY)))
    return time.perf_counter() - started, list(latencies)


def _cpu(mesh: Mesh) -> tuple[float, float]:
    """CPU seconds used so far by the orchestrator, and by the agents together."""
    return cpu_seconds(mesh.orchestrator_pid), mesh.agents_cpu_seconds()


def _since(mesh: Mesh, before: tuple[float, float]) -> tuple[float, float]:
    now = _cpu(mesh)
    return now[0] - before[0], now[1] - before[1]


async def _one(mesh: Mesh, plan: Plan) -> tuple[TaskRun, tuple[float, float]]:
    """Run ``plan`` once, watched to its final event; the run, and the CPU seconds of the
    orchestrator and of the agents."""
    async with mesh.client() as client:
        await client.list_agents()  # connect before the clock starts
        cpu = _cpu(mesh)
        async with asyncio.timeout(TIMEOUT):
            result = await run_task(client, plan)
        return result, _since(mesh, cpu)


async def _many(
    mesh: Mesh, plan: Plan
) -> tuple[list[TaskRun | BaseException], float, tuple[float, float], Counter[str]]:
    """``MANY`` tasks at once over ``CHANNELS`` connections: runs, wall time, CPU seconds
    (orchestrator, agents), and the SQL statements the orchestrator ran meanwhile."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(mesh.client()) for _ in range(CHANNELS)]
        for client in clients:
            await client.list_agents()
        statements = await mesh.statements()
        cpu = _cpu(mesh)
        started = time.time()
        async with asyncio.timeout(TIMEOUT):
            runs = await asyncio.gather(
                *(run_task(clients[i % CHANNELS], plan) for i in range(MANY)),
                return_exceptions=True,
            )
        wall, cpu = time.time() - started, _since(mesh, cpu)
        return list(runs), wall, cpu, await mesh.statements() - statements


def _ms(seconds: float, steps: int) -> float:
    return seconds / steps * 1000


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    floor_wide = await _floor_seconds(wide_dag())
    floor_chain = await _floor_seconds(chain_dag())
    floor_many_wall, floor_latencies = await _floor_many(small_dag())
    transport = await grpc_floor.measure()
    async with Mesh(folder, profiling=profiling) as mesh:
        await mesh.start_agents(AGENTS, concurrency=CONCURRENCY)
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, len(AGENTS))
            await run_task(client, plan_of(small_dag()))  # warm-up
        wide, (wide_cpu, wide_agents) = await _one(mesh, plan_of(wide_dag()))
        chain, (chain_cpu, chain_agents) = await _one(mesh, plan_of(chain_dag()))
        runs, many_wall, (many_cpu, many_agents), statements = await _many(
            mesh, plan_of(small_dag())
        )

    done = [r for r in runs if isinstance(r, TaskRun)]
    errors = sorted({type(r).__name__ for r in runs if not isinstance(r, TaskRun)})
    succeeded = [r for r in done if r.succeeded]
    latencies = [r.makespan for r in succeeded]
    print(
        f"  wide: {wide.makespan:.2f}s, orchestrator CPU {wide_cpu:.2f}s; chain: "
        f"{chain.makespan:.2f}s, CPU {chain_cpu:.2f}s; many: {len(succeeded)}/{MANY} in "
        f"{many_wall:.2f}s, CPU {many_cpu:.2f}s ({many_cpu / many_wall:.0%} of one core)"
        + (f"; errors {errors}" if errors else "")
    )
    floor_tasks = MANY / floor_many_wall
    return [
        Measurement(
            NAME,
            f"{WIDE} no-op steps in one task",
            WIDE / wide.makespan,
            "steps/s",
            WIDE / floor_wide,
            "plain asyncio",
        ),
        Measurement(
            NAME,
            "orchestrator CPU per step, wide",
            _ms(wide_cpu, WIDE),
            "ms",
            target="<= 0.2 ms",
            ok=_ms(wide_cpu, WIDE) <= 0.2,
        ),
        Measurement(
            NAME,
            f"chain of {CHAIN} no-op steps",
            _ms(chain.makespan, CHAIN),
            "ms/step",
            _ms(floor_chain, CHAIN),
            "plain asyncio",
        ),
        Measurement(
            NAME,
            "agent SDK CPU per step, wide",
            _ms(wide_agents, WIDE),
            "ms",
            target="<= 0.2 ms",
            ok=_ms(wide_agents, WIDE) <= 0.2,
        ),
        Measurement(NAME, "orchestrator CPU per step, chain", _ms(chain_cpu, CHAIN), "ms"),
        Measurement(NAME, "agent SDK CPU per step, chain", _ms(chain_agents, CHAIN), "ms"),
        Measurement(
            NAME,
            f"{MANY} tasks of 3 no-op steps at once",
            len(succeeded) / many_wall,
            "tasks/s",
            floor_tasks,
            "plain asyncio",
        ),
        Measurement(
            NAME,
            "task latency p50 in the batch",
            percentile(latencies, 50),
            "s",
            percentile(floor_latencies, 50),
            "plain asyncio",
        ),
        Measurement(
            NAME,
            "task latency p99 in the batch",
            percentile(latencies, 99),
            "s",
            percentile(floor_latencies, 99),
            "plain asyncio",
            target="<= 1 s",
            ok=percentile(latencies, 99) <= 1.0,
        ),
        Measurement(NAME, "orchestrator CPU per step, many tasks", _ms(many_cpu, 3 * MANY), "ms"),
        Measurement(
            NAME,
            "orchestrator CPU per task, many tasks",
            _ms(many_cpu, MANY),
            "ms",
            transport.task_ms,
            "bare gRPC unary + stream",
        ),
        Measurement(NAME, "agent SDK CPU per step, many tasks", _ms(many_agents, 3 * MANY), "ms"),
        # Counted through SQLAlchemy: on SQLite the writer's INSERTs and UPDATEs go to the
        # driver directly and are not, its transactions and every read are.
        Measurement(NAME, "transactions, many tasks", statements["COMMIT"] / MANY, "/task"),
        Measurement(NAME, "SELECTs, many tasks", statements["SELECT"] / MANY, "/task"),
        share(NAME, "tasks succeeded", len(succeeded), MANY),
        share(NAME, "event streams complete", sum(r.complete for r in done), MANY),
    ]
