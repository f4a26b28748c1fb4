"""The HTTP API's share of issue 11: answering an input step, submitting with a budget."""

from __future__ import annotations

from agentmesh.models import StepState
from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https
from tests.support.waiting import eventually

INPUT_PLAN = {
    "plan": {
        "steps": [
            {
                "id": "approve",
                "kind": "input",
                "human_input": {
                    "prompt": "Go?",
                    "answer_schema": {"type": "boolean"},
                    "approvers": ["spiffe://agentmesh.test/client/bob"],
                },
            }
        ]
    },
    "budget": {"tokens": 1000, "steps": 5},
}


async def test_an_input_step_is_answered_over_http_by_its_approver_only(
    http_mesh: Orchestrator, https: Https
) -> None:
    async with https("client", "alice") as alice, https("client", "bob") as bob:
        created = await alice.post("/v1/tasks", json=INPUT_PLAN)
        assert created.status_code == 201, created.text
        task_id = created.json()["task_id"]
        url = f"/v1/tasks/{task_id}/steps/approve/input"

        async def step_state() -> str:
            task = (await alice.get(f"/v1/tasks/{task_id}")).json()
            return str(task["steps"][0]["state"])

        await eventually(step_state, lambda s: s == StepState.INPUT_REQUIRED.value, within=30)
        by_owner = await alice.post(url, json={"value": True})
        wrong = await bob.post(url, json={"value": "yes"})
        answered = await bob.post(url, json={"value": True})

        async def final() -> dict[str, object]:
            return dict((await alice.get(f"/v1/tasks/{task_id}")).json())

        task = await eventually(final, lambda t: t["state"] == "succeeded", within=30)

    assert by_owner.status_code == 403, by_owner.text
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["field"] == "value"
    assert answered.status_code == 200, answered.text
    assert task["result"] == {"approve": True}
    assert task["budget"] == {"tokens": 1000, "cost": 0.0, "seconds": 0.0, "steps": 5}
