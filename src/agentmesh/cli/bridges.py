"""``agentmesh celery-bridge FILE``: serve another system's work as a mesh agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentmesh.agent import AgentSettings
from agentmesh.agent.server import serve_until_signalled
from agentmesh.cli import common
from agentmesh.logs import configure_logging

Orchestrators = Annotated[
    list[str] | None,
    typer.Option("--orchestrator", help="orchestrator host:port [AGENTMESH_AGENT_ORCHESTRATORS]"),
]
CertsDir = Annotated[
    Path | None,
    typer.Option("--certs-dir", help="certificates folder [AGENTMESH_AGENT_CERTS_DIR]"),
]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error")]


def agent_settings(
    name: str, orchestrator: list[str] | None, certs_dir: Path | None
) -> AgentSettings:
    """The SDK settings of a bridge: the environment's, with the command line's on top."""
    overrides: dict[str, object] = {"name": name}
    if orchestrator:
        overrides["orchestrators"] = orchestrator
    if certs_dir is not None:
        overrides["certs_dir"] = certs_dir
    return AgentSettings(**overrides)  # type: ignore[arg-type]


def celery_bridge(
    file: Annotated[Path, typer.Argument(help="the bridge file: broker, backend and tasks")],
    orchestrator: Orchestrators = None,
    certs_dir: CertsDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Offer Celery tasks as capabilities until Ctrl-C or SIGTERM (then drain)."""
    configure_logging(log_level, json=False)
    # Imported here: Celery is an optional dependency (the `bridges` extra).
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
