"""``agentmesh dev``: a local mesh in the foreground, in one command.

Certificates are created in the certificates folder when missing (kept otherwise, so that
agents and clients issued from the same CA keep working across runs), then an orchestrator
on ``AGENTMESH_LISTEN`` with its state in a SQLite file, and the example agents as
processes. Ctrl-C (or SIGTERM) stops them all: the agents drain, then the orchestrator.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentmesh.cli import common
from agentmesh.cli.common import DEFAULT_CERTS, CertsDir
from agentmesh.cli.demo import AGENTS, agent_processes, wait_for_agents
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind, create_ca, issue, trust_domain_of

#: The client identity every ``agentmesh`` command uses by default.
CLI_CLIENT = "cli"


def ensure_certs(folder: Path, trust_domain: str, agents: tuple[str, ...]) -> list[str]:
    """Create what is missing of: the CA, the orchestrator's, the CLI's and the agents'
    certificates; return what was created, as ``kind/name``."""
    created: list[str] = []
    if not (folder / "ca.pem").exists():
        create_ca(folder, trust_domain)
        created.append("ca")
    wanted = [
        (IdentityKind.ORCHESTRATOR, "orchestrator"),
        (IdentityKind.CLIENT, CLI_CLIENT),
        *((IdentityKind.AGENT, name) for name in agents),
    ]
    for kind, name in wanted:
        if not CertFiles.of(folder, kind, name).exists():
            issue(folder, kind, name)
            created.append(f"{kind.value}/{name}")
    return created


def prepare(certs: Path, folder: Path, console: Console) -> Settings:
    """Create what is missing (certificates, the state folder); the orchestrator's settings."""
    base = Settings()
    domain = trust_domain_of(certs) if (certs / "ca.pem").exists() else base.trust_domain
    created = ensure_certs(certs, domain, tuple(name for name, _ in AGENTS))
    if created:
        console.print(f"created certificates in {certs}/: {', '.join(created)}", highlight=False)
    folder.mkdir(parents=True, exist_ok=True)
    database = base.database_url
    if "AGENTMESH_DATABASE_URL" not in os.environ:
        database = f"sqlite+aiosqlite:///{folder / 'agentmesh.db'}"
    return base.model_copy(
        update={
            "certs_dir": certs,
            "trust_domain": domain,
            "cert_name": "orchestrator",
            "database_url": database,
        }
    )


async def run_dev(settings: Settings, folder: Path, latency: float, console: Console) -> None:
    """Serve the local mesh until SIGINT or SIGTERM."""
    certs = settings.certs_dir
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with (folder / "orchestrator.log").open("a") as log:
        configure_logging("info", json=True, stream=log)
        async with Orchestrator(settings) as orchestrator:
            address = f"localhost:{orchestrator.port}"
            console.print(
                f"[bold]orchestrator[/bold] on {address} (mTLS), state in "
                f"{settings.database_url}, logs in {folder}/",
                highlight=False,
            )
            async with (
                agent_processes(folder, certs, address, latency),
                Client(address, certs, CLI_CLIENT) as client,
            ):
                await wait_for_agents(client, len(AGENTS), console)
                console.print(
                    "ready: try [bold]agentmesh workflows list[/bold] in another terminal; "
                    "Ctrl-C stops the mesh"
                )
                await stop.wait()
                console.print("stopping: agents drain, then the orchestrator")


def dev(
    certs_dir: CertsDir = DEFAULT_CERTS,
    folder: Annotated[Path, typer.Option(help="where the database and logs go")] = Path("var/dev"),
    latency: Annotated[float, typer.Option(help="simulated example-agent latency, s")] = 0.1,
) -> None:
    """Run a local mesh in the foreground: certificates, an orchestrator, the example agents.

    Creates certificates when missing; listens on AGENTMESH_LISTEN (default 127.0.0.1:50051).
    Ctrl-C stops them all.
    """
    console = Console()
    settings = common.call(lambda: prepare(certs_dir, folder, console), certs_dir=certs_dir)
    common.run(
        lambda: run_dev(settings, folder, latency, console), certs_dir=certs_dir, name=CLI_CLIENT
    )
