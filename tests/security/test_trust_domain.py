"""Only identities of the mesh's own trust domain get in, even with certificates of its CA.

A certificate signed by the mesh CA for ``spiffe://evil.example/...`` passes the TLS handshake;
everything after it must refuse it: the orchestrator's RPCs (UNAUTHENTICATED), the agent SDK's
server, the endpoint check at registration, and the policy's rules.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.config import Settings
from agentmesh.errors import CertificateError
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, Identity, IdentityKind, channel_credentials, issue
from agentmesh.security.policy import Action, Scope, default_policy, parse_policy
from tests.security.helpers import (
    RawAgent,
    events,
    orchestrator_stub,
    plan_request,
    refusal,
)
from tests.support.agents import FaultyAgent
from tests.support.waiting import eventually

OURS = "agentmesh.test"
EVIL = "evil.example"


@pytest.fixture
def foreign(certs: Path, tmp_path: Path) -> Path:
    """Certificates signed by the mesh CA for the trust domain evil.example (a copy of the CA
    in its own folder, so that the mesh's real certificates stay untouched)."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    for name in ("ca.pem", "ca.key"):
        shutil.copy(certs / name, folder / name)
    for kind, name in (
        (IdentityKind.ADMIN, "root"),
        (IdentityKind.CLIENT, "alice"),
        (IdentityKind.AGENT, "writer"),
        (IdentityKind.AGENT, "echo-1"),
        (IdentityKind.ORCHESTRATOR, "orchestrator"),
    ):
        issue(folder, kind, name, foreign_trust_domain=EVIL)
    return folder


@pytest.fixture
async def echo(mesh: Orchestrator, certs: Path) -> AsyncIterator[RawAgent]:
    """The mesh's own agent echo-1, registered (it never answers, so tasks stay running)."""
    async with RawAgent(certs, "echo-1") as agent:
        await agent.register(mesh)
        yield agent


async def _task_of_alice(mesh: Orchestrator, certs: Path) -> str:
    async with orchestrator_stub(mesh, certs) as alice:
        submitted = await alice.SubmitTask(plan_request(("a", "test.echo", {})), timeout=10)
    return str(submitted.task_id)


def _refused_for_domain(error: grpc.aio.AioRpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert f"spiffe://{EVIL}/" in (error.details() or "")
    assert f"trust domain {OURS!r}" in (error.details() or "")


async def test_a_foreign_admin_can_neither_list_nor_get_tasks(
    mesh: Orchestrator,
    certs: Path,
    foreign: Path,
    echo: RawAgent,
    captured: list[dict[str, Any]],
) -> None:
    task_id = await _task_of_alice(mesh, certs)

    async with orchestrator_stub(mesh, foreign, "admin", "root") as intruder:
        listed = await refusal(intruder.ListTasks(pb.ListTasksRequest(), timeout=10))
        got = await refusal(intruder.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10))

    _refused_for_domain(listed)
    _refused_for_domain(got)
    denied = events(captured, "security.denied")
    assert {d["identity"] for d in denied} == {f"spiffe://{EVIL}/admin/root"}
    assert {d["code"] for d in denied} == {"UNAUTHENTICATED"}
    assert len(denied) == 2


async def test_a_foreign_client_cannot_submit_a_task(
    mesh: Orchestrator, foreign: Path, echo: RawAgent
) -> None:
    async with orchestrator_stub(mesh, foreign, "client", "alice") as intruder:
        error = await refusal(intruder.SubmitTask(plan_request(("a", "test.echo", {})), timeout=10))

    _refused_for_domain(error)
    assert not echo.got_assignment.is_set()


async def test_a_foreign_agent_cannot_register_and_the_real_one_keeps_its_session(
    mesh: Orchestrator, certs: Path, foreign: Path, captured: list[dict[str, Any]]
) -> None:
    async with RawAgent(certs, "writer") as writer, RawAgent(foreign, "writer") as impostor:
        await writer.register(mesh)
        await eventually(lambda: _value(writer.sessions), lambda n: n == 1)

        error = await refusal(impostor.register(mesh))

        async with orchestrator_stub(mesh, certs) as alice:
            listed = await alice.ListAgents(pb.ListAgentsRequest(), timeout=10)
        assert impostor.sessions == 0
        assert writer.sessions == 1

    _refused_for_domain(error)
    [status] = [a for a in listed.agents if a.card.name == "writer"]
    assert status.identity == f"spiffe://{OURS}/agent/writer"
    assert status.card.endpoint == writer.endpoint
    assert status.connected
    assert any(
        d["identity"] == f"spiffe://{EVIL}/agent/writer"
        for d in events(captured, "security.denied")
    )


async def test_a_registration_whose_endpoint_serves_a_foreign_certificate_is_refused(
    mesh: Orchestrator, certs: Path, foreign: Path
) -> None:
    # The registrant is the mesh's own echo-1; the endpoint on its card is served with the
    # foreign echo-1's certificate.
    async with RawAgent(certs, "echo-1") as honest, RawAgent(foreign, "echo-1") as served:
        error = await refusal(honest.register(mesh, endpoint=served.endpoint))
        assert served.sessions == 0

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    details = error.details() or ""
    assert details.startswith("card.endpoint: ")
    assert f"spiffe://{EVIL}/agent/echo-1" in details
    assert f"trust domain {OURS!r}" in details


async def test_the_agent_sdk_refuses_callers_of_another_trust_domain(
    certs: Path, foreign: Path, captured: list[dict[str, Any]]
) -> None:
    settings = AgentSettings(
        certs_dir=certs, name="writer", orchestrators=["localhost:1"], drain_timeout_seconds=1.0
    )
    async with AgentServer(FaultyAgent(), settings) as server:
        orchestrator = CertFiles.of(foreign, IdentityKind.ORCHESTRATOR, "orchestrator")
        client = CertFiles.of(foreign, IdentityKind.CLIENT, "alice")
        async with grpc.aio.secure_channel(server.endpoint, channel_credentials(client)) as channel:
            described = await refusal(
                agent_pb2_grpc.AgentStub(channel).Describe(agent_pb2.DescribeRequest(), timeout=10)
            )
        async with grpc.aio.secure_channel(
            server.endpoint, channel_credentials(orchestrator)
        ) as channel:
            # The deadline only bounds the test should a Session be (wrongly) opened.
            call = agent_pb2_grpc.AgentStub(channel).Session(timeout=10)
            session = await refusal(call.read())

    _refused_for_domain(session)
    _refused_for_domain(described)
    assert not events(captured, "session.opened")
    denied = events(captured, "security.denied")
    assert [(d["method"], d["identity"], d["code"]) for d in denied] == [
        ("Describe", f"spiffe://{EVIL}/client/alice", "UNAUTHENTICATED"),
        ("Session", f"spiffe://{EVIL}/orchestrator/orchestrator", "UNAUTHENTICATED"),
    ]


def test_an_agent_defaults_to_the_trust_domain_of_its_ca_and_honours_an_explicit_one(
    certs: Path,
) -> None:
    assert AgentSettings(certs_dir=certs).resolved_trust_domain() == OURS
    assert AgentSettings(certs_dir=certs, trust_domain="other.test").resolved_trust_domain() == (
        "other.test"
    )


async def test_an_agent_whose_certificate_is_of_another_trust_domain_does_not_start(
    certs: Path,
) -> None:
    settings = AgentSettings(
        certs_dir=certs, name="writer", orchestrators=["localhost:1"], trust_domain=EVIL
    )
    with pytest.raises(CertificateError, match="trust domain"):
        async with AgentServer(FaultyAgent(), settings):
            pass


async def test_an_orchestrator_whose_certificate_is_of_another_trust_domain_does_not_start(
    settings: Settings,
) -> None:
    with pytest.raises(CertificateError, match="AGENTMESH_TRUST_DOMAIN"):
        async with Orchestrator(settings.model_copy(update={"trust_domain": EVIL})):
            pass


def test_kinds_rules_and_star_match_only_the_policys_own_trust_domain() -> None:
    policy = parse_policy(
        {
            "rules": [
                {"name": "clients", "kinds": ["client"], "allow": {"submit_tasks": True}},
                {"name": "everyone", "identities": ["*"], "allow": {"list_agents": True}},
                {
                    "name": "evil-auditors",
                    "identities": [f"spiffe://{EVIL}/admin/*"],
                    "allow": {"tasks": "any"},
                },
            ]
        },
        source="test",
        trust_domain=OURS,
    )
    ours = Identity(OURS, IdentityKind.CLIENT, "alice")
    theirs = Identity(EVIL, IdentityKind.CLIENT, "alice")
    assert [r.name for r in policy.rules_for(ours)] == ["clients", "everyone"]
    assert policy.rules_for(theirs) == []
    assert not policy.allows(theirs, Action.SUBMIT_TASKS).allowed
    assert not policy.allows(theirs, Action.LIST_AGENTS).allowed
    # An explicit pattern says what it means (authentication refuses such callers anyway).
    evil_admin = Identity(EVIL, IdentityKind.ADMIN, "root")
    assert [r.name for r in policy.rules_for(evil_admin)] == ["evil-auditors"]


def test_the_built_in_policy_grants_nothing_outside_its_trust_domain() -> None:
    policy = default_policy(OURS)
    admin = Identity(EVIL, IdentityKind.ADMIN, "root")
    agent = Identity(EVIL, IdentityKind.AGENT, "writer")
    assert policy.rules_for(admin) == []
    assert policy.scope(admin, Action.LIST_TASKS)[0] is Scope.NONE
    assert not policy.allows(admin, Action.SUBMIT_TASKS).allowed
    assert not policy.allows_capabilities(agent, ["text.write"]).allowed
    assert policy.scope(Identity(OURS, IdentityKind.ADMIN, "root"), Action.LIST_TASKS)[0] is (
        Scope.ANY
    )


async def _value(value: int) -> int:
    return value
