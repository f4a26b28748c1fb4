"""An orchestrator serving the HTTP API over HTTPS, and HTTP clients as mesh identities."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, Identity, IdentityKind
from agentmesh.security.tokens import issue_token
from tests.conftest import TRUST_DOMAIN
from tests.security.helpers import RawAgent, echo

#: An HTTPS client of the API: as the certificate ``kind/name``, or with no certificate.
Https = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def http_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings serving the HTTP API on an ephemeral port, with a revocation list and tokens
    file of the test's own, reloaded quickly."""
    return settings.model_copy(
        update={
            "http_listen": "127.0.0.1:0",
            "tokens_file": str(tmp_path / "tokens.yaml"),
            "revocation_file": str(tmp_path / "revoked.yaml"),
            "security_reload_seconds": 0.1,
        }
    )


@pytest.fixture
async def http_mesh(http_settings: Settings) -> AsyncIterator[Orchestrator]:
    """A running orchestrator with its HTTP API."""
    async with Orchestrator(http_settings) as running:
        yield running


@pytest.fixture
async def echo_agent(http_mesh: Orchestrator, certs: Path) -> AsyncIterator[RawAgent]:
    """Agent echo-1 (capability test.echo, answering with its input), registered."""
    async with RawAgent(certs, "echo-1", echo) as agent:
        await agent.register(http_mesh)
        yield agent


def tls(certs: Path, kind: str | None, name: str | None) -> ssl.SSLContext:
    """A client context trusting the mesh CA, presenting ``kind/name``'s certificate if given."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if kind is not None and name is not None:
        files = CertFiles.of(certs, IdentityKind(kind), name)
        context.load_cert_chain(str(files.cert), str(files.key))
    return context


@pytest.fixture
def https(http_mesh: Orchestrator, certs: Path) -> Https:
    """``async with https("client", "alice") as api:``; ``https(None, None, token=...)`` for a
    token without a certificate."""

    @contextlib.asynccontextmanager
    async def open_client(
        kind: str | None = "client", name: str | None = "alice", *, token: str = ""
    ) -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(
            base_url=f"https://localhost:{http_mesh.http_port}",
            verify=tls(certs, kind, name),
            headers=headers,
            timeout=20,
        ) as client:
            yield client

    return open_client


@pytest.fixture
def token_for(http_settings: Settings) -> Callable[[str, str], str]:
    """Issues a token in the orchestrator's tokens file: ``token_for("client", "carol")``."""

    def issue(kind: str, name: str) -> str:
        _, token = issue_token(
            http_settings.tokens_path, Identity(TRUST_DOMAIN, IdentityKind(kind), name)
        )
        return token

    return issue
