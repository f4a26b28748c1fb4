"""Transport: TLS 1.2+ with AEAD suites only, no plaintext unless the insecure dev mode is on."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import events, plan_request, refusal

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


async def _s_client(orchestrator: Orchestrator, certs: Path, *flags: str) -> tuple[int, str]:
    """Run ``openssl s_client`` against the orchestrator as client alice; (exit code, output)."""
    assert OPENSSL is not None
    process = await asyncio.create_subprocess_exec(
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{orchestrator.port}",
        "-CAfile",
        str(certs / "ca.pem"),
        "-cert",
        str(certs / "client" / "alice.pem"),
        "-key",
        str(certs / "client" / "alice.key"),
        "-alpn",
        "h2",
        *flags,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def _negotiated(output: str) -> bool:
    return "Verify return code: 0 (ok)" in output and "Cipher is (NONE)" not in output


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
async def test_tls_older_than_1_2_is_refused(mesh: Orchestrator, certs: Path, version: str) -> None:
    # SECLEVEL=0 makes our own client willing to speak the old protocol: the refusal must
    # come from the orchestrator.
    code, output = await _s_client(mesh, certs, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert code != 0
    assert not _negotiated(output)


@needs_openssl
@pytest.mark.parametrize(("version", "protocol"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
async def test_tls_1_2_and_1_3_are_served_with_aead_suites(
    mesh: Orchestrator, certs: Path, version: str, protocol: str
) -> None:
    code, output = await _s_client(mesh, certs, version)
    assert code == 0, output
    assert _negotiated(output)
    assert f"Protocol  : {protocol}" in output or f"New, {protocol}" in output
    cipher = next(line for line in output.splitlines() if "Cipher is" in line)
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher


@needs_openssl
@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
async def test_cbc_cipher_suites_are_refused(mesh: Orchestrator, certs: Path, cipher: str) -> None:
    code, output = await _s_client(mesh, certs, "-tls1_2", "-cipher", cipher)
    assert code != 0
    assert not _negotiated(output)


async def test_plaintext_is_refused_when_not_in_insecure_mode(mesh: Orchestrator) -> None:
    async with grpc.aio.insecure_channel(f"localhost:{mesh.port}") as opened:
        stub = pb_grpc.OrchestratorStub(opened)  # type: ignore[no-untyped-call]
        error = await refusal(stub.ListAgents(pb.ListAgentsRequest(), timeout=5))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_insecure_mode_serves_plaintext_as_a_dev_identity_and_warns_at_every_start(
    secure_settings: Settings, certs: Path, captured: list[dict[str, Any]]
) -> None:
    settings = secure_settings.model_copy(update={"insecure": True})
    for _ in range(2):
        async with Orchestrator(settings) as orchestrator:
            async with grpc.aio.insecure_channel(f"localhost:{orchestrator.port}") as opened:
                stub = pb_grpc.OrchestratorStub(opened)  # type: ignore[no-untyped-call]
                listed = await stub.ListAgents(pb.ListAgentsRequest(), timeout=5)
                refused = await refusal(
                    stub.SubmitTask(plan_request(("a", "test.nothing", {})), timeout=5)
                )
            from agentmesh.security import CertFiles, IdentityKind, channel_credentials

            credentials = channel_credentials(CertFiles.of(certs, IdentityKind.CLIENT, "alice"))
            async with grpc.aio.secure_channel(
                f"localhost:{orchestrator.port}", credentials
            ) as secure:
                tls = await refusal(
                    pb_grpc.OrchestratorStub(secure).ListAgents(  # type: ignore[no-untyped-call]
                        pb.ListAgentsRequest(), timeout=5
                    )
                )
    assert list(listed.agents) == []
    # The dev identity is an admin, so submitting gets as far as plan validation.
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown capability 'test.nothing'" in (refused.details() or "")
    assert tls.code() is grpc.StatusCode.UNAVAILABLE
    warnings = events(captured, "security.insecure_mode")
    assert len(warnings) == 2
    assert all(w["log_level"] == "warning" for w in warnings)
    assert warnings[0]["identity"] == "spiffe://agentmesh.test/admin/insecure-dev"
