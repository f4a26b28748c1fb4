"""Certificate lifecycle and secrets: expiry, rotation without restart, keys never leaked."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from cryptography import x509
from typer.testing import CliRunner

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.cli import app as cli
from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind, channel_credentials, create_ca, issue
from tests.security.helpers import RawAgent, events, orchestrator_stub, plan_request, rpc_code
from tests.support.mesh import wait_for_agents
from tests.support.processes import AgentProcesses


def _copy(certs: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    shutil.copytree(certs, folder)
    return folder


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def _list_agents(
    orchestrator: Orchestrator, certs: Path, *, server_name: str = ""
) -> grpc.StatusCode:
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.CLIENT, "alice"))
    async with grpc.aio.secure_channel(
        f"localhost:{orchestrator.port}", credentials, options=options
    ) as opened:
        stub = pb_grpc.OrchestratorStub(opened)  # type: ignore[no-untyped-call]
        return await rpc_code(stub.ListAgents(pb.ListAgentsRequest(), timeout=5))


async def _served_serial(orchestrator: Orchestrator, certs: Path) -> int:
    """The serial of the certificate the orchestrator presents in a fresh handshake."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.check_hostname = False
    files = CertFiles.of(certs, IdentityKind.CLIENT, "alice")
    context.load_cert_chain(str(files.cert), str(files.key))
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", orchestrator.port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_an_expired_client_certificate_is_refused_at_the_handshake(
    mesh: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    folder = _copy(certs, tmp_path)
    issue(
        folder,
        IdentityKind.CLIENT,
        "alice",
        not_before=datetime.now(UTC) - timedelta(days=30),
        valid_for=timedelta(days=1),
    )
    async with orchestrator_stub(mesh, folder, "client", "alice") as stub:
        code = await rpc_code(stub.ListTasks(pb.ListTasksRequest(), timeout=5))
    assert code is grpc.StatusCode.UNAVAILABLE


