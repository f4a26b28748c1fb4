"""Live progress of a task in the terminal: a table of steps plus a line per event."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentmesh.client import Client
from agentmesh.models import EventKind, StepState, TaskEvent, TaskRecord

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


def describe(event: TaskEvent) -> str:
    """One line for an event, as a person would like to read it."""
    if event.kind is EventKind.TASK_STATE:
        reason = f" ({event.reason})" if event.reason else ""
        return f"task {event.state}{reason}"
    if event.kind is EventKind.STEP_STATE:
        where = f" on {event.agent}" if event.agent and event.state == StepState.RUNNING else ""
        attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        reason = f": {event.reason}" if event.reason else ""
        return f"{event.step_id} {event.state}{where}{attempt}{reason}"
    percent = f"{event.fraction:.0%} " if event.fraction >= 0 else ""
    return f"{event.step_id} {percent}{event.message} [{event.agent}]"


async def watch_task(client: Client, task_id: str, console: Console) -> TaskRecord:
    """Follow a task's events to its end, drawing live progress; return the final task."""
    rows: dict[str, _Row] = {}
    task = await client.get(task_id)
    for step_id in task.steps:
        rows[step_id] = _Row()
    title = f"task {task_id}"
    with Live(_table(rows, title), console=console, refresh_per_second=8, transient=False) as live:
        async for event in client.watch(task_id):
            console.print(f"[dim]#{event.sequence:<3}[/dim] {describe(event)}", highlight=False)
            if event.kind is EventKind.STEP_STATE:
                row = rows.setdefault(event.step_id, _Row())
                row.state = event.state.upper()
                row.agent = event.agent or row.agent
                row.attempt = event.attempt or row.attempt
                if row.state in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"):
                    row.fraction, row.note = (1.0 if row.state == "SUCCEEDED" else -1.0), ""
            elif event.kind is EventKind.STEP_PROGRESS:
                row = rows.setdefault(event.step_id, _Row())
                row.fraction = event.fraction
                row.note = event.message
            live.update(Group(_table(rows, title)))
    task = await client.get(task_id)
    console.print(f"\n[bold]result[/bold] ({task.state}):")
    if task.result is not None:
        console.print_json(json.dumps(task.result))
    if task.error:
        console.print(f"[red]{task.error}[/red]")
    return task
