"""Who may do what, over real mTLS: the built-in policy, policy files, refusals and their logs."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.config import Settings
from agentmesh.errors import ConfigError
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import Identity, IdentityKind
from agentmesh.security.policy import Action, Scope, default_policy, load_policy, parse_policy
from tests.security.helpers import (
    RawAgent,
    events,
    orchestrator_stub,
    plan_request,
    refusal,
    registry_stub,
    write,
)
from tests.support.waiting import eventually

ALICE = Identity("agentmesh.test", IdentityKind.CLIENT, "alice")
ECHO = Identity("agentmesh.test", IdentityKind.AGENT, "echo-1")


def _write(path: Path, document: dict[str, Any]) -> None:
    write(path, json.dumps(document) if path.suffix == ".json" else _yaml(document))


def _yaml(document: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(document)


async def _submit(orchestrator: Orchestrator, certs: Path, kind: str, name: str) -> str:
    async with orchestrator_stub(orchestrator, certs, kind, name) as stub:
        response = await stub.SubmitTask(plan_request(("a", "test.echo", {"value": 1})), timeout=10)
    return response.task_id


# -- the built-in policy --------------------------------------------------------------------------


async def test_an_agent_registers_as_itself_and_is_told_its_identity(
    mesh: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        response = await agent.register(mesh)
    assert response.identity == ECHO.uri


async def test_registering_under_another_agents_name_is_denied_and_logged(
    mesh: Orchestrator, certs: Path, captured: list[dict[str, Any]]
) -> None:
    async with (
        RawAgent(certs, "echo-2") as impostor,
        registry_stub(mesh, certs, "agent", "echo-1") as stub,
    ):
        error = await refusal(
            stub.RegisterAgent(pb.RegisterAgentRequest(card=impostor.card()), timeout=10)
        )

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (f"card.name: {ECHO.uri} may register only as 'echo-1', not 'echo-2'")
    (denied,) = events(captured, "security.denied")
    assert denied["log_level"] == "warning"
    assert denied["identity"] == ECHO.uri
    assert denied["method"] == "/agentmesh.v1.Registry/RegisterAgent"
    assert "may register only as 'echo-1'" in denied["reason"]
    assert mesh.registry.statuses() == []


async def test_a_client_identity_cannot_register_an_agent(mesh: Orchestrator, certs: Path) -> None:
    async with (
        RawAgent(certs, "echo-1") as agent,
        registry_stub(mesh, certs, "client", "alice") as stub,
    ):
        card = agent.card(name="alice")
        error = await refusal(stub.RegisterAgent(pb.RegisterAgentRequest(card=card), timeout=10))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "only agent identities register" in (error.details() or "")


async def test_an_agent_cannot_deregister_another_agent(mesh: Orchestrator, certs: Path) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        await agent.register(mesh)
        async with registry_stub(mesh, certs, "agent", "echo-2") as stub:
            error = await refusal(
                stub.DeregisterAgent(pb.DeregisterAgentRequest(name="echo-1"), timeout=10)
            )
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == (
            "name: spiffe://agentmesh.test/agent/echo-2 may deregister only itself, not 'echo-1'"
        )
        assert [s.card.name for s in mesh.registry.statuses()] == ["echo-1"]

        async with registry_stub(mesh, certs, "agent", "echo-1") as stub:
            await stub.DeregisterAgent(pb.DeregisterAgentRequest(name="echo-1"), timeout=10)
        assert mesh.registry.statuses() == []


async def test_an_agent_may_not_submit_tasks_under_the_built_in_policy(
    mesh: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        await agent.register(mesh)
        error = await refusal(_submit(mesh, certs, "agent", "echo-1"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        "policy: no rule allows spiffe://agentmesh.test/agent/echo-1 to submit tasks "
        "(rules matching it: agents, owners, everyone)"
    )
    assert await mesh.store.list_tasks(owner=None, states=[], limit=10, offset=0) == []


async def test_a_client_reading_another_clients_task_is_told_it_does_not_exist(
    mesh: Orchestrator, certs: Path, captured: list[dict[str, Any]]
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        await agent.register(mesh)
        task_id = await _submit(mesh, certs, "client", "alice")
        never_issued = str(uuid.uuid4())
        async with orchestrator_stub(mesh, certs, "client", "bob") as bob:
            refusals = [
                await refusal(bob.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)),
                await refusal(bob.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)),
                await refusal(
                    _drain(bob.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=10))
                ),
            ]
            absent = await refusal(bob.GetTask(pb.GetTaskRequest(task_id=never_issued), timeout=10))
            bobs = await bob.ListTasks(pb.ListTasksRequest(), timeout=10)

        async with orchestrator_stub(mesh, certs, "client", "alice") as alice:
            own = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
            alices = await alice.ListTasks(pb.ListTasksRequest(), timeout=10)
        async with orchestrator_stub(mesh, certs, "admin", "root") as root:
            seen_by_admin = await root.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
            everything = await root.ListTasks(pb.ListTasksRequest(), timeout=10)
            await root.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)

    # The same answer as for an id never issued: the task's existence does not leak.
    for error in refusals:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error.details() == f"task_id: no task {task_id!r}"
    assert absent.code() is grpc.StatusCode.NOT_FOUND
    assert absent.details() == f"task_id: no task {never_issued!r}"
    assert list(bobs.tasks) == []
    assert own.owner == ALICE.uri
    assert [t.task_id for t in alices.tasks] == [task_id]
    assert seen_by_admin.task_id == task_id
    assert [t.task_id for t in everything.tasks] == [task_id]
    # ... but the operator sees what happened.
    denied = events(captured, "security.denied")
    assert len(denied) == 3
    assert {d["identity"] for d in denied} == {"spiffe://agentmesh.test/client/bob"}
    assert {d["method"].rsplit("/", 1)[1] for d in denied} == {
        "GetTask",
        "CancelTask",
        "WatchTask",
    }
    assert all(ALICE.uri in d["reason"] and "only of its own" in d["reason"] for d in denied)


async def _drain(call: Any) -> list[Any]:
    return [event async for event in call]


async def test_no_certificate_identity_means_unauthenticated_even_for_a_valid_tls_peer(
    mesh: Orchestrator, certs: Path
) -> None:
    # The orchestrator's own certificate is a mesh identity, but of a kind that may do nothing.
    async with orchestrator_stub(mesh, certs, "orchestrator", "orchestrator") as stub:
        error = await refusal(stub.SubmitTask(plan_request(("a", "test.echo", {})), timeout=10))
        listed = await stub.ListAgents(pb.ListAgentsRequest(), timeout=10)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert list(listed.agents) == []


# -- policy files ---------------------------------------------------------------------------------

RESTRICTED = {
    "version": 1,
    "rules": [
        {
            "name": "echo-agents",
            "identities": ["spiffe://*/agent/echo-*"],
            "allow": {"register_capabilities": ["test.echo", "text.*"]},
        },
        {
            "name": "alice",
            "identities": ["spiffe://agentmesh.test/client/alice"],
            "allow": {"submit_tasks": True, "tasks": "own"},
        },
        {
            "name": "auditors",
            "kinds": ["admin"],
            "allow": {"get_tasks": "any", "list_tasks": "any"},
        },
    ],
}


async def _restricted(settings: Settings, policy_file: Path) -> Orchestrator:
    _write(policy_file, RESTRICTED)
    return Orchestrator(settings.model_copy(update={"policy_file": str(policy_file)}))


async def test_an_agent_may_register_only_the_capabilities_the_policy_allows(
    secure_settings: Settings, certs: Path, policy_file: Path
) -> None:
    async with await _restricted(secure_settings, policy_file) as orchestrator:
        async with RawAgent(certs, "echo-1", capabilities=("text.summarize", "test.hang")) as agent:
            error = await refusal(agent.register(orchestrator))
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED
            assert error.details() == (
                "card.capabilities[1].name: policy: spiffe://agentmesh.test/agent/echo-1 may not "
                "register capability 'test.hang' (allowed patterns: test.echo, text.*)"
            )
            assert orchestrator.registry.statuses() == []

            await agent.register(orchestrator, capabilities=[agent.card().capabilities[0]])
            (status,) = orchestrator.registry.statuses()
            assert [c.name for c in status.card.capabilities] == ["text.summarize"]

        async with RawAgent(certs, "writer") as writer:
            error = await refusal(writer.register(orchestrator))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "allowed patterns: none" in (error.details() or "")


async def test_a_policy_file_decides_who_submits_and_reads(
    secure_settings: Settings, certs: Path, policy_file: Path
) -> None:
    orchestrator = await _restricted(secure_settings, policy_file)
    async with orchestrator, RawAgent(certs, "echo-1") as agent:
        await agent.register(orchestrator)
        task_id = await _submit(orchestrator, certs, "client", "alice")
        bob = await refusal(_submit(orchestrator, certs, "client", "bob"))
        async with orchestrator_stub(orchestrator, certs, "admin", "root") as root:
            seen = await root.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
            cancel = await refusal(
                root.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)
            )
            agents = await refusal(root.ListAgents(pb.ListAgentsRequest(), timeout=10))
    assert bob.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "(rules matching it: none)" in (bob.details() or "")
    assert seen.owner == ALICE.uri
    # get_tasks: any does not imply cancel_tasks; no rule lets admins list agents here.
    assert cancel.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "to cancel tasks (rules matching it: auditors)" in (cancel.details() or "")
    assert agents.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_changed_policy_file_applies_without_a_restart_and_a_broken_one_is_ignored(
    secure_settings: Settings, certs: Path, policy_file: Path, captured: list[dict[str, Any]]
) -> None:
    orchestrator = await _restricted(secure_settings, policy_file)
    async with orchestrator, RawAgent(certs, "echo-1") as agent:
        await agent.register(orchestrator)
        assert (await refusal(_submit(orchestrator, certs, "client", "bob"))).code() is (
            grpc.StatusCode.PERMISSION_DENIED
        )

        widened = json.loads(json.dumps(RESTRICTED))
        widened["rules"].append(
            {
                "name": "bob",
                "identities": ["spiffe://*/client/bob"],
                "allow": {"submit_tasks": True},
            }
        )
        _write(policy_file, widened)

        async def bob_submits() -> str:
            try:
                return await _submit(orchestrator, certs, "client", "bob")
            except grpc.aio.AioRpcError:
                return ""

        task_id = await eventually(bob_submits, bool, within=5)
        assert task_id

        write(policy_file, "rules:\n  - name: broken\n    allow: {sumbit_tasks: true}\n")
        await eventually(
            lambda: asyncio.sleep(0, events(captured, "config.invalid")), bool, within=5
        )
        # The last good policy stays in force.
        assert await _submit(orchestrator, certs, "client", "bob")

    (invalid,) = events(captured, "config.invalid")
    assert invalid["log_level"] == "error"
    assert invalid["what"] == "policy"
    assert "rules[0]" in invalid["error"]


async def test_an_invalid_policy_file_stops_the_orchestrator_from_starting(
    secure_settings: Settings, policy_file: Path
) -> None:
    write(
        policy_file,
        "rules:\n  - name: clients\n    kinds: [client]\n    allow: {sumbit_tasks: true}\n",
    )
    settings = secure_settings.model_copy(update={"policy_file": str(policy_file)})
    with pytest.raises(ConfigError) as failed:
        async with Orchestrator(settings):
            pass
    assert str(failed.value) == (
        f"{policy_file}: rules[0].allow.sumbit_tasks: Extra inputs are not permitted"
    )


async def test_a_missing_policy_file_stops_the_orchestrator_from_starting(
    secure_settings: Settings, tmp_path: Path
) -> None:
    settings = secure_settings.model_copy(update={"policy_file": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        async with Orchestrator(settings):
            pass


# -- the policy itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": [{"name": "x", "allow": {}}]}, "rules[0]: Value error, a rule needs identities"),
        (
            {"rules": [{"name": "x", "identities": ["client/alice"]}]},
            "rules[0].identities: Value error, 'client/alice' is neither",
        ),
        ({"rules": [{"name": "x", "kinds": ["robot"]}]}, "rules[0].kinds[0]: Input should be"),
        (
            {"rules": [{"name": "x", "kinds": ["client"], "allow": {"tasks": "mine"}}]},
            "rules[0].allow.tasks: Value error, must be one of none, own, any",
        ),
        (
            {"rules": [{"name": "x", "kinds": ["agent"]}, {"name": "x", "kinds": ["client"]}]},
            "(top level): Value error, two rules are called 'x'",
        ),
        ({"version": 2, "rules": []}, "version: Input should be 1"),
        ({}, "rules: Field required"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_policy(document, source="policy.yaml", trust_domain="agentmesh.test")
    assert str(refused.value).startswith(f"policy.yaml: {message}")


def test_malformed_yaml_and_json_are_refused(tmp_path: Path) -> None:
    bad_yaml, bad_json = tmp_path / "p.yaml", tmp_path / "p.json"
    bad_yaml.write_text("rules: [\n")
    bad_json.write_text("{rules: []}")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_policy(bad_yaml, trust_domain="agentmesh.test")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_policy(bad_json, trust_domain="agentmesh.test")


def test_identity_patterns_match_per_segment() -> None:
    policy = parse_policy(
        {
            "rules": [
                {
                    "name": "a",
                    "identities": ["spiffe://*/client/*"],
                    "allow": {"submit_tasks": True},
                },
                {"name": "b", "identities": ["spiffe://agentmesh.test/agent/analyst-?"]},
            ]
        },
        source="test",
        trust_domain="agentmesh.test",
    )
    assert policy.allows(ALICE, Action.SUBMIT_TASKS).allowed
    assert [r.name for r in policy.rules_for(Identity("x", IdentityKind.AGENT, "analyst-1"))] == []
    assert [
        r.name
        for r in policy.rules_for(Identity("agentmesh.test", IdentityKind.AGENT, "analyst-1"))
    ] == ["b"]
    assert not policy.allows(ECHO, Action.SUBMIT_TASKS).allowed


def test_the_built_in_policy_is_the_historical_behaviour() -> None:
    policy = default_policy("agentmesh.test")
    admin = Identity("agentmesh.test", IdentityKind.ADMIN, "root")
    assert policy.allows(ALICE, Action.SUBMIT_TASKS).allowed
    assert policy.allows(admin, Action.SUBMIT_TASKS).allowed
    assert not policy.allows(ECHO, Action.SUBMIT_TASKS).allowed
    assert policy.scope(ALICE, Action.GET_TASKS)[0] is Scope.OWN
    assert policy.scope(admin, Action.CANCEL_TASKS)[0] is Scope.ANY
    assert policy.allows(ECHO, Action.LIST_AGENTS).allowed
    assert policy.allows_capabilities(ECHO, ["anything.at-all"]).allowed
    assert not policy.allows_capabilities(ALICE, ["test.echo"]).allowed


def test_a_json_policy_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    _write(path, RESTRICTED)
    assert [r.name for r in load_policy(path, trust_domain="agentmesh.test").document.rules] == [
        "echo-agents",
        "alice",
        "auditors",
    ]
