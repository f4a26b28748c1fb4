"""``agentmesh demo``: an orchestrator and real agent processes on embedded defaults.

Everything lives under one folder (``var/demo`` by default): fresh dev
certificates, the SQLite database and each process's log. Redis is used when
AGENTMESH_REDIS_URL is set, the in-memory cache otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli.progress import watch_task
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.models import TaskState
from agentmesh.security import IdentityKind, create_ca, issue

#: (agent name, module under agentmesh.examples) of the processes the demo starts.
AGENTS = (
    ("splitter", "splitter"),
    ("analyst-1", "analyst"),
    ("analyst-2", "analyst"),
    ("writer", "writer"),
)


def _prepare(folder: Path, trust_domain: str) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    certs = folder / "certs"
    create_ca(certs, trust_domain)
    issue(certs, IdentityKind.ORCHESTRATOR, "orchestrator")
    issue(certs, IdentityKind.CLIENT, "demo")
    for name, _ in AGENTS:
        issue(certs, IdentityKind.AGENT, name)
    return certs


@contextlib.asynccontextmanager
async def agent_processes(
    folder: Path,
    certs: Path,
    address: str,
    latency: float,
    agents: Sequence[tuple[str, str]] = AGENTS,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[None]:
    """The example ``agents`` (name, module) as processes of this machine, logging into
    ``folder``, with ``env`` added to their environment; on exit each is sent SIGTERM (it
    drains and deregisters) and waited for."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for name, module in agents:
            environment = {
                **os.environ,
                **(env or {}),
                "AGENTMESH_AGENT_NAME": name,
                "AGENTMESH_AGENT_ORCHESTRATORS": json.dumps([address]),
                "AGENTMESH_AGENT_CERTS_DIR": str(certs),
                "AGENTMESH_DEMO_LATENCY": str(latency),
            }
            with (folder / f"{name}.log").open("wb") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        f"agentmesh.examples.{module}",
                        env=environment,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        yield
    finally:
        # SIGTERM lets each agent drain and deregister, as in production.
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_for_agents(client: Client, count: int, console: Console) -> None:
    """Wait until ``count`` agents are registered, then show them in a table."""
    with console.status(f"waiting for {count} agents to register…"):
        async with asyncio.timeout(60):
            while True:
                agents = await client.list_agents()
                if len(agents) >= count:
                    break
                await asyncio.sleep(0.2)
    table = Table(title="agents (separate processes, mTLS Sessions)", title_justify="left")
    for column in ("agent", "endpoint", "slots", "capabilities"):
        table.add_column(column)
    for agent in agents:
        table.add_row(
            Text(agent.card.name),
            Text(agent.card.endpoint),
            str(agent.card.max_concurrency),
            Text(", ".join(c.name for c in agent.card.capabilities)),
        )
    console.print(table)


async def run_demo(folder: Path, workflow: str, latency: float, console: Console) -> bool:
    """Run the whole demo; True when the task succeeded."""
    from agentmesh.examples import sample_document
    from agentmesh.orchestrator import Orchestrator  # see `serve`: slow to import

    settings = Settings(
        listen="127.0.0.1:0",
        certs_dir=_prepare(folder, "agentmesh.local"),
        database_url=f"sqlite+aiosqlite:///{folder / 'agentmesh.db'}",
    )
    with (folder / "orchestrator.log").open("w") as log:
        configure_logging("info", json=True, stream=log)
        async with Orchestrator(settings) as orchestrator:
            address = f"localhost:{orchestrator.port}"
            console.print(
                f"[bold]orchestrator[/bold] listening on {address} (mTLS), "
                f"state in {settings.database_url}, "
                f"cache: {'Redis ' + settings.redis_url if settings.redis_url else 'in-memory'}"
            )
            async with (
                agent_processes(folder, settings.certs_dir, address, latency),
                Client(address, settings.certs_dir, "demo") as client,
            ):
                await wait_for_agents(client, len(AGENTS), console)
                started = time.perf_counter()
                task_id = await client.submit(
                    workflow=workflow,
                    input={"text": sample_document(), "title": "agentmesh field notes"},
                )
                console.print(f"submitted workflow [bold]{workflow}[/bold] as task {task_id}\n")
                task = await watch_task(client, task_id, console)
                console.print(
                    f"\nfinished in {time.perf_counter() - started:.2f}s; logs in {folder}/"
                )
                return task.state is TaskState.SUCCEEDED


def demo(
    workflow: Annotated[str, typer.Option(help="catalog workflow to run")] = "document-brief",
    folder: Annotated[Path, typer.Option(help="where certs, database and logs go")] = Path(
        "var/demo"
    ),
    latency: Annotated[float, typer.Option(help="simulated agent latency, seconds")] = 0.4,
) -> None:
    """Start an orchestrator and four agent processes, run a task, show live progress."""
    console = Console()
    ok = asyncio.run(run_demo(folder, workflow, latency, console))
    raise typer.Exit(0 if ok else 1)
