"""streaming_plan: a model's plan streamed a step at a time against the same plan in one go.

The model is a local fake chat-completions server (``tests.support.chat``) that writes its
plan at ``TOKEN_DELAY`` seconds per token of ``TOKEN_CHARS`` characters, as a real model
generates it. The plan is a chain of ``STEPS`` ``bench.work`` steps of ``WORK`` seconds.

- **streamed** (``AGENTMESH_LLM_STREAM=true``): the plan arrives as JSON lines over a
  streamed completion; each step starts as soon as its line is in and the step before it
  is done.
- **one-shot** (the baseline): the same plan as one JSON object, answered once the model has
  "generated" all of it (the same number of tokens, so the same time), then run.

Reported for each: the time from SubmitTask to the first step starting on an agent, and the
makespan (SubmitTask to the final event); and for the streamed run, how long before the
plan's last chunk the first step started.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from agentmesh.models import TaskState
from benchmarks.mesh import Mesh, Profiling, TaskRun, watch_task
from benchmarks.report import Measurement, median

# The one fake model, shared with the tests (run.py puts the repository on sys.path).
from tests.support.chat import ChatServer

NAME = "streaming_plan"
STEPS = 6
WORK = 0.3
TOKEN_DELAY = 0.005
TOKEN_CHARS = 4
REPEATS = 3
AGENTS = ("sp-1",)
#: Shares no word with a built-in workflow, so the model plans it.
GOAL = "Chain six timed pauses"


def plan_lines() -> list[str]:
    """The plan as the streaming model writes it: one step a line, then the aggregation."""
    lines = []
    for i in range(STEPS):
        step: dict[str, Any] = {
            "id": f"s{i}",
            "capability": "bench.work",
            "input": {"seconds": WORK, "tag": f"s{i}"},
        }
        if i:
            step["needs"] = [f"s{i - 1}"]
        lines.append(json.dumps(step))
    lines.append(json.dumps({"aggregate": {"strategy": "pick", "step": f"s{STEPS - 1}"}}))
    return lines


def one_shot_plan() -> str:
    """The same plan as one JSON object."""
    objects = [json.loads(line) for line in plan_lines()]
    return json.dumps({"steps": objects[:-1], **objects[-1]})


def generation_seconds(text: str) -> float:
    """How long the fake model takes to write ``text``."""
    return math.ceil(len(text) / TOKEN_CHARS) * TOKEN_DELAY


async def _run(mesh: Mesh) -> TaskRun:
    run = TaskRun()
    async with mesh.client() as client:
        await mesh.wait_for_agents(client, len(AGENTS))
        run.submitted = time.time()
        run.task_id = await client.submit(goal=GOAL)
        run.accepted = time.time()
        await watch_task(client, run)
    if run.state is not TaskState.SUCCEEDED:
        raise RuntimeError(f"task {run.task_id} ended {run.state}; see {mesh.folder / 'logs'}")
    return run


async def _measure(folder: Path, profiling: Profiling | None, *, stream: bool) -> list[Any]:
    results: list[Any] = []
    async with ChatServer() as chat:
        settings = {
            "AGENTMESH_LLM_BASE_URL": chat.base_url,
            "AGENTMESH_LLM_MODEL": "bench-model",
            "AGENTMESH_LLM_STREAM": "true" if stream else "false",
        }
        async with Mesh(folder, profiling=profiling, settings=settings) as mesh:
            await mesh.start_agents(AGENTS, concurrency=8)
            for _ in range(REPEATS):
                if stream:
                    reply = chat.stream(
                        plan_lines(), token_delay=TOKEN_DELAY, token_chars=TOKEN_CHARS
                    )
                    results.append((await _run(mesh), reply.final_sent_at))
                else:
                    text = one_shot_plan()
                    chat.delay = generation_seconds(text)
                    chat.answer(text)
                    results.append((await _run(mesh), 0.0))
    return results


def _first_start(run: TaskRun) -> float:
    return min(t.started for t in run.steps.values())


async def run(folder: Path, profiling: Profiling | None) -> list[Measurement]:
    """Streamed and one-shot planning of the same chain, each ``REPEATS`` times."""
    streamed = await _measure(folder / "streamed", profiling, stream=True)
    one_shot = await _measure(folder / "one-shot", None, stream=False)
    first = median([_first_start(r) - r.submitted for r, _ in streamed])
    first_base = median([_first_start(r) - r.submitted for r, _ in one_shot])
    makespan = median([r.makespan for r, _ in streamed])
    makespan_base = median([r.makespan for r, _ in one_shot])
    ahead = median([final - _first_start(r) for r, final in streamed])
    generation = generation_seconds("\n".join(plan_lines()))
    print(
        f"  chain of {STEPS} steps x {WORK}s; the model writes the plan in {generation:.2f}s"
        f" ({TOKEN_DELAY * 1000:g} ms per {TOKEN_CHARS}-character token)"
    )
    print(f"  streamed: first step {ahead:.2f}s before the plan's last chunk (median)")
    return [
        Measurement(
            NAME,
            "time to first step",
            first,
            "s",
            baseline=first_base,
            baseline_name="one-shot plan",
            target="< baseline",
            ok=first < first_base,
        ),
        Measurement(
            NAME,
            "makespan",
            makespan,
            "s",
            baseline=makespan_base,
            baseline_name="one-shot plan",
            target="< baseline",
            ok=makespan < makespan_base,
        ),
        Measurement(
            NAME,
            "first step ahead of the plan's end",
            ahead,
            "s",
            target="> 0",
            ok=ahead > 0,
        ),
    ]
