"""critical_path: how close a layered DAG with uneven steps runs to its critical path.

A seeded DAG of ``LAYERS`` x ``WIDTH`` ``bench.work`` steps with latencies drawn from
0.05-0.6 s, each step depending on 1-2 random steps of the layer before. The same DAG runs
three ways through the same orchestrator and agents:

* **agentmesh**: the plan as it is; the engine starts each step once its own dependencies
  are done. Ideal makespan: the critical path (the longest latency path).
* **level-by-level**: every step also ``needs`` every step of the previous layer, which is
  what a barrier scheduler would do. Ideal: the sum over layers of each layer's slowest step.
* **sequential**: every step ``needs`` the one before it. Ideal: the sum of all latencies.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentmesh.models import Plan, StepSpec
from benchmarks.mesh import Mesh, Profiling, TaskRun, run_task
from benchmarks.report import Measurement, median, share

NAME = "critical_path"
LAYERS = 5
WIDTH = 6
SEED = 20240607
REPEATS = 3
AGENTS = ("cp-1", "cp-2", "cp-3")
TARGET_OVERHEAD = 1.10


@dataclass(frozen=True, slots=True)
class Dag:
    """Steps in layers, each with its latency and the steps it depends on."""

    layers: tuple[tuple[str, ...], ...]
    latency: dict[str, float]
    needs: dict[str, tuple[str, ...]]

    @property
    def steps(self) -> list[str]:
        """Step ids, layer by layer (a topological order)."""
        return [step for layer in self.layers for step in layer]


def make_dag(seed: int = SEED, layers: int = LAYERS, width: int = WIDTH) -> Dag:
    """The seeded layered DAG described in the module docstring."""
    rng = random.Random(seed)
    ids = tuple(tuple(f"l{i}s{j}" for j in range(width)) for i in range(layers))
    latency = {step: round(rng.uniform(0.05, 0.6), 3) for layer in ids for step in layer}
    needs: dict[str, tuple[str, ...]] = {}
    for i, layer in enumerate(ids):
        for step in layer:
            needs[step] = () if i == 0 else tuple(sorted(rng.sample(ids[i - 1], rng.randint(1, 2))))
    return Dag(ids, latency, needs)


def longest_path(
    steps: Sequence[str], needs: dict[str, tuple[str, ...]], cost: Callable[[str], float]
) -> tuple[float, list[str]]:
    """Length and steps of the costliest path; ``steps`` must be in topological order."""
    best: dict[str, tuple[float, list[str]]] = {}
    for step in steps:
        before = max((best[d] for d in needs[step]), key=lambda b: b[0], default=(0.0, []))
        best[step] = (before[0] + cost(step), [*before[1], step])
    return max(best.values(), key=lambda b: b[0])


def level_by_level_ideal(dag: Dag) -> float:
    """Makespan of a barrier scheduler with free scheduling: sum of each layer's slowest step."""
    return sum(max(dag.latency[s] for s in layer) for layer in dag.layers)


def _plan(dag: Dag, needs: dict[str, tuple[str, ...]]) -> Plan:
    return Plan(
        steps=tuple(
            StepSpec(
                id=step,
                capability="bench.work",
                input={"seconds": dag.latency[step], "tag": step},
                needs=needs[step],
            )
            for step in dag.steps
        )
    )


def dependency_plan(dag: Dag) -> Plan:
    """The DAG as it is."""
    return _plan(dag, dag.needs)


def level_plan(dag: Dag) -> Plan:
    """The DAG with a barrier between layers."""
    needs = {
        step: dag.layers[i - 1] if i else () for i, layer in enumerate(dag.layers) for step in layer
    }
    return _plan(dag, needs)


