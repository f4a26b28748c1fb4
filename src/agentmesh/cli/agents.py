"""``agentmesh agents``: list the live agents, and (admins) drain, resume and weigh them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

from agentmesh.cli import common, run
from agentmesh.cli.common import (
    DEFAULT_ADDRESS,
    DEFAULT_CERTS,
    DEFAULT_NAME,
    Address,
    CertsDir,
    Name,
    Output,
    OutputOption,
    echo_json,
)
from agentmesh.client import Client
from agentmesh.models import JSON, AgentOverride
from agentmesh.security import IdentityKind

app = typer.Typer(help="The live agents; drain, resume and weigh them (admins).")

AgentName = Annotated[str, typer.Argument(help="the agent's name")]
AdminName = Annotated[
    str,
    typer.Option(
        "--admin",
        envvar="AGENTMESH_ADMIN_NAME",
        help="admin certificate name (certs/admin/NAME.pem): overrides are for admins",
    ),
]
DEFAULT_ADMIN = "admin"


@app.callback(invoke_without_command=True)
def agents(
    context: typer.Context,
    capability: Annotated[str, typer.Option(help="only agents offering this")] = "",
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """The live agents: endpoint, load, circuit, overrides, latency, success rate and
    capabilities."""
    if context.invoked_subcommand is None:
        run.agents(capability, address, name, certs_dir, output)


def override_json(override: AgentOverride) -> dict[str, JSON]:
    """An override as scripts read it."""
    return {
        "name": override.name,
        "drained": override.drained,
        "weight": override.weight,
        "updated_by": override.updated_by,
        "updated_at": override.updated_at.isoformat() if override.updated_at else None,
    }


def _override(
    call: Callable[[Client], Awaitable[AgentOverride]],
    address: str,
    admin: str,
    certs_dir: Path,
    output: Output,
) -> None:
    async def body() -> AgentOverride:
        async with Client(address, certs_dir, admin, kind=IdentityKind.ADMIN) as client:
            return await call(client)

    override = common.run(body, certs_dir=certs_dir, name=admin, kind="admin")
    if output is Output.JSON:
        echo_json(override_json(override))
        return
    state = "drained" if override.drained else "in rotation"
    typer.echo(f"{override.name}: {state}, weight {override.weight:g}")


@app.command()
def drain(
    agent: AgentName,
    address: Address = DEFAULT_ADDRESS,
    admin: AdminName = DEFAULT_ADMIN,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Give the agent no new work, on every replica; what it runs finishes."""
    _override(lambda c: c.drain_agent(agent), address, admin, certs_dir, output)


@app.command()
def resume(
    agent: AgentName,
    address: Address = DEFAULT_ADDRESS,
    admin: AdminName = DEFAULT_ADMIN,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Give a drained agent work again."""
    _override(lambda c: c.resume_agent(agent), address, admin, certs_dir, output)


@app.command()
def weight(
    agent: AgentName,
    value: Annotated[float, typer.Argument(help="more than 0, at most 100; 1 is the default")],
    address: Address = DEFAULT_ADDRESS,
    admin: AdminName = DEFAULT_ADMIN,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Scale the agent's share of work: 0.5 gets it work as if it were twice as busy."""
    _override(lambda c: c.set_agent_weight(agent, value), address, admin, certs_dir, output)
