"""An agent asks a person mid-step (``ctx.ask``): the step waits INPUT_REQUIRED holding no
concurrency slot, the task's owner answers through ProvideInput, and the run goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.client import Client
from agentmesh.errors import NotFound, StepFailed, ValidationError
from agentmesh.models import Plan, RetryPolicy, StepSpec, StepState, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.agents.link import ask_problem
from agentmesh.wire import to_struct
from tests.support.events import step_states, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

AGENT = "spiffe://agentmesh.test/agent/echo-1"
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

    def __init__(self) -> None:
        super().__init__()
        #: The steps whose run the orchestrator stopped.
        self.cancelled: list[str] = []

    @capability("test.cover", description="Ask which colour, then design the cover.")
    async def cover(self, data: Topic, ctx: AssignmentContext) -> Cover:
        try:
            answer = await ctx.ask(PROMPT, COLOUR)
        except asyncio.CancelledError:
            self.cancelled.append(ctx.step_id)
            raise
        assert isinstance(answer, dict)
        return Cover(topic=data.topic, colour=str(answer["colour"]))

    @capability("test.blank", description="Ask nothing in particular.")
    async def blank(self, data: Topic, ctx: AssignmentContext) -> Done:
        try:
            await ctx.ask("   ")
        except asyncio.CancelledError:
            self.cancelled.append(ctx.step_id)
            raise
        return Done(done=True)

    @capability("test.quick", description="Answer at once.")
    async def quick(self, data: Topic, ctx: AssignmentContext) -> Done:
        return Done(done=True)


def one(capability: str, attempts: int = 1) -> Plan:
    return Plan(
        steps=(
            StepSpec(
                id="work",
                capability=capability,
                input={"topic": "ships"},
                timeout_seconds=120,
                retry=RetryPolicy(max_attempts=attempts),
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


async def test_a_session_lost_while_the_agent_waits_fails_the_attempt_and_the_next_asks_again(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = Asker()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=one("test.cover", attempts=2))

        async def asks_in(attempt: int) -> TaskRecord:
            return await eventually(
                lambda: alice.get(task_id),
                lambda t: (
                    t.steps["work"].state is StepState.INPUT_REQUIRED
                    and t.steps["work"].attempts == attempt
                ),
                within=60,
            )

        await asks_in(1)
        # The orchestrator ends the agent's Session (as for a revoked identity).
        await orchestrator.registry.close_identity(AGENT, "test: session ended")
        # The agent registers again; the step's second attempt runs there and asks again.
        await asks_in(2)
        # The first run, left waiting on a Session that ended, is stopped by the SDK.
        await eventually(lambda: asyncio.sleep(0, agent.cancelled), bool, within=30)
        stopped = list(agent.cancelled)
        await alice.provide_input(task_id, "work", {"colour": "red"})
        task = await finished(alice, task_id)
        async with asyncio.timeout(30):
            events = await watch_all(alice, task_id)

    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.steps["work"].output == {"topic": "ships", "colour": "red"}
    retried = [e.reason for e in events if e.step_id == "work" and e.state == StepState.PENDING]
    assert any("agent_lost" in reason for reason in retried), retried
    assert stopped == ["work"]


async def test_a_question_without_a_prompt_fails_the_attempt_and_stops_the_run(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = Asker()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task = await finished(alice, await alice.submit(plan=one("test.blank")))
        await eventually(lambda: asyncio.sleep(0, agent.cancelled), bool, within=30)

    assert task.state is TaskState.FAILED
    assert "invalid_output: ask.prompt: must say what to answer" in task.steps["work"].error
    assert agent.cancelled == ["work"]


async def test_a_run_no_orchestrator_gave_cannot_ask() -> None:
    ctx = AssignmentContext(
        assignment_id="a",
        task_id="t",
        step_id="s",
        attempt=1,
        idempotency_key="",
        compensation=False,
        deadline=None,
        _report=lambda fraction, message: None,
    )
    with pytest.raises(StepFailed) as refused:
        await ctx.ask(PROMPT)

    assert refused.value.failure_code == "ask_failed"


@pytest.mark.parametrize(
    ("ask", "problem"),
    [
        (agent_pb2.Ask(prompt="Go?"), None),
        (agent_pb2.Ask(prompt="x" * 4097), "ask.prompt: at most 4096 characters, not 4097"),
        (
            agent_pb2.Ask(prompt="Go?", answer_schema=to_struct({"type": 3})),
            "ask.answer_schema: is not a JSON Schema (draft 2020-12)",
        ),
    ],
)
def test_a_question_is_checked_before_anyone_sees_it(
    ask: agent_pb2.Ask, problem: str | None
) -> None:
    assert ask_problem(ask) == problem
