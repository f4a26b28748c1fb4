"""Registering an endpoint that accepts connections but never answers fails with a status
whose message says what timed out, and never ends in whitespace (which Node's HTTP/2 stack
rejects, dropping the whole message)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind
from tests.security.helpers import capability, refusal, registry_stub

#: Each test waits out the registration's own timeouts (over 3 s).
pytestmark = pytest.mark.slow

AGENT = "echo-1"


@contextlib.asynccontextmanager
async def _silent(tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An endpoint that accepts connections (and, with ``tls``, the TLS handshake), then
    says nothing until the test ends; yields its ``host:port``."""
    done = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        done.set()
        server.close()
        await server.wait_closed()


def _agent_tls(certs: Path) -> ssl.SSLContext:
    """The agent's own certificate, so the orchestrator's identity check passes."""
    files = CertFiles.of(certs, IdentityKind.AGENT, AGENT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)
    context.set_alpn_protocols(["h2"])
    return context


async def _register(orchestrator: Orchestrator, certs: Path, endpoint: str) -> str:
    card = common_pb2.AgentCard(
        name=AGENT, endpoint=endpoint, max_concurrency=1, capabilities=[capability("test.echo")]
    )
    async with registry_stub(orchestrator, certs, "agent", AGENT) as stub:
        error = await refusal(stub.RegisterAgent(pb.RegisterAgentRequest(card=card), timeout=60))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert details == details.strip(), repr(details)
    assert orchestrator.registry.statuses() == []
    return details


async def test_an_endpoint_that_never_completes_the_tls_handshake_is_refused_saying_so(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with _silent() as endpoint:
        details = await _register(orchestrator, certs, endpoint)
    assert details.startswith(f"card.endpoint: cannot reach {endpoint} over TLS: "), details
    assert "no TLS handshake within" in details, details


async def test_an_endpoint_that_never_answers_on_the_session_stream_is_refused_saying_so(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with _silent(_agent_tls(certs)) as endpoint:
        details = await _register(orchestrator, certs, endpoint)
    assert details.startswith(f"card.endpoint: cannot open a Session to {endpoint}: "), details
    assert "no answer on the Session stream within" in details, details
