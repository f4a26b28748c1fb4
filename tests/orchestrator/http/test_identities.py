"""Who may call the HTTP API: mesh client certificates, bearer tokens, and what is refused."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agentmesh.cli import app as cli
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import Identity, IdentityKind, create_ca, issue
from agentmesh.security.revocation import revoke
from agentmesh.security.tokens import load_tokens, revoke_token
from tests.orchestrator.http.conftest import Https, tls
from tests.orchestrator.http.test_api import ECHO_PLAN
from tests.security.helpers import RawAgent
from tests.support.waiting import eventually

CAROL = "spiffe://agentmesh.test/client/carol"


async def _status(api: httpx.AsyncClient, path: str = "/v1/tasks") -> int:
    return (await api.get(path)).status_code


async def test_a_token_stands_for_its_identity_without_a_certificate(
    https: Https, token_for: Callable[[str, str], str], echo_agent: RawAgent
) -> None:
    token = token_for("client", "carol")
    async with https(None, None, token=token) as api:
        await eventually(lambda: _status(api), lambda s: s == 200)  # the file is reloaded
        answer = await api.post("/v1/tasks", json=ECHO_PLAN)
    assert answer.status_code == 201, answer.text
    assert answer.json()["owner"] == CAROL


async def test_a_token_wins_over_the_certificate_it_comes_with(
    https: Https, token_for: Callable[[str, str], str], echo_agent: RawAgent
) -> None:
    token = token_for("client", "carol")
    async with https("client", "alice", token=token) as api:
        await eventually(lambda: _status(api), lambda s: s == 200)
        answer = await api.post("/v1/tasks", json=ECHO_PLAN)
    assert answer.json()["owner"] == CAROL


@pytest.mark.parametrize(
    "header", ["Bearer amt_00000000_guessed", "Bearer", "Basic YWxpY2U6c2VjcmV0", "amt_x"]
)
async def test_an_unknown_or_malformed_authorization_is_401(
    http_mesh: Orchestrator, certs: Path, header: str
) -> None:
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{http_mesh.http_port}",
        verify=tls(certs, "client", "alice"),  # a good certificate does not rescue a bad token
        headers={"Authorization": header},
    ) as api:
        answer = await api.get("/v1/tasks")
    assert answer.status_code == 401
    assert answer.json()["code"] == "UNAUTHENTICATED"


async def test_a_revoked_token_is_refused(
    https: Https, http_settings: Settings, token_for: Callable[[str, str], str]
) -> None:
    token = token_for("client", "carol")
    async with https(None, None, token=token) as api:
        await eventually(lambda: _status(api), lambda s: s == 200)
        (entry,) = load_tokens(http_settings.tokens_path).entries
        revoke_token(http_settings.tokens_path, entry.id)
        await eventually(lambda: _status(api), lambda s: s == 401)
        answer = await api.get("/v1/tasks")
    assert answer.json()["reason"] == "unknown or revoked token"


async def test_a_revoked_identity_is_refused_by_certificate_and_by_token(
    https: Https, http_settings: Settings, token_for: Callable[[str, str], str]
) -> None:
    token = token_for("client", "alice")
    async with https("client", "alice") as by_cert, https(None, None, token=token) as by_token:
        await eventually(lambda: _status(by_token), lambda s: s == 200)
        revoke(
            Path(http_settings.revocation_file),
            identities=[Identity("agentmesh.test", IdentityKind.CLIENT, "alice")],
        )
        await eventually(lambda: _status(by_cert), lambda s: s == 401)
        assert await _status(by_token) == 401
        reason = (await by_token.get("/v1/tasks")).json()["reason"]
    assert "revocation list" in reason


async def test_a_certificate_of_another_ca_fails_the_handshake(
    http_mesh: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    create_ca(foreign, "agentmesh.test")
    files = issue(foreign, IdentityKind.CLIENT, "alice")
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(files.cert), str(files.key))
    async with httpx.AsyncClient(verify=context) as api:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await api.get(f"https://localhost:{http_mesh.http_port}/v1/tasks")


async def test_the_api_speaks_no_plaintext_outside_insecure_mode(
    http_mesh: Orchestrator,
) -> None:
    async with httpx.AsyncClient() as api:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            await api.get(f"http://localhost:{http_mesh.http_port}/healthz")


async def test_insecure_mode_serves_plaintext_as_the_development_identity(
    http_settings: Settings,
) -> None:
    async with (
        Orchestrator(http_settings.model_copy(update={"insecure": True})) as insecure,
        httpx.AsyncClient(base_url=f"http://localhost:{insecure.http_port}") as api,
    ):
        listed = await api.get("/v1/tasks")
        refused = await api.post("/v1/tasks", json=ECHO_PLAN)
    assert listed.status_code == 200
    assert refused.json()["field"] == "plan.steps[0].capability"  # past the identity check


def test_the_cli_issues_lists_and_revokes_tokens(certs: Path, tmp_path: Path) -> None:
    file = tmp_path / "tokens.yaml"
    runner = CliRunner()
    issued = runner.invoke(
        cli, ["tokens", "issue", "client", "carol", "--dir", str(certs), "--file", str(file)]
    )
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip().splitlines()[-1]
    tokens = load_tokens(file)
    assert tokens.identity_of(token) == Identity.parse(CAROL)
    assert token not in file.read_text()  # only its hash is kept
    assert file.stat().st_mode & 0o077 == 0
    listed = runner.invoke(cli, ["tokens", "list", "--file", str(file)])
    (entry,) = tokens.entries
    assert f"{entry.id}  {CAROL}" in listed.stdout
    revoked = runner.invoke(cli, ["tokens", "revoke", entry.id, "--file", str(file)])
    assert revoked.exit_code == 0, revoked.output
    assert load_tokens(file).identity_of(token) is None
    again = runner.invoke(cli, ["tokens", "revoke", entry.id, "--file", str(file)])
    assert again.exit_code != 0
