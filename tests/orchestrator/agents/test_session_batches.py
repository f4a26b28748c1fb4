"""Batches on the Session stream, between a real orchestrator and real agents over mTLS.

An agent written against today's protos (:class:`~tests.security.helpers.RawAgent`, which
never says it reads batches) gets every message alone; the Python SDK's agent gets a wide
task's assignments in batches and sends its replies back batched; both in one task work.
What travelled in batches is read from the orchestrator's own Prometheus counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from structlog.testing import capture_logs

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.models import Plan, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator, metrics
from agentmesh.wire import card_to_proto
from tests.security.helpers import RawAgent, echo
from tests.support.agents import FaultyAgent
from tests.support.mesh import client, wait_for_agents

#: Steps of the wide task: more than one write's worth, fewer than the agents take at once.
WIDE = 48


def _batched(agent: str, direction: str) -> tuple[float, float]:
    """Batches and the messages in them, on ``agent``'s Session so far (``sent``/``received``)."""
    labels = {"agent": agent, "direction": direction}
    batches = metrics.REGISTRY.get_sample_value("agentmesh_session_batches_total", labels)
    carried = metrics.REGISTRY.get_sample_value("agentmesh_session_batched_messages_total", labels)
    return batches or 0.0, carried or 0.0


@asynccontextmanager
async def _sdk_agent(
    orchestrator: Orchestrator, certs: Path, name: str
) -> AsyncIterator[AgentServer]:
    """The Python SDK's test agent as ``name``, with room for the whole wide task at once."""
    agent = FaultyAgent()
    agent.max_concurrency = 2 * WIDE  # type: ignore[misc]
    settings = AgentSettings(
        certs_dir=certs, name=name, orchestrators=[f"localhost:{orchestrator.port}"]
    )
    async with AgentServer(agent, settings) as server:
        yield server


async def _run(orchestrator: Orchestrator, certs: Path, plan: Plan, *agents: str) -> TaskRecord:
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, *agents)
        task_id = await alice.submit(plan=plan)
        _ = [event async for event in alice.watch(task_id)]
        return await alice.get(task_id)


def _wide(pins: tuple[str, ...] = ("",)) -> Plan:
    """``WIDE`` independent echo steps, pinned in turn to ``pins`` ("" for any agent)."""
    steps = tuple(
        StepSpec(
            id=f"s{i}", capability="test.echo", input={"value": i}, pin_agent=pins[i % len(pins)]
        )
        for i in range(WIDE)
    )
    return Plan(steps=steps)


def _outputs(task: TaskRecord) -> dict[str, object]:
    return {step_id: step.output["value"] for step_id, step in task.steps.items() if step.output}


async def test_an_agent_of_todays_protos_gets_every_message_alone_and_keeps_working(
    orchestrator: Orchestrator, certs: Path
) -> None:
    sent_before = _batched("echo-1", "sent")
    async with RawAgent(certs, "echo-1", echo) as agent:
        await agent.register(orchestrator, max_concurrency=WIDE)
        task = await _run(orchestrator, certs, _wide(), "echo-1")

    assert task.state is TaskState.SUCCEEDED, task.error
    assert _outputs(task) == {f"s{i}": i for i in range(WIDE)}
    assert "batch" not in agent.kinds
    assert agent.kinds.count("assignment") == WIDE
    assert _batched("echo-1", "sent") == sent_before


async def test_a_wide_tasks_assignments_reach_the_python_sdk_in_batches_and_replies_return_batched(
    orchestrator: Orchestrator, certs: Path
) -> None:
    sent_before, assigned_before = _batched("echo-2", "sent")
    received_before, replies_before = _batched("echo-2", "received")
    async with _sdk_agent(orchestrator, certs, "echo-2"):
        task = await _run(orchestrator, certs, _wide(), "echo-2")

    assert task.state is TaskState.SUCCEEDED, task.error
    assert _outputs(task) == {f"s{i}": i for i in range(WIDE)}
    sent, assigned = _batched("echo-2", "sent")
    received, replies = _batched("echo-2", "received")
    # Fewer writes than assignments: at least one batch carried several of them.
    assert sent > sent_before
    assert assigned - assigned_before >= 2
    assert received > received_before
    assert replies - replies_before >= 2


async def test_old_and_new_agents_work_side_by_side_in_one_task(
    orchestrator: Orchestrator, certs: Path
) -> None:
    sent_before = _batched("echo-2", "sent")[0]
    async with (
        RawAgent(certs, "echo-1", echo) as old,
        _sdk_agent(orchestrator, certs, "echo-2") as new,
    ):
        # The same capability, schemas and all, as the policy wants of a second offer.
        same = card_to_proto(new.card).capabilities
        await old.register(orchestrator, max_concurrency=WIDE, capabilities=same)
        task = await _run(orchestrator, certs, _wide(("echo-1", "echo-2")), "echo-1", "echo-2")

    assert task.state is TaskState.SUCCEEDED, task.error
    assert _outputs(task) == {f"s{i}": i for i in range(WIDE)}
    assert {step_id: step.agent for step_id, step in task.steps.items()} == {
        f"s{i}": ("echo-1", "echo-2")[i % 2] for i in range(WIDE)
    }
    assert "batch" not in old.kinds
    assert old.kinds.count("assignment") == WIDE // 2
    assert _batched("echo-2", "sent")[0] > sent_before


async def _nested_then_result(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
    """Reply with a batch whose second message is a batch (refused), then the Result."""
    aid = assignment.assignment_id
    progress = agent_pb2.AgentMessage(progress=agent_pb2.Progress(assignment_id=aid, fraction=1))
    inner = agent_pb2.AgentMessage()
    inner.batch.messages.append(progress)
    result = agent_pb2.AgentMessage(
        result=agent_pb2.Result(assignment_id=aid, output=assignment.input)
    )
    outer = agent_pb2.AgentMessage()
    outer.batch.messages.extend([progress, inner, result])
    await agent.send(outer)


async def test_a_batch_inside_an_agents_batch_is_refused_naming_the_field_and_the_rest_counts(
    orchestrator: Orchestrator, certs: Path
) -> None:
    plan = Plan(steps=(StepSpec(id="a", capability="test.echo", input={"value": 7}),))
    with capture_logs() as logs:
        async with RawAgent(certs, "echo-1", _nested_then_result) as agent:
            await agent.register(orchestrator)
            task = await _run(orchestrator, certs, plan, "echo-1")

    assert task.state is TaskState.SUCCEEDED, task.error
    assert _outputs(task) == {"a": 7}
    refusals = [entry for entry in logs if entry["event"] == "agent.invalid_batch"]
    assert [entry["reason"] for entry in refusals] == [
        "batch.messages[1]: a batch may not hold a batch"
    ]
