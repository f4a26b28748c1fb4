"""An agent asks a person mid-step (``ctx.ask``): the step waits INPUT_REQUIRED holding no
concurrency slot, the task's owner answers through ProvideInput, and the run goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.client import Client
from agentmesh.errors import NotFound, ValidationError
from agentmesh.models import Plan, StepSpec, StepState, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import step_states, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

PROMPT = "Which colour should the cover be?"
COLOUR = {
    "type": "object",
    "required": ["colour"],
    "properties": {"colour": {"type": "string"}},
    "additionalProperties": False,
}


class Topic(BaseModel):
    topic: str


class Cover(BaseModel):
    topic: str
    colour: str


class Done(BaseModel):
    done: bool


class Asker(Agent):
    """One slot only: ``test.cover`` asks a person; ``test.quick`` answers at once."""

    name = "echo-1"
    version = "1.0.0"
    max_concurrency = 1

    @capability("test.cover", description="Ask which colour, then design the cover.")
    async def cover(self, data: Topic, ctx: AssignmentContext) -> Cover:
        answer = await ctx.ask(PROMPT, COLOUR)
        assert isinstance(answer, dict)
        return Cover(topic=data.topic, colour=str(answer["colour"]))

    @capability("test.quick", description="Answer at once.")
    async def quick(self, data: Topic, ctx: AssignmentContext) -> Done:
        return Done(done=True)


def one(capability: str) -> Plan:
    return Plan(
        steps=(
            StepSpec(
                id="work", capability=capability, input={"topic": "ships"}, timeout_seconds=120
            ),
        )
    )


def serve(agent: Agent, orchestrator: Orchestrator, certs: Path) -> AgentServer:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    return AgentServer(agent, config)


async def finished(alice: Client, task_id: str) -> TaskRecord:
    return await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=60)


async def test_an_agent_asks_mid_step_frees_its_slot_and_goes_on_with_the_owners_answer(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        serve(Asker(), orchestrator, certs),
        client(orchestrator, certs) as alice,
        client(orchestrator, certs, "bob") as bob,
    ):
        await wait_for_agents(alice, "echo-1")
        asking_id = await alice.submit(plan=one("test.cover"))
        asking = await eventually(
            lambda: alice.get(asking_id),
            lambda t: t.steps["work"].state is StepState.INPUT_REQUIRED,
            within=60,
        )
        # The only slot of the agent is free while its run waits: other work runs on it.
        quick = await finished(alice, await alice.submit(plan=one("test.quick")))
        with pytest.raises(ValidationError) as wrong:
            await alice.provide_input(asking_id, "work", {"colour": 7})
        # Not the owner, and the step names no approvers: the task does not exist for bob.
        with pytest.raises(NotFound):
            await bob.provide_input(asking_id, "work", {"colour": "red"})
        still = await alice.get(asking_id)
        await alice.provide_input(asking_id, "work", {"colour": "teal"})
        task = await finished(alice, asking_id)
        async with asyncio.timeout(30):
            events = await watch_all(alice, asking_id)

    assert asking.steps["work"].waiting_for == PROMPT
    assert asking.steps["work"].agent == "echo-1"
    assert quick.state is TaskState.SUCCEEDED, quick.error
    assert quick.steps["work"].agent == "echo-1"
    assert wrong.value.field == "value"
    assert still.steps["work"].state is StepState.INPUT_REQUIRED
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.steps["work"].output == {"topic": "ships", "colour": "teal"}
    assert step_states(events, "work") == [
        StepState.RUNNING,
        StepState.INPUT_REQUIRED,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]
