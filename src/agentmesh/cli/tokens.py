"""``agentmesh tokens``: bearer tokens of the HTTP API, bound to identities, revocable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentmesh.cli.common import Output, OutputOption, echo_json
from agentmesh.config import Settings
from agentmesh.errors import AgentMeshError
from agentmesh.models import JSON
from agentmesh.security import Identity, IdentityKind, trust_domain_of
from agentmesh.security.identity import check_name
from agentmesh.security.tokens import TokenEntry, issue_token, load_tokens, revoke_token

app = typer.Typer(help="Issue and revoke bearer tokens of the HTTP API.", no_args_is_help=True)

TokensFile = Annotated[
    Path | None,
    typer.Option("--file", help="tokens file [AGENTMESH_TOKENS_FILE, else CERTS_DIR/tokens.yaml]"),
]
CertsDir = Annotated[
    Path | None, typer.Option("--dir", help="certificates folder [AGENTMESH_CERTS_DIR]")
]


def _path(file: Path | None, certs_dir: Path | None) -> Path:
    if file is not None:
        return file
    settings = Settings()
    if certs_dir is not None:
        settings = settings.model_copy(update={"certs_dir": certs_dir})
    return settings.tokens_path


def _entry_json(entry: TokenEntry) -> dict[str, JSON]:
    """A token's entry as scripts read it (its hash left out)."""
    return {"id": entry.id, "identity": entry.identity, "created": entry.created}


@app.command()
def issue(
    kind: Annotated[IdentityKind, typer.Argument(help="client or admin (or agent)")],
    name: Annotated[str, typer.Argument(help="workload name, e.g. alice")],
    file: TokensFile = None,
    certs_dir: CertsDir = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Issue a token for spiffe://<trust-domain>/<kind>/<name>; it is printed once only."""
    folder = certs_dir or Settings().certs_dir
    try:
        domain = (
            trust_domain_of(folder) if (folder / "ca.pem").exists() else Settings().trust_domain
        )
        identity = Identity(domain, kind, check_name(name))
        entry, token = issue_token(_path(file, certs_dir), identity)
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is Output.JSON:
        echo_json({**_entry_json(entry), "token": token})
        return
    typer.echo(f"token {entry.id} for {identity} (keep it secret: it is not stored):", err=True)
    typer.echo(token)


@app.command("list")
def list_command(
    file: TokensFile = None, certs_dir: CertsDir = None, output: OutputOption = Output.TEXT
) -> None:
    """The issued tokens: id, identity, when (never the tokens themselves)."""
    path = _path(file, certs_dir)
    try:
        entries = load_tokens(path).entries if path.exists() else ()
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is Output.JSON:
        echo_json([_entry_json(e) for e in entries])
        return
    for entry in entries:
        typer.echo(f"{entry.id}  {entry.identity}  {entry.created}")


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id, as `tokens list` shows it")],
    file: TokensFile = None,
    certs_dir: CertsDir = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Remove a token; running orchestrators refuse it within AGENTMESH_SECURITY_RELOAD_SECONDS."""
    try:
        entry = revoke_token(_path(file, certs_dir), token_id)
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is Output.JSON:
        echo_json(_entry_json(entry))
        return
    typer.echo(f"revoked token {entry.id} of {entry.identity}")