def sequential_plan(dag: Dag) -> Plan:
    """The DAG's steps one after the other."""
    order = dag.steps
    return _plan(dag, {step: (order[i - 1],) if i else () for i, step in enumerate(order)})


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Where a dependency-driven run spent the time the critical path does not explain."""

    #: SubmitTask call to the first step starting on an agent.
    to_first_start: float
    #: Per step with dependencies: its start on an agent minus the latest finish among them.
    dispatch_gaps: list[float]
    #: How much longer than asked the agent's sleeps took, per step.
    oversleep: list[float]
    #: Last step finishing on an agent to the final event reaching the watcher.
    to_final_event: float
    #: The critical path recomputed from what the agents actually ran.
    executed_critical_path: float


def anatomy(dag: Dag, run: TaskRun) -> Anatomy:
    """Break ``run``'s makespan down using the agents' own start and finish times."""
    steps = run.steps
    gaps = [
        steps[s].started - max(steps[d].finished for d in dag.needs[s])
        for s in dag.steps
        if dag.needs[s]
    ]
    executed, _ = longest_path(dag.steps, dag.needs, lambda s: steps[s].finished - steps[s].started)
    return Anatomy(
        to_first_start=min(t.started for t in steps.values()) - run.submitted,
        dispatch_gaps=gaps,
        oversleep=[steps[s].finished - steps[s].started - dag.latency[s] for s in dag.steps],
        to_final_event=run.finished - max(t.finished for t in steps.values()),
        executed_critical_path=executed,
    )


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    dag = make_dag()
    cp, path = longest_path(dag.steps, dag.needs, dag.latency.__getitem__)
    level_ideal = level_by_level_ideal(dag)
    sequential_ideal = sum(dag.latency.values())
    plans = {
        "agentmesh": dependency_plan(dag),
        "level-by-level": level_plan(dag),
        "sequential": sequential_plan(dag),
    }
    print(
        f"  DAG {LAYERS}x{WIDTH}, seed {SEED}: critical path {cp:.3f}s via {' > '.join(path)}; "
        f"level-by-level ideal {level_ideal:.3f}s; sum of latencies {sequential_ideal:.3f}s"
    )
    makespans: dict[str, list[float]] = {name: [] for name in plans}
    anatomies: list[Anatomy] = []
    runs: list[TaskRun] = []
    async with Mesh(folder, profiling=profiling) as mesh:
        await mesh.start_agents(AGENTS, concurrency=64)
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, len(AGENTS))
            await run_task(client, plans["agentmesh"])  # warm-up: connections, caches
            for repeat in range(REPEATS):
                for name, plan in plans.items():
                    result = await run_task(client, plan)
                    if not result.succeeded:
                        raise RuntimeError(f"{name} run {repeat} ended in state {result.state}")
                    runs.append(result)
                    makespans[name].append(result.makespan)
                    whole = result.complete and len(result.steps) == len(dag.latency)
                    if name == "agentmesh" and whole:
                        anatomies.append(anatomy(dag, result))
                print(
                    f"  run {repeat + 1}: "
                    + ", ".join(f"{n} {v[-1]:.3f}s" for n, v in makespans.items())
                )
    if anatomies:
        _print_anatomy(anatomies)

    ours = median(makespans["agentmesh"])
    level = median(makespans["level-by-level"])
    sequential = median(makespans["sequential"])
    overhead = ours / cp
    return [
        Measurement(NAME, "agentmesh makespan (median of 3)", ours, "s", cp, "critical path"),
        Measurement(
            NAME,
            "overhead makespan / critical path",
            overhead,
            "x",
            target=f"<= {TARGET_OVERHEAD:.2f}",
            ok=overhead <= TARGET_OVERHEAD,
        ),
        Measurement(
            NAME, "level-by-level makespan", level, "s", level_ideal, "sum of layer maxima"
        ),
        Measurement(NAME, "speed-up vs level-by-level", level / ours, "x"),
        Measurement(
            NAME, "sequential makespan", sequential, "s", sequential_ideal, "sum of latencies"
        ),
        Measurement(NAME, "speed-up vs sequential", sequential / ours, "x"),
        share(NAME, "event streams complete", sum(r.complete for r in runs), len(runs)),
    ]


def _print_anatomy(anatomies: Sequence[Anatomy]) -> None:
    gaps = sorted(g for a in anatomies for g in a.dispatch_gaps)
    oversleep = [o for a in anatomies for o in a.oversleep]
    print(
        "  where agentmesh's extra time goes (medians over runs, agents' clocks): "
        f"submit->first step {median([a.to_first_start for a in anatomies]) * 1000:.1f} ms; "
        f"dependency done->next step started {median(gaps) * 1000:.1f} ms "
        f"(max {gaps[-1] * 1000:.1f} ms); "
        f"sleep overshoot {median(oversleep) * 1000:.1f} ms; "
        f"last step done->final event {median([a.to_final_event for a in anatomies]) * 1000:.1f}"
        f" ms; executed critical path {median([a.executed_critical_path for a in anatomies]):.3f}s"
    )
