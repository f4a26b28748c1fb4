"""``agentmesh tasks respond`` answers a step waiting for input; ``tasks show`` says it asks."""

from __future__ import annotations

from agentmesh.models import StepState, TaskState
from tests.cli.conftest import Mesh
from tests.engine.test_human_input import approval
from tests.support.mesh import client
from tests.support.waiting import eventually


async def test_a_waiting_step_is_shown_and_answered_from_the_command_line(mesh: Mesh) -> None:
    async with client(mesh.orchestrator, mesh.certs) as alice:
        task_id = await alice.submit(plan=approval())
        await eventually(
            lambda: alice.get(task_id),
            lambda t: t.steps["approve"].state is StepState.INPUT_REQUIRED,
            within=30,
        )
        shown = await mesh.cli("tasks", "show", task_id)
        refused = await mesh.cli("tasks", "respond", task_id, "approve", '{"approved": true}')
        broken = await mesh.cli(
            "tasks", "respond", task_id, "approve", "not json, so a string", name="bob"
        )
        answered = await mesh.cli(
            "tasks", "respond", task_id, "approve", '{"approved": true}', name="bob"
        )
        task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=30)

    assert shown.exit_code == 0, shown.output
    assert "input_required" in shown.stdout
    assert "approve asks: Publish the brief?" in shown.stdout
    assert f"agentmesh tasks respond {task_id} approve VALUE" in shown.stdout
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: PERMISSION_DENIED step_id:")
    assert broken.exit_code == 1
    assert broken.stderr.startswith("error: INVALID_ARGUMENT value: does not match")
    assert answered.exit_code == 0, answered.output
    assert answered.stdout.startswith(f"answered approve of task {task_id}")
    assert task.state is TaskState.SUCCEEDED
    assert task.steps["approve"].output == {"approved": True}
