"""Ordered, persisted task events and their fan-out to watchers.

A watcher of a task run on this replica starts from memory when the run's recent history
(its last :data:`HISTORY` committed events) reaches back to the watcher's cursor, and so
does one of a task that ended here lately (its whole stream and final record are kept a
while: a short task often ends before its submitter's watch arrives); any other watcher
reads the store once when it starts (a replay from any sequence). From then
on it gets the events of a task run on this replica from memory: the journal hands every batch to
:meth:`EventBus.committed` right after its transaction, so a watcher never sees an event
that is not durable. Whenever memory cannot prove the stream is gapless the watcher reads
the store after the last sequence it yielded: an event missing from memory (its queue
overflowed, it started mid-batch), a task run by another replica (Redis wakes us up), the
end of the local run (the task moved elsewhere, or this replica is stopping) and a poll
every ``poll_seconds`` that bounds a lost wake-up from another replica (a task run here
needs none: its batches are handed over in this process). So streams are gapless and
ordered by construction, and a live watcher of a local task costs no SELECT per event.

Watchers of the task list (:meth:`EventBus.task_changes`) learn which tasks changed, not
how: the same hand-over and Redis wake-ups tell them, coalesced per task, and they read
the tasks themselves.

With Redis, the task as of each batch also becomes its hot snapshot (GetTask) and, while it
is live, its row in the index of live tasks (ListTasks of live states, see
:mod:`~agentmesh.orchestrator.live_index`), both written by one writer in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import structlog

from agentmesh._tasks import TaskSet
from agentmesh.errors import OutOfRange
from agentmesh.models import EventKind, TaskEvent, TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.live_index import LiveIndex
from agentmesh.orchestrator.store import Store

log = structlog.get_logger(__name__)

_CHANNEL = "task-events"


def _snapshot_key(task_id: str) -> str:
    return f"tasks:{task_id}"


#: Events a watcher may have waiting in memory; past it, it reads the store instead.
MAX_QUEUED = 1000
#: Events one read of the store hands a watcher; a full page means more may follow.
PAGE = 500
#: Committed events of each task run here kept for watchers that start late (most start
#: right after SubmitTask): such a watch starts without reading the store.
HISTORY = 64
#: Tasks that ended here lately whose whole event stream is kept (with their final record)
#: for watches and reads that come after the end: most of a short task's watchers, since
#: it may end before its submitter's WatchTask arrives. At most this many events in all
#: (the oldest task's go first), each task for at most :data:`FINISHED_SECONDS`.
FINISHED_EVENTS = 4096
FINISHED_SECONDS = 10.0
#: Changed tasks a task-list watcher may have waiting; past it, it is told to list again.
MAX_CHANGED = 1000
#: Longest a read of the live-task index waits for this replica's own rows to be written
#: (so that a caller lists what it just did); past it the store answers.
CATCH_UP_SECONDS = 2.0
#: Events that change what a task list shows (progress does not).
_LISTED_KINDS = frozenset({EventKind.TASK_STATE, EventKind.STEP_STATE})


class _History:
    """The latest committed events of a task run on this replica, without a gap: every event
    after sequence ``start`` up to the newest is in ``events``; ``task`` is the task as of
    the newest batch (None until one came with it)."""

    __slots__ = ("events", "start", "task")

    def __init__(self, start: int) -> None:
        self.start = start
        self.events: deque[TaskEvent] = deque(maxlen=HISTORY)
        self.task: TaskRecord | None = None

    def add(self, events: Sequence[TaskEvent], task: TaskRecord | None) -> None:
        self.events.extend(events)
        if self.events:
            self.start = self.events[0].sequence - 1
        if task is not None:
            self.task = task

    def end(self) -> tuple[bool, int]:
        """What the store's ``stream_end`` says of the task: final?, its newest sequence."""
        if not self.events:
            return False, self.start
        newest = self.events[-1]
        final = newest.kind is EventKind.TASK_STATE and TaskState(newest.state).final
        return final, newest.sequence

    def covers(self, sequence: int) -> bool:
        """True when every event after ``sequence`` that this run committed is kept.

        A cursor past the newest event is not covered either: only the store can tell
        whether another replica (which took the task over) wrote past it already.
        """
        return self.start <= sequence <= self.end()[1]

    def after(self, sequence: int) -> list[TaskEvent]:
        """The events after ``sequence`` (which :meth:`covers` must)."""
        return [e for e in self.events if e.sequence > sequence]


