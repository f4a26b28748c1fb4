"""The task list's changes as Server-Sent Events over HTTPS: new tasks, their state changes,
only the tasks the caller may list, refusals with their reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.config import Settings
from agentmesh.models import Plan
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import Identity, IdentityKind
from agentmesh.security.revocation import revoke
from agentmesh.security.watch import replace_file
from tests.conftest import REDIS_URL
from tests.orchestrator.http.conftest import Https, tls
from tests.orchestrator.http.test_api import ECHO_PLAN, _finished
from tests.orchestrator.http.test_events import _frames
from tests.security.helpers import RawAgent, echo
from tests.support.mesh import client
from tests.support.waiting import eventually

URL = "/v1/tasks/changes"
ALICE = "spiffe://agentmesh.test/client/alice"
#: Clients submit and see their own tasks, admins see every task, agents none.
POLICY = """\
version: 1
rules:
  - {name: agents, kinds: [agent], allow: {register_capabilities: ["*"]}}
  - {name: clients, kinds: [client], allow: {submit_tasks: true, tasks: own}}
  - {name: admins, kinds: [admin], allow: {tasks: any}}
"""


class Gate:
    """An agent script that answers with the input once the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def __call__(self, agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        await self.opened.wait()
        await echo(agent, assignment)


async def _task_frames(
    frames: AsyncIterator[dict[str, Any]], task_id: str, until: str
) -> list[dict[str, Any]]:
    """The tasks of the ``task`` frames (of any task) up to ``task_id`` in state ``until``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for frame in frames:
            if frame["event"] == "task":
                seen.append(frame["data"])
                if frame["data"]["task_id"] == task_id and frame["data"]["state"] == until:
                    return seen
    raise AssertionError(f"the stream ended before {task_id} was {until}: {seen}")


async def test_a_new_task_and_its_state_changes_arrive_on_the_open_stream(
    http_mesh: Orchestrator, certs: Path, https: Https
) -> None:
    gate = Gate()
    async with RawAgent(certs, "echo-1", gate) as agent, https("client", "alice") as api:
        await agent.register(http_mesh)
        async with api.stream("GET", URL) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = _frames(response)
            # Subscribed: from here on every change comes; this is when to list.
            assert (await anext(frames))["event"] == "relist"
            task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
            created = await _task_frames(frames, task_id, until="running")
            gate.opened.set()
            finished = await _task_frames(frames, task_id, until="succeeded")
    assert [t["task_id"] for t in created + finished] == [task_id] * len(created + finished)
    assert created[-1]["owner"] == ALICE
    # A task as GET /v1/tasks lists it: no steps, no result.
    assert finished[-1]["steps"] == []
    assert finished[-1]["result"] is None
    assert finished[-1]["updated_at"] >= created[-1]["updated_at"]


async def _submitted(api: httpx.AsyncClient) -> str:
    answer = await api.post("/v1/tasks", json=ECHO_PLAN)
    assert answer.status_code == 201, answer.text
    task_id: str = answer.json()["task_id"]
    await _finished(api, task_id)
    return task_id


async def test_each_caller_sees_only_what_it_may_list_and_others_are_refused_with_a_reason(
    http_settings: Settings, certs: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = http_settings.model_copy(update={"policy_file": str(policy)})
    async with Orchestrator(settings) as running, RawAgent(certs, "echo-1", echo) as agent:
        await agent.register(running)

        def client(kind: str | None, name: str | None) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=f"https://localhost:{running.http_port}",
                verify=tls(certs, kind, name),
                timeout=20,
            )

        async with client(None, None) as nobody, client("agent", "echo-2") as an_agent:
            anonymous = await nobody.get(URL)
            refused = await an_agent.get(URL)
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "UNAUTHENTICATED"
        assert "client certificate" in anonymous.json()["reason"]
        assert refused.status_code == 403
        assert refused.json()["code"] == "PERMISSION_DENIED"
        assert "to list tasks" in refused.json()["reason"]

        async with (
            client("client", "alice") as alice,
            client("client", "bob") as bob,
            client("admin", "root") as root,
            alice.stream("GET", URL) as alice_stream,
            bob.stream("GET", URL) as bob_stream,
            root.stream("GET", URL) as root_stream,
        ):
            streams = [_frames(s) for s in (alice_stream, bob_stream, root_stream)]
            for frames in streams:
                assert (await anext(frames))["event"] == "relist"
            alices = await _submitted(alice)
            bobs = await _submitted(bob)  # changed after alice's: it comes after hers
            alice_saw, bob_saw, root_saw = [
                await _task_frames(frames, task, until="succeeded")
                for frames, task in zip(streams, (alices, bobs, bobs), strict=True)
            ]
    assert {t["task_id"] for t in alice_saw} == {alices}
    assert {t["task_id"] for t in bob_saw} == {bobs}  # alice's changes came first, unseen
    assert {t["task_id"] for t in root_saw} == {alices, bobs}
    assert {t["owner"] for t in root_saw} == {ALICE, "spiffe://agentmesh.test/client/bob"}


async def test_a_list_watcher_revoked_meanwhile_is_told_why_and_the_stream_ends(
    http_settings: Settings, https: Https
) -> None:
    async with https("client", "alice") as api, api.stream("GET", URL) as response:
        frames = _frames(response)
        assert (await anext(frames))["event"] == "relist"
        revoke(
            Path(http_settings.revocation_file),
            identities=[Identity("agentmesh.test", IdentityKind.CLIENT, "alice")],
        )
        async with asyncio.timeout(30):
            rest = [frame async for frame in frames]
    assert rest[-1]["event"] == "error"
    assert rest[-1]["data"]["code"] == "UNAUTHENTICATED"
    assert "revocation list" in rest[-1]["data"]["reason"]


async def test_a_task_run_by_another_replica_arrives_through_redis(
    http_settings: Settings, certs: Path, postgres_database: dict[str, str]
) -> None:
    shared = {"redis_url": REDIS_URL, **postgres_database}
    serving = http_settings.model_copy(update={**shared, "replica_id": "a"})
    running = http_settings.model_copy(update={**shared, "replica_id": "b", "http_listen": ""})
    async with (
        Orchestrator(serving) as a,
        Orchestrator(running) as b,
        RawAgent(certs, "echo-1", echo) as agent,
    ):
        await agent.register(b)  # only b has an agent: the task runs there
        async with (
            httpx.AsyncClient(
                base_url=f"https://localhost:{a.http_port}",
                verify=tls(certs, "client", "alice"),
                timeout=20,
            ) as api,
            api.stream("GET", URL) as response,
            client(b, certs) as alice,
        ):
            frames = _frames(response)
            assert (await anext(frames))["event"] == "relist"
            task_id = await alice.submit(plan=Plan.model_validate(ECHO_PLAN["plan"]))
            seen = await _task_frames(frames, task_id, until="succeeded")
    assert seen[-1]["owner"] == ALICE


async def test_an_open_stream_ends_saying_why_once_a_reloaded_policy_refuses_its_caller(
    http_settings: Settings, certs: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = http_settings.model_copy(update={"policy_file": str(policy)})
    async with Orchestrator(settings) as running, RawAgent(certs, "echo-1", echo) as agent:
        await agent.register(running)
        async with (
            httpx.AsyncClient(
                base_url=f"https://localhost:{running.http_port}",
                verify=tls(certs, "client", "alice"),
                timeout=20,
            ) as alice,
            alice.stream("GET", URL) as response,
        ):
            frames = _frames(response)
            assert (await anext(frames))["event"] == "relist"
            # Clients may still submit, but no longer see any task.
            replace_file(policy, POLICY.replace("tasks: own", "get_tasks: own"), mode=0o644)
            await eventually(
                lambda: alice.get("/v1/tasks"), lambda r: r.status_code == 403, within=30
            )
            answer = await alice.post("/v1/tasks", json=ECHO_PLAN)
            assert answer.status_code == 201, answer.text
            async with asyncio.timeout(30):
                rest = [frame async for frame in frames]
    assert [f["event"] for f in rest] == ["error"]
    assert rest[0]["data"]["code"] == "PERMISSION_DENIED"
    assert "to list tasks" in rest[0]["data"]["reason"]
