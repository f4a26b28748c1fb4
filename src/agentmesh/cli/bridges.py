"""``agentmesh celery-bridge FILE`` and ``agentmesh a2a-bridge URL…``: another system's work
as a mesh agent."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

import typer

from agentmesh.cli import common
from agentmesh.cli.agent import CertsDir, LogLevel, Orchestrators, agent_settings
from agentmesh.logs import configure_logging


def celery_bridge(
    file: Annotated[Path, typer.Argument(help="the bridge file: broker, backend and tasks")],
    orchestrator: Orchestrators = None,
    certs_dir: CertsDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Offer Celery tasks as capabilities until Ctrl-C or SIGTERM (then drain)."""
    configure_logging(log_level, json=False)
    # Imported here: Celery is an optional dependency (the `bridges` extra); the SDK is slow
    # to import (see agentmesh.cli.agent).
    from agentmesh.agent.server import serve_until_signalled
    from agentmesh.bridges.celery import CeleryRunner
    from agentmesh.bridges.celery_file import load_bridge_file

    spec = common.call(lambda: load_bridge_file(file))
    settings = agent_settings(spec.name, orchestrator, certs_dir)
    agent = CeleryRunner(spec).agent()
    common.run(
        lambda: serve_until_signalled(agent, settings),
        certs_dir=settings.certs_dir,
        name=spec.name,
        kind="agent",
    )


def a2a_bridge(
    urls: Annotated[list[str], typer.Argument(metavar="URL...", help="A2A agents' base URLs")],
    name: Annotated[str, typer.Option(help="register as this name")] = "a2a-bridge",
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle for the remote agents' HTTPS")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(help="'Name: value' sent with every request, e.g. an Authorization"),
    ] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, help="assignments at once")] = 16,
    orchestrator: Orchestrators = None,
    certs_dir: CertsDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Offer the skills of external A2A agents as capabilities until Ctrl-C or SIGTERM."""
    configure_logging(log_level, json=False)
    from agentmesh.agent.server import serve_until_signalled
    from agentmesh.bridges.a2a import A2ABridge

    headers: dict[str, str] = {}
    for line in header or ():
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            common.fail(f"--header {line!r}: give it as 'Name: value'")
        headers[key.strip()] = value.strip()
    settings = agent_settings(name, orchestrator, certs_dir)

    async def serve() -> None:
        verify = ssl.create_default_context(cafile=ca_file) if ca_file is not None else True
        async with A2ABridge(
            urls, name=name, verify=verify, headers=headers, max_concurrency=max_concurrency
        ) as bridge:
            await serve_until_signalled(bridge.agent(), settings)

    common.run(serve, certs_dir=settings.certs_dir, name=name, kind="agent")
