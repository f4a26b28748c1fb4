"""Revoking an identity or a certificate: new calls refused, open streams and Sessions closed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from typer.testing import CliRunner

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.cli import app as cli
from agentmesh.config import Settings
from agentmesh.errors import ConfigError
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import Identity, IdentityKind, issue
from agentmesh.security.revocation import load_revocations, parse_serial, revoke
from tests.security.helpers import (
    RawAgent,
    echo,
    events,
    orchestrator_stub,
    plan_request,
    refusal,
    rpc_code,
    write,
)
from tests.support.waiting import eventually

ALICE = Identity("agentmesh.test", IdentityKind.CLIENT, "alice")


async def _code_of_get(orchestrator: Orchestrator, certs: Path, name: str) -> grpc.StatusCode:
    async with orchestrator_stub(orchestrator, certs, "client", name) as stub:
        return await rpc_code(stub.ListTasks(pb.ListTasksRequest(), timeout=10))


async def test_a_revoked_client_is_refused_within_seconds_of_certs_revoke(
    mesh: Orchestrator, certs: Path, revocation_file: Path, captured: list[dict[str, Any]]
) -> None:
    assert await _code_of_get(mesh, certs, "alice") is grpc.StatusCode.OK

    result = CliRunner().invoke(
        cli,
        ["certs", "revoke", "client/alice", "--dir", str(certs), "--file", str(revocation_file)],
    )
    assert result.exit_code == 0, result.output
    assert "revoked spiffe://agentmesh.test/client/alice" in result.output

    async def alice() -> grpc.StatusCode:
        return await _code_of_get(mesh, certs, "alice")

    await eventually(alice, lambda code: code is grpc.StatusCode.UNAUTHENTICATED, within=3)
    async with orchestrator_stub(mesh, certs, "client", "alice") as stub:
        error = await refusal(stub.GetTask(pb.GetTaskRequest(task_id="x"), timeout=10))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == f"revoked: identity {ALICE.uri} is on the revocation list"
    assert await _code_of_get(mesh, certs, "bob") is grpc.StatusCode.OK
    assert any(d["identity"] == ALICE.uri for d in events(captured, "security.denied"))


async def _read_until_it_ends(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_a_revoked_clients_open_watch_stream_is_closed(
    mesh: Orchestrator, certs: Path, revocation_file: Path, captured: list[dict[str, Any]]
) -> None:
    async with RawAgent(certs, "echo-1") as agent:  # never answers: the task runs on
        await agent.register(mesh)
        async with (
            orchestrator_stub(mesh, certs, "client", "alice") as alice,
            orchestrator_stub(mesh, certs, "admin", "root") as root,
        ):
            task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})))).task_id
            watched = alice.WatchTask(pb.WatchTaskRequest(task_id=task_id))
            overseen = root.WatchTask(pb.WatchTaskRequest(task_id=task_id))
            first = await watched.read()
            await overseen.read()
            assert first.task_state.state == pb.TASK_STATE_RUNNING

            revoke(revocation_file, identities=[ALICE])
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(5):
                closed = await refusal(_read_until_it_ends(watched))
            took = loop.time() - started

            # Someone else's stream on the same task is untouched.
            assert not overseen.done()
            overseen.cancel()

    assert closed.code() is grpc.StatusCode.UNAUTHENTICATED
    assert closed.details() == f"revoked: identity {ALICE.uri} is on the revocation list"
    assert took < 3
    (stream_closed,) = events(captured, "security.stream_closed")
    assert stream_closed["identity"] == ALICE.uri
    assert stream_closed["method"] == "/agentmesh.v1.Orchestrator/WatchTask"


async def test_a_revoked_agents_session_is_closed_and_its_work_fails_over(
    mesh: Orchestrator, certs: Path, revocation_file: Path, captured: list[dict[str, Any]]
) -> None:
    async with RawAgent(certs, "echo-1") as revoked, RawAgent(certs, "echo-2", echo) as spare:
        await revoked.register(mesh)
        async with orchestrator_stub(mesh, certs) as alice:
            task_id = (
                await alice.SubmitTask(plan_request(("a", "test.echo", {"value": 7})), timeout=10)
            ).task_id
            await asyncio.wait_for(revoked.got_assignment.wait(), 10)
            await spare.register(mesh)

            agent_identity = Identity("agentmesh.test", IdentityKind.AGENT, "echo-1")
            revoke(revocation_file, identities=[agent_identity])

            async def names() -> list[str]:
                return [
                    a.card.name for a in (await alice.ListAgents(pb.ListAgentsRequest())).agents
                ]

            await eventually(names, lambda listed: listed == ["echo-2"], within=3)
            events_ = [
                e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=15)
            ]
            task = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        again = await refusal(revoked.register(mesh))

    assert task.state == pb.TASK_STATE_SUCCEEDED
    assert task.steps[0].agent == "echo-2"
    assert events_[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
    assert again.code() is grpc.StatusCode.UNAUTHENTICATED
    (closed,) = events(captured, "security.agent_revoked")
    assert closed["identity"] == agent_identity.uri
    assert any(e["event"] == "agent.removed" and e["agent"] == "echo-1" for e in captured)


async def test_revoking_a_serial_refuses_that_certificate_and_no_other(
    mesh: Orchestrator, certs: Path, revocation_file: Path, tmp_path: Path
) -> None:
    # A second, newer certificate for the same identity, from the same CA.
    renewed = tmp_path / "renewed"
    shutil.copytree(certs, renewed)
    issue(renewed, IdentityKind.CLIENT, "alice")

    serial = x509.load_pem_x509_certificate((certs / "client" / "alice.pem").read_bytes())
    revoke(revocation_file, serials=[serial.serial_number])

    async def old() -> grpc.StatusCode:
        return await _code_of_get(mesh, certs, "alice")

    await eventually(old, lambda code: code is grpc.StatusCode.UNAUTHENTICATED, within=3)
    assert await _code_of_get(mesh, renewed, "alice") is grpc.StatusCode.OK
    async with orchestrator_stub(mesh, certs, "client", "alice") as stub:
        error = await refusal(stub.ListTasks(pb.ListTasksRequest(), timeout=10))
    assert error.details() == (
        f"revoked: certificate serial {serial.serial_number:#x} is on the revocation list"
    )


async def test_an_identity_revoked_before_start_is_refused_from_the_first_call(
    secure_settings: Settings, certs: Path, revocation_file: Path
) -> None:
    revoke(revocation_file, identities=[ALICE])
    async with Orchestrator(secure_settings) as orchestrator:
        assert await _code_of_get(orchestrator, certs, "alice") is grpc.StatusCode.UNAUTHENTICATED
        assert await _code_of_get(orchestrator, certs, "bob") is grpc.StatusCode.OK


async def test_a_broken_revocation_list_keeps_the_last_good_one(
    mesh: Orchestrator, certs: Path, revocation_file: Path, captured: list[dict[str, Any]]
) -> None:
    revoke(revocation_file, identities=[ALICE])

    async def alice() -> grpc.StatusCode:
        return await _code_of_get(mesh, certs, "alice")

    await eventually(alice, lambda code: code is grpc.StatusCode.UNAUTHENTICATED, within=3)
    write(revocation_file, "identities: [not-a-spiffe-id]\n")
    await eventually(lambda: asyncio.sleep(0, events(captured, "config.invalid")), bool, within=3)
    assert await alice() is grpc.StatusCode.UNAUTHENTICATED
    assert "identities" in events(captured, "config.invalid")[0]["error"]


def test_serial_numbers_are_read_in_every_usual_notation() -> None:
    assert parse_serial("0x1A2b") == 0x1A2B
    assert parse_serial("1a:2b") == 0x1A2B
    assert parse_serial("6699") == 6699
    assert parse_serial(6699) == 6699
    for bad in ("0xzz", "", "-5", 0, True, "1" * 60):
        with pytest.raises(ValueError, match="serial"):
            parse_serial(bad)  # type: ignore[arg-type]


def test_an_invalid_revocation_list_is_refused_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "revoked.yaml"
    path.write_text("identities: [spiffe://d/agent/ok, spiffe://d/robot/x]\n")
    with pytest.raises(ConfigError, match=r"identities\[1\]: Value error, unknown identity kind"):
        load_revocations(path)
    path.write_text("serials: [0xnope]\n")
    with pytest.raises(ConfigError, match=r"serials\[0\]"):
        load_revocations(path)
    path.write_text("")
    assert load_revocations(path).identities == frozenset()


def test_certs_revoke_needs_a_file_and_something_to_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(cli, ["certs", "revoke", "--file", str(tmp_path / "r.yaml")])
    assert nothing.exit_code != 0
    assert "name an IDENTITY" in nothing.output
    bad = runner.invoke(
        cli, ["certs", "revoke", "client/Alice!", "--file", str(tmp_path / "r.yaml")]
    )
    assert bad.exit_code != 0
    assert not (tmp_path / "r.yaml").exists()
