"""Following a task in the terminal: a line per event above a live tree of its steps.

The tree is redrawn from each event as it arrives (never on a timer that could show an
older state), and once a second in between so that elapsed times move.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live

from agentmesh.cli.common import dumps
from agentmesh.cli.live import TaskView, describe, render
from agentmesh.client import Client
from agentmesh.models import TaskRecord


def _now() -> datetime:
    return datetime.now(UTC)


async def watch_task(
    client: Client, task_id: str, console: Console, *, after: int = 0, result: bool = True
) -> TaskRecord:
    """Follow a task's events after ``after`` to its end, drawing the live tree; return the
    final task (and, with ``result``, print its result or error)."""
    task = await client.get(task_id)
    view = TaskView.of(task, states=after > 0)
    with Live(render(view, _now()), console=console, auto_refresh=False) as live:

        async def tick() -> None:
            while True:
                await asyncio.sleep(1)
                live.update(render(view, _now()), refresh=True)

        ticker = asyncio.create_task(tick())
        try:
            async for event in client.watch(task_id, after=after):
                view.apply(event)
                live.console.print(describe(event), highlight=False)
                live.update(render(view, _now()), refresh=True)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    task = await client.get(task_id)
    if result:
        console.print(f"\n[bold]result[/bold] ({task.state}):")
        if task.result is not None:
            console.print_json(dumps(task.result))
        if task.error:
            console.print(task.error, style="red", markup=False, highlight=False)
    return task


def detached(task_id: str) -> str:
    """What to tell someone who stopped watching a task that runs on."""
    return (
        f"\ndetached from task {task_id}; it keeps running.\n"
        f"  watch it again:  agentmesh tasks watch {task_id}\n"
        f"  cancel it:       agentmesh tasks cancel {task_id}"
    )
