"""``agentmesh serve``, ``agents`` and ``submit``: run an orchestrator and talk to one."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentmesh.cli.progress import watch_task
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator

Address = Annotated[str, typer.Option(help="orchestrator host:port")]
Name = Annotated[str, typer.Option(help="client certificate name (certs/client/NAME.pem)")]
CertsDir = Annotated[Path, typer.Option("--certs-dir", help="certificates folder")]


def serve(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    pretty: Annotated[bool, typer.Option(help="human-readable logs instead of JSON")] = False,
) -> None:
    """Run the orchestrator (configured by AGENTMESH_* environment variables)."""
    configure_logging(log_level, json=not pretty)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Orchestrator(Settings()):
            await stop.wait()

    asyncio.run(main())


def agents(
    address: Address = "localhost:50051", name: Name = "cli", certs_dir: CertsDir = Path("certs")
) -> None:
    """List the live agents."""

    async def main() -> None:
        async with Client(address, certs_dir, name) as client:
            for agent in await client.list_agents():
                capabilities = ", ".join(c.name for c in agent.card.capabilities)
                typer.echo(
                    f"{agent.card.name:20} {agent.card.endpoint:22} "
                    f"{agent.active}/{agent.card.max_concurrency}  {capabilities}"
                )

    asyncio.run(main())


def submit(
    workflow: Annotated[str, typer.Option(help="catalog workflow name")] = "",
    goal: Annotated[str, typer.Option(help="a goal in words")] = "",
    input_json: Annotated[str, typer.Option("--input", help="task input as JSON")] = "{}",
    address: Address = "localhost:50051",
    name: Name = "cli",
    certs_dir: CertsDir = Path("certs"),
    watch: Annotated[bool, typer.Option(help="show live progress until the task ends")] = True,
) -> None:
    """Submit a task and (by default) watch it to the end."""
    try:
        payload = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--input is not JSON: {exc}") from None

    async def main() -> None:
        async with Client(address, certs_dir, name) as client:
            task_id = await client.submit(workflow=workflow, goal=goal, input=payload)
            typer.echo(task_id)
            if watch:
                await watch_task(client, task_id, Console())

    asyncio.run(main())