@dataclass(frozen=True, slots=True)
class _Finished:
    """A task that ended on this replica: its events, the whole stream from the first, and
    its final record (the history's task; a final task never changes again, on any
    replica)."""

    history: _History
    task: TaskRecord
    ended_at: float


class _Watcher:
    """One watch's wake-up and the committed events handed to it from memory."""

    __slots__ = ("queued", "read_store", "wakeup")

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self.queued: list[TaskEvent] = []
        #: True when memory may be missing events: the next wake-up reads the store.
        self.read_store = False

    def deliver(self, events: Sequence[TaskEvent]) -> None:
        if len(self.queued) + len(events) > MAX_QUEUED:
            self.queued.clear()
            self.read_store = True
        else:
            self.queued.extend(events)
        self.wakeup.set()

    def stale(self) -> None:
        self.read_store = True
        self.wakeup.set()


@dataclass(frozen=True, slots=True)
class TaskChanges:
    """Tasks that changed since the last batch, in the order they first changed.

    ``lost`` says that some changes may be missing (this is the first batch of a watch, or
    too many tasks changed at once): whoever shows tasks should list them again.
    """

    task_ids: tuple[str, ...]
    lost: bool = False


class _ListWatcher:
    """One task-list watch: the ids of tasks changed since it last looked."""

    __slots__ = ("changed", "lost", "wakeup")

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        #: A dict as an ordered set: many events of one task are one change.
        self.changed: dict[str, None] = {}
        self.lost = False

    def mark(self, task_id: str) -> None:
        if task_id not in self.changed and len(self.changed) >= MAX_CHANGED:
            self.changed.clear()
            self.lost = True
        elif not self.lost:
            self.changed[task_id] = None
        self.wakeup.set()

    def take(self) -> TaskChanges:
        changes = TaskChanges(tuple(self.changed), self.lost)
        self.changed, self.lost = {}, False
        self.wakeup.clear()
        return changes


