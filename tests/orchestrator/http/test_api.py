"""The HTTP/JSON API over real HTTPS: the same tasks, identities, policy and errors as gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https
from tests.security.helpers import RawAgent
from tests.support.mesh import client
from tests.support.waiting import eventually

ALICE = "spiffe://agentmesh.test/client/alice"
ECHO_PLAN = {"plan": {"steps": [{"id": "a", "capability": "test.echo", "input": {"value": 7}}]}}


async def _finished(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        answer = await api.get(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    return await eventually(read, lambda t: t["state"] == "succeeded")


async def test_a_client_certificate_submits_a_task_and_reads_its_result(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        answer = await api.post("/v1/tasks", json=ECHO_PLAN)
        assert answer.status_code == 201, answer.text
        task = answer.json()
        assert answer.headers["location"] == f"/v1/tasks/{task['task_id']}"
        assert task["owner"] == ALICE
        done = await _finished(api, task["task_id"])
    assert done["steps"][0]["output"] == {"value": 7}
    assert done["steps"][0]["agent"] == "echo-1"


async def test_a_task_submitted_over_http_is_the_same_task_over_grpc(
    http_mesh: Orchestrator, certs: Path, https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
        await _finished(api, task_id)
    async with client(http_mesh, certs, "alice") as grpc_client:
        task = await grpc_client.get(task_id)
    assert task.owner == ALICE
    assert task.steps["a"].output == {"value": 7.0}


async def test_no_certificate_and_no_token_is_refused_with_401(https: Https) -> None:
    async with https(None, None) as api:
        answer = await api.get("/v1/tasks")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["code"] == "UNAUTHENTICATED"
    assert "bearer token" in answer.json()["reason"]


async def test_the_health_check_and_schema_need_no_identity(https: Https) -> None:
    async with https(None, None) as api:
        health = await api.get("/healthz")
        schema = await api.get("/openapi.json")
    assert health.json() == {"status": "serving"}
    assert "/v1/tasks/{task_id}/events" in schema.json()["paths"]


async def test_bob_reading_alices_task_is_told_it_does_not_exist(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as alice:
        task_id = (await alice.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
    async with https("client", "bob") as bob:
        hers = await bob.get(f"/v1/tasks/{task_id}")
        cancel = await bob.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "mine now"})
        never = await bob.get("/v1/tasks/00000000-0000-4000-8000-000000000000")
        listed = (await bob.get("/v1/tasks")).json()
    assert hers.status_code == cancel.status_code == never.status_code == 404
    # Concealed: word for word what an id never issued gets.
    concealed = {"code": "NOT_FOUND", "field": "task_id", "reason": f"no task {task_id!r}"}
    assert hers.json() == concealed
    assert never.json()["reason"].startswith("no task ")
    assert listed == {"tasks": [], "next_page_token": ""}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": {"steps": []}}, "plan.steps"),
        (
            {"plan": {"steps": [{"id": "a", "capability": "test.echo", "needs": ["ghost"]}]}},
            "plan.steps[0].needs[0]",
        ),
        ({"plan": {"steps": [{"id": "a", "capabilty": "test.echo"}]}}, "plan.steps[0].capabilty"),
        ({"workflow": "a", "goal": "b"}, "spec"),
        ({}, "spec"),
        ({"goal": "x", "priority": 2**40}, "priority"),
        ({"goal": "x", "timeout_seconds": -1}, "timeout_seconds"),
        ({"goal": "x", "labels": {"bad key": "v"}}, 'labels["bad key"]'),
    ],
)
async def test_a_bad_request_is_400_naming_the_field(
    https: Https, echo_agent: RawAgent, body: dict[str, Any], field: str
) -> None:
    async with https("client", "alice") as api:
        answer = await api.post("/v1/tasks", json=body)
        listed = (await api.get("/v1/tasks")).json()
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "INVALID_ARGUMENT"
    assert answer.json()["field"] == field
    assert answer.json()["reason"]
    assert listed["tasks"] == []  # nothing was stored


async def test_a_body_that_is_not_json_is_400(https: Https) -> None:
    async with https("client", "alice") as api:
        answer = await api.post(
            "/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400
    assert answer.json()["code"] == "INVALID_ARGUMENT"


async def test_a_body_over_the_message_limit_is_413(https: Https, http_mesh: Orchestrator) -> None:
    big = "x" * (http_mesh.settings.max_message_bytes + 1)
    async with https("client", "alice") as api:
        answer = await api.post("/v1/tasks", json={"goal": big})
    assert answer.status_code == 413
    assert answer.json()["field"] == "body"


async def test_an_unknown_workflow_is_400_naming_the_known_ones(https: Https) -> None:
    async with https("client", "alice") as api:
        answer = await api.post("/v1/tasks", json={"workflow": "nope"})
    assert answer.status_code == 400
    assert answer.json()["field"] == "workflow"
    assert "known: document-brief" in answer.json()["reason"]


async def test_the_same_idempotency_key_with_another_request_is_409(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        first = await api.post("/v1/tasks", json={**ECHO_PLAN, "idempotency_key": "k1"})
        again = await api.post("/v1/tasks", json={**ECHO_PLAN, "idempotency_key": "k1"})
        other = await api.post("/v1/tasks", json={"goal": "else", "idempotency_key": "k1"})
    assert first.json()["task_id"] == again.json()["task_id"]
    assert other.status_code == 409
    assert other.json()["code"] == "ALREADY_EXISTS"


async def test_a_task_is_cancelled_over_http(
    http_mesh: Orchestrator, certs: Path, https: Https
) -> None:
    async with RawAgent(certs, "echo-1") as hanging:  # accepts and never answers
        await hanging.register(http_mesh)
        async with https("client", "alice") as api:
            task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
            await hanging.got_assignment.wait()
            answer = await api.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "changed mind"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] in ("cancelled", "rolled_back")


async def test_tasks_are_listed_by_state_a_page_at_a_time(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        ids = [(await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"] for _ in range(3)]
        for task_id in ids:
            await _finished(api, task_id)
        first = (await api.get("/v1/tasks", params={"page_size": 2})).json()
        rest = (
            await api.get(
                "/v1/tasks", params={"page_size": 2, "page_token": first["next_page_token"]}
            )
        ).json()
        running = (await api.get("/v1/tasks", params={"state": "running"})).json()
        bad = await api.get("/v1/tasks", params={"state": "sleeping"})
    assert len(first["tasks"]) == 2
    assert first["next_page_token"]
    assert len(rest["tasks"]) == 1
    assert rest["next_page_token"] == ""
    assert {t["task_id"] for t in first["tasks"] + rest["tasks"]} == set(ids)
    assert running["tasks"] == []
    assert bad.status_code == 400
    assert bad.json()["field"] == "state[0]"


async def test_agents_and_workflows_are_listed(https: Https, echo_agent: RawAgent) -> None:
    async with https("client", "alice") as api:
        agents = (await api.get("/v1/agents")).json()
        echoing = (await api.get("/v1/agents", params={"capability": "test.echo"})).json()
        none = (await api.get("/v1/agents", params={"capability": "no.such"})).json()
        workflows = (await api.get("/v1/workflows")).json()
    assert [a["card"]["name"] for a in agents] == ["echo-1"]
    assert agents[0]["identity"] == "spiffe://agentmesh.test/agent/echo-1"
    assert [a["card"]["name"] for a in echoing] == ["echo-1"]
    assert none == []
    assert "document-brief" in {w["name"] for w in workflows}
