"""``agentmesh certs``: create the mesh CA and issue workload certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentmesh.config import Settings
from agentmesh.errors import AgentMeshError
from agentmesh.security import IdentityKind, create_ca, issue, trust_domain_of

app = typer.Typer(help="Create the mesh CA and issue certificates.", no_args_is_help=True)

CertsDir = Annotated[
    Path | None, typer.Option("--dir", help="certificates folder [AGENTMESH_CERTS_DIR]")
]


def _dir(value: Path | None) -> Path:
    return value or Settings().certs_dir


@app.command()
def init(
    certs_dir: CertsDir = None,
    trust_domain: Annotated[str | None, typer.Option(help="SPIFFE trust domain")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing CA")] = False,
    host: Annotated[
        list[str] | None, typer.Option(help="extra DNS name or IP of the orchestrator")
    ] = None,
) -> None:
    """Create the mesh CA and the orchestrator's certificate."""
    folder = _dir(certs_dir)
    domain = trust_domain or Settings().trust_domain
    try:
        ca = create_ca(folder, domain, force=force)
        files = issue(
            folder,
            IdentityKind.ORCHESTRATOR,
            Settings().cert_name,
            hosts=("localhost", "127.0.0.1", "::1", *(host or ())),
        )
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"CA            {ca}  (spiffe://{domain})")
    typer.echo(f"orchestrator  {files.cert}  key {files.key} (0600)")


@app.command("issue")
def issue_command(
    kind: Annotated[IdentityKind, typer.Argument(help="agent, client, admin or orchestrator")],
    name: Annotated[str, typer.Argument(help="workload name, e.g. summarizer")],
    certs_dir: CertsDir = None,
    host: Annotated[
        list[str] | None, typer.Option(help="extra DNS name or IP it serves on")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 365,
) -> None:
    """Issue a certificate whose URI SAN is spiffe://<trust-domain>/<kind>/<name>."""
    from datetime import timedelta

    folder = _dir(certs_dir)
    try:
        files = issue(
            folder,
            kind,
            name,
            hosts=("localhost", "127.0.0.1", "::1", *(host or ())),
            valid_for=timedelta(days=days),
        )
        domain = trust_domain_of(folder)
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"spiffe://{domain}/{kind.value}/{name}")
    typer.echo(f"cert {files.cert}  key {files.key} (0600)")
