"""The step cache: a cached step reuses an earlier output across tasks, within its TTL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.client import Client
from agentmesh.errors import ValidationError
from agentmesh.models import (
    CachePolicy,
    Plan,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from tests.support.events import step_events, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    text: str
    call: int


class CountingAgent(Agent):
    """Answers a question, numbering its calls: a reused answer keeps its number."""

    name = "echo-1"
    version = "1.0.0"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @capability("test.answer", version="2.1.0", description="An expensive answer.")
    async def answer(self, data: Question, ctx: AssignmentContext) -> Answer:
        self.calls += 1
        return Answer(text=data.text.upper(), call=self.calls)


def asking(text: str, ttl: float) -> Plan:
    return Plan(
        steps=(
            StepSpec(
                id="ask",
                capability="test.answer",
                input={"text": text},
                cache=CachePolicy(ttl_seconds=ttl),
            ),
        )
    )


async def run(alice: Client, plan: Plan) -> tuple[TaskRecord, list[TaskEvent]]:
    task_id = await alice.submit(plan=plan)
    async with asyncio.timeout(60):
        events = await watch_all(alice, task_id)
    return await alice.get(task_id), events


def succeeded(events: list[TaskEvent]) -> TaskEvent:
    (event,) = [e for e in step_events(events, "ask") if e.state == StepState.SUCCEEDED]
    return event


async def test_a_cached_step_is_skipped_the_second_time_and_runs_again_after_its_ttl(
    orchestrator_on_database: Orchestrator, certs: Path
) -> None:
    orchestrator = orchestrator_on_database
    agent = CountingAgent()
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    async with AgentServer(agent, config), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        first, first_events = await run(alice, asking("why", ttl=3600))
        second, second_events = await run(alice, asking("why", ttl=3600))
        calls_after_two = agent.calls
        other, _ = await run(alice, asking("how", ttl=3600))

        # Wait (for the condition, not a fixed time) until the first output is older than
        # a TTL of 0.2 s; a step with that TTL may not reuse it.
        stored = first.steps["ask"].finished_at
        assert stored is not None
        await eventually(
            lambda: asyncio.sleep(0, datetime.now(UTC)),
            lambda moment: moment - stored > timedelta(seconds=0.5),
        )
        stale, stale_events = await run(alice, asking("why", ttl=0.2))

    assert first.state is TaskState.SUCCEEDED, first.error
    assert first.steps["ask"].output == {"text": "WHY", "call": 1}
    assert not succeeded(first_events).cached

    # The second task's step never reached the agent: the output is the first call's.
    assert calls_after_two == 1
    assert second.state is TaskState.SUCCEEDED, second.error
    assert second.steps["ask"].output == {"text": "WHY", "call": 1}
    reused = succeeded(second_events)
    assert reused.cached
    assert first.id in reused.reason
    assert [e.state for e in step_events(second_events, "ask")] == [StepState.SUCCEEDED]
    assert second.usage.steps == 0

    # Another input is another key.
    assert other.steps["ask"].output == {"text": "HOW", "call": 2}
    # Past its TTL the output is not reused: the step runs again.
    assert stale.steps["ask"].output == {"text": "WHY", "call": 3}
    assert not succeeded(stale_events).cached
    assert agent.calls == 3


async def test_a_step_with_a_compensation_and_a_cache_is_refused_naming_the_cache(
    orchestrator: Orchestrator, certs: Path
) -> None:
    spec = asking("why", ttl=60).steps[0].model_copy(update={"compensation": "test.undo"})
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError, match="never cached") as refused:
            await alice.submit(plan=Plan(steps=(spec,)))
        with pytest.raises(ValidationError) as bad_ttl:
            await alice.submit(
                plan=Plan(
                    steps=(
                        spec.model_copy(
                            update={
                                "compensation": "",
                                "cache": CachePolicy.model_construct(ttl_seconds=-1.0),
                            }
                        ),
                    )
                )
            )

    assert refused.value.field == "plan.steps[0].cache"
    assert bad_ttl.value.field == "plan.steps[0].cache.ttl_seconds"
