"""``agentmesh dev``: a local mesh in the foreground, in one command.

Certificates are created in the certificates folder when missing (kept otherwise, so that
agents and clients issued from the same CA keep working across runs), then an orchestrator
on ``AGENTMESH_LISTEN`` with its state in a SQLite file, and the example agents as
processes: the text agents of the demo, and the data, LLM, code-runner and maths agents of
the ``table-insight`` workflow. The LLM agent talks to ``AGENTMESH_LLM_BASE_URL``; when that
is not set, to a local deterministic model (:mod:`agentmesh.examples.fake_llm`) served by
this process, so that everything runs offline. Ctrl-C (or SIGTERM) stops them all: the
agents drain, then the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentmesh.cli import common
from agentmesh.cli.common import DEFAULT_CERTS, CertsDir
from agentmesh.cli.demo import AGENTS, agent_processes, wait_for_agents
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.examples.fake_llm import ChatServer, analyst_responder
from agentmesh.logs import configure_logging
from agentmesh.security import CertFiles, IdentityKind, create_ca, issue, trust_domain_of
from agentmesh.tracing import configure_tracing

#: The client identity every ``agentmesh`` command uses by default.
CLI_CLIENT = "cli"

#: (agent name, module under agentmesh.examples) of the agents that do real work.
WORKING_AGENTS = (
    ("data", "data"),
    ("llm", "llm"),
    ("code-runner", "code_runner"),
    ("maths", "maths"),
)


def dev_agents() -> tuple[tuple[str, str], ...]:
    """Every agent ``agentmesh dev`` starts: the maths agent only where SymPy is installed."""
    have_sympy = importlib.util.find_spec("sympy") is not None
    return AGENTS + tuple(a for a in WORKING_AGENTS if a[1] != "maths" or have_sympy)


@contextlib.asynccontextmanager
async def model_endpoint(console: Console) -> AsyncIterator[dict[str, str]]:
    """The LLM agent's environment: the configured endpoint, or a local fake model."""
    if os.environ.get("AGENTMESH_LLM_BASE_URL"):
        yield {}
        return
    async with ChatServer(analyst_responder) as model:
        console.print(
            f"[bold]local model[/bold] on {model.base_url} (deterministic, offline; "
            "set AGENTMESH_LLM_BASE_URL for a real one)",
            highlight=False,
        )
        yield {"AGENTMESH_LLM_BASE_URL": model.base_url, "AGENTMESH_LLM_MODEL": "fake-analyst"}


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
    created = ensure_certs(certs, domain, tuple(name for name, _ in dev_agents()))
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
    # Imported here, not at the top: the orchestrator (SQLAlchemy, FastAPI, ...) takes most
    # of a second to import, which every other command would pay for nothing.
    from agentmesh.orchestrator import Orchestrator

    certs = settings.certs_dir
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Spans go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, as with `serve` (the
    # agent processes inherit the variable and export their own).
    stop_tracing = configure_tracing("agentmesh-orchestrator")
    with contextlib.ExitStack() as cleanup, (folder / "orchestrator.log").open("a") as log:
        cleanup.callback(stop_tracing)  # flushes the spans still buffered
        configure_logging("info", json=True, stream=log)
        async with Orchestrator(settings) as orchestrator:
            address = f"localhost:{orchestrator.port}"
            console.print(
                f"[bold]orchestrator[/bold] on {address} (mTLS), state in "
                f"{settings.database_url}, logs in {folder}/",
                highlight=False,
            )
            agents = dev_agents()
            async with (
                model_endpoint(console) as model_env,
                agent_processes(folder, certs, address, latency, agents, model_env),
                Client(address, certs, CLI_CLIENT) as client,
            ):
                await wait_for_agents(client, len(agents), console)
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
