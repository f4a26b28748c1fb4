"""The ``agentmesh`` command."""

from __future__ import annotations

import typer

from agentmesh.cli import certs, demo, run, tokens

app = typer.Typer(help="agentmesh: a gRPC service mesh for AI agents.", no_args_is_help=True)
app.add_typer(certs.app, name="certs")
app.add_typer(tokens.app, name="tokens")
app.command("serve")(run.serve)
app.command("agents")(run.agents)
app.command("submit")(run.submit)
app.command("demo")(demo.demo)


def main() -> None:
    """Entry point of the ``agentmesh`` console script."""
    app()
