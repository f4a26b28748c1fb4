"""``agentmesh certs``: create the mesh CA and issue workload certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentmesh.cli.common import Output, OutputOption, echo_json
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
    output: OutputOption = Output.TEXT,
) -> None:
    """Create the mesh CA, the orchestrator's certificate and the CLI's (client ``cli``,
    the identity every ``agentmesh`` command uses by default)."""
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
        cli = issue(folder, IdentityKind.CLIENT, "cli")
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is Output.JSON:
        echo_json(
            {
                "ca": str(ca),
                "trust_domain": domain,
                "orchestrator": {"cert": str(files.cert), "key": str(files.key)},
                "client": {"cert": str(cli.cert), "key": str(cli.key)},
            }
        )
        return
    typer.echo(f"CA            {ca}  (spiffe://{domain})")
    typer.echo(f"orchestrator  {files.cert}  key {files.key} (0600)")
    typer.echo(f"client cli    {cli.cert}  key {cli.key} (0600)")


@app.command("issue")
def issue_command(
    kind: Annotated[IdentityKind, typer.Argument(help="agent, client, admin or orchestrator")],
    name: Annotated[str, typer.Argument(help="workload name, e.g. summarizer")],
    certs_dir: CertsDir = None,
    host: Annotated[
        list[str] | None, typer.Option(help="extra DNS name or IP it serves on")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 365,
    output: OutputOption = Output.TEXT,
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
    identity = f"spiffe://{domain}/{kind.value}/{name}"
    if output is Output.JSON:
        echo_json({"identity": identity, "cert": str(files.cert), "key": str(files.key)})
        return
    typer.echo(identity)
    typer.echo(f"cert {files.cert}  key {files.key} (0600)")


@app.command()
def revoke(
    identity: Annotated[
        str | None,
        typer.Argument(help="SPIFFE ID, or kind/name such as agent/rogue"),
    ] = None,
    serial: Annotated[
        list[str] | None, typer.Option(help="a certificate serial number (0x… hex or decimal)")
    ] = None,
    cert: Annotated[
        list[Path] | None, typer.Option(help="a certificate file whose serial number to revoke")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="revocation list [AGENTMESH_REVOCATION_FILE]")
    ] = None,
    certs_dir: CertsDir = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Add an identity or certificate to the revocation list that orchestrators watch."""
    from cryptography import x509

    from agentmesh.security.identity import Identity
    from agentmesh.security.revocation import parse_serial
    from agentmesh.security.revocation import revoke as add_revocations

    settings = Settings()
    target = file or (Path(settings.revocation_file) if settings.revocation_file else None)
    if target is None:
        raise typer.BadParameter("set AGENTMESH_REVOCATION_FILE or pass --file")
    identities: list[Identity] = []
    serials: list[int] = []
    try:
        if identity:
            if "://" not in identity:
                folder = _dir(certs_dir)
                domain = (
                    trust_domain_of(folder)
                    if (folder / "ca.pem").exists()
                    else settings.trust_domain
                )
                identity = f"spiffe://{domain}/{identity.strip('/')}"
            identities.append(Identity.parse(identity))
        for value in serial or ():
            serials.append(parse_serial(value))
        for path in cert or ():
            serials.append(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)
    except (AgentMeshError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if not identities and not serials:
        raise typer.BadParameter("name an IDENTITY, a --serial or a --cert to revoke")
    try:
        revoked = add_revocations(target, identities=identities, serials=serials)
    except AgentMeshError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output is Output.JSON:
        echo_json(
            {
                "revoked": {
                    "identities": [str(i) for i in identities],
                    "serials": [f"{n:#x}" for n in serials],
                },
                "file": str(target),
                "identities": len(revoked.identities),
                "serials": len(revoked.serials),
            }
        )
        return
    for item in identities:
        typer.echo(f"revoked {item}")
    for number in serials:
        typer.echo(f"revoked serial {number:#x}")
    typer.echo(
        f"{target}: {len(revoked.identities)} identities, {len(revoked.serials)} serials; "
        "running orchestrators apply it within AGENTMESH_SECURITY_RELOAD_SECONDS"
    )
