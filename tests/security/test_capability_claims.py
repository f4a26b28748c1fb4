"""A capability's schemas belong to the agents that declare them, over real mTLS.

A squatter registering ``victim.op`` with the schema nothing fits (``{not: {}}``) must neither
get other clients' valid plans refused nor receive their work, and must leave nothing behind
when it goes; the built-in policy does not let it claim the name while the victim holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import yaml

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import (
    RawAgent,
    echo,
    orchestrator_stub,
    plan_request,
    refusal,
    registry_stub,
    struct,
    write,
)
from tests.support.waiting import eventually

#: The victim's contract: an object with a string ``text``.
TEXT = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
#: The squatter's: nothing fits.
NOTHING: dict[str, Any] = {"not": {}}

#: The built-in rules, plus leave to redefine any capability (so a squatter gets in).
REDEFINING = {
    "version": 1,
    "rules": [
        {
            "name": "agents",
            "kinds": ["agent"],
            "allow": {"register_capabilities": ["*"], "redefine_capabilities": ["victim.*"]},
        },
        {"name": "submitters", "kinds": ["client"], "allow": {"submit_tasks": True}},
        {"name": "owners", "identities": ["*"], "allow": {"tasks": "own"}},
    ],
}


def _victim_op(schema: dict[str, Any]) -> list[common_pb2.Capability]:
    return [common_pb2.Capability(name="victim.op", version="1.0.0", input_schema=struct(schema))]


async def _run(stub: pb_grpc.OrchestratorAsyncStub, request: pb.SubmitTaskRequest) -> pb.Task:
    """Submit, watch to the end, return the final task."""
    task_id = (await stub.SubmitTask(request, timeout=10)).task_id
    async for _ in stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30):
        pass
    return await stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)


async def _leave(orchestrator: Orchestrator, certs: Path, agent: RawAgent) -> None:
    async with registry_stub(orchestrator, certs, "agent", agent.name) as stub:
        await stub.DeregisterAgent(pb.DeregisterAgentRequest(name=agent.name), timeout=10)


def _redefining(settings: Settings, policy_file: Path) -> Orchestrator:
    write(policy_file, yaml.safe_dump(REDEFINING))
    return Orchestrator(settings.model_copy(update={"policy_file": str(policy_file)}))


async def test_a_squatters_schema_refuses_no_valid_plan_and_it_never_gets_the_work(
    secure_settings: Settings, certs: Path, policy_file: Path
) -> None:
    async with (
        _redefining(secure_settings, policy_file) as orchestrator,
        RawAgent(certs, "echo-1", echo) as victim,
        RawAgent(certs, "echo-2", echo) as squatter,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await victim.register(orchestrator, capabilities=_victim_op(TEXT))
        await squatter.register(orchestrator, capabilities=_victim_op(NOTHING))
        # Literal inputs, checked at submission, and references, resolved at run time.
        steps = [(f"lit{i}", "victim.op", {"text": f"hello {i}"}) for i in range(6)]
        steps += [(f"ref{i}", "victim.op", {"text": "${input.name}"}) for i in range(6)]
        task = await _run(alice, plan_request(*steps, input=struct({"name": "alice"})))
        assert task.state == pb.TASK_STATE_SUCCEEDED, task.error
        assert {step.agent for step in task.steps} == {"echo-1"}
        assert len(victim.assignments) == 12
        assert squatter.assignments == []

        # An input the victim's own schema refuses is still refused, naming the field.
        error = await refusal(
            alice.SubmitTask(plan_request(("a", "victim.op", {"text": 5})), timeout=10)
        )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "plan.steps[0].input.text: does not match victim.op's input schema: "
        "5.0 is not of type 'string'"
    )


async def test_a_step_whose_input_no_connected_agent_accepts_fails_without_being_sent(
    mesh: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", echo) as victim,
        orchestrator_stub(mesh, certs) as alice,
    ):
        await victim.register(mesh, capabilities=_victim_op(TEXT))
        # Known only at run time: the literal check cannot see it.
        request = plan_request(("a", "victim.op", {"text": "${input.text}"}))
        request.input.update({"text": 5})
        task = await _run(alice, request)
    assert task.state == pb.TASK_STATE_FAILED
    (step,) = task.steps
    assert step.state == pb.STEP_STATE_FAILED
    assert "invalid_input" in step.error or "accepts this input" in step.error, step.error
    assert "the input schema of echo-1 refuses it" in step.error
    assert victim.assignments == []


async def test_a_squatter_that_leaves_takes_its_schema_with_it(
    secure_settings: Settings, certs: Path, policy_file: Path
) -> None:
    async with (
        _redefining(secure_settings, policy_file) as orchestrator,
        RawAgent(certs, "echo-1", echo) as victim,
        RawAgent(certs, "echo-2", echo) as squatter,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await squatter.register(orchestrator, capabilities=_victim_op(NOTHING))
        await _leave(orchestrator, certs, squatter)

        # Nobody offers it now, so the plan waits for an agent instead of being refused...
        request = plan_request(("a", "victim.op", {"text": "hello"}))
        task_id = (await alice.SubmitTask(request, timeout=10)).task_id
        offers = orchestrator.registry.capabilities()
        assert offers.serving("victim.op") == ()
        assert "victim.op" not in offers
        waiting = await eventually(
            lambda: alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10),
            lambda task: task.steps[0].state == pb.STEP_STATE_WAITING,
        )
        assert waiting.state == pb.TASK_STATE_RUNNING
        # ... and runs on the first agent that comes and accepts it.
        await victim.register(orchestrator, capabilities=_victim_op(TEXT))
        async for _ in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30):
            pass
        done = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        assert done.state == pb.TASK_STATE_SUCCEEDED, done.error
        assert done.steps[0].agent == "echo-1"
        (offer,) = orchestrator.registry.capabilities().serving("victim.op")
        assert offer.agent == "echo-1"
        assert offer.capability.input_schema == TEXT
    assert squatter.assignments == []


async def test_the_built_in_policy_refuses_other_schemas_under_a_name_another_agent_holds(
    mesh: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", echo) as victim,
        RawAgent(certs, "echo-2", echo) as squatter,
        RawAgent(certs, "slow", echo) as replica,
    ):
        await victim.register(mesh, capabilities=_victim_op(TEXT))
        error = await refusal(squatter.register(mesh, capabilities=_victim_op(NOTHING)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == (
            "card.capabilities[0].name: policy: spiffe://agentmesh.test/agent/echo-2 may not "
            "register capability 'victim.op': agent 'echo-1' offers it with other schemas "
            "(a policy rule's redefine_capabilities can allow it)"
        )
        assert [s.card.name for s in mesh.registry.statuses()] == ["echo-1"]

        # The same schemas under the name: one more agent serving it.
        await replica.register(mesh, capabilities=_victim_op(TEXT))
        assert [s.card.name for s in mesh.registry.statuses("victim.op")] == ["echo-1", "slow"]

        # Once nobody holds the name with other schemas, it is free to be claimed.
        await _leave(mesh, certs, victim)
        await _leave(mesh, certs, replica)
        await squatter.register(mesh, capabilities=_victim_op(NOTHING))
        assert [s.card.name for s in mesh.registry.statuses("victim.op")] == ["echo-2"]


async def test_a_policy_rule_may_let_an_agent_redefine_a_capability(
    secure_settings: Settings, certs: Path, policy_file: Path
) -> None:
    async with (
        _redefining(secure_settings, policy_file) as orchestrator,
        RawAgent(certs, "echo-1", echo) as victim,
        RawAgent(certs, "echo-2", echo) as other,
    ):
        await victim.register(orchestrator, capabilities=_victim_op(TEXT))
        await other.register(orchestrator, capabilities=_victim_op({"type": "object"}))
        assert [s.card.name for s in orchestrator.registry.statuses("victim.op")] == [
            "echo-1",
            "echo-2",
        ]
