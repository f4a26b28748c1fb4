"""Live progress of a task in the terminal: a table of steps plus a line per event."""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import json_format
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.client import Client

_STYLE = {
    "SUCCEEDED": "green",
    "RUNNING": "cyan",
    "WAITING": "yellow",
    "FAILED": "red",
    "CANCELLED": "red",
    "SKIPPED": "magenta",
    "COMPENSATED": "magenta",
}


@dataclass
class _Row:
    state: str = "PENDING"
    agent: str = ""
    attempt: int = 0
    fraction: float = -1.0
    note: str = ""


def _state_name(enum: type[pb.StepState] | type[pb.TaskState], value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)  # type: ignore[arg-type]


def _table(rows: dict[str, _Row], title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("step", "state", "agent", "try", "progress"):
        table.add_column(column)
    for step_id, row in rows.items():
        bar = ""
        if row.fraction >= 0:
            filled = int(row.fraction * 10)
            bar = "█" * filled + "·" * (10 - filled) + f" {row.note}"
        elif row.note:
            bar = row.note
        table.add_row(
            step_id,
            Text(row.state.lower(), style=_STYLE.get(row.state, "")),
            row.agent,
            str(row.attempt or ""),
            bar[:60],
        )
    return table


def describe(event: pb.TaskEvent) -> str:
    """One line for an event, as a person would like to read it."""
    kind = event.WhichOneof("kind")
    if kind == "task_state":
        state = _state_name(pb.TaskState, event.task_state.state, "TASK_STATE_")
        reason = f" ({event.task_state.reason})" if event.task_state.reason else ""
        return f"task {state.lower()}{reason}"
    if kind == "step_state":
        change = event.step_state
        state = _state_name(pb.StepState, change.state, "STEP_STATE_").lower()
        where = f" on {change.agent}" if change.agent and state == "running" else ""
        attempt = f" (attempt {change.attempt})" if change.attempt > 1 else ""
        reason = f": {change.reason}" if change.reason else ""
        return f"{change.step_id} {state}{where}{attempt}{reason}"
    progress = event.step_progress
    percent = f"{progress.fraction:.0%} " if progress.fraction >= 0 else ""
    return f"{progress.step_id} {percent}{progress.message} [{progress.agent}]"


async def watch_task(client: Client, task_id: str, console: Console) -> pb.Task:
    """Follow a task's events to its end, drawing live progress; return the final task."""
    rows: dict[str, _Row] = {}
    task = await client.get(task_id)
    for step in task.steps:
        rows[step.spec.id] = _Row()
    title = f"task {task_id}"
    with Live(_table(rows, title), console=console, refresh_per_second=8, transient=False) as live:
        async for event in client.watch(task_id):
            console.print(f"[dim]#{event.sequence:<3}[/dim] {describe(event)}", highlight=False)
            kind = event.WhichOneof("kind")
            if kind == "step_state":
                row = rows.setdefault(event.step_state.step_id, _Row())
                row.state = _state_name(pb.StepState, event.step_state.state, "STEP_STATE_")
                row.agent = event.step_state.agent or row.agent
                row.attempt = event.step_state.attempt or row.attempt
                if row.state in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"):
                    row.fraction, row.note = (1.0 if row.state == "SUCCEEDED" else -1.0), ""
            elif kind == "step_progress":
                row = rows.setdefault(event.step_progress.step_id, _Row())
                row.fraction = event.step_progress.fraction
                row.note = event.step_progress.message
            live.update(Group(_table(rows, title)))
    task = await client.get(task_id)
    state = _state_name(pb.TaskState, task.state, "TASK_STATE_")
    console.print(f"\n[bold]result[/bold] ({state.lower()}):")
    if task.HasField("result"):
        console.print_json(json.dumps(json_format.MessageToDict(task.result)))
    if task.error:
        console.print(f"[red]{task.error}[/red]")
    return task
