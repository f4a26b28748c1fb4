"""Steps of kind ``input``: a person answers, by policy and approvers, within a schema and a
timeout, and the wait survives the orchestrator."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.errors import FailedPrecondition, NotFound, PermissionDenied, ValidationError
from agentmesh.models import (
    HumanInput,
    Plan,
    StepKind,
    StepSpec,
    StepState,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.support.events import step_events, step_states, watch_all
from tests.support.mesh import client
from tests.support.waiting import eventually

BOB = "spiffe://agentmesh.test/client/bob"
APPROVAL = {
    "type": "object",
    "required": ["approved"],
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
    "additionalProperties": False,
}


def approval(
    *, approvers: tuple[str, ...] = (BOB,), timeout: float = 0.0, default: object = None
) -> Plan:
    return Plan(
        steps=(
            StepSpec(
                id="approve",
                kind=StepKind.INPUT,
                timeout_seconds=timeout,
                human_input=HumanInput(
                    prompt="Publish the brief?",
                    answer_schema=APPROVAL,
                    approvers=approvers,
                    default=default,
                ),
            ),
        )
    )


async def waiting(alice: Client, task_id: str) -> TaskRecord:
    """The task once its step asks."""
    return await eventually(
        lambda: alice.get(task_id),
        lambda t: t.steps["approve"].state is StepState.INPUT_REQUIRED,
        within=30,
    )


async def finished(alice: Client, task_id: str) -> TaskRecord:
    return await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=30)


async def test_an_approver_answers_and_the_answer_becomes_the_step_output(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice, client(orchestrator, certs, "bob") as bob:
        task_id = await alice.submit(plan=approval())
        asking = await waiting(alice, task_id)
        answered = await bob.provide_input(task_id, "approve", {"approved": True, "note": "ok"})
        task = await finished(alice, task_id)
        events = await watch_all(alice, task_id)

    assert asking.state is TaskState.RUNNING
    assert answered.steps["approve"].output is None  # the answer leaves outputs out
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.steps["approve"].output == {"approved": True, "note": "ok"}
    assert task.result == {"approve": {"approved": True, "note": "ok"}}
    assert step_states(events, "approve") == [StepState.INPUT_REQUIRED, StepState.SUCCEEDED]
    (asked,) = [e for e in step_events(events, "approve") if e.state == StepState.INPUT_REQUIRED]
    assert asked.reason == "Publish the brief?"
    (done,) = [e for e in step_events(events, "approve") if e.state == StepState.SUCCEEDED]
    assert done.reason == f"answered by {BOB}"


async def test_an_answer_from_an_identity_the_policy_or_the_plan_refuses_changes_nothing(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        client(orchestrator, certs) as alice,
        client(orchestrator, certs, "bob") as bob,
        Client(f"localhost:{orchestrator.port}", certs, "echo-1", kind=IdentityKind.AGENT) as agent,
    ):
        task_id = await alice.submit(plan=approval())
        await waiting(alice, task_id)
        # The owner is not an approver the plan names.
        with pytest.raises(PermissionDenied) as owner:
            await alice.provide_input(task_id, "approve", {"approved": True})
        # The built-in policy lets no agent answer.
        with pytest.raises(PermissionDenied, match="provide input"):
            await agent.provide_input(task_id, "approve", {"approved": True})
        # bob is the approver of this task only: another task of alice's does not exist for him.
        other = await alice.submit(plan=approval(approvers=()))
        await waiting(alice, other)
        with pytest.raises(NotFound):
            await bob.provide_input(other, "approve", {"approved": True})
        with pytest.raises(NotFound) as no_step:
            await bob.provide_input(task_id, "publish", {"approved": True})
        still = await alice.get(task_id)
        # Without approvers the owner answers.
        await alice.provide_input(other, "approve", {"approved": False})
        done = await finished(alice, other)

    assert owner.value.field == "step_id"
    assert no_step.value.field == "step_id"
    assert still.steps["approve"].state is StepState.INPUT_REQUIRED
    assert done.state is TaskState.SUCCEEDED
    assert done.steps["approve"].output == {"approved": False}


async def test_an_answer_that_breaks_the_schema_is_refused_naming_the_value(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice, client(orchestrator, certs, "bob") as bob:
        task_id = await alice.submit(plan=approval())
        await waiting(alice, task_id)
        with pytest.raises(ValidationError) as wrong_type:
            await bob.provide_input(task_id, "approve", {"approved": "yes"})
        with pytest.raises(ValidationError) as missing:
            await bob.provide_input(task_id, "approve", ["approved"])
        still = await alice.get(task_id)
        await bob.provide_input(task_id, "approve", {"approved": True})
        task = await finished(alice, task_id)
        with pytest.raises(FailedPrecondition):
            await bob.provide_input(task_id, "approve", {"approved": False})

    assert wrong_type.value.field == "value"
    assert "'yes' is not of type 'boolean'" in wrong_type.value.message
    assert "['approved']" in wrong_type.value.message
    assert missing.value.field == "value"
    assert still.steps["approve"].state is StepState.INPUT_REQUIRED
    assert task.steps["approve"].output == {"approved": True}


async def test_an_unanswered_input_fails_its_step_at_the_timeout_or_takes_its_default(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        without = await alice.submit(plan=approval(timeout=0.3))
        with_default = await alice.submit(
            plan=approval(timeout=0.3, default={"approved": False, "note": "nobody answered"})
        )
        failed = await finished(alice, without)
        defaulted = await finished(alice, with_default)
        default_events = await watch_all(alice, with_default)

    assert failed.state is TaskState.FAILED
    assert failed.steps["approve"].state is StepState.FAILED
    assert "no answer within 0.3s" in failed.steps["approve"].error
    assert defaulted.state is TaskState.SUCCEEDED, defaulted.error
    assert defaulted.steps["approve"].output == {"approved": False, "note": "nobody answered"}
    (done,) = [e for e in step_events(default_events, "approve") if e.state == StepState.SUCCEEDED]
    assert done.reason == "no answer within 0.3s: the default applies"


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"capability": "test.echo"}, "plan.steps[0].capability"),
        ({"human_input": None}, "plan.steps[0].human_input"),
        (
            {"human_input": HumanInput(prompt="?", approvers=("bob",))},
            "plan.steps[0].human_input.approvers[0]",
        ),
        (
            {"human_input": HumanInput(prompt="?", answer_schema=APPROVAL, default={"x": 1})},
            "plan.steps[0].human_input.default",
        ),
        ({"human_input": HumanInput(prompt=" ")}, "plan.steps[0].human_input.prompt"),
    ],
)
async def test_a_malformed_input_step_is_refused_naming_its_field(
    orchestrator: Orchestrator, certs: Path, step: dict[str, object], field: str
) -> None:
    spec = approval().steps[0].model_copy(update=step)
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.submit(plan=Plan(steps=(spec,)))

    assert refused.value.field == field
