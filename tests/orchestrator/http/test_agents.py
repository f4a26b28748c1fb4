"""What the orchestrator has seen of an agent's work (latency, successes, failures), as gRPC
``ListAgents`` and HTTP ``GET /v1/agents`` answer it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.models import Plan, StepSpec, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https
from tests.support.agents import FaultyAgent
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

#: Three echoes, then a step that fails without a retry: three successes and one failure.
PLAN = Plan(
    steps=(
        *(
            StepSpec(id=name, capability="test.echo", input={"value": name, "delay": 0.01})
            for name in ("a", "b", "c")
        ),
        StepSpec(
            id="broken",
            capability="test.fail",
            input={"message": "no"},
            needs=("a", "b", "c"),
        ),
    )
)


async def test_an_agents_latency_and_success_rate_after_real_work_are_listed_over_grpc_and_http(
    http_mesh: Orchestrator, certs: Path, https: Https
) -> None:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{http_mesh.port}"]
    )
    async with AgentServer(FaultyAgent(), config), client(http_mesh, certs) as alice:
        (fresh,) = await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=PLAN)
        task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final)
        (echo,) = await alice.list_agents()
        async with https("client", "alice") as api:
            (view,) = (await api.get("/v1/agents")).json()

    assert task.state is TaskState.FAILED
    # Before any work: no latency and no rate yet, not an optimistic 100 %.
    assert (fresh.latency, fresh.success_rate, fresh.successes, fresh.failures) == (
        None,
        None,
        0,
        0,
    )
    assert (echo.successes, echo.failures) == (3, 1)
    assert echo.success_rate == pytest.approx(0.75)
    assert echo.latency is not None
    assert echo.latency > 0
    assert echo.circuit == "closed"  # the step failed, not the agent
    assert (view["successes"], view["failures"]) == (3, 1)
    assert view["success_rate"] == pytest.approx(0.75)
    assert view["latency_seconds"] == pytest.approx(echo.latency)


async def test_an_admin_drains_and_weighs_an_agent_over_http_and_a_client_may_not(
    http_mesh: Orchestrator, certs: Path, https: Https
) -> None:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{http_mesh.port}"]
    )
    async with AgentServer(FaultyAgent(), config), client(http_mesh, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        async with https("client", "alice") as api:
            refused = await api.post("/v1/agents/echo-1/drain")
        async with https("admin", "root") as api:
            drained = await api.post("/v1/agents/echo-1/drain")
            weighed = await api.put("/v1/agents/echo-1/weight", json={"weight": 0.25})
            bad = await api.put("/v1/agents/echo-1/weight", json={"weight": 0})
            missing = await api.post("/v1/agents/nobody/resume")
            (view,) = (await api.get("/v1/agents")).json()
            resumed = await api.post("/v1/agents/echo-1/resume")
    assert refused.status_code == 403
    assert drained.status_code == 200
    assert drained.json()["drained"] is True
    assert weighed.json()["weight"] == 0.25
    assert bad.status_code == 400
    assert missing.status_code == 404
    assert (view["drained"], view["weight"]) == (True, 0.25)
    assert resumed.json()["drained"] is False
