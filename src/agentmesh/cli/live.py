"""The live view of a task as a pure function of its events: a tree of steps.

:class:`TaskView` folds events (and optionally a snapshot to start from) into each step's
state, agent, attempt, progress and message; :func:`render` draws it as a rich tree, fan-out
instances under their step and follow-up steps under the step that added them. Nothing here
does I/O, so the drawing is exactly what the events say (and tested as such). Text that
agents send is never read as rich markup: ``[splitter]`` shows as ``[splitter]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text
from rich.tree import Tree

from agentmesh.models import EventKind, StepState, TaskEvent, TaskRecord, TaskState

_STYLE = {
    "succeeded": "green",
    "running": "cyan",
    "waiting": "yellow",
    "input_required": "magenta",
    "compensating": "yellow",
    "failed": "red",
    "cancelled": "red",
    "rolled_back": "magenta",
    "rollback_failed": "red",
    "skipped": "magenta",
    "compensated": "magenta",
}
_INSTANCE = re.compile(r"(?P<base>.+)\[(?:0|[1-9][0-9]*)\]")
_ADDED_BY = re.compile(r"added by (?P<parent>\S+)")
_BAR = 10


@dataclass
class StepView:
    """What the view knows of one step."""

    id: str
    state: str = StepState.PENDING.value
    agent: str = ""
    attempt: int = 0
    fraction: float = -1.0
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    children: list[str] = field(default_factory=list)


@dataclass
class TaskView:
    """A task's steps and state as far as the events applied so far tell."""

    task_id: str
    state: str = TaskState.PENDING.value
    reason: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    last_sequence: int = 0
    steps: dict[str, StepView] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, task: TaskRecord, *, states: bool = True) -> TaskView:
        """A view of ``task``'s steps; with ``states``, as the snapshot has them, else pending
        (for replaying every event from the start)."""
        view = cls(task.id)
        for step_id, record in task.steps.items():
            step = view._step(step_id)
            if states:
                step.state = record.state.value
                step.agent, step.attempt = record.agent, record.attempts
                step.started, step.finished = record.started_at, record.finished_at
                step.message = record.error
        if states:
            view.state, view.reason = task.state.value, task.error
            view.started = task.created_at
            view.finished = task.updated_at if task.state.final else None
        return view

    def order(self) -> list[str]:
        """Every step id, each followed by its fan-out instances and follow-ups (depth first)."""
        ordered: list[str] = []

        def visit(step_id: str) -> None:
            ordered.append(step_id)
            for child in self.steps[step_id].children:
                visit(child)

        for root in self.roots:
            visit(root)
        return ordered

    def _step(self, step_id: str, parent: str | None = None) -> StepView:
        step = self.steps.get(step_id)
        if step is not None:
            return step
        step = self.steps[step_id] = StepView(step_id)
        match = _INSTANCE.fullmatch(step_id)
        if parent is None and match is not None:
            parent = match["base"]
        if parent is not None:
            self._step(parent).children.append(step_id)
        else:
            self.roots.append(step_id)
        return step

    def apply(self, event: TaskEvent) -> None:
        """Fold one event into the view."""
        self.last_sequence = max(self.last_sequence, event.sequence)
        if event.kind is EventKind.TASK_STATE:
            self.state, self.reason = event.state, event.reason
            if event.state == TaskState.RUNNING and self.started is None:
                self.started = event.time
            if TaskState(event.state).final:
                self.finished = event.time
            return
        added = _ADDED_BY.fullmatch(event.reason) if event.reason else None
        step = self._step(event.step_id, added["parent"] if added else None)
        if event.kind is EventKind.STEP_PROGRESS:
            step.fraction, step.message = event.fraction, event.message
            step.agent = event.agent or step.agent
            return
        step.state = event.state
        step.agent = event.agent or step.agent
        step.attempt = event.attempt or step.attempt
        if event.state == StepState.RUNNING:
            step.started = step.started or event.time
            step.finished = None
            step.message = event.reason or step.message
        elif StepState(event.state).final:
            step.finished = event.time
            step.fraction = 1.0 if event.state == StepState.SUCCEEDED else step.fraction
            step.message = event.reason if event.state != StepState.SUCCEEDED else ""
        elif event.reason and not added:
            step.message = event.reason


def elapsed(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """``0.4s``, ``12s``, ``3m05s``; empty before the start."""
    if start is None:
        return ""
    seconds = max(0.0, ((end or now) - start).total_seconds())
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * _BAR)
    return "█" * filled + "·" * (_BAR - filled) + f" {fraction:4.0%}"


def _label(view: TaskView, step: StepView, now: datetime) -> Text:
    label = Text()
    label.append(step.id, style="bold")
    label.append("  ")
    label.append(step.state, style=_STYLE.get(step.state, "dim"))
    if step.agent:
        label.append(f"  {step.agent}")
    if step.attempt > 1:
        label.append(f"  attempt {step.attempt}", style="yellow")
    fraction = step.fraction
    if step.children:
        done = sum(1 for c in step.children if StepState(view.steps[c].state).final)
        label.append(f"  {done}/{len(step.children)} done")
        fraction = done / len(step.children) if step.state == StepState.RUNNING else fraction
    if fraction >= 0 and step.state != StepState.PENDING:
        label.append(f"  {_bar(fraction)}")
    if step.message:
        label.append(f"  {step.message}", style="red" if step.state == "failed" else "")
    took = elapsed(step.started, step.finished, now)
    if took:
        label.append(f"  {took}", style="dim")
    return label


def render(view: TaskView, now: datetime) -> Tree:
    """The task as a tree: one line per step with state, agent, attempt, progress, message
    and elapsed time; ``now`` is the clock for what still runs."""
    head = Text()
    head.append(f"task {view.task_id}", style="bold")
    head.append("  ")
    head.append(view.state, style=_STYLE.get(view.state, "dim"))
    if view.reason:
        head.append(f"  {view.reason}")
    took = elapsed(view.started, view.finished, now)
    if took:
        head.append(f"  {took}", style="dim")
    tree = Tree(head, guide_style="dim")

    def add(branch: Tree, step_id: str) -> None:
        step = view.steps[step_id]
        node = branch.add(_label(view, step, now))
        for child in step.children:
            add(node, child)

    for root in view.roots:
        add(tree, root)
    return tree


def describe(event: TaskEvent) -> Text:
    """One line for an event, as a person would like to read it (never read as markup)."""
    line = Text(f"#{event.sequence:<3} ", style="dim")
    if event.kind is EventKind.TASK_STATE:
        reason = f" ({event.reason})" if event.reason else ""
        line.append(f"task {event.state}{reason}")
    elif event.kind is EventKind.STEP_STATE:
        where = f" on {event.agent}" if event.agent and event.state == StepState.RUNNING else ""
        attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        reason = f": {event.reason}" if event.reason else ""
        line.append(f"{event.step_id} {event.state}{where}{attempt}{reason}")
    else:
        percent = f"{event.fraction:.0%} " if event.fraction >= 0 else ""
        line.append(f"{event.step_id} {percent}{event.message} [{event.agent}]")
    return line
