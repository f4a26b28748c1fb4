"""parallel_speedup: independent steps run side by side, against running them one by one.

``STEPS`` independent ``bench.work`` steps of ``SECONDS`` each; the baseline is the same
steps chained (each ``needs`` the one before), run through the same orchestrator and agents.
The claim held to: agentmesh is at least 40% faster than sequential.
"""

from __future__ import annotations

from pathlib import Path

from agentmesh.models import Plan, StepSpec
from benchmarks.mesh import Mesh, Profiling, TaskRun, run_task
from benchmarks.report import Measurement, median, share

NAME = "parallel_speedup"
STEPS = 8
SECONDS = 0.3
REPEATS = 3
AGENTS = ("ps-1", "ps-2")
TARGET_REDUCTION = 0.40


def _plan(chained: bool) -> Plan:
    return Plan(
        steps=tuple(
            StepSpec(
                id=f"s{i}",
                capability="bench.work",
                input={"seconds": SECONDS, "tag": f"s{i}"},
                needs=(f"s{i - 1}",) if chained and i else (),
            )
            for i in range(STEPS)
        )
    )


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    parallel, sequential = _plan(chained=False), _plan(chained=True)
    times: dict[str, list[float]] = {"parallel": [], "sequential": []}
    runs: list[TaskRun] = []
    async with Mesh(folder, profiling=profiling) as mesh:
        await mesh.start_agents(AGENTS, concurrency=64)
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, len(AGENTS))
            await run_task(client, parallel)  # warm-up
            for _ in range(REPEATS):
                for name, plan in (("parallel", parallel), ("sequential", sequential)):
                    result = await run_task(client, plan)
                    if not result.succeeded:
                        raise RuntimeError(f"{name} run ended in state {result.state}")
                    runs.append(result)
                    times[name].append(result.makespan)
    ours, chained = median(times["parallel"]), median(times["sequential"])
    reduction = 1 - ours / chained
    print(
        f"  {STEPS} steps x {SECONDS}s; parallel runs "
        + ", ".join(f"{t:.3f}s" for t in times["parallel"])
        + "; sequential runs "
        + ", ".join(f"{t:.3f}s" for t in times["sequential"])
    )
    return [
        Measurement(NAME, f"{STEPS} independent steps, makespan", ours, "s", SECONDS, "one step"),
        Measurement(
            NAME, "same steps chained, makespan", chained, "s", STEPS * SECONDS, "sum of steps"
        ),
        Measurement(
            NAME,
            "time saved vs sequential",
            100 * reduction,
            "%",
            target=f">= {TARGET_REDUCTION:.0%}",
            ok=reduction >= TARGET_REDUCTION,
        ),
        Measurement(NAME, "speed-up vs sequential", chained / ours, "x"),
        share(NAME, "event streams complete", sum(r.complete for r in runs), len(runs)),
    ]