class EventBus:
    """Hands committed events to the watchers of a task, from memory or from the store."""

    def __init__(self, store: Store, cache: Cache, *, snapshot_seconds: float = 30.0) -> None:
        self._store = store
        self._cache = cache
        #: Tasks whose latest snapshot is yet to be written to Redis.
        self._snapshots: dict[str, TaskRecord] = {}
        #: The snapshots of the round being written to Redis now.
        self._writing: dict[str, TaskRecord] = {}
        self._snapshots_due = asyncio.Event()
        self._snapshot_seconds = snapshot_seconds
        self._index = LiveIndex(cache, store, fresh_seconds=snapshot_seconds)
        #: Snapshots handed over, and of those written: a read waits for its own to be.
        self._handed = 0
        self._written = 0
        self._round = asyncio.Event()
        self._watchers: defaultdict[str, set[_Watcher]] = defaultdict(set)
        self._list_watchers: set[_ListWatcher] = set()
        #: Tasks whose journal is on this replica: their events come through committed().
        self._owned: set[str] = set()
        #: The recent events of the owned tasks whose run said where their stream stood.
        self._histories: dict[str, _History] = {}
        #: Tasks that ended here lately, oldest first, and their events in all (see
        #: :data:`FINISHED_EVENTS`).
        self._finished: OrderedDict[str, _Finished] = OrderedDict()
        self._finished_events = 0
        self._tasks = TaskSet()

    async def __aenter__(self) -> EventBus:
        self._tasks.spawn(self._listen(), name="events-listener")
        if self._cache.shared:
            self._tasks.spawn(self._write_snapshots(), name="events-snapshots")
            self._tasks.spawn(self._index.renew_forever(), name="events-live-rows")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._tasks.aclose()

    async def _listen(self) -> None:
        # Other replicas announce committed events; we only need to know which task moved.
        # Our own announcements come back too: a task whose journal is here needs none.
        async with self._cache.subscribe(_CHANNEL) as messages:
            async for message in messages:
                if isinstance(message, str) and message not in self._owned:
                    self._stale(message)
                    self._changed(message)

    def _changed(self, task_id: str) -> None:
        for watcher in self._list_watchers:
            watcher.mark(task_id)

    def _stale(self, task_id: str) -> None:
        for watcher in self._watchers.get(task_id, ()):
            watcher.stale()

    @contextlib.contextmanager
    def owning(
        self, task_id: str, task: TaskRecord | None = None, *, last_sequence: int | None = None
    ) -> Iterator[None]:
        """While inside, this replica's journal of ``task_id`` hands it every batch it commits.

        ``task``, the task as the run starts with it (durable), is written to Redis at once,
        and this replica vouches for its live row while inside (a task taken over from
        another replica is listed from here on). ``last_sequence``, the task's newest
        durable event as the run starts, lets watches that start while inside begin from
        the events kept in memory. On the way out (the run ended, was fenced or is
        stopping) the task's watchers read the store: whatever comes next is written by
        another replica; its row is no longer vouched for from here.
        """
        self._owned.add(task_id)
        if last_sequence is not None:
            self._histories[task_id] = _History(last_sequence)
        if task is not None:
            self._hand_over(task)
        try:
            yield
        finally:
            self._owned.discard(task_id)
            history = self._histories.pop(task_id, None)
            if history is not None:
                self._keep_finished(history)
            self._index.released(task_id)
            self._stale(task_id)

    def _keep_finished(self, history: _History) -> None:
        # Only a stream whose every event is here, ending with the final state: its
        # record and events are then what the store would answer, for good.
        final, _ = history.end()
        task = history.task
        if not (final and task is not None and task.state.final and history.start == 0):
            return
        now = time.monotonic()
        if (again := self._finished.pop(task.id, None)) is not None:
            self._finished_events -= len(again.history.events)
        self._finished[task.id] = _Finished(history, task, now)
        self._finished_events += len(history.events)
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if (
                self._finished_events <= FINISHED_EVENTS
                and now - oldest.ended_at <= FINISHED_SECONDS
            ):
                break
            self._finished.popitem(last=False)
            self._finished_events -= len(oldest.history.events)

    def _finished_task(self, task_id: str) -> _Finished | None:
        finished = self._finished.get(task_id)
        if finished is None or time.monotonic() - finished.ended_at > FINISHED_SECONDS:
            return None
        return finished

    def finished(self, task_id: str) -> TaskRecord | None:
        """The final record of a task that ended on this replica lately (None when it did
        not, or long enough ago that the store answers instead)."""
        finished = self._finished_task(task_id)
        return None if finished is None else finished.task

    def _history(self, task_id: str) -> _History | None:
        """The events kept of ``task_id``: of its run here, or of its recent end here."""
        history = self._histories.get(task_id)
        if history is None and (finished := self._finished_task(task_id)) is not None:
            return finished.history
        return history

    def committed(
        self, task_id: str, events: Sequence[TaskEvent], task: TaskRecord | None = None
    ) -> None:
        """Hand ``events`` (durable, in order) to the task's watchers on this replica.

        ``task``, the task as of these events, becomes its hot snapshot in Redis (when
        configured), which every replica's GetTask answers from (see :meth:`snapshot`).
        """
        history = self._histories.get(task_id)
        if history is not None:
            history.add(events, task)
        for watcher in self._watchers.get(task_id, ()):
            watcher.deliver(events)
        if self._list_watchers and any(e.kind in _LISTED_KINDS for e in events):
            self._changed(task_id)
        if task is not None:
            self._hand_over(task)

    def _hand_over(self, task: TaskRecord) -> None:
        if self._cache.shared:
            self._snapshots[task.id] = task
            self._handed += 1
            self._snapshots_due.set()

    async def snapshot(self, task_id: str) -> TaskRecord | None:
        """The task's hot snapshot from Redis: a task some replica ran lately (None without
        Redis, or once the snapshot expired: the store has it).

        A snapshot this replica handed over and has not finished writing is answered from
        memory: Redis still has the one before, and a caller that just saw the task end
        (its watch got the final event) must not read it back as running.
        """
        if (mine := self._snapshots.get(task_id) or self._writing.get(task_id)) is not None:
            return mine
        if not self._cache.available:
            return None
        value = await self._cache.get(_snapshot_key(task_id))
        if not isinstance(value, dict):
            return None
        try:
            return TaskRecord.model_validate(value)
        except ValueError:
            return None

    async def _write_snapshots(self) -> None:
        # One writer, latest snapshot per task: snapshots reach Redis in commit order, and a
        # busy task's batches cost one write per round, not one each.
        while True:
            await self._snapshots_due.wait()
            self._snapshots_due.clear()
            due, self._snapshots = self._snapshots, {}
            self._writing = due
            handed = self._handed
            for task_id, task in due.items():
                # On the loop, not in a thread: the run goes on changing the task's steps
                # (the journal's copy shares them), and the owner's GetTask shows as much.
                document = task.model_dump(mode="json")
                await self._cache.set(_snapshot_key(task_id), document, self._snapshot_seconds)
            self._writing = {}
            await self._index.write(due.values(), self._owned)
            self._written = handed
            written, self._round = self._round, asyncio.Event()
            written.set()

    async def live_tasks(
        self, *, owner: str | None, states: Sequence[TaskState], limit: int, offset: int
    ) -> list[TaskRecord] | None:
        """Up to ``limit`` tasks in the live ``states`` (of ``owner``, unless None), after the
        first ``offset``, newest first as the store lists them, from the index in Redis.

        None when the store must answer: no Redis, or the index cannot be trusted (Redis
        lost it and it is not rebuilt yet, a row is not vouched for, this replica could not
        write its own rows). What this replica committed before the call is in the answer;
        what other replicas did may show a moment late, as with :meth:`snapshot`.
        """
        if not self._index.usable:
            return None
        handed = self._handed
        try:
            async with asyncio.timeout(CATCH_UP_SECONDS):
                while self._written < handed:
                    await self._round.wait()
        except TimeoutError:
            return None
        return await self._index.page(owner=owner, states=states, limit=limit, offset=offset)

    async def published(self, task_id: str) -> None:
        """Announce to the other replicas that events of ``task_id`` were committed."""
        await self._cache.publish(_CHANNEL, task_id)

    async def watch(
        self, task_id: str, after_sequence: int = 0, *, poll_seconds: float = 2.0
    ) -> AsyncIterator[TaskEvent]:
        """Yield the task's events after ``after_sequence`` in order; end after its final state.

        A cursor past the task's newest event raises :class:`OutOfRange` (field
        ``after_sequence``): the events it would wait for, the final one included, can never
        come. A cursor at or past the final event of a final task ends the stream at once.
        ``poll_seconds`` bounds how long a lost wake-up can delay an event.
        """
        batches = self.watch_batches(task_id, after_sequence, poll_seconds=poll_seconds)
        try:
            async for batch in batches:
                for event in batch:
                    yield event
        finally:
            await batches.aclose()

    async def watch_batches(
        self, task_id: str, after_sequence: int = 0, *, poll_seconds: float = 2.0
    ) -> AsyncGenerator[list[TaskEvent], None]:
        """:meth:`watch`, the events that are ready together yielded as one list (never
        empty; the last list ends with the final state): a stream can then carry them in
        one message instead of one each."""
        # Subscribed before the first read: an event committed after it is queued, one
        # committed before it is in the store (the journal hands events over after commit)
        # and, if recent, in the run's history (read in the same turn: nothing in between).
        watcher = _Watcher()
        history = self._history(task_id)
        if history is not None and history.covers(after_sequence):
            if self._ended(history.end(), after_sequence):
                return
            watcher.queued = history.after(after_sequence)
        else:
            watcher.read_store = True
        self._watchers[task_id].add(watcher)
        last = after_sequence
        try:
            while True:
                watcher.wakeup.clear()
                events = self._from_memory(watcher, last)
                if events is None:
                    watcher.read_store = False
                    events = await self._store.events_after(task_id, last, PAGE)
                    if len(events) >= PAGE:
                        # Maybe not all: the next round reads on at once, instead of waiting
                        # for a wake-up that events written already will never send.
                        watcher.read_store = True
                    if not events and self._ended(await self._store.stream_end(task_id), last):
                        return
                for end, event in enumerate(events):
                    if event.kind is EventKind.TASK_STATE and TaskState(event.state).final:
                        yield events[: end + 1]
                        return
                if events:
                    last = events[-1].sequence
                    yield events
                if events or watcher.read_store or watcher.queued:
                    continue
                try:
                    async with asyncio.timeout(poll_seconds):
                        await watcher.wakeup.wait()
                except TimeoutError:
                    # A task run here hands over every batch in this process: nothing to lose.
                    # Any other writer (a replica that took the lease) ends our run first, and
                    # the end of the run wakes us to read the store.
                    if task_id not in self._owned:
                        watcher.read_store = True
        finally:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[task_id]

    async def task_changes(self) -> AsyncIterator[TaskChanges]:
        """Yield which tasks changed, batch by batch, for as long as the caller iterates.

        The first batch is empty and ``lost``: from then on every change is reported (list
        the tasks now). A task run here is reported once its batch of state changes is
        committed, one run elsewhere when that replica announces it (through Redis; without
        Redis, replicas do not hear of each other). Changes pile up while the caller is busy
        and come as one batch, each task once; past :data:`MAX_CHANGED` of them the batch
        is ``lost`` instead.
        """
        watcher = _ListWatcher()
        self._list_watchers.add(watcher)
        try:
            yield TaskChanges((), lost=True)
            while True:
                await watcher.wakeup.wait()
                yield watcher.take()
        finally:
            self._list_watchers.discard(watcher)

    @staticmethod
    def _from_memory(watcher: _Watcher, last: int) -> list[TaskEvent] | None:
        """The queued events that follow ``last`` without a gap; None when the store must be
        read (told so, or the queue does not start right after ``last``)."""
        queued, watcher.queued = watcher.queued, []
        fresh = [e for e in queued if e.sequence > last]
        if watcher.read_store or (fresh and fresh[0].sequence != last + 1):
            return None
        expected = last
        for event in fresh:
            expected += 1
            if event.sequence != expected:
                return None
        return fresh

    async def check_cursor(self, task_id: str, after_sequence: int) -> None:
        """Raise :class:`OutOfRange` now when a watch from ``after_sequence`` would (being past
        the task's newest event), so that it is refused before a stream starts."""
        history = self._history(task_id)
        if history is not None and history.covers(after_sequence):
            return  # at or before the newest event: nothing to refuse
        self._ended(await self._store.stream_end(task_id), after_sequence)

    @staticmethod
    def _ended(end: tuple[bool, int] | None, cursor: int) -> bool:
        """True when a watch at ``cursor`` has nothing more to wait for (see :meth:`watch`)."""
        if end is None:
            return True  # no such task (any more): no event will ever come
        final, last_sequence = end
        if cursor > last_sequence:
            # Only the caller's cursor can be past the newest event: ours come from the store.
            raise OutOfRange(
                f"beyond the task's last event (sequence {last_sequence})",
                field="after_sequence",
            )
        # Events committed since our read (the final one among them) are still to be read.
        return final and cursor == last_sequence
