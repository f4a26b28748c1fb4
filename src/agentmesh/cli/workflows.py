"""``agentmesh workflows``: the orchestrator's workflow catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli import common
from agentmesh.cli.common import (
    DEFAULT_ADDRESS,
    DEFAULT_CERTS,
    DEFAULT_NAME,
    Address,
    CertsDir,
    Name,
    Output,
    OutputOption,
    connect,
    dumps,
    echo_json,
)
from agentmesh.errors import NotFound
from agentmesh.models import JSON, WorkflowInfo

app = typer.Typer(help="The workflows an orchestrator can run by name.", no_args_is_help=True)


def workflow_json(workflow: WorkflowInfo) -> dict[str, JSON]:
    """A workflow as scripts read it."""
    data: dict[str, JSON] = workflow.model_dump(mode="json")
    return data


def _fetch(address: str, name: str, certs_dir: Path) -> list[WorkflowInfo]:
    async def body() -> list[WorkflowInfo]:
        async with connect(address, certs_dir, name) as client:
            return await client.list_workflows()

    return common.run(body, certs_dir=certs_dir, name=name)


@app.command("list")
def list_workflows(
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """The catalog's workflows: submit one with agentmesh submit --workflow NAME."""
    workflows = _fetch(address, name, certs_dir)
    if output is Output.JSON:
        echo_json([workflow_json(w) for w in workflows])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("workflow", "steps", "description"):
        table.add_column(column)
    for workflow in workflows:
        steps = " → ".join(s.id for s in workflow.plan.steps)
        table.add_row(workflow.name, steps, Text(workflow.description))
    Console().print(table)


@app.command()
def show(
    workflow: Annotated[str, typer.Argument(help="the workflow's name")],
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """One workflow: description, input schema and steps."""
    workflows = {w.name: w for w in _fetch(address, name, certs_dir)}
    found = workflows.get(workflow)
    if found is None:
        known = ", ".join(sorted(workflows)) or "none"
        common.fail(
            common.one_line(NotFound(f"no workflow {workflow!r}; known: {known}", field="workflow"))
        )
    if output is Output.JSON:
        echo_json(workflow_json(found))
        return
    console = Console()
    console.print(Text(found.name, style="bold"))
    console.print(Text(found.description))
    console.print("\ninput schema:")
    console.print_json(dumps(found.input_schema))
    console.print("\nsteps:")
    for step in found.plan.steps:
        line = Text(f"  {step.id}: {step.capability}")
        if step.for_each:
            line.append(f"  for each {step.for_each}")
        console.print(line)
    if found.plan.aggregate:
        console.print(Text(f"\naggregate: {dumps(found.plan.aggregate, indent=None)}"))
