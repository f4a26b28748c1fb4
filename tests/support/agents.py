"""A test agent whose capabilities inject faults: run as ``python -m tests.support.agents``.

Behaviour that must differ between processes (crash once, fail at a rate)
is driven by the assignment's input, so tests decide what happens per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.errors import StepFailed
from agentmesh.models import Plan, StepSpec


class Value(BaseModel):
    value: Any = None
    #: Seconds to spend before answering.
    delay: float = 0.0
    #: Progress messages to send on the way.
    progress: int = 0


class Echoed(BaseModel):
    value: Any = None
    agent: str = ""


class Failing(BaseModel):
    message: str = "told to fail"
    retryable: bool = False


class Flaky(BaseModel):
    value: Any = None
    failure_rate: float = 0.3


class FailFirst(BaseModel):
    value: Any = None
    #: The attempt that succeeds; every earlier one fails, retryably.
    succeed_on: int = 2


class CrashOnce(BaseModel):
    value: Any = None
    #: Created by the first agent that runs this input, which then dies; later runs succeed.
    marker: str


class Hang(BaseModel):
    seconds: float = 3600.0
    #: Journal (see :class:`Work`) that hears ``start`` and, when cancelled, ``cancelled``.
    journal: str = ""
    entry: str = "hang"


class Work(BaseModel):
    #: Journal file: one JSON line per ``start``, ``end`` or ``cancelled`` of a run.
    journal: str
    entry: str
    #: Seconds to work before answering.
    delay: float = 0.0
    #: Per-attempt delays (attempt n takes the n-th, the last one repeats); overrides ``delay``.
    delays: list[float] = []
    #: Keep working until this file exists (a gate the test opens), after the delay.
    gate: str = ""


class Record(BaseModel):
    #: File that every run (and undo) appends a line to.
    log: str
    entry: str
    fail: bool = False


class Undo(BaseModel):
    log: str
    entry: str
    output: dict[str, Any] = {}


class Recorded(BaseModel):
    entry: str


class StoredStep(BaseModel):
    #: The orchestrator's SQLite file, read directly (outside the orchestrator).
    database: str
    #: The step of this assignment's task whose stored state is returned.
    step: str


def _append(path: str, line: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(line + "\n")


async def _opened(gate: str) -> None:
    """Return once the file ``gate`` exists."""
    while True:
        if await asyncio.to_thread(os.path.exists, gate):
            return
        await asyncio.sleep(0.02)


def seeded_random(*parts: object) -> random.Random:
    """Random numbers seeded by ``AGENTMESH_TEST_SEED`` (default 0) and ``parts``: a test run
    draws what the previous one drew."""
    seed = os.environ.get("AGENTMESH_TEST_SEED", "0")
    return random.Random("/".join(map(str, (seed, *parts))))


def _journal(path: str, event: str, entry: str, ctx: AssignmentContext) -> None:
    """One JSON line about a run, read back by :mod:`tests.support.journal`."""
    record = {
        "event": event,
        "entry": entry,
        "agent": os.environ.get("AGENTMESH_AGENT_NAME", ""),
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
    }
    _append(path, json.dumps(record))


class FaultyAgent(Agent):
    """Echoes, fails, crashes, hangs and records on request."""

    name = "echo"
    version = "1.0.0"
    max_concurrency = 4

    @capability("test.echo", description="Return the input value, optionally slowly.")
    async def echo(self, data: Value, ctx: AssignmentContext) -> Echoed:
        for i in range(data.progress):
            await ctx.progress((i + 1) / (data.progress + 1), f"step {i + 1} of {data.progress}")
        if data.delay:
            await asyncio.sleep(data.delay)
        return Echoed(value=data.value, agent=os.environ.get("AGENTMESH_AGENT_NAME", ""))

    @capability("test.fail", description="Always fail.")
    async def fail(self, data: Failing, ctx: AssignmentContext) -> Echoed:
        raise StepFailed(data.message, code="told_to_fail", retryable=data.retryable)

    @capability("test.raise", description="Raise an unexpected exception (a bug) on any input.")
    async def raise_(self, data: Value, ctx: AssignmentContext) -> Echoed:
        size = len(json.dumps(data.value))
        raise ValueError(f"this capability is broken (input of {size} bytes)")

    @capability("test.flaky", description="Fail (retryably) at a given rate.")
    async def flaky(self, data: Flaky, ctx: AssignmentContext) -> Echoed:
        # Seeded by the work itself, not by the order assignments arrive in.
        draw = seeded_random(ctx.step_id, json.dumps(data.value), ctx.attempt).random()
        if draw < data.failure_rate:
            raise StepFailed("injected failure", code="injected", retryable=True)
        return Echoed(value=data.value, agent=os.environ.get("AGENTMESH_AGENT_NAME", ""))

    @capability("test.fail_first", description="Fail (retryably) until attempt succeed_on.")
    async def fail_first(self, data: FailFirst, ctx: AssignmentContext) -> Echoed:
        if ctx.attempt < data.succeed_on:
            raise StepFailed(f"attempt {ctx.attempt} fails", code="injected", retryable=True)
        return Echoed(value=data.value, agent=os.environ.get("AGENTMESH_AGENT_NAME", ""))

    @capability("test.crash_once", description="The first process to run this dies mid-step.")
    async def crash_once(self, data: CrashOnce, ctx: AssignmentContext) -> Echoed:
        try:
            # O_EXCL: of two agents racing on the same input, exactly one crashes.
            os.close(os.open(data.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            await ctx.progress(0.5, "about to crash")
            os._exit(17)
        return Echoed(value=data.value, agent=os.environ.get("AGENTMESH_AGENT_NAME", ""))

    @capability("test.hang", description="Never answer (until cancelled).")
    async def hang(self, data: Hang, ctx: AssignmentContext) -> Echoed:
        if data.journal:
            _journal(data.journal, "start", data.entry, ctx)
        try:
            await asyncio.sleep(data.seconds)
        except asyncio.CancelledError:
            if data.journal:
                _journal(data.journal, "cancelled", data.entry, ctx)
            raise
        return Echoed()

    @capability("test.work", description="Work a while, journaling start, end or cancellation.")
    async def work(self, data: Work, ctx: AssignmentContext) -> Recorded:
        delays = data.delays or [data.delay]
        _journal(data.journal, "start", data.entry, ctx)
        try:
            await asyncio.sleep(delays[min(ctx.attempt, len(delays)) - 1])
            if data.gate:
                await _opened(data.gate)
        except asyncio.CancelledError:
            _journal(data.journal, "cancelled", data.entry, ctx)
            raise
        _journal(data.journal, "end", data.entry, ctx)
        return Recorded(entry=data.entry)

    @capability(
        "test.pooled",
        description="test.work that uses the shared resource llm:test/model (pools limit it).",
        resources=("llm:test/model",),
    )
    async def pooled(self, data: Work, ctx: AssignmentContext) -> Recorded:
        return await self.work(data, ctx)

    @capability("test.stored_state", description="The stored state of another step of the task.")
    async def stored_state(self, data: StoredStep, ctx: AssignmentContext) -> Echoed:
        with contextlib.closing(sqlite3.connect(data.database, timeout=30)) as db:
            row = db.execute(
                "SELECT state FROM steps WHERE task_id = ? AND step_id = ?",
                (ctx.task_id, data.step),
            ).fetchone()
        return Echoed(value=None if row is None else row[0])

    @capability("test.record", description="Append an entry to a file (undone by test.undo).")
    async def record(self, data: Record, ctx: AssignmentContext) -> Recorded:
        if data.fail:
            raise StepFailed("record told to fail", retryable=False)
        _append(data.log, f"do {data.entry}")
        return Recorded(entry=data.entry)

    @capability("test.undo", description="Compensate test.record.")
    async def undo(self, data: Undo, ctx: AssignmentContext) -> Recorded:
        _append(data.log, f"undo {data.entry}")
        return Recorded(entry=data.entry)


class Expand(BaseModel):
    #: How many follow-up test.echo steps to add, each echoing this step's output.
    count: int = 2
    #: Capability of the follow-ups (an unknown one makes the plan invalid).
    capability: str = "test.echo"


class Expanded(BaseModel):
    added: list[str]


class PlanningAgent(FaultyAgent):
    """Adds follow-up steps to the running plan (hierarchical decomposition)."""

    @capability("test.delegate", description="Echo the value through a sub-task of one step.")
    async def delegate(self, data: Value, ctx: AssignmentContext) -> Echoed:
        plan = Plan(
            steps=(StepSpec(id="echo", capability="test.echo", input={"value": data.value}),)
        )
        return Echoed(
            value=await ctx.submit(plan=plan), agent=os.environ.get("AGENTMESH_AGENT_NAME", "")
        )

    @capability("test.expand", description="Add follow-up steps to the plan.")
    async def expand(self, data: Expand, ctx: AssignmentContext) -> Expanded:
        ids = [f"{ctx.step_id}_more{i}" for i in range(data.count)]
        for i, step_id in enumerate(ids):
            ctx.add_step(
                StepSpec(
                    id=step_id,
                    capability=data.capability,
                    input={"value": f"${{steps.{ctx.step_id}.output.added.{i}}}"},
                )
            )
        return Expanded(added=ids)


if __name__ == "__main__":
    agent = PlanningAgent()
    # Tests of capacity need agents of other sizes than the class declares.
    if "TEST_AGENT_MAX_CONCURRENCY" in os.environ:
        agent.max_concurrency = int(os.environ["TEST_AGENT_MAX_CONCURRENCY"])  # type: ignore[misc]
    run(agent)
