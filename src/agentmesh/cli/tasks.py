"""``agentmesh tasks``: list, show, watch, cancel a task, and print its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
from agentmesh.cli.live import TaskView
from agentmesh.cli.progress import detached, watch_task
from agentmesh.models import JSON, StepState, TaskRecord, TaskState

app = typer.Typer(help="List, show, watch, cancel and answer tasks.", no_args_is_help=True)

TaskId = Annotated[str, typer.Argument(help="the task id (from submit or tasks list)")]


def task_json(task: TaskRecord) -> dict[str, JSON]:
    """A task as scripts read it."""
    data: dict[str, Any] = task.model_dump(mode="json")
    return data


def _time(task: TaskRecord) -> str:
    return task.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_tasks(
    state: Annotated[
        list[TaskState] | None, typer.Option("--state", help="only tasks in this state")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="at most this many")] = 50,
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """The tasks you may see, newest first."""

    async def body() -> list[TaskRecord]:
        async with connect(address, certs_dir, name) as client:
            page = await client.list_tasks(states=state or (), page_size=limit)
            return list(page.tasks)

    tasks = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json([task_json(t) for t in tasks])
        return
    if not tasks:
        typer.echo("no tasks" + (f" in state {', '.join(state)}" if state else ""))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("task", "state", "created", "error"):
        table.add_column(column)
    for task in tasks:
        table.add_row(task.id, task.state.value, _time(task), Text(task.error[:60]))
    Console().print(table)


def _show(task: TaskRecord) -> None:
    console = Console()
    console.print(
        Text.assemble(
            ("task ", "bold"), (task.id, "bold"), f"  {task.state.value}", f"  by {task.owner}"
        )
    )
    console.print(f"created {_time(task)}", highlight=False)
    table = Table(box=None, pad_edge=False)
    for column in ("step", "capability", "state", "agent", "attempts", "error"):
        table.add_column(column)
    for step_id in TaskView.of(task).order():
        step = task.steps[step_id]
        table.add_row(
            step_id,
            step.spec.capability or step.spec.kind.value,
            step.state.value,
            Text(step.agent),
            str(step.attempts),
            Text(step.error),
        )
    console.print(table)
    for step_id, step in task.steps.items():
        if step.state is StepState.INPUT_REQUIRED and step.spec.human_input is not None:
            console.print(Text(f"{step_id} asks: {step.spec.human_input.prompt}", style="yellow"))
            console.print(
                Text(f"  answer with: agentmesh tasks respond {task.id} {step_id} VALUE"),
                highlight=False,
            )
    if task.usage.steps or task.usage.tokens or task.usage.cost:
        usage = task.usage
        console.print(
            f"used {usage.tokens} tokens ({usage.input_tokens} in, {usage.output_tokens} out),"
            f" cost {usage.cost:g}, {usage.seconds:.1f} agent seconds, {usage.steps} steps",
            highlight=False,
        )
    if task.error:
        console.print(Text(f"error: {task.error}", style="red"))
    if task.result is not None:
        console.print("result:")
        console.print_json(dumps(task.result))


@app.command()
def show(
    task_id: TaskId,
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """A task: its state, each step's state, agent, attempts and error, and the result."""

    async def body() -> TaskRecord:
        async with connect(address, certs_dir, name) as client:
            return await client.get(task_id)

    task = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json(task_json(task))
    else:
        _show(task)


def follow(
    task_id: str,
    *,
    after: int,
    address: str,
    name: str,
    certs_dir: Path,
    output: Output,
) -> TaskRecord:
    """Watch a task to its end (a live tree, or one JSON event a line); Ctrl-C detaches."""

    async def body() -> TaskRecord:
        async with connect(address, certs_dir, name) as client:
            if output is Output.TEXT:
                return await watch_task(client, task_id, Console(), after=after)
            async for event in client.watch(task_id, after=after):
                typer.echo(dumps(event.model_dump(mode="json"), indent=None))
            return await client.get(task_id)

    try:
        return common.run(body, certs_dir=certs_dir, name=name)
    except KeyboardInterrupt:
        common.fail(detached(task_id), code=130)


@app.command()
def watch(
    task_id: TaskId,
    after: Annotated[int, typer.Option(min=0, help="resume after this event sequence")] = 0,
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Follow a task's events live to its end; exit 0 when it succeeded, 1 otherwise.

    Ctrl-C detaches (exit 130) and prints how to watch again or cancel: the task runs on.
    """
    task = follow(
        task_id, after=after, address=address, name=name, certs_dir=certs_dir, output=output
    )
    raise typer.Exit(0 if task.state is TaskState.SUCCEEDED else 1)


@app.command()
def cancel(
    task_id: TaskId,
    reason: Annotated[str, typer.Option(help="why, recorded with the task")] = "",
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Cancel a task; returns once it is final (its completed steps rolled back)."""

    async def body() -> TaskRecord:
        async with connect(address, certs_dir, name) as client:
            return await client.cancel(task_id, reason)

    task = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json(task_json(task))
    else:
        typer.echo(f"task {task.id} {task.state.value}" + (f": {task.error}" if task.error else ""))


@app.command()
def respond(
    task_id: TaskId,
    step_id: Annotated[str, typer.Argument(help="the input step to answer", show_default=False)],
    value: Annotated[
        str,
        typer.Argument(
            help="the answer as JSON (text that is not JSON is taken as a string)",
            show_default=False,
        ),
    ],
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Answer a step that is waiting for input (INPUT_REQUIRED)."""
    try:
        answer: JSON = json.loads(value)
    except json.JSONDecodeError:
        answer = value

    async def body() -> TaskRecord:
        async with connect(address, certs_dir, name) as client:
            return await client.provide_input(task_id, step_id, answer)

    task = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json(task_json(task))
    else:
        typer.echo(f"answered {step_id} of task {task.id} ({task.state.value})")


@app.command()
def result(
    task_id: TaskId,
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """Print a finished task's result (JSON; a text result as itself with --output text).

    Exits 1 with the task's error when it failed, or when it has not finished.
    """

    async def body() -> TaskRecord:
        async with connect(address, certs_dir, name) as client:
            return await client.get(task_id)

    task = common.run(body, certs_dir=certs_dir, name=name)
    if not task.state.final:
        common.fail(
            f"error: task {task.id} is {task.state.value}, no result yet; "
            f"follow it with: agentmesh tasks watch {task.id}"
        )
    if task.state is not TaskState.SUCCEEDED:
        common.fail(f"error: task {task.id} {task.state.value}: {task.error}")
    if output is Output.TEXT and isinstance(task.result, str):
        typer.echo(task.result)
    else:
        echo_json(task.result)