async def test_a_not_yet_valid_client_certificate_is_refused_at_the_handshake(
    mesh: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    folder = _copy(certs, tmp_path)
    issue(folder, IdentityKind.CLIENT, "alice", not_before=datetime.now(UTC) + timedelta(days=2))
    async with orchestrator_stub(mesh, folder, "client", "alice") as stub:
        code = await rpc_code(stub.ListTasks(pb.ListTasksRequest(), timeout=5))
    assert code is grpc.StatusCode.UNAVAILABLE


async def test_a_replaced_orchestrator_certificate_is_used_without_a_restart(
    secure_settings: Settings, certs: Path, tmp_path: Path, captured: list[dict[str, Any]]
) -> None:
    folder = _copy(certs, tmp_path)
    files = CertFiles.of(folder, IdentityKind.ORCHESTRATOR, "orchestrator")
    settings = secure_settings.model_copy(update={"certs_dir": folder})
    async with Orchestrator(settings) as orchestrator:
        old = _serial(files.cert)
        assert await _served_serial(orchestrator, folder) == old
        assert await _list_agents(orchestrator, folder) is grpc.StatusCode.OK
        assert await _list_agents(orchestrator, folder, server_name="rotated.test") is (
            grpc.StatusCode.UNAVAILABLE
        )

        # A new certificate from the same CA, for a different set of host names, written the
        # way tools do: the key first, the certificate a moment later.
        scratch = _copy(folder, tmp_path / "scratch")
        new_files = issue(
            scratch, IdentityKind.ORCHESTRATOR, "orchestrator", hosts=("rotated.test",)
        )
        shutil.copyfile(new_files.key, files.key)
        # Key and certificate do not match yet: the old pair is still served.
        assert await _served_serial(orchestrator, folder) == old
        assert events(captured, "tls.rotation_deferred")
        shutil.copyfile(new_files.cert, files.cert)

        new = _serial(files.cert)
        assert await _served_serial(orchestrator, folder) == new != old
        assert await _list_agents(orchestrator, folder, server_name="rotated.test") is (
            grpc.StatusCode.OK
        )
        assert await _list_agents(orchestrator, folder) is grpc.StatusCode.UNAVAILABLE

        # The orchestrator also dials agents with its new certificate.
        async with RawAgent(folder, "echo-1") as agent:
            await agent.register(orchestrator, server_name="rotated.test")
        assert agent.orchestrator_serials == [new]
    assert events(captured, "tls.certificate_rotated")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_written_readable_by_their_owner_only(tmp_path: Path) -> None:
    create_ca(tmp_path, "agentmesh.test")
    files = issue(tmp_path, IdentityKind.AGENT, "writer")
    assert _mode(tmp_path / "ca.key") == 0o600
    assert _mode(files.key) == 0o600
    assert _mode(files.cert) & 0o077 != 0o077  # certificates are public; only keys are locked

    runner = CliRunner()
    folder = tmp_path / "cli"
    old = os.umask(0o000)  # even a permissive umask does not open keys up
    try:
        assert runner.invoke(cli, ["certs", "init", "--dir", str(folder)]).exit_code == 0
        issued = runner.invoke(cli, ["certs", "issue", "client", "carol", "--dir", str(folder)])
    finally:
        os.umask(old)
    assert issued.exit_code == 0
    for key in (folder / "ca.key", folder / "orchestrator" / "orchestrator.key"):
        assert _mode(key) == 0o600
    assert _mode(folder / "client" / "carol.key") == 0o600
    assert "PRIVATE KEY" not in issued.output


@pytest.fixture
def full_log() -> Iterator[io.StringIO]:
    """Everything the orchestrator logs, at debug level, as JSON lines."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("debug", json=True, stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_no_private_key_is_ever_logged_or_returned(
    secure_settings: Settings,
    certs: Path,
    agents: AgentProcesses,
    full_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[bytes] = []
    async with Orchestrator(secure_settings) as orchestrator:
        address = f"localhost:{orchestrator.port}"
        agents.start("tests.support.agents", "echo-1", [address])
        async with orchestrator_stub(orchestrator, certs) as alice:
            from agentmesh.client import Client

            async with Client(address, certs, "alice") as client:
                await wait_for_agents(client, "echo-1")
            task_id = (
                await alice.SubmitTask(plan_request(("a", "test.echo", {"value": "x"})), timeout=10)
            ).task_id
            answers += [
                e.SerializeToString()
                async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20)
            ]
            answers.append(
                (await alice.GetTask(pb.GetTaskRequest(task_id=task_id))).SerializeToString()
            )
            answers.append((await alice.ListTasks(pb.ListTasksRequest())).SerializeToString())
            listed = await alice.ListAgents(pb.ListAgentsRequest())
            answers.append(listed.SerializeToString())
            # Refusals too, including a bad certificate and a key-sized garbage request.
            await rpc_code(alice.GetTask(pb.GetTaskRequest(task_id="-----BEGIN PRIVATE")))
        endpoint = listed.agents[0].card.endpoint
        credentials = channel_credentials(CertFiles.of(certs, IdentityKind.CLIENT, "alice"))
        async with grpc.aio.secure_channel(endpoint, credentials) as opened:
            card = await agent_pb2_grpc.AgentStub(opened).Describe(agent_pb2.DescribeRequest())  # type: ignore[no-untyped-call]
            answers.append(card.SerializeToString())
        broken = tmp_path / "broken"
        shutil.copytree(certs, broken)
        (broken / "client" / "alice.pem").write_bytes(
            (broken / "client" / "alice.key").read_bytes()
        )
        with pytest.raises(grpc.RpcError):
            async with orchestrator_stub(orchestrator, broken) as stub:
                await stub.ListTasks(pb.ListTasksRequest(), timeout=5)
        await agents.terminate("echo-1")

    logged = full_log.getvalue()
    assert '"event": "task.submitted"' in logged  # the capture did see the run
    for text in (logged, caplog.text, agents.log("echo-1")):
        assert "PRIVATE KEY" not in text
    for answer in answers:
        assert b"PRIVATE KEY" not in answer


def test_the_endpoint_check_reuses_its_tls_context_until_the_certificate_changes(
    tmp_path: Path,
) -> None:
    from agentmesh.security import peer_check

    create_ca(tmp_path, "agentmesh.test")
    files = issue(tmp_path, IdentityKind.ORCHESTRATOR, "orchestrator")
    first = peer_check._context(files)
    assert peer_check._context(files) is first  # loaded once for many registrations
    before = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
    os.utime(files.cert, ns=(0, 0))  # as old as can be: the renewed file is surely newer
    issue(tmp_path, IdentityKind.ORCHESTRATOR, "orchestrator")  # renewed on disk
    assert x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number != before
    renewed = peer_check._context(files)
    assert renewed is not first
    assert peer_check._context(files) is renewed


async def test_the_endpoint_check_leaves_no_tls_connection_for_the_garbage_collector(
    tmp_path: Path,
) -> None:
    # A settled orchestrator collects old garbage rarely (orchestrator/tuning.py): a check
    # whose connection outlived it in a reference cycle held 256 KiB each until then.
    import asyncio.sslproto
    import gc

    from agentmesh.security.peer_check import endpoint_identity
    from agentmesh.security.tls import server_credentials

    create_ca(tmp_path, "agentmesh.test")
    orchestrator = issue(tmp_path, IdentityKind.ORCHESTRATOR, "orchestrator")
    agent = issue(tmp_path, IdentityKind.AGENT, "checked")
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(agent))
    await server.start()
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            identity = await endpoint_identity(
                f"127.0.0.1:{port}", orchestrator, trust_domain="agentmesh.test"
            )
            assert identity.name == "checked"
        # The aborted transports finish closing on the loop's next turns.
        for _ in range(10):
            await asyncio.sleep(0)
        left = [o for o in gc.get_objects() if isinstance(o, asyncio.sslproto.SSLProtocol)]
        assert left == []
    finally:
        gc.enable()
        await server.stop(None)
