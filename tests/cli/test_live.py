"""The live view as a pure function of events: the tree drawn is what the events say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from agentmesh.cli.live import TaskView, describe, elapsed, render
from agentmesh.models import EventKind, TaskEvent

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
TASK = "3f1c7a52-0000-4000-8000-000000000001"


class Events:
    """Builds a task's events in sequence, a tenth of a second apart."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def add(self, kind: EventKind, **fields: Any) -> TaskEvent:
        sequence = len(self.events) + 1
        event = TaskEvent(
            task_id=TASK,
            sequence=sequence,
            time=T0 + timedelta(seconds=sequence / 10),
            kind=kind,
            **fields,
        )
        self.events.append(event)
        return event

    def task(self, state: str, reason: str = "") -> TaskEvent:
        return self.add(EventKind.TASK_STATE, state=state, reason=reason)

    def step(self, step_id: str, state: str, **fields: Any) -> TaskEvent:
        return self.add(EventKind.STEP_STATE, step_id=step_id, state=state, **fields)

    def progress(self, step_id: str, fraction: float, message: str, agent: str) -> TaskEvent:
        return self.add(
            EventKind.STEP_PROGRESS,
            step_id=step_id,
            fraction=fraction,
            message=message,
            agent=agent,
            attempt=1,
        )


def text(view: TaskView, now: datetime = T0 + timedelta(seconds=30)) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(view, now))
    return console.export_text()


def fold(events: Events) -> TaskView:
    view = TaskView(TASK)
    for event in events.events:
        view.apply(event)
    return view


def fan_out() -> Events:
    events = Events()
    events.task("running")
    events.step("split", "running", agent="splitter", attempt=1)
    events.step("split", "succeeded", agent="splitter", attempt=1)
    events.step("analyze", "running", reason="fan-out over 2 items")
    events.step("analyze[0]", "running", agent="analyst-1", attempt=1)
    events.step("analyze[1]", "running", agent="analyst-2", attempt=1)
    events.progress("analyze[1]", 0.5, "tokenizing", "analyst-2")
    events.step("analyze[0]", "succeeded", agent="analyst-1", attempt=1)
    return events


def test_fan_out_instances_are_drawn_under_their_step_with_state_agent_and_progress() -> None:
    drawn = text(fold(fan_out()))

    lines = drawn.splitlines()
    assert lines[0].startswith(f"task {TASK}  running")
    assert "├── split  succeeded  splitter  ██████████ 100%  0.1s" in drawn
    analyze = next(i for i, line in enumerate(lines) if "── analyze  running" in line)
    assert "1/2 done" in lines[analyze]
    assert "█████·····  50%  fan-out over 2 items" in lines[analyze]
    assert "analyze[0]  succeeded  analyst-1" in lines[analyze + 1]
    assert lines[analyze + 1].index("analyze[0]") > lines[analyze].index("analyze")
    assert "analyze[1]  running  analyst-2  █████·····  50%  tokenizing" in lines[analyze + 2]


def test_the_view_after_each_event_shows_that_event_and_never_an_older_state() -> None:
    events = fan_out()
    view = TaskView(TASK)
    for event in events.events:
        view.apply(event)
        drawn = text(view)
        if event.kind is EventKind.STEP_STATE:
            line = next(s for s in drawn.splitlines() if f"── {event.step_id}  " in s)
            assert f"{event.step_id}  {event.state}" in line, (event.sequence, drawn)
        assert view.last_sequence == event.sequence


def test_follow_up_steps_are_drawn_under_the_step_that_added_them() -> None:
    events = Events()
    events.task("running")
    events.step("plan", "running", agent="planner", attempt=1)
    events.step("extra", "pending", reason="added by plan")
    events.step("plan", "succeeded", agent="planner", attempt=1)
    events.step("extra", "running", agent="echo-1", attempt=1)

    view = fold(events)
    assert view.roots == ["plan"]
    assert view.steps["plan"].children == ["extra"]
    lines = text(view).splitlines()
    assert "plan  succeeded" in lines[1]
    assert "extra  running  echo-1" in lines[2]
    assert lines[2].index("extra") > lines[1].index("plan")


def test_agent_text_is_shown_literally_never_read_as_markup() -> None:
    events = Events()
    events.task("running")
    events.step("split", "running", agent="[bold]splitter[/bold]", attempt=1)
    events.progress("split", 0.25, "found [splitter] and [red]x[/red]", "[bold]splitter[/bold]")

    drawn = text(fold(events))
    assert "[bold]splitter[/bold]" in drawn
    assert "found [splitter] and [red]x[/red]" in drawn
    line = Console(width=200, record=True, color_system=None)
    line.print(describe(events.events[-1]))
    assert "found [splitter] and [red]x[/red] [[bold]splitter[/bold]]" in line.export_text()


def test_a_failed_step_shows_its_reason_and_its_attempt() -> None:
    events = Events()
    events.task("running")
    events.step("call", "running", agent="flaky", attempt=1)
    events.step("call", "running", agent="echo-2", attempt=2)
    events.step("call", "failed", agent="echo-2", attempt=2, reason="told_to_fail: no")
    events.task("failed", reason="step call failed")

    drawn = text(fold(events))
    assert "task" in drawn.splitlines()[0]
    assert "failed  step call failed  0.4s" in drawn.splitlines()[0]
    assert "call  failed  echo-2  attempt 2  told_to_fail: no  0.2s" in drawn


def test_elapsed_time_runs_on_until_the_final_event() -> None:
    assert elapsed(None, None, T0) == ""
    assert elapsed(T0, None, T0 + timedelta(seconds=2.25)) == "2.2s"
    assert elapsed(T0, T0 + timedelta(seconds=42), T0 + timedelta(hours=1)) == "42s"
    assert elapsed(T0, None, T0 + timedelta(seconds=185)) == "3m05s"
