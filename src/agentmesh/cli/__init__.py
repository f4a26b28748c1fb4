"""The ``agentmesh`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from agentmesh.cli import (
    agent,
    agents,
    bridges,
    certs,
    common,
    demo,
    dev,
    health,
    run,
    tasks,
    tokens,
    workflows,
)

app = typer.Typer(
    help="agentmesh: a gRPC service mesh for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="AGENTMESH_DEBUG", help="show tracebacks of errors")
    ] = False,
) -> None:
    common.debug = debug


app.add_typer(certs.app, name="certs")
app.add_typer(tasks.app, name="tasks")
app.add_typer(workflows.app, name="workflows")
app.add_typer(agent.app, name="agent")
app.add_typer(agents.app, name="agents")
app.add_typer(tokens.app, name="tokens")
app.command("serve")(run.serve)
app.command("submit")(run.submit)
app.command("dev")(dev.dev)
app.command("health")(health.health)
app.command("demo")(demo.demo)
app.command("celery-bridge")(bridges.celery_bridge)
app.command("a2a-bridge")(bridges.a2a_bridge)


def main() -> None:
    """Entry point of the ``agentmesh`` console script."""
    common.main_guard(app)
