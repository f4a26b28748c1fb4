"""A task's journal: every state change becomes an event, written in order and in batches.

Changes are applied to the task in memory at once; one flusher per task hands them, with
their events, to the store, whose one writer puts many tasks' batches into each transaction
(group commit). Changes something waits for (a dependant needs a success durable, watchers a
final state) go out at once, others gather for a few milliseconds; the changes made while a
batch is being written form the next one. The journal keeps three promises: a final state
is written together with its final event (a state without it would end the lease early), a
flush is never cut off mid-commit (it has taken its batch out of memory), and the last flush
of a run is shielded from the cancellation that stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from agentmesh.models import (
    AgentChoice,
    EventKind,
    StepRecord,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
    Usage,
)
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.store import Lease, LeaseLost, Store

#: How long the flusher lets changes nobody waits for (progress, a step starting) gather
#: before it writes them; a change something depends on (see :meth:`Journal.dependable`, and
#: a final state) is written at once.
GATHER_SECONDS = 0.01
#: How long the flusher waits after a failed write before trying the batch again.
RETRY_SECONDS = 1.0


_NOTHING_USED = Usage()


def now() -> datetime:
    """The time stamped on events and steps."""
    return datetime.now(UTC)


class Journal:
    """The events and unwritten changes of one task, and the flusher that writes them."""

    def __init__(
        self,
        task: TaskRecord,
        last_sequence: int,
        *,
        store: Store,
        bus: EventBus,
        lease: Lease | None = None,
    ) -> None:
        self.task = task
        #: True once another replica took the task over: nothing more is written.
        self.fenced = False
        self._store = store
        self._bus = bus
        self._lease = lease
        self._sequence = last_sequence
        #: The sequence of the newest event written; ``_written`` is set (and replaced)
        #: whenever it moves.
        self._durable = last_sequence
        self._written = asyncio.Event()
        #: The newest event a step may be started on the strength of (see :meth:`dependable`).
        self._gate = last_sequence
        #: Steps or a plan change added since the last event: the next event gates them.
        self._grown = False
        self._events: list[TaskEvent] = []
        self._dirty: dict[str, StepRecord] = {}
        self._new: list[tuple[int, StepRecord]] = []
        #: The plan changed without new steps (a streamed plan completed).
        self._plan_changed = False
        self._write_lock = asyncio.Lock()
        #: Set when flushing() ends: the flusher stops (see there why not by cancel alone).
        self._stopping = False
        #: Set by every change; an idle task's flusher sleeps instead of polling.
        self._changed = asyncio.Event()
        #: Set when someone waits for the changes to be durable: the flusher goes at once.
        self._urgent = asyncio.Event()
        self._log = structlog.get_logger(__name__).bind(task_id=task.id)

    def emit(self, kind: EventKind, step: StepRecord | None = None, **fields: Any) -> None:
        """Record an event (and, with ``step``, that the step changed) for the next flush."""
        self._sequence += 1
        stamp = now()
        self.task.updated_at = stamp
        if step is not None:
            self._dirty[step.spec.id] = step
            fields.setdefault("step_id", step.spec.id)
        self._events.append(
            TaskEvent(
                task_id=self.task.id, sequence=self._sequence, time=stamp, kind=kind, **fields
            )
        )
        if self._grown:  # written no later than this event: waiting for it covers them
            self._gate, self._grown = self._sequence, False
        self._changed.set()

    def task_state(self, state: TaskState, reason: str = "") -> None:
        """Move the task to ``state`` (its result and partial flag go with a success)."""
        self.task.state = state
        if state in (TaskState.FAILED, TaskState.ROLLBACK_FAILED) and reason:
            self.task.error = reason
        self.emit(
            EventKind.TASK_STATE,
            state=state.value,
            reason=reason,
            output=self.task.result if state is TaskState.SUCCEEDED else None,
            partial=self.task.partial,
            usage=self._usage(),
        )
        self._log.info("task.state", state=state.value, reason=reason)
        if state.final:
            self._urgent.set()  # its watchers wait for the outcome
            metrics.TASKS.labels(state.value).inc()
        if state is TaskState.ROLLBACK_FAILED:
            self._log.error("task.rollback_failed", reason=reason)

    def step_state(
        self,
        step: StepRecord,
        state: StepState,
        reason: str = "",
        *,
        attempt: int = 0,
        cached: bool = False,
        choice: AgentChoice | None = None,
    ) -> None:
        """Move ``step`` to ``state``; a final state stamps its finishing time.

        ``cached``: the step succeeded with an output reused from the step cache. ``choice``
        (on RUNNING) says why matching gave the attempt to its agent.
        """
        step.state = state
        waits = state in (StepState.WAITING, StepState.INPUT_REQUIRED)
        step.waiting_for = reason if waits else ""
        if state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED):
            step.error = reason
        if state.final:
            step.finished_at = now()
            metrics.STEPS.labels(state.value).inc()
        self.emit(
            EventKind.STEP_STATE,
            step,
            state=state.value,
            agent=step.agent,
            attempt=attempt or step.attempts,
            reason=reason,
            output=step.output if state is StepState.SUCCEEDED else None,
            usage=self._usage() if state.final else None,
            cached=cached,
            choice=choice,
        )
        if state.final:
            self._gate = self._sequence

    def _usage(self) -> Usage | None:
        """The task's usage so far, for an event; None while there is none to tell."""
        usage = self.task.usage
        return None if usage == _NOTHING_USED else usage

    def add_steps(self, steps: list[StepRecord]) -> None:
        """Add steps the plan grew by (follow-ups, fan-out instances); written as new rows."""
        for step in steps:
            self._new.append((len(self.task.steps), step))
            self.task.steps[step.spec.id] = step
        self._grown = True

    def plan_changed(self) -> None:
        """The task's plan (or ``planning``) changed with no step added: write it too."""
        self._plan_changed = True
        self._grown = True
        self._changed.set()

    async def flush(self) -> None:
        """Write every change made so far, with its events, in one transaction."""
        async with self._write_lock:
            if not (self._events or self._dirty or self._new or self._plan_changed):
                return
            events, self._events = self._events, []
            dirty, self._dirty = self._dirty, {}
            new, self._new = self._new, []
            plan_changed, self._plan_changed = self._plan_changed, False
            new_ids = {s.spec.id for _, s in new}
            # The task as of these events: the run goes on while we wait for the database,
            # and a final state written without its final event would end the lease early.
            task = self.task.model_copy()
            try:
                await self._store.commit(
                    task,
                    [s for i, s in dirty.items() if i not in new_ids],
                    events,
                    new_steps=new,
                    lease=self._lease,
                    plan_changed=plan_changed,
                )
            except Exception:
                # Put the batch back (in order, before anything newer) so nothing is lost.
                self._events[:0] = events
                self._dirty = {**dirty, **self._dirty}
                self._new[:0] = new
                self._plan_changed = self._plan_changed or plan_changed
                raise
            # Durable now; handed over under the lock so that batches reach watchers in order.
            self._bus.committed(self.task.id, events, task)
            if events:
                self._durable = events[-1].sequence
                written, self._written = self._written, asyncio.Event()
                written.set()
        await self._bus.published(self.task.id)

    async def dependable(self) -> None:
        """Return once every change a step may be started on the strength of is written (by
        the flusher): the steps' outcomes (a dependant's inputs, a skip) and the steps and
        plan the task grew by (with the event that came with them). Nothing is sent on the
        strength of a success a crash could still undo.

        What only reports progress (the task or a step running, a progress report) does
        not hold a step back: should the orchestrator stop before it is written, the
        resumed run starts the step again with the same idempotency key, as it does a
        step whose running state was not written yet.
        """
        target = self._gate
        while self._durable < target:
            written = self._written
            self._urgent.set()
            self._changed.set()
            await written.wait()

    @contextlib.asynccontextmanager
    async def flushing(self, on_fenced: Callable[[], object]) -> AsyncIterator[None]:
        """Keep a flusher writing changes while inside; flush what is left on the way out.

        ``on_fenced`` is called when the lease is lost (another replica took the task over):
        the flusher stops and nothing more is written.
        """
        with self._bus.owning(self.task.id, self.task.model_copy(), last_sequence=self._durable):
            flusher = asyncio.create_task(self._flusher(on_fenced), name=f"flush-{self.task.id}")
            try:
                yield
            finally:
                # Never cut a flush off mid-commit: it has taken its batch out of memory.
                async with self._write_lock:
                    flusher.cancel()
                    # Also a flag it checks: a cancel that lands as its gather timeout
                    # expires can be taken for the timeout (and swallowed) on Python 3.11,
                    # and the flusher would wait for changes forever (seen as CancelTask
                    # hanging under load).
                    self._stopping = True
                    self._changed.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                if not self.fenced:
                    with contextlib.suppress(LeaseLost):
                        await asyncio.shield(self.flush())

    async def _flusher(self, on_fenced: Callable[[], object]) -> None:
        while not self._stopping:
            await self._changed.wait()
            if self._stopping:
                return  # flushing() writes what is left itself
            if not self._urgent.is_set():
                # Nothing waits for these yet: let more gather into this batch, until
                # something does. (The store groups many tasks' batches per transaction.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GATHER_SECONDS):
                        await self._urgent.wait()
                if self._stopping:
                    return
            else:
                await asyncio.sleep(0)  # the callbacks already due add to this batch
            self._changed.clear()
            self._urgent.clear()
            try:
                await self.flush()
            except LeaseLost:
                # Another replica took the task over: stop without writing anything more.
                self._log.error("task.lease_lost")
                self.fenced = True
                on_fenced()
                return
            except Exception as exc:
                # The batch went back into memory: nothing is lost, it is written next time.
                self._log.error("task.flush_failed", error=repr(exc))
                await asyncio.sleep(RETRY_SECONDS)
                self._changed.set()
